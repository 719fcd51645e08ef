"""Each loss term's student/teacher layer pairs, from its ``distill.<layers>`` key or its default rule, checked.

CAM transfer differentiates the student's score of each image with respect to a layer output, g = dS/dA, in
one backward pass over the batch (:func:`attnkit.functional.score_gradients`). A batch-norm layer in train
mode between that layer and the logits normalises with statistics of the whole batch, so every image's score
depends on every other image's activations and g[b] is no longer image b's own Grad-CAM gradient. The student
trains in train mode, so such a pairing is refused at set-up, naming the batch norm; a layer after the last
batch norm (the default: the output of ``forward_features``) is exact. The teacher runs in eval mode, where
batch norm uses its running statistics and is per image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..features import LayerPair, default_pairs, eval_mode, pair_layers, resolve_module
from .config import ConfigError, DistillConfig
from .terms import TermPlan

__all__ = ["batch_norms_after", "layer_pairs"]


def layer_pairs(config: DistillConfig, plan: TermPlan, student: nn.Module, teacher: nn.Module | None,
                example: Tensor) -> dict[str, list[LayerPair]]:
    """Each term's pairs (by term name) for the terms on layers; ``example`` is one input, (1, C, H, W)."""
    found: dict[str, list[LayerPair]] = {}
    for term in (t for t in plan.terms if t.uses_layers):
        given = getattr(config, term.layers)
        try:
            if given:
                found[term.name] = pair_layers(student, teacher, example, dict(pair.split(":") for pair in given))
            else:
                found[term.name] = default_pairs(student, teacher, example, term.default_layers)
        except (KeyError, ValueError) as err:
            raise ConfigError(f"distill.{term.layers}", err.args[0]) from None
        if term.consumes == "class_maps":
            _check_per_image_maps(student, found[term.name], example, f"distill.{term.layers}")
    return found


def batch_norms_after(model: nn.Module, path: str, example: Tensor) -> list[str]:
    """The paths of the batch-norm layers of ``model`` whose input depends on the output of the layer at ``path``.

    Found from the autograd graph of one forward pass of ``example`` in eval mode (no running statistic moves):
    a batch norm that runs later on a branch that does not read the layer is not listed.
    """
    layer = resolve_module(model, path)
    names = {module: name for name, module in model.named_modules()}
    root: list[Tensor] = []  # the layer's output, made a leaf of the graph
    inputs: list[tuple[str, Tensor]] = []  # (path, input) of each batch norm that ran after the layer

    def mark(module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        root.append(output.detach().requires_grad_())
        return root[-1]

    def record(module: nn.Module, args: tuple) -> None:
        if root:
            inputs.append((names[module], args[0]))

    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    handles = [layer.register_forward_hook(mark), *(m.register_forward_pre_hook(record) for m in norms)]
    try:
        with eval_mode(model), torch.enable_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    if not root:
        return []
    reached = []
    for name, value in inputs:
        if value.requires_grad and torch.autograd.grad(value.sum(), root[0], retain_graph=True, allow_unused=True)[0] is not None:
            reached.append(name)
    return reached


def _check_per_image_maps(student: nn.Module, pairs: Sequence[LayerPair], example: Tensor, key: str) -> None:
    """Refuse a student CAM layer with a batch norm after it (module docstring)."""
    for pair in pairs:
        after = batch_norms_after(student, pair.student, example)
        if after:
            raise ConfigError(key, f"the student's batch norm {after[0]!r} lies between the CAM layer {pair.student!r} and "
                                   "the logits: in training its batch statistics mix the other images into each image's "
                                   "Grad-CAM; pair a layer after the last batch norm (null: the output of forward_features)")
