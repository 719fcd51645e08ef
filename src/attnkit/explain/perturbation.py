"""Gradient-free class activation maps that weight each channel by what it does to the score: Score-CAM and
Ablation-CAM. Both need one forward pass per channel and image; both run them batched over channels.

Notation as in :mod:`attnkit.explain.cam`: A (B, C, h, w) the layer's output for the images X, S(.) the score
explained (target-class logit or target function) and map = ReLU(sum_k w_k A_k).

* **Score-CAM** (Wang et al., CVPR-W 2020, Algorithm 1): each channel, resized to the input (bilinear,
  :func:`attnkit.functional.resize_map`) and scaled to [0, 1], masks the image, M_k = scale(up(A_k));
  w = softmax_k(S(X ⊙ M_k)) over the channels. The paper's baseline term S(X_b) is the same for every channel
  and cancels in the softmax. A channel that is constant on an image masks it entirely (M_k = 0): all such
  channels share one forward pass of the zero image.
* **Ablation-CAM** (Desai & Ramaswamy, WACV 2020): w_k = (S(A) - S(A with channel k set to 0)) / |S(A)|, the
  relative drop of the score when the channel is ablated at the layer. The paper divides by S(A); |S(A)| keeps
  the sign of the evidence when a score is negative (identical otherwise); S(A) = 0 leaves the drop undivided.
  A channel that is already 0 everywhere has w_k = 0 without a pass. A module that runs several times in one
  forward (a ReLU module reused inside a block) is captured and ablated at its last call, the one whose output
  A is (as Grad-CAM's gradient is taken there); its earlier calls run unchanged.

Speed. Score-CAM's masked images must go through the whole model: its floor is C forward passes per image,
minus the shared constant channels. Ablation-CAM changes only the layer's output, so the layers before it
(the prefix) run once per chunk of ``channel_batch_size`` channels on the one image, and only the rest of the
model (the suffix) runs on the ablated copies: a forward hook on the layer returns the (n, C, h, w) ablated
activations for a batch of one image, which the later layers broadcast against. Whether the model allows that
(a skip connection concatenated with the ablated batch would not) is checked on each call by running two
unchanged copies that way and comparing their scores with the plain forward; if they differ, or that run
raises the error torch raises for tensors of unequal batch sizes (a ``RuntimeError`` that the same run with one
copy, the prefix's batch size, does not raise), the copies run through the whole model (pytorch-grad-cam's
way). Any other error (another exception type, out of memory, a ``RuntimeError`` that one copy raises too)
propagates: it is the model's or the call's, and the plain path would hide it or fail the same way.

Papers, formulas and the deviations chosen here: docs/papers.md, section 5.3.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..features import FeatureCapture, resolve_module
from ..functional import resize_map
from ..validation import check_int
from ._base import LayerSpec, bind_target, check_logits, target_scores
from ._cam_base import CAMMethod, scale_per_image

__all__ = ["AblationCAM", "ScoreCAM"]


def _check_channel_batch_size(channel_batch_size: int) -> int:
    return check_int("channel_batch_size", channel_batch_size, minimum=1, note=" (copies per forward pass)")


class _ChannelScoreCAM(CAMMethod):
    """Shared: one plain forward for A and the classes; the channel weights come from :meth:`_channel_weights`."""

    scores_own_forward = True

    def __init__(
        self,
        model: nn.Module,
        layer: LayerSpec | None = None,
        *,
        channel_batch_size: int = 64,
        relu: bool = True,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
    ) -> None:
        super().__init__(model, layer, relu=relu, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)
        self.channel_batch_size = _check_channel_batch_size(channel_batch_size)

    def _weighted_activations(self, images: Tensor, target: Any, repeats: int, create_graph: bool) -> list[Tensor]:
        paths = self._paths(images)
        capture = FeatureCapture(self.model, paths, detach=True, copy=True)
        with torch.no_grad():
            with capture:
                logits = check_logits(self.model(images))  # (N, K), N = views x images
            bound = bind_target(target, logits[: images.shape[0] // repeats])
            rows = bound.repeat(repeats) if isinstance(bound, Tensor) else bound  # (N,) classes, or a function
            weighted = []
            for path, activations in zip(paths, capture.ordered()):
                self._check_layer_output(path, activations)
                calls = capture.calls[path]  # a module run several times: A is its last call's output
                weights = self._channel_weights(images, path, activations, rows, logits, calls)  # (N, C)
                weighted.append(weights[:, :, None, None].to(activations.dtype) * activations)
        return weighted

    def _channel_weights(
        self, images: Tensor, path: str, activations: Tensor, rows: Any, logits: Tensor, calls: int
    ) -> Tensor:
        """(N, C) weights; ``calls``: how many times the layer runs in one forward (A is from the last)."""
        raise NotImplementedError


@dataclass(frozen=True)
class _Layer:
    """The ablated module, and how many times it runs in one forward (its last call's output is A)."""

    module: nn.Module
    calls: int


def _row_scores(logits: Tensor, rows: Any, index: Tensor) -> Tensor:
    """Scores of perturbed copies of the images ``index`` (n,): their class's logit, or the target function."""
    return target_scores(logits, rows[index] if isinstance(rows, Tensor) else rows)


class ScoreCAM(_ChannelScoreCAM):
    """Score-CAM: ReLU(sum_k softmax_k(S(X ⊙ M_k)) A_k), M_k = A_k resized and scaled to [0, 1] (Wang et al. 2020).

    Args:
        model, layer, relu, aug_smooth, eigen_smooth: as :class:`attnkit.explain.GradCAM`.
        channel_batch_size: masked images per forward pass (more = faster, more memory). ``attribute``'s
            ``batch_size`` is another thing: the images per chunk.

    >>> from attnkit.models import create_model
    >>> ScoreCAM(create_model("wrn", depth=10, width=1), channel_batch_size=32).attribute(torch.randn(2, 3, 16, 16)).shape
    torch.Size([2, 16, 16])
    """

    name = "scorecam"

    def _channel_weights(
        self, images: Tensor, path: str, activations: Tensor, rows: Any, logits: Tensor, calls: int
    ) -> Tensor:
        count, channels = activations.shape[:2]
        flat = activations.flatten(2)
        varies = flat.amax(dim=2) > flat.amin(dim=2)  # (N, C); a constant channel's mask is all 0
        scores = torch.empty(count, channels, dtype=logits.dtype, device=logits.device)
        pairs = varies.nonzero()  # (P, 2): (image, channel)
        size = (images.shape[-2], images.shape[-1])
        for start in range(0, pairs.shape[0], self.channel_batch_size):
            index, channel = pairs[start : start + self.channel_batch_size].unbind(1)
            masks = scale_per_image(resize_map(activations[index, channel], size))  # (n, H, W) in [0, 1]
            masked = images[index] * masks[:, None].to(images.dtype)  # (n, C_in, H, W)
            scores[index, channel] = _row_scores(check_logits(self.model(masked)), rows, index).to(scores.dtype)
        if not bool(varies.all()):
            blank = check_logits(self.model(torch.zeros_like(images[:1]))).expand(count, -1)  # X ⊙ 0, shared
            constant = ~varies
            scores[constant] = _row_scores(blank, rows, torch.arange(count, device=blank.device))[:, None].expand(
                count, channels
            )[constant].to(scores.dtype)
        return torch.softmax(scores, dim=1)


class AblationCAM(_ChannelScoreCAM):
    """Ablation-CAM: ReLU(sum_k w_k A_k), w_k = (S(A) - S(A, channel k = 0)) / |S(A)| (Desai & Ramaswamy 2020).

    Args:
        model, layer, relu, aug_smooth, eigen_smooth: as :class:`attnkit.explain.GradCAM`.
        channel_batch_size: ablated copies per forward pass of the model after the layer (``attribute``'s
            ``batch_size`` is the images per chunk).
    """

    name = "ablationcam"

    def _channel_weights(
        self, images: Tensor, path: str, activations: Tensor, rows: Any, logits: Tensor, calls: int
    ) -> Tensor:
        layer = _Layer(resolve_module(self.model, path), calls)
        arange = torch.arange(activations.shape[0], device=logits.device)
        original = _row_scores(logits, rows, arange)  # (N,) S(A)
        reuse_prefix = self._prefix_reusable(layer, images[:1], activations[:1], original[:1], rows)
        ablated = original[:, None].repeat(1, activations.shape[1])  # (N, C); an all-zero channel: no change
        live = activations.flatten(2).ne(0).any(dim=2)  # (N, C)
        for i in range(activations.shape[0]):
            channels = live[i].nonzero().squeeze(1)
            for start in range(0, channels.numel(), self.channel_batch_size):
                chosen = channels[start : start + self.channel_batch_size]
                copies = activations[i].expand(chosen.numel(), -1, -1, -1).clone()  # (n, C, h, w)
                copies[torch.arange(chosen.numel(), device=chosen.device), chosen] = 0
                out = self._from_layer(layer, images[i : i + 1], copies, reuse_prefix)
                ablated[i, chosen] = _row_scores(out, rows, arange[i].expand(chosen.numel())).to(ablated.dtype)
        scale = torch.where(original != 0, original.abs(), torch.ones_like(original))
        return (original[:, None] - ablated) / scale[:, None]

    def _from_layer(self, layer: _Layer, image: Tensor, copies: Tensor, reuse_prefix: bool) -> Tensor:
        """Logits (n, K) of the model with the layer's output at its last call (the captured A) replaced by
        ``copies`` (n, C, h, w), for one image; the layer's earlier calls run unchanged."""
        seen = 0

        def replace(module: nn.Module, inputs: Any, output: Tensor) -> Tensor | None:
            nonlocal seen
            seen += 1
            return copies if seen == layer.calls else None

        handle = layer.module.register_forward_hook(replace)
        try:
            inputs = image if reuse_prefix else image.expand(copies.shape[0], *image.shape[1:])
            logits = check_logits(self.model(inputs))
        finally:
            handle.remove()
        if seen != layer.calls:
            raise RuntimeError(f"the layer ran {seen} times in an ablated forward pass but {layer.calls} times in the "
                               "plain one; Ablation-CAM needs a model whose modules run the same way for every input")
        return logits

    def _prefix_reusable(self, layer: _Layer, image: Tensor, activations: Tensor, score: Tensor, rows: Any) -> bool:
        """Do two unchanged copies, run from the layer on one image's prefix, give the plain forward's score?"""
        copies = activations.expand(2, -1, -1, -1).contiguous()
        try:
            out = self._from_layer(layer, image, copies, reuse_prefix=True)
        except RuntimeError as err:  # torch's error for tensors of unequal batch sizes (a concatenation, a bmm)
            if isinstance(err, torch.OutOfMemoryError) or not self._batch_sizes_to_blame(layer, image, activations):
                raise  # a failure of its own, not of the shortcut: the plain path would not mend it
            return False  # run every copy through the whole model
        if out.shape[0] != 2:
            return False
        scores = _row_scores(out, rows, torch.zeros(2, dtype=torch.long, device=out.device))
        return bool(torch.allclose(scores, score.expand(2), rtol=1e-4, atol=1e-5))

    def _batch_sizes_to_blame(self, layer: _Layer, image: Tensor, activations: Tensor) -> bool:
        """Does the shortcut run with one copy, whose batch equals the prefix's? Then its failure with two copies
        came from the unequal batch sizes, the one failure the shortcut expects."""
        try:
            self._from_layer(layer, image, activations, reuse_prefix=True)
        except RuntimeError:
            return False
        return True
