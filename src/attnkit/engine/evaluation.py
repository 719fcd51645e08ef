"""Evaluate a saved run (``attnkit eval``): its weights on its own test set or another one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .checkpoint import load_model, load_run_info
from .config import RunConfig, config_from_dict, load_recipe
from .data_setup import data_info, load_splits, make_split_loader
from .runtime import Distributed, resolve_device, resolve_precision
from .trainer import evaluate

__all__ = ["evaluate_run"]


def evaluate_run(
    path: str | Path, weights: str = "final", data: str | None = None, root: str | None = None,
    device: str = "auto", batch_size: int = 512,
) -> dict[str, Any]:
    """Top-1 / top-5 / loss of a run's weights on the test split of its data set (or ``data``)."""
    path = Path(path)
    config = _saved_config(path)
    info = load_run_info(path, weights)
    config.data.name = data or info.get("dataset", config.data.name)
    config.data.root = root or config.data.root
    config.data.eval_batch_size, config.data.test_limit = batch_size, None
    dev = resolve_device(device)
    model = load_model(path, dev, weights)
    (test,) = load_splits(config, Distributed(), ("test",))
    test_loader = make_split_loader(test, config, dev, Distributed(), train=False)
    test_info = data_info(test, config.data.name)
    if test_info["num_classes"] != info["num_classes"]:
        raise ValueError(f"{config.data.name} has {test_info['num_classes']} classes but the model predicts {info['num_classes']}")
    metrics = evaluate(model, test_loader.epoch_batches(0), dev, resolve_precision("auto", dev))
    return {"run": str(path), "weights": weights, "data": config.data.name, **metrics}


def _saved_config(path: Path) -> RunConfig:
    """The config a run directory was trained with (defaults for a bare weights file)."""
    file = path / "config.yaml"
    return config_from_dict(load_recipe(file)) if path.is_dir() and file.is_file() else RunConfig()
