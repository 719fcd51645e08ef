"""The feature contract every attnkit model honours.

* ``forward(x) -> (B, num_classes)`` logits, equal to ``forward_head(forward_features(x))``.
* ``forward_features(x) -> (B, num_features, h, w)``: the last feature map, after the final norm/activation,
  the input of the head.
* ``forward_head(features) -> logits``; for every model except LTPA (whose head reads attention-weighted
  intermediate features) the head is global average pooling + ``get_classifier()``, so CAM applies.
* ``get_classifier() -> nn.Module``: the final linear layer.
* ``feature_info: list[FeatureInfo]``: the attention points attention transfer uses by default (the group
  outputs the papers use), from high to low resolution.
* ``num_classes``, ``num_features``, ``default_input_size`` (C, H, W) at which the model is usually trained.
* Trainable-attention models also have ``forward_with_attention(x) -> (logits, {name: map})``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FeatureInfo"]


@dataclass(frozen=True)
class FeatureInfo:
    """One attention point of a model."""

    module: str  # module path, as model.named_modules() names it, whose output is the feature map
    channels: int  # channels C of that output
    reduction: int  # input height / feature height (1, 2, 4, ...)
