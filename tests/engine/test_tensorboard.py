"""``tensorboard: true`` (the ``attnkit[tensorboard]`` extra) writes event files that TensorBoard's own reader loads,
one scalar per metric and epoch, equal to the records of ``metrics.jsonl``."""

import json

import pytest

from attnkit.cli import main

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                        reason="the tensorboard extra is not installed")

TINY = ["data.name=mnist5k", "data.train_limit=256", "data.test_limit=128", "data.batch_size=64", "model.name=wrn",
        "model.kwargs={depth: 10, width: 0.5}", "optim.epochs=2", "progress=false", "channels_last=false"]


def _flatten(record: dict, prefix: str = "") -> dict[str, float]:
    flat = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        elif key != "epoch":
            flat[prefix + key] = value
    return flat


def test_tensorboard_scalars_match_metrics_jsonl(tmp_path):
    out = tmp_path / "run"
    main(["train", *TINY, "tensorboard=true", f"out={out}"])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]

    accumulator = event_accumulator.EventAccumulator(str(out / "tensorboard"))
    accumulator.Reload()
    expected = {tag: [(r["epoch"], _flatten(r)[tag]) for r in records] for tag in _flatten(records[0])}
    assert {"train/loss", "train/ce", "train/top1", "test/loss", "test/top1", "test/top5", "lr"} <= set(expected)
    assert sorted(accumulator.Tags()["scalars"]) == sorted(expected)
    for tag, values in expected.items():
        logged = [(event.step, event.value) for event in accumulator.Scalars(tag)]
        assert [step for step, _ in logged] == [1, 2], tag  # one scalar per epoch, at the epoch number
        # Event files store float32: equal to the JSON's float64 up to that rounding.
        assert [value for _, value in logged] == pytest.approx([value for _, value in values], rel=1e-6), tag
