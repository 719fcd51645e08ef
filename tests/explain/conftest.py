"""Fixtures of the attnkit.explain tests; the hand-built models are in explain_toys.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnkit.models import create_model


@pytest.fixture
def small_wrn() -> nn.Module:
    """WRN-10-1 with trained-looking (non-default) BatchNorm statistics, in eval mode."""
    model = create_model("wrn", depth=10, width=1, num_classes=5)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()
