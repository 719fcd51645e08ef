"""Shared toy models and assertion helpers for the test suite."""

from __future__ import annotations

import torch
from torch import nn


def toy_cnn(widths: tuple[int, ...] = (4, 8), convs_per_stage: int = 1, in_chans: int = 3, num_classes: int = 5) -> nn.Sequential:
    """A plain CNN: per stage `convs_per_stage` conv-ReLU pairs, then 2x2 max-pool; GAP + linear head."""
    layers: list[nn.Module] = []
    channels = in_chans
    for width in widths:
        for _ in range(convs_per_stage):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
            channels = width
        layers.append(nn.MaxPool2d(2))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)


def hook_count(model: nn.Module) -> int:
    """Number of forward / pre-forward hooks installed anywhere in `model`."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def assert_close(actual: torch.Tensor, expected, rtol: float = 1e-6, atol: float = 1e-9) -> None:
    torch.testing.assert_close(actual, torch.as_tensor(expected, dtype=actual.dtype), rtol=rtol, atol=atol)
