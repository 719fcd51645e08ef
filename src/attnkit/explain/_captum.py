"""captum, imported on first use, and the one way attnkit's targets reach a captum attribution method.

captum takes class indices only, and needs them before it runs the model. :func:`captum_forward` gives captum a
forward function and a target such that

* given classes (an int or one per image) cost no extra forward pass: their range is checked against the
  logits of captum's own first forward (as captum's users would index them, but with a clear error);
* ``None`` is resolved to the predicted classes with one no-grad forward (captum's users do the same);
* a function of the logits becomes a (B, 1) output with target 0, so captum differentiates its score.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from torch import Tensor, nn

from ._base import ScoreFunction, check_logits, resolve_target, target_scores

__all__ = ["captum_attr", "captum_forward"]


def captum_attr() -> ModuleType:
    """``captum.attr``, imported on first use: it takes ~0.4 s, which every ``attnkit`` command would pay."""
    return importlib.import_module("captum.attr")


class _ScoredModel(nn.Module):
    """The model as captum sees it: logits (classes checked once), or a target function's (B, 1) scores."""

    def __init__(self, model: nn.Module, classes: Tensor | int | None, function: ScoreFunction | None) -> None:
        super().__init__()
        self.model, self.classes, self.function = model, classes, function

    def forward(self, x: Tensor) -> Tensor:
        logits = check_logits(self.model(x))
        if self.function is not None:
            return target_scores(logits, self.function)[:, None]  # (B, 1): captum's target is 0
        if self.classes is not None:
            _check_range(self.classes, logits.shape[1])
            self.classes = None  # checked: captum's later forwards (perturbed copies) pay nothing
        return logits


def _check_range(classes: Tensor | int, num_classes: int) -> None:
    low, high = (classes, classes) if isinstance(classes, int) else (int(classes.min()), int(classes.max()))
    if low < 0 or high >= num_classes:
        raise ValueError(f"targets must lie in [0, {num_classes - 1}], got range {low}..{high}")


def captum_forward(
    model: nn.Module, images: Tensor, target: Tensor | int | ScoreFunction | None
) -> tuple[nn.Module, Tensor | int]:
    """(forward module, captum target) for ``captum.attr.Method(forward).attribute(images, target=...)``."""
    if callable(target) and not isinstance(target, Tensor):
        return _ScoredModel(model, None, target), 0
    if target is None:
        return _ScoredModel(model, None, None), resolve_target(model, images, None)
    classes = target.to(images.device) if isinstance(target, Tensor) else target
    return _ScoredModel(model, classes, None), classes
