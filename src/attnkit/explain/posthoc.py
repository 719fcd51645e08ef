"""Post-hoc attention maps of any trained classifier: saliency, occlusion and CAM.

* Saliency (Simonyan et al. 2013): max_c |d score_t / d x_c|, at input resolution.  -> ``captum.attr.Saliency``
* Occlusion (Zeiler & Fergus 2014): slide a window set to a baseline over the image; each pixel's value is the
  mean drop of the target score over the windows covering it.                       -> ``captum.attr.Occlusion``
* CAM (Zhou et al. 2016): sum_k w_{t,k} A_k for a GAP + linear head (A = the last feature map, w = the
  classifier weights). Written here (captum has no CAM).

"score_t" is the target class's logit (or a target function's value, for saliency and occlusion). For a
GAP + linear head, d score_t / d A_k = w_{t,k} / (h w) everywhere, so Grad-CAM = HiResCAM = ReLU(CAM) / (h w)
(:mod:`attnkit.explain.cam`). captum's hooks are removed after every call, also when it fails.
Papers and formulas: docs/papers.md, section 5 (its table).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..features import FeatureCapture, resolve_module
from ..functional.checks import check_features
from ..validation import check_int
from ._base import AttentionMethod, bind_target, layer_paths, require_contract
from ._captum import captum_attr, captum_forward

__all__ = ["CAM", "Occlusion", "Saliency"]

FEATURES_LAYER = "forward_features"  # CAM's default layer: the output of model.forward_features


class CAM(AttentionMethod):
    """Class activation map sum_k w_{t,k} A_k (Zhou et al. 2016), for a GAP + linear head, (B, h, w).

    By default A is ``model.forward_features(x)`` and w ``model.get_classifier().weight``; models whose head
    is not GAP + linear (``head_is_gap_linear = False``, e.g. LTPA) are refused. For any other model pass both
    ``layer`` (the module whose (B, C, h, w) output is globally pooled) and ``classifier`` (the ``nn.Linear``
    that reads the pooled vector), each a module path or the module itself. The classifier bias is left out
    (it is the same everywhere). ``target`` must be class indices.

    Args:
        relu: clip negative evidence to 0 (default False: Zhou et al.'s map, negative values included).
    """

    name = "cam"
    scores_own_forward = True  # the classes come from the same forward pass as the features

    def __init__(
        self, model: nn.Module, layer: str | nn.Module | None = None, classifier: str | nn.Module | None = None,
        relu: bool = False,
    ) -> None:
        super().__init__(model)
        if (layer is None) != (classifier is None):
            raise ValueError("CAM needs both layer= and classifier= (module paths) or neither (the model contract)")
        if layer is None:
            if getattr(model, "head_is_gap_linear", True) is False:
                raise ValueError(
                    f"CAM needs a global-average-pooling + linear head, but {type(model).__name__}'s head is not one "
                    "(head_is_gap_linear = False); use gradcam or hirescam, which work for any head"
                )
            fix = "pass layer='feature map path' and classifier='linear layer path'"
            require_contract(model, ("forward_features", "forward_head", "get_classifier"), "CAM", fix)
        else:
            (layer,), (classifier,) = layer_paths(model, layer), layer_paths(model, classifier)
        self.layer, self.classifier, self.relu = layer, classifier, relu

    @property
    def layer_name(self) -> str:
        return FEATURES_LAYER if self.layer is None else self.layer

    def _attribute(self, images: Tensor, target) -> Tensor:
        target = self._class_target(target)
        with torch.no_grad():
            features, linear, logits = self._features_classifier_logits(images)
        check_features(features, f"the output of layer {self.layer_name!r}")
        if not isinstance(linear, nn.Linear) or linear.in_features != features.shape[1]:
            raise ValueError(
                f"CAM needs an nn.Linear classifier reading the {features.shape[1]} pooled channels of "
                f"{self.layer_name!r}, got {linear}; pass the matching layer= and classifier="
            )
        classes = bind_target(target, logits)  # (B,): None -> the predictions of this very forward pass
        weights = linear.weight[classes].to(features.dtype)  # (B, C): w_{t_b, k}
        maps = torch.einsum("bc,bchw->bhw", weights, features)  # (B, C, h, w) -> (B, h, w)
        return maps.clamp_min(0) if self.relu else maps

    def _features_classifier_logits(self, images: Tensor) -> tuple[Tensor, nn.Module, Tensor]:
        if self.layer is None:
            features = self.model.forward_features(images)
            return features, self.model.get_classifier(), self.model.forward_head(features)
        capture = FeatureCapture(self.model, [self.layer], detach=True, copy=True)
        with capture:
            logits = self.model(images)
        (features,) = capture.ordered()
        return features, resolve_module(self.model, self.classifier), logits


class Saliency(AttentionMethod):
    """Saliency map max_c |d score_t / d x_c| (Simonyan et al. 2013) through ``captum.attr.Saliency``, (B, H, W).

    >>> from attnkit.models import create_model
    >>> model = create_model("wrn", depth=10, width=1)
    >>> Saliency(model).attribute(torch.randn(2, 3, 16, 16), target=[1, 2]).shape
    torch.Size([2, 16, 16])
    """

    name = "saliency"
    scores_own_forward = True  # given classes cost no extra forward (see attnkit.explain._captum)

    def _attribute(self, images: Tensor, target) -> Tensor:
        forward, classes = captum_forward(self.model, images, target)
        inputs = images.clone().requires_grad_(True)  # a private copy: captum differentiates with respect to it
        grads = captum_attr().Saliency(forward).attribute(inputs, target=classes, abs=True)
        return grads.detach().amax(dim=1)  # (B, C, H, W) -> (B, H, W)


class Occlusion(AttentionMethod):
    """Occlusion map through ``captum.attr.Occlusion``: score drop when a window is set to ``baseline``, (B, H, W).

    Args:
        window: (height, width) of the occluding patch, or one int; None = a quarter of the image side.
        stride: step of the window, or one int; None = half the window.
        baseline: value written into the window. Images are normalised, so 0 is the data set's mean colour.
        perturbations_per_eval: occluded copies per forward pass (more = faster, more memory).

    The window covers every colour channel, so the attribution is the same in each; the map is one channel.
    """

    name = "occlusion"
    scores_own_forward = True

    def __init__(
        self,
        model: nn.Module,
        window: int | tuple[int, int] | None = None,
        stride: int | tuple[int, int] | None = None,
        baseline: float = 0.0,
        perturbations_per_eval: int = 16,
    ) -> None:
        super().__init__(model)
        self.window = None if window is None else _pair("window", window)
        self.stride = None if stride is None else _pair("stride", stride)
        check_int("perturbations_per_eval", perturbations_per_eval, minimum=1)
        self.baseline, self.perturbations_per_eval = float(baseline), perturbations_per_eval

    def window_and_stride(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """The window and stride used on (height, width) images (resolving the defaults)."""
        window = self.window or (max(1, height // 4), max(1, width // 4))
        if window[0] > height or window[1] > width:
            raise ValueError(f"occlusion window {window} is larger than the images ({height}, {width}); pass a smaller window=")
        stride = self.stride or (max(1, window[0] // 2), max(1, window[1] // 2))
        return window, stride

    def _attribute(self, images: Tensor, target) -> Tensor:
        channels, height, width = images.shape[1:]
        (wh, ww), (sh, sw) = self.window_and_stride(height, width)
        forward, classes = captum_forward(self.model, images, target)
        with torch.no_grad():
            drops = captum_attr().Occlusion(forward).attribute(
                images,
                sliding_window_shapes=(channels, wh, ww),
                strides=(channels, sh, sw),
                baselines=self.baseline,
                target=classes,
                perturbations_per_eval=self.perturbations_per_eval,
            )  # (B, C, H, W), equal over C
        return drops.mean(dim=1)  # -> (B, H, W)


def _pair(name: str, value: int | tuple[int, int]) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of them (height, width), got {value!r}")
    return pair
