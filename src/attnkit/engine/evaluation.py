"""Evaluate a saved run (``attnkit eval``): its weights on its own test set or another one."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from .config import RunConfig
from .data_setup import data_info, load_splits, make_split_loader
from .rundir import RunDir, Weights, load_model, load_run_info
from .runtime import RECORDED_PRECISIONS, Distributed, resolve_device, resolve_precision
from .trainer import evaluate

__all__ = ["evaluate_run"]


def evaluate_run(
    path: str | Path, weights: Weights = "final", data: str | None = None, root: str | None = None,
    device: str = "auto", batch_size: int = 512,
) -> dict[str, Any]:
    """Top-1 / top-5 / loss of a run's weights on the test split of its data set (or ``data``).

    ``path`` is a run directory (its config.yaml gives the data settings) or a bare attnkit weights file.
    Numbers that are not finite are returned as None, with a ``note`` saying why (the result is valid JSON).
    """
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch size (--batch-size) must be >= 1, got {batch_size}")
    path = Path(path)
    run_dir = RunDir(path) if path.is_dir() else None
    config = run_dir.config() if run_dir is not None and run_dir.file(RunDir.CONFIG).is_file() else RunConfig()
    info = load_run_info(path, weights)
    if not info:
        raise ValueError(f"{path} carries no attnkit metadata (classes, normalisation); evaluate a run directory or "
                         "a weights file written by attnkit")
    config.data.name = data or info.get("dataset") or config.data.name
    config.data.root = root or config.data.root
    config.data.eval_batch_size, config.data.test_limit = batch_size, None
    input_size = info.get("input_size")
    if input_size:  # folders: evaluate at the size the model was trained at
        config.data.image_size = input_size[-1]
    dev = resolve_device(device)
    channels_last = bool(info.get("channels_last"))  # the run's memory format and precision: its own numbers
    model = load_model(path, dev, weights).to(memory_format=torch.channels_last if channels_last else
                                              torch.contiguous_format)
    amp_dtype, note = _recorded_precision(info.get("precision"), dev)
    (test,) = load_splits(config, Distributed(), ("test",), recorded=info)  # folders: read as the model expects
    test_loader = make_split_loader(test, config, dev, Distributed(), train=False, channels_last=channels_last)
    test_info = data_info(test, config.data.name, config.data.image_size)
    if test_info["num_classes"] != info["num_classes"]:
        raise ValueError(f"{config.data.name} has {test_info['num_classes']} classes but the model predicts {info['num_classes']}")
    metrics = evaluate(model, test_loader.epoch_batches(0), dev, amp_dtype)
    result = {"run": str(path), "weights": weights, "data": config.data.name, **metrics}
    if note:
        result["note"] = note
    # JSON has no NaN or inf: such a number is null, and a note says why.
    bad = [key for key, value in result.items() if isinstance(value, float) and not math.isfinite(value)]
    if bad:
        result.update({key: None for key in bad})
        overflow = (f"{', '.join(bad)} not finite (NaN or inf): the model's outputs overflow on this data; were its "
                    "weights trained with a diverging learning rate?")
        result["note"] = f"{note}; {overflow}" if note else overflow
    return result


def _recorded_precision(recorded: str | None, device: torch.device) -> tuple[torch.dtype | None, str | None]:
    """(the autocast dtype the run trained and evaluated with, a note when this device cannot use it)."""
    if recorded not in RECORDED_PRECISIONS:  # written before runs recorded it: the training default
        return resolve_precision("auto", device), None
    try:
        return resolve_precision(RECORDED_PRECISIONS[recorded], device), None
    except ValueError:
        return None, f"the run used {recorded}, which {device} lacks: evaluated in float32, numbers may differ slightly"
