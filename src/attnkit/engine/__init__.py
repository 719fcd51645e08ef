"""The training engine: configuration, run set-up, training loop, run directories, evaluation. No argument parsing.

>>> from attnkit.engine import RunConfig, train
>>> config = RunConfig()                      # defaults: wrn_16_1 on the embedded mnist5k
>>> config.optim.epochs, config.out = 1, "runs/example"
>>> # summary = train(config)                 # -> dict with last/best test accuracy, throughput, ...
>>> # summary = train(config, model=my_net)   # any nn.Module student (and teacher=...)

Modules: ``config`` (RunConfig), ``terms`` (the loss-term table), ``objective`` (the loss as an nn.Module),
``setup`` (build_run -> Run: data, models, decisions, loaders, optimiser), ``memory_format`` (the cached
channels_last choice), ``trainer`` (Trainer, train), ``rundir`` (RunDir, load_model), ``run_info`` (RunInfo,
checked when read), ``state_files`` (other tools' weights files), ``model_checks`` (a user's model tried once),
``resume``, ``evaluation`` (evaluate_run), ``checkpoint`` (atomic files, weights), ``run_log``, ``optim``, ``runtime``.
"""

from .checkpoint import save_weights
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
from .resume import resume_config
from .rundir import RunDir, RunInfo, load_model, load_run_info
from .setup import Run, build_run
from .trainer import Trainer, evaluate, train

__all__ = [
    "ConfigError",
    "DataConfig",
    "DistillConfig",
    "ModelConfig",
    "OptimConfig",
    "Run",
    "RunConfig",
    "RunDir",
    "RunInfo",
    "Trainer",
    "apply_overrides",
    "build_run",
    "config_from_dict",
    "config_to_dict",
    "evaluate",
    "load_model",
    "load_recipe",
    "load_run_info",
    "resume_config",
    "save_weights",
    "train",
]
