"""Optimisers, and the one schedule implementation behind learning rates and loss weights, stepped per iteration.

:class:`WeightSchedule` is a multiplier of a peak value as a function of the fractional epoch
``iteration / steps_per_epoch``:

* ``step`` (attention transfer, CIFAR): gamma^(number of milestones passed), e.g. x0.2 at epochs 60/120/160;
* ``cosine``: (1 + cos(pi * epoch / epochs)) / 2;
* ``linear``: 1 - epoch / epochs (a linear decay to 0 at the end of the run);
* ``constant``;

each optionally preceded by a linear warm-up. The learning rate is ``optim.lr`` times the schedule that
``optim.schedule``, ``optim.milestones``, ``optim.gamma`` and ``optim.warmup_epochs`` describe
(:func:`lr_factor`); a loss term's weight is its ``distill.*`` weight times its ``distill.<term>_schedule``.
Both are functions of the iteration counter, which the checkpoint holds (the LR scheduler's state), so a run
resumed mid-epoch continues them exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch.optim.lr_scheduler import LambdaLR

__all__ = [
    "OptimConfig",
    "OptimizerName",
    "ScheduleKind",
    "ScheduleName",
    "WeightSchedule",
    "build_optimizer",
    "build_scheduler",
    "lr_factor",
]

OptimizerName = Literal["sgd", "adam", "adamw"]  # SGD (momentum, optional Nesterov), Adam, AdamW
ScheduleName = Literal["step", "cosine", "constant"]  # the learning-rate schedules of the module docstring
ScheduleKind = Literal["constant", "step", "cosine", "linear"]  # the loss-weight schedules (the same code)
Granularity = Literal["step", "epoch"]  # evaluate at every iteration, or once per epoch (a staircase)


@dataclass
class WeightSchedule:
    """A multiplier in [0, 1] (for gamma <= 1) of a peak value over training: see the module docstring.

    ``per="step"`` (default) evaluates it at the fractional epoch of every iteration, as the learning rate;
    ``per="epoch"`` holds it constant within each epoch at its value for the epoch's start, with the warm-up
    counting the epoch being taken: ``min(1, (epoch + 1) / warmup_epochs)`` for the 0-based epoch, i.e.
    mdistiller's DKD warm-up ``min(epoch / 20, 1)`` with its epochs counted from 1.
    """

    kind: ScheduleKind = "constant"  # constant | step | cosine | linear
    milestones: list[float] = field(default_factory=list)  # step: epochs at which the factor is multiplied by gamma
    gamma: float = 0.1  # step: the factor's multiplier at each milestone
    warmup_epochs: float = 0.0  # linear warm-up from 0 over this many epochs (DKD: 20)
    per: Granularity = "step"  # step (every iteration) | epoch (one value per epoch)

    @property
    def is_constant(self) -> bool:
        """The factor is 1 throughout (the default): the weight is used as it is."""
        return self.kind == "constant" and self.warmup_epochs == 0

    def max_factor(self, epochs: float) -> float:
        """The largest factor over a run of ``epochs`` epochs: 1, or gamma^k after the k-th milestone reached when
        gamma > 1 (warm-up and the cosine and linear decays only lower it)."""
        if self.kind != "step":
            return 1.0
        reached = sum(m < epochs for m in self.milestones)
        return max(self.gamma ** k for k in range(reached + 1))

    def factor(self, epoch: float, epochs: float, step: float = 0.0) -> float:
        """Multiplier at fractional ``epoch`` of a run of ``epochs`` epochs.

        ``step`` is one iteration in epochs (1 / steps per epoch): the warm-up counts the step being taken, so its
        first step already moves (a factor of 0 would waste it) and it reaches the full value on its last step.
        """
        if self.per == "epoch":
            epoch, step = float(math.floor(epoch)), 1.0
        warmup = min(1.0, (epoch + step) / self.warmup_epochs) if self.warmup_epochs > 0 else 1.0
        if self.kind == "step":
            decay = self.gamma ** sum(epoch >= m for m in self.milestones)
        elif self.kind == "cosine":
            decay = 0.5 * (1.0 + math.cos(math.pi * min(epoch, epochs) / epochs))
        elif self.kind == "linear":
            decay = max(0.0, 1.0 - epoch / epochs)
        else:
            decay = 1.0
        return warmup * decay


@dataclass
class OptimConfig:
    name: OptimizerName = "sgd"  # sgd | adam | adamw
    lr: float = 0.1  # peak learning rate
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = False  # Nesterov momentum (Residual Attention Network's CIFAR recipe)
    weight_decay: float = 5e-4  # L2 penalty (5e-4 CIFAR, 1e-4 ImageNet)
    epochs: int = 200  # training epochs
    schedule: ScheduleName = "step"  # step | cosine | constant
    milestones: list[float] = field(default_factory=lambda: [60, 120, 160])  # step: epochs at which lr *= gamma
    gamma: float = 0.2  # step: decay factor
    warmup_epochs: float = 0.0  # linear warm-up from 0 over this many epochs
    grad_clip: float | None = None  # clip the gradient norm to this value (None = off)


def build_optimizer(config: OptimConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov), Adam or AdamW with weight decay on every parameter (as the papers)."""
    params = [p for p in params if p.requires_grad]
    if config.name == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov and config.momentum > 0,
                               weight_decay=config.weight_decay)
    if config.name == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def lr_schedule(config: OptimConfig) -> WeightSchedule:
    """The learning-rate schedule an :class:`OptimConfig` describes."""
    return WeightSchedule(config.schedule, list(config.milestones), config.gamma, config.warmup_epochs)


def lr_factor(epoch: float, config: OptimConfig, step: float = 0.0) -> float:
    """Multiplier of the peak learning rate at fractional ``epoch`` (``step``: see :meth:`WeightSchedule.factor`)."""
    return lr_schedule(config).factor(epoch, config.epochs, step)


def build_scheduler(optimizer: torch.optim.Optimizer, config: OptimConfig, steps_per_epoch: int) -> LambdaLR:
    steps = max(1, steps_per_epoch)
    schedule = lr_schedule(config)
    return LambdaLR(optimizer, lambda iteration: schedule.factor(iteration / steps, config.epochs, 1 / steps))
