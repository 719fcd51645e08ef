"""The feature contract every attnkit model honours.

* ``forward(x) -> (B, num_classes)`` logits, equal to ``forward_head(forward_features(x))``.
* ``forward_features(x) -> (B, num_features, h, w)``: the last feature map, after the final norm/activation,
  the input of the head.
* ``forward_head(features) -> logits``; for every model except LTPA the head is global average pooling +
  ``get_classifier()``, so CAM applies (:class:`GapLinearModel` implements it once). LTPA's head reads
  attention-weighted features of several layers: it sets ``head_is_gap_linear = False`` and its ``forward_head``
  takes the list of its local feature maps.
* ``get_classifier() -> nn.Module``: the final linear layer.
* ``feature_info: list[FeatureInfo]``: the attention points attention transfer uses by default (the group
  outputs the papers use), from high to low resolution, at most one per resolution (the last layer at it), so
  that ``attnkit.features.pair_layers`` pairs student and teacher group by group.
* ``num_classes``, ``num_features``, ``default_input_size`` (C, H, W) at which the model is usually trained.
* Trainable-attention models also have ``forward_with_attention(x) -> (logits, {name: map})``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FeatureInfo", "GapLinearModel"]


@dataclass(frozen=True)
class FeatureInfo:
    """One attention point of a model."""

    module: str  # module path, as model.named_modules() names it, whose output is the feature map
    channels: int  # channels C of that output
    reduction: int  # input height / feature height (1, 2, 4, ...)


class GapLinearModel(nn.Module):
    """Base of the models whose head is global average pooling + one linear layer ``self.fc``.

    A subclass builds ``self.fc``, sets ``num_classes``, ``num_features``, ``default_input_size`` and
    ``feature_info``, and implements ``forward_features``; the head, ``forward`` and ``get_classifier`` are
    written here once, so ``forward(x) == forward_head(forward_features(x))`` holds by construction.
    """

    head_is_gap_linear = True  # CAM and the contract tests rely on it
    fc: nn.Linear
    num_classes: int
    num_features: int
    default_input_size: tuple[int, int, int]
    feature_info: list[FeatureInfo]

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement forward_features")

    def forward_head(self, features: Tensor) -> Tensor:
        return self.fc(F.adaptive_avg_pool2d(features, 1).flatten(1))  # (B, C, h, w) -> (B, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc
