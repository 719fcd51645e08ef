"""What every class-activation-map method shares: its layers, their fusion, test-time smoothing, ReLU.

A CAM method weights a layer's activations A (B, C, h, w) element-wise, W ⊙ A (the weights W differ per method:
Grad-CAM's channel means of the gradient, Score-CAM's softmax of masked scores, ...), and reduces over channels:

    map = ReLU(sum_k W_k ⊙ A_k)                  (B, h, w)
    map = ReLU(first_component(W ⊙ A))           with ``eigen_smooth=True``

(pytorch-grad-cam's convention: the ReLU comes last, after the reduction, for every method.)

* **Layers.** ``layer`` is a module path, a module, or a list of them; None is the module producing
  ``model.forward_features``' output (the attnkit model contract's last feature map, found on the first call
  with :func:`attnkit.features.output_module`), or for a model without ``forward_features`` (torchvision's, a
  ``Sequential``) the last of its traced attention points (:func:`attnkit.features.resolution_groups`), the last
  spatial map before global pooling.
* **Several layers** are fused by this rule (:func:`fuse_layers`), applied to the maps of one batch after each
  layer's own reduction and ReLU (with ``relu=False``, to the signed maps):

  1. each layer's (B, h_i, w_i) map is scaled per image to [0, 1]: its minimum -> 0, its maximum -> 1, a flat map
     -> all 0 (:func:`scale_per_image`);
  2. each scaled map is resized to the size of the layer with the most positions h_i * w_i (the first such
     layer in the order given) with :func:`attnkit.functional.resize_map` (bilinear, ``align_corners=False``);
  3. the resized maps are averaged over the layers, with equal weights; the mean is not rescaled.

  The fused map lies in [0, 1] and reaches 1 only at a position where every layer's resized map is 1 (rarely:
  bilinear upsampling lowers a coarse layer's peak); ``upsample`` then resizes it like any map. A single layer's
  map is not rescaled. With ``aug_smooth`` each view's maps are fused first, then the views are averaged.
  pytorch-grad-cam's rule differs in three steps: it resizes every layer's scaled map to the input resolution
  (not the finest layer's), rescales the mean to [0, 1] again, and adds 1e-7 to the scale's denominator (it
  also scales single-layer maps).
* **aug_smooth**: the map is the mean over six test-time views of each image (no flip / horizontal flip, each
  unshifted and circularly shifted by +s and -s pixels along both axes, s = max(1, min(H, W) // 16)), each view's
  map resized to the input resolution and mapped back (shift undone, flip undone) before averaging. The views
  run as one batch. Maps of a smoothed method are therefore at the input resolution even with ``upsample=False``.
  pytorch-grad-cam's default views are flips and contrast factors (ttach); shifts are ours.
* **eigen_smooth**: the channel sum is replaced by the projection on the first principal component of the
  weighted activations (:func:`first_component`), as pytorch-grad-cam's ``eigen_smooth``.

Papers, formulas and the conventions chosen (fusion, views, the sign of the component): docs/papers.md,
sections 5.1-5.4.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..features import output_module, resolution_groups
from ..functional import resize_map
from ._base import AttentionMethod, LayerSpec, layer_paths

__all__ = ["CAMMethod", "first_component", "fuse_layers", "scale_per_image"]


def first_component(features: Tensor) -> Tensor:
    """Projection of every position on the first principal component of its image's features, (B, C, h, w) -> (B, h, w).

    Per image, the h*w positions are C-dimensional samples; they are centred (the mean over positions is
    subtracted from each channel) and projected on the first right-singular vector v of the centred (h*w, C)
    matrix (Eigen-CAM, Muhammad & Yeasin 2020). A singular vector's sign is arbitrary; we choose it so that the
    projection correlates positively with the centred channel sum (for activations: the map points where the
    total activation is high; for weighted activations: it agrees with the channel-sum CAM).
    """
    batch, _, height, width = features.shape
    samples = features.flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, h*w, C)
    centred = samples - samples.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)  # vh: (B, min(h*w, C), C)
    projection = (centred @ vh[:, 0, :, None]).squeeze(2)  # (B, h*w)
    agreement = (projection * centred.sum(dim=2)).sum(dim=1, keepdim=True)  # (B, 1)
    sign = torch.where(agreement < 0, -1.0, 1.0).to(projection.dtype)
    return (projection * sign).view(batch, height, width)


def scale_per_image(maps: Tensor) -> Tensor:
    """(B, h, w) -> each map scaled to [0, 1]: its minimum -> 0, its maximum -> 1; a flat map -> all 0."""
    flat = maps.flatten(1)
    low, high = flat.amin(dim=1, keepdim=True), flat.amax(dim=1, keepdim=True)
    span = high - low
    safe = torch.where(span > 0, span, torch.ones_like(span))  # no 0 / 0, also not in the backward
    return torch.where(span > 0, (flat - low) / safe, torch.zeros_like(flat)).view_as(maps)


def fuse_layers(maps: list[Tensor]) -> Tensor:
    """Several layers' (B, h_i, w_i) maps -> their mean after scaling each to [0, 1], at the size of the layer with
    the most positions (the module docstring's rule); one map is returned unchanged.

    >>> fuse_layers([torch.tensor([[[0.0, 2.0], [4.0, 8.0]]]), torch.tensor([[[3.0]]])])  # the 1 x 1 map is flat
    tensor([[[0.0000, 0.1250],
             [0.2500, 0.5000]]])
    """
    if len(maps) == 1:
        return maps[0]
    size = max((tuple(m.shape[-2:]) for m in maps), key=lambda hw: hw[0] * hw[1])
    return torch.stack([resize_map(scale_per_image(m), size) for m in maps]).mean(dim=0)


@dataclass(frozen=True)
class _View:
    """One test-time view: an optional horizontal flip, then a circular shift by (dy, dx) pixels."""

    flip: bool
    dy: int
    dx: int

    def apply(self, images: Tensor) -> Tensor:
        images = images.flip(-1) if self.flip else images
        return torch.roll(images, shifts=(self.dy, self.dx), dims=(-2, -1)) if self.dy or self.dx else images

    def undo(self, maps: Tensor) -> Tensor:
        maps = torch.roll(maps, shifts=(-self.dy, -self.dx), dims=(-2, -1)) if self.dy or self.dx else maps
        return maps.flip(-1) if self.flip else maps


def smoothing_views(height: int, width: int) -> list[_View]:
    """The six aug_smooth views of (height, width) images; the identity comes first."""
    s = max(1, min(height, width) // 16)
    return [_View(flip, d, d) for flip in (False, True) for d in (0, s, -s)]


class CAMMethod(AttentionMethod):
    """Base of the CAM family: ``Method(model, layer=None, relu=True, aug_smooth=False, eigen_smooth=False)``.

    Subclasses implement :meth:`_weighted_activations`: the W ⊙ A of every layer for a batch that holds
    ``repeats`` views of the images (the identity view first).
    """

    def __init__(
        self,
        model: nn.Module,
        layer: LayerSpec | None = None,
        *,
        relu: bool = True,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
    ) -> None:
        super().__init__(model)
        self.layers = None if layer is None else layer_paths(model, layer)
        self.relu, self.aug_smooth, self.eigen_smooth = relu, aug_smooth, eigen_smooth
        self._features_layer: str | None = None  # the default layer, once found

    @property
    def layer_name(self) -> str:
        """The layers' module paths, comma-separated (for the default layer: known after the first call)."""
        if self.layers is not None:
            return ", ".join(self.layers)
        return self._features_layer or "(the module producing forward_features' output, or the last traced point)"

    def _paths(self, images: Tensor) -> list[str]:
        if self.layers is not None:
            return self.layers
        if self._features_layer is None:
            probe = images[:1]  # one image: the module structure does not depend on the batch
            if hasattr(self.model, "forward_features"):
                with torch.no_grad():
                    self._features_layer = output_module(self.model, lambda: self.model.forward_features(probe))
            else:  # any other model: the last of its traced attention points, the last spatial map before pooling
                points = resolution_groups(self.model, probe)
                if not points:
                    raise ValueError(f"{type(self.model).__name__} has no module with a spatial output for "
                                     f"{type(self).__name__}; pass layer='module path' (or the module)")
                self._features_layer = points[-1].path
        return [self._features_layer]

    def _check_layer_output(self, path: str, activations: Tensor) -> None:
        if not isinstance(activations, Tensor) or activations.dim() != 4:
            shape = tuple(activations.shape) if isinstance(activations, Tensor) else type(activations).__name__
            raise ValueError(
                f"{type(self).__name__} needs a convolutional layer with (B, C, h, w) output, but "
                f"{path!r} gives shape {shape}; pick a layer before global pooling"
            )

    def _weighted_activations(self, images: Tensor, target: Any, repeats: int, create_graph: bool) -> list[Tensor]:
        raise NotImplementedError

    def _reduce(self, weighted: Tensor) -> Tensor:
        """(B, C, h, w) weighted activations -> (B, h, w) map: channel sum (or first component), then ReLU."""
        maps = first_component(weighted) if self.eigen_smooth else weighted.sum(dim=1)
        return maps.clamp_min(0) if self.relu else maps

    def _maps(self, images: Tensor, target: Any, create_graph: bool = False) -> Tensor:
        views = smoothing_views(images.shape[-2], images.shape[-1]) if self.aug_smooth else []
        batch = torch.cat([view.apply(images) for view in views]) if views else images
        weighted = self._weighted_activations(batch, target, max(1, len(views)), create_graph)
        maps = fuse_layers([self._reduce(w) for w in weighted])  # (V B, h, w)
        if not views:
            return maps
        size = (images.shape[-2], images.shape[-1])
        per_view = resize_map(maps, size).split(images.shape[0])  # V x (B, H, W)
        return torch.stack([view.undo(m) for view, m in zip(views, per_view)]).mean(dim=0)

    def _attribute(self, images: Tensor, target: Any) -> Tensor:
        return self._maps(images, target)
