"""Where a network looks: attention maps of trained models, their pictures, and how good they are.

One class per method, each called the same way (captum's style)::

    maps = GradCAM(model).attribute(images, target=None)   # (B, C, H, W) -> (B, H, W) at input resolution

``target``: None (predicted class), an int, one class per image, or a function of the logits scoring each row
on its own (it also gets perturbed copies and views: :mod:`attnkit.explain._base`); ``layer`` (CAM family): a
module path, a module, or a list of them (maps fused).

=====================  =================================  ===================================================
name                   class                              map
=====================  =================================  ===================================================
activation             :class:`ActivationMap`             F_sum / F_sum^p / F_max^p of a layer (attention transfer)
gradient               :class:`GradientAttention`         sum_c |dL/dx_c| (attention transfer's gradient map)
model                  :class:`ModelAttention`            the model's own attention (LTPA, Residual Attention)
saliency               :class:`Saliency`                  max_c |dS/dx_c| (captum)
integrated_gradients   :class:`IntegratedGradients`       sum_c of Integrated Gradients (captum)
smoothgrad             :class:`SmoothGrad`                max_c |mean over noisy copies of dS/dx_c| (captum)
guided_backprop        :class:`GuidedBackprop`            max_c |guided dS/dx_c| (captum)
cam                    :class:`CAM`                       sum_k w_k A_k (GAP + linear heads)
gradcam                :class:`GradCAM`                   ReLU(sum_k mean(dS/dA_k) A_k)
hirescam               :class:`HiResCAM`                  ReLU(sum_k dS/dA_k ⊙ A_k)
gradcam++              :class:`GradCAMPlusPlus`           Grad-CAM++ closed-form alpha (alias ``gradcampp``)
xgradcam               :class:`XGradCAM`                  XGrad-CAM, activation-weighted gradients
layercam               :class:`LayerCAM`                  ReLU(sum_k ReLU(dS/dA_k) ⊙ A_k)
eigencam               :class:`EigenCAM`                  first principal component of A
scorecam               :class:`ScoreCAM`                  softmax of the scores of channel-masked images
ablationcam            :class:`AblationCAM`               relative score drop when a channel is ablated
occlusion              :class:`Occlusion`                 score drop under a sliding patch (captum)
=====================  =================================  ===================================================

Formulas, papers and conventions: :mod:`.cam` (gradient CAMs, Eigen-CAM, differentiable maps with
``create_graph=True``), :mod:`.perturbation` (Score-CAM, Ablation-CAM), :mod:`.captum_methods`, :mod:`.posthoc`;
the papers in our own words, with every deviation we chose: docs/papers.md, section 5.
:mod:`attnkit.explain.render` draws overlays and grids (PNG), :mod:`attnkit.explain.metrics` scores maps
(localisation, faithfulness, model-randomisation sanity check), :mod:`attnkit.explain.maps` computes and draws
the maps of in-memory models (``attnkit maps`` runs it on saved runs through :mod:`attnkit.report.maps`).
This package depends on attnkit's functional, features and models layers only.
"""

from __future__ import annotations

from torch import nn

from ..validation import suggest
from ._base import AttentionMethod, Target, check_images
from .activation import ActivationMap
from .cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from .captum_methods import GuidedBackprop, IntegratedGradients, SmoothGrad
from .gradient import GradientAttention
from .model_attention import ModelAttention
from .perturbation import AblationCAM, ScoreCAM
from .posthoc import CAM, Occlusion, Saliency

__all__ = [
    "CAM",
    "METHODS",
    "METHOD_ALIASES",
    "AblationCAM",
    "ActivationMap",
    "AttentionMethod",
    "EigenCAM",
    "GradCAM",
    "GradCAMPlusPlus",
    "GradientAttention",
    "GuidedBackprop",
    "HiResCAM",
    "IntegratedGradients",
    "LayerCAM",
    "ModelAttention",
    "Occlusion",
    "Saliency",
    "ScoreCAM",
    "SmoothGrad",
    "Target",
    "XGradCAM",
    "check_images",
    "create_method",
]

METHODS: dict[str, type[AttentionMethod]] = {
    cls.name: cls
    for cls in (
        ActivationMap, GradientAttention, ModelAttention, Saliency, IntegratedGradients, SmoothGrad, GuidedBackprop,
        CAM, GradCAM, HiResCAM, GradCAMPlusPlus, XGradCAM, LayerCAM, EigenCAM, ScoreCAM, AblationCAM, Occlusion,
    )
}
METHOD_ALIASES = {"gradcampp": "gradcam++"}  # other spellings users type -> registry name


def create_method(name: str, model: nn.Module, **kwargs) -> AttentionMethod:
    """Bind the method registered as ``name`` (see :data:`METHODS`, or an alias) to ``model``, with its options.

    >>> from attnkit.models import create_model
    >>> create_method("activation", create_model("wrn_16_1"), p=4).layers
    ['layer1', 'layer2', 'layer3']
    >>> create_method("gradcampp", create_model("wrn_16_1")).name
    'gradcam++'
    """
    name = METHOD_ALIASES.get(name, name)
    if name not in METHODS:
        raise KeyError(f"unknown attention-map method {name!r}; {suggest(name, METHODS)}")
    return METHODS[name](model, **kwargs)
