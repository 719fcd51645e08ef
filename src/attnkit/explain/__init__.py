"""Where a network looks: attention maps of trained models, their pictures, and how good they are.

One class per method, each called the same way (captum's style)::

    maps = GradCAM(model).attribute(images, target=None)   # (B, C, H, W) -> (B, H, W) at input resolution

=============  ===========================  =======================================================
name           class                        map
=============  ===========================  =======================================================
activation     :class:`ActivationMap`       F_sum / F_sum^p / F_max^p of a layer (attention transfer)
gradient       :class:`GradientAttention`   sum_c |dL/dx_c| (attention transfer's gradient map)
model          :class:`ModelAttention`      the model's own attention (LTPA, Residual Attention)
saliency       :class:`Saliency`            max_c |d score / d x_c| (captum)
cam            :class:`CAM`                 sum_k w_k A_k (GAP + linear heads)
gradcam        :class:`GradCAM`             Grad-CAM (captum)
hirescam       :class:`HiResCAM`            HiResCAM
occlusion      :class:`Occlusion`           score drop under a sliding patch (captum)
=============  ===========================  =======================================================

:mod:`attnkit.explain.render` draws overlays and grids (PNG), :mod:`attnkit.explain.metrics` scores maps
(pointing game, energy in the box, model-randomisation sanity check), :mod:`attnkit.explain.maps` runs
methods on models and writes the figures and metrics the ``attnkit maps`` command shows.
"""

from __future__ import annotations

import difflib

from torch import nn

from ._base import AttentionMethod, check_images
from .activation import ActivationMap
from .gradient import GradientAttention
from .model_attention import ModelAttention
from .posthoc import CAM, GradCAM, HiResCAM, Occlusion, Saliency

__all__ = [
    "CAM",
    "METHODS",
    "ActivationMap",
    "AttentionMethod",
    "GradCAM",
    "GradientAttention",
    "HiResCAM",
    "ModelAttention",
    "Occlusion",
    "Saliency",
    "check_images",
    "create_method",
]

METHODS: dict[str, type[AttentionMethod]] = {
    cls.name: cls
    for cls in (ActivationMap, GradientAttention, ModelAttention, Saliency, CAM, GradCAM, HiResCAM, Occlusion)
}


def create_method(name: str, model: nn.Module, **kwargs) -> AttentionMethod:
    """Bind the method registered as ``name`` (see :data:`METHODS`) to ``model``, with its keyword options.

    >>> from attnkit.models import create_model
    >>> create_method("activation", create_model("wrn_16_1"), p=4).layers
    ['layer1', 'layer2', 'layer3']
    """
    if name not in METHODS:
        close = difflib.get_close_matches(name, METHODS, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise KeyError(f"unknown attention-map method {name!r}; {hint}choose from {', '.join(METHODS)}")
    return METHODS[name](model, **kwargs)
