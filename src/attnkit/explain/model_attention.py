"""The attention a trainable-attention model computes itself, read through ``forward_with_attention``.

* Learn to Pay Attention (Jetley et al., ICLR 2018): one map per attention level, ``{"level1": (B, H, W), ...}``
  (softmax weights summing to 1 per sample, or sigmoid weights in [0, 1]); used as they are.
* Residual Attention Network (Wang et al., CVPR 2017): one soft mask per attention module,
  ``{"stage1.0": (B, C, H, W), ...}`` in [0, 1]; reduced to (B, H, W) by the mean over channels (the share of
  each position's features the mask lets through, on the mask's own 0..1 scale).

The maps do not depend on a class; ``target`` is accepted and ignored. :meth:`ModelAttention.attribute`
returns the map named ``layer`` (default: the last one the model returns, its deepest), and
:meth:`ModelAttention.attribute_layers` all of them from one forward pass.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._base import AttentionMethod, Target

__all__ = ["ModelAttention"]


class ModelAttention(AttentionMethod):
    """The model's own attention maps (LTPA levels, Residual Attention soft masks).

    Args:
        model: a model with ``forward_with_attention(x) -> (logits, {name: map})``.
        layer: the name of the map :meth:`attribute` returns (``"level2"``, ``"stage1.0"``); None = the last.
    """

    name = "model"
    uses_target = False

    def __init__(self, model: nn.Module, layer: str | None = None) -> None:
        super().__init__(model)
        if not callable(getattr(model, "forward_with_attention", None)):
            raise TypeError(
                f"{type(model).__name__} has no forward_with_attention, so it computes no attention of its own; "
                "use a trainable-attention model (ltpa_*, attention*) or another method "
                "(activation, gradcam, ...)"
            )
        self.layer = layer

    def attribute_layers(
        self, images: Tensor, target: Target = None, *, upsample: bool = True, batch_size: int | None = None
    ) -> dict[str, Tensor]:
        """Every attention map of the model, {name: (B, H, W)} in the model's order."""
        return self._run(lambda x, _: self._maps(x), images, target, upsample, batch_size)

    def _attribute(self, images: Tensor, target: Tensor | None) -> Tensor:
        maps = self._maps(images)
        name = list(maps)[-1] if self.layer is None else self.layer
        if name not in maps:
            raise KeyError(f"{type(self.model).__name__} returns no attention map {name!r}; it returns {list(maps)}")
        return maps[name]

    def _maps(self, images: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():
            _, attention = self.model.forward_with_attention(images)
        if not isinstance(attention, dict) or not attention:
            raise TypeError(
                f"{type(self.model).__name__}.forward_with_attention must return (logits, {{name: map}}) with at "
                f"least one map, got {type(attention).__name__}"
            )
        return {name: _spatial(name, value) for name, value in attention.items()}


def _spatial(name: str, value: Tensor) -> Tensor:
    """(B, H, W) maps as they are; (B, C, H, W) masks -> mean over channels (B, H, W)."""
    if isinstance(value, Tensor) and value.dim() == 3:
        return value
    if isinstance(value, Tensor) and value.dim() == 4:
        return value.mean(dim=1)  # (B, C, H, W) -> (B, H, W)
    shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
    raise ValueError(f"attention map {name!r} must be (B, H, W) or (B, C, H, W), got {shape}")
