"""The training engine: configuration, training loop, checkpoints, evaluation. No argument parsing here.

>>> from attnkit.engine import RunConfig, train
>>> config = RunConfig()                      # defaults: wrn_16_1 on the embedded mnist5k
>>> config.optim.epochs, config.out = 1, "runs/example"
>>> # summary = train(config)                 # -> dict with last/best test accuracy, throughput, ...
"""

from .checkpoint import load_model, load_run_info, save_weights
from .config import (
    ConfigError,
    DataConfig,
    DistillConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_recipe,
)
from .trainer import Trainer, evaluate, train

__all__ = [
    "ConfigError",
    "DataConfig",
    "DistillConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "Trainer",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "evaluate",
    "load_model",
    "load_recipe",
    "load_run_info",
    "save_weights",
    "train",
]
