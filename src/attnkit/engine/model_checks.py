"""Checks of a model of the user's (a spec's, or an ``nn.Module`` passed in) before a run hooks into it.

A user's model is their code: its faults (a forward that fails on the run's images, outputs that are not logits)
are theirs and must read as one line naming the model, not as a bug of attnkit's. attnkit's own registry models
are not checked here, so that a failure in them still shows its traceback.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .config import ConfigError

__all__ = ["check_forward"]


def check_forward(model: nn.Module, key: str, name: str, data_info: dict[str, Any], device: torch.device) -> None:
    """Run a model of the user's once, in eval mode, on one blank image of the run's data, before attnkit hooks into
    it: a failure there, or an output that is not (1, classes) logits, is the model's, named as ``key`` and ``name``
    (its cause chained, a ``ConfigError``: one line from the command). Train mode is restored; no state changes."""
    example = torch.zeros(1, *data_info["input_size"], device=device)
    was_training = model.training
    try:
        with torch.no_grad():
            logits = model.eval()(example)
    except Exception as err:
        cause = (str(err).strip().splitlines() or [""])[0]
        raise ConfigError(key, f"{name} fails on one image of this data, shape {tuple(example.shape)} "
                               f"({type(err).__name__}: {cause}); make it take such images (image folders: or set "
                               "data.image_size / data.channels)") from err
    finally:
        model.train(was_training)
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ConfigError(key, f"{name} gives {shape} for one image, not (1, classes) logits")
    if logits.shape[1] != data_info["num_classes"]:
        raise ConfigError(key, f"{name} predicts {logits.shape[1]} classes but the data has {data_info['num_classes']}")
