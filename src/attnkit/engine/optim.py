"""Optimisers and learning-rate schedules of the papers, stepped once per iteration.

* step (attention transfer, CIFAR): lr * gamma^(number of milestones passed), e.g. x0.2 at epochs 60/120/160;
* cosine: lr * (1 + cos(pi * epoch / epochs)) / 2;
* constant;
each optionally preceded by a linear warm-up. The schedule is a function of the fractional epoch
``iteration / steps_per_epoch``, so resuming mid-epoch continues it exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

import torch
from torch.optim.lr_scheduler import LambdaLR

if TYPE_CHECKING:
    from .config import OptimConfig

__all__ = ["OptimizerName", "ScheduleName", "build_optimizer", "build_scheduler", "lr_factor"]

OptimizerName = Literal["sgd", "adam", "adamw"]  # SGD (momentum, optional Nesterov), Adam, AdamW
ScheduleName = Literal["step", "cosine", "constant"]  # the learning-rate schedules of the module docstring


def build_optimizer(config: OptimConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov), Adam or AdamW with weight decay on every parameter (as the papers)."""
    params = [p for p in params if p.requires_grad]
    if config.name == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov and config.momentum > 0,
                               weight_decay=config.weight_decay)
    if config.name == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def lr_factor(epoch: float, config: OptimConfig, step: float = 0.0) -> float:
    """Multiplier of the peak learning rate at fractional ``epoch``.

    ``step`` is one iteration in epochs (1 / steps per epoch): the warm-up counts the step being taken, so its
    first step already moves (a factor of 0 would waste it) and it reaches the full rate on its last step.
    """
    warmup = min(1.0, (epoch + step) / config.warmup_epochs) if config.warmup_epochs > 0 else 1.0
    if config.schedule == "step":
        decay = config.gamma ** sum(epoch >= m for m in config.milestones)
    elif config.schedule == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * min(epoch, config.epochs) / config.epochs))
    else:
        decay = 1.0
    return warmup * decay


def build_scheduler(optimizer: torch.optim.Optimizer, config: OptimConfig, steps_per_epoch: int) -> LambdaLR:
    steps = max(1, steps_per_epoch)
    return LambdaLR(optimizer, lambda iteration: lr_factor(iteration / steps, config, 1 / steps))
