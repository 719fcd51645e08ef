"""Activation-based attention maps (Zagoruyko & Komodakis, ICLR 2017, section 3.1; the paper's Fig. 2 and 4).

A layer's output A (B, C, h, w) is reduced over channels with :func:`attnkit.functional.attention_map`:
F_sum (``p=1, reduction="sum"``), F_sum^p (``reduction="sum"`` or ``"mean"``; the paper's default p = 2) or
F_max^p (``reduction="max"``), and each sample's map is L2-normalised. The map does not depend on a class.

The layers default to the model's attention points, from high to low resolution: its ``feature_info`` (the
attention-transfer points of every attnkit model), or for any other model the points traced from one forward
pass on the first images (:func:`attnkit.features.resolution_groups`: one per resolution, as attention transfer
pairs them). :meth:`ActivationMap.attribute` returns the map of the *last* of the layers (by default the deepest
point, the one nearest the decision), :meth:`ActivationMap.attribute_layers` one map per layer from a single
forward pass.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..features import FeatureCapture, resolution_groups
from ..functional import attention_map
from ..functional.attention import check_reduction
from ..functional.checks import check_features, check_positive
from ._base import AttentionMethod, LayerSpec, Target, layer_paths

__all__ = ["ActivationMap"]



def default_layers(model: nn.Module, probe: Tensor | None = None) -> list[str] | None:
    """The module paths of the model's attention points, high to low resolution: ``model.feature_info`` (every
    attnkit model has it), else traced on ``probe`` images (None until there are images to trace with)."""
    info = getattr(model, "feature_info", None)
    if info:
        return [point.module for point in info]
    if probe is None:
        return None
    points = [group.path for group in resolution_groups(model, probe)]
    if not points:
        raise ValueError(f"{type(model).__name__} has no module with a spatial (B, C, h, w) output to take maps of; "
                         "pass layer='path' (or a list of paths) as model.named_modules() names them")
    return points


class ActivationMap(AttentionMethod):
    """Activation attention map F(A) of one or several layers.

    Args:
        model: any module.
        layer: a module path, a module, or a list of them; None = every attention point (``feature_info``, else
            traced on the first images; ``layers`` is None until then).
        p: exponent of |A| (p = 1 with ``"sum"`` is F_sum; p = 2 the paper's F_sum^2).
        reduction: ``"mean"``/``"sum"`` (F_sum^p; equal after normalisation) or ``"max"`` (F_max^p).
        normalize: divide each sample's map by its L2 norm at the layer's resolution, as attention transfer does.

    >>> from attnkit.models import create_model
    >>> model = create_model("wrn", depth=10, width=1)
    >>> maps = ActivationMap(model).attribute_layers(torch.randn(2, 3, 16, 16), upsample=False)
    >>> {name: tuple(m.shape) for name, m in maps.items()}
    {'layer1': (2, 16, 16), 'layer2': (2, 8, 8), 'layer3': (2, 4, 4)}
    """

    name = "activation"
    uses_target = False

    def __init__(
        self,
        model: nn.Module,
        layer: LayerSpec | None = None,
        p: float = 2.0,
        reduction: str = "mean",
        normalize: bool = True,
    ) -> None:
        super().__init__(model)
        layers = default_layers(model) if layer is None else layer_paths(model, layer)
        check_positive("p", p)
        check_reduction(reduction)
        self.layers, self.p, self.reduction, self.normalize = layers, float(p), reduction, normalize

    def attribute_layers(
        self, images: Tensor, target: Target = None, *, upsample: bool = True, batch_size: int | None = None
    ) -> dict[str, Tensor]:
        """One map per layer, {path: (B, H, W)} (or each layer's own (B, h, w) with ``upsample=False``)."""
        self._trace(images)
        return self._run(lambda x, _: self._maps(x, self.layers), images, target, upsample, batch_size)

    def _attribute(self, images: Tensor, target: Tensor | None) -> Tensor:
        self._trace(images)
        return self._maps(images, self.layers[-1:])[self.layers[-1]]

    def _trace(self, images: Tensor) -> None:
        if self.layers is None:  # a model without feature_info: its points, traced once on one image
            self.layers = default_layers(self.model, images[:1])

    def _maps(self, images: Tensor, layers: list[str]) -> dict[str, Tensor]:
        capture = FeatureCapture(self.model, layers, detach=True, copy=True)
        with torch.no_grad(), capture:
            self.model(images)
        maps = {}
        for path, features in zip(layers, capture.ordered()):
            check_features(features, f"the output of layer {path!r}")
            maps[path] = attention_map(features, p=self.p, reduction=self.reduction, normalize=self.normalize)
        return maps  # each (B, C, h, w) -> (B, h, w)
