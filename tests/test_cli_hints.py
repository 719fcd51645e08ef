"""The hints in error messages are commands that work where they are printed: each hint below is followed."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

from attnkit.engine import config_from_dict
from attnkit.recipes import apply_overrides
from helpers import run_cli

TINY = ["data.name=mnist5k", "data.train_limit=1000", "data.test_limit=32", "data.batch_size=16", "model.name=wrn",
        "model.kwargs={depth: 10, width: 0.5}", "optim.epochs=2", "checkpoint_every_steps=1", "progress=false",
        "tensorboard=false"]


def test_an_interrupted_run_says_how_to_resume_and_eval_how_to_read_it(tmp_path):
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "attnkit", "train", *TINY, f"out={out}"], text=True,
                               stderr=subprocess.PIPE, stdout=subprocess.PIPE, env={"OMP_NUM_THREADS": "1",
                                                                                    **__import__("os").environ})
    while not (out / "checkpoint.json").is_file() and process.poll() is None:  # until its first checkpoint
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    hint = re.search(r"continue it with `attnkit (resume \S+)`", stderr)
    assert hint and hint.group(1) == f"resume {out}", stderr
    unfinished = run_cli("eval", out, "--device", "cpu")
    assert unfinished.returncode == 2 and "--weights last" in unfinished.stderr, unfinished.stderr
    last = run_cli("eval", out, "--device", "cpu", "--weights", "last")  # the hint, followed
    assert last.returncode == 0 and json.loads(last.stdout)["count"] == 1000, last.stderr  # all of mnist5k's test
    resumed = run_cli(*hint.group(1).split())  # the hint, followed: the run finishes
    assert resumed.returncode == 0 and (out / "model.safetensors").is_file(), resumed.stderr


def test_nothing_to_distil_lists_the_term_keys_and_each_is_a_key(tmp_path):
    done = run_cli("distill", f"out={tmp_path / 'x'}")
    assert done.returncode == 2
    keys = re.findall(r"distill\.[a-z_]+", done.stderr.split("at least one of", 1)[1])
    assert {"distill.at_beta", "distill.kd_alpha", "distill.fact_beta"} <= set(keys)
    for key in keys:
        config_from_dict(apply_overrides({}, [f"{key}=1"]))  # every one a key the config takes


def test_a_missing_data_set_names_the_config_key_that_downloads_it(tmp_path):
    done = run_cli("train", "data.name=cifar10", f"data.root={tmp_path}", f"out={tmp_path / 'x'}")
    assert done.returncode == 2 and "pass data.download=true" in done.stderr and "download=True" not in done.stderr
    assert "mirror=" not in done.stderr


def test_eval_of_a_finished_run_prints_its_recorded_test_numbers_exactly(tmp_path):
    """eval uses the run's memory format and precision (fp32 here: eval's own default would take bf16 where the CPU
    has it, and differ)."""
    from attnkit.engine import RunDir

    out = tmp_path / "cl"
    trained = run_cli("train", "data.name=mnist5k", "data.train_limit=64", "data.batch_size=32", "model.name=wrn",
                      "model.kwargs={depth: 10, width: 0.5}", "optim.epochs=1", "progress=false", "tensorboard=false",
                      "channels_last=true", "precision=fp32", f"out={out}")  # auto would be bf16 on a CPU with it
    assert trained.returncode == 0, trained.stderr
    assert RunDir(out).info().channels_last is True
    done = run_cli("eval", out, "--device", "cpu")  # batches of 512, as the run evaluated
    assert done.returncode == 0, done.stderr
    result, last = json.loads(done.stdout), RunDir(out).summary()["last"]
    assert (result["top1"], result["loss"], result["count"]) == (last["top1"], last["loss"], last["count"])
    # Here the CPU computes both memory formats alike; what eval hands the model is checked directly too.
    import torch

    from attnkit.engine import evaluation

    seen = []

    def spy(model, batches, device, amp_dtype, dist=None):
        images, _ = next(iter(batches))
        seen.append((images.is_contiguous(memory_format=torch.channels_last), amp_dtype))
        return {"loss": 0.0, "top1": 0.0, "top5": 0.0, "count": 1}

    original = evaluation.evaluate
    evaluation.evaluate = spy
    try:
        evaluation.evaluate_run(out, device="cpu")
    finally:
        evaluation.evaluate = original
    assert seen == [(True, None)]  # channels_last as recorded, float32 as recorded
