"""Activation-based attention maps (Zagoruyko & Komodakis, ICLR 2017, section 3.1).

A convolutional layer's output A of shape (B, C, H, W) is reduced over channels to a spatial map:

    F_sum(A)   = sum_c |A_c|        (p = 1, reduction="sum")
    F_sum^p(A) = sum_c |A_c|^p      (reduction="sum"; "mean" only rescales by 1/C)
    F_max^p(A) = max_c |A_c|^p      (reduction="max")

and each sample's flattened map is divided by its own L2 norm (the paper: "without it, training fails").

Two implementations give the same numbers:

* the *eager* formula, plain autograd (``fused=False``), as the official code writes it
  (``F.normalize(a.pow(2).mean(1).view(B, -1))``);
* the *fused* :class:`AttentionMapFunction` (default), whose backward is derived by hand (docs/papers.md,
  section 1.6: dQ/dA = p |A|^(p-1) sign(A), dY_i/dQ_j = delta_ij/||Q|| - Q_i Q_j/||Q||^3). Between forward
  and backward it keeps only the input (which the network holds anyway), the (B, H, W) output and the
  per-sample norms, never an activation-sized buffer; the backward writes dL/dA in one pass over A.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..validation import choices
from .checks import check_features, check_positive

__all__ = ["REDUCTIONS", "AttentionMapFunction", "Reduction", "attention_map", "check_reduction", "normalize_map", "resize_map"]

Reduction = Literal["mean", "sum", "max"]  # channel reduction: "mean"/"sum" = F_sum^p, "max" = F_max^p
REDUCTIONS: tuple[str, ...] = choices(Reduction)
DEFAULT_EPS = 1e-12  # as F.normalize and the official code's l2_normalize


def check_reduction(reduction: str) -> None:
    """Raise unless ``reduction`` is one of :data:`REDUCTIONS`."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """Maps are accumulated in at least float32, also for bf16/fp16 features (sums of many squares)."""
    return torch.promote_types(dtype, torch.float32)


def _is_channels_last(a: Tensor) -> bool:
    return a.is_contiguous(memory_format=torch.channels_last) and not a.is_contiguous()


# Below this many elements per channel slice (B*H*W), one kernel call costs more than the work it does.
_MIN_SLICE_FOR_CHANNEL_LOOP = 1 << 16


def _reduce_channels(a: Tensor, p: float, reduction: Reduction) -> Tensor:
    """Q = reduce_c |A_c|^p: (B, C, H, W) -> (B, H, W), dtype at least float32.

    The kernel is chosen by measurement (`attnkit bench core`): on the CPU, reducing dim 1 of a large NCHW
    tensor through ``vector_norm`` or ``pow().sum()`` is 5-10x slower than accumulating one contiguous
    (B, H, W) channel slice at a time, which also needs no activation-sized temporary. Small tensors (slices
    under 64K elements) use one cache-resident ``|a|^p`` temporary instead of C tiny kernels. channels_last
    tensors (C innermost) and accelerators use one fused ``vector_norm`` reduction.
    """
    acc = _accumulate_dtype(a.dtype)
    if reduction == "max":
        # max_c |a| = max(max_c a, -min_c a): two reductions, no |a| temporary.
        q = torch.maximum(a.amax(dim=1), a.amin(dim=1).neg()).to(acc)
        return q if p == 1 else q.pow(p)
    nchw_on_cpu = a.device.type == "cpu" and not _is_channels_last(a)
    if nchw_on_cpu and a[:, 0].numel() >= _MIN_SLICE_FOR_CHANNEL_LOOP:
        q = torch.zeros(a.shape[0], a.shape[2], a.shape[3], dtype=acc, device=a.device)
        for c in range(a.shape[1]):
            channel = a[:, c]  # (B, H, W), contiguous
            if p == 2:
                q.addcmul_(channel, channel)
            else:
                q.add_(_abs_pow(channel, p))
    elif nchw_on_cpu:
        q = _abs_pow(a.to(acc), p).sum(dim=1)
    else:
        q = torch.linalg.vector_norm(a, ord=p, dim=1, dtype=acc).pow(p)
    return q.div_(a.shape[1]) if reduction == "mean" else q


def _abs_pow(x: Tensor, p: float) -> Tensor:
    if p == 2:
        return x.square()
    return x.abs() if p == 1 else x.abs().pow(p)


def _reduce_channels_backward(a: Tensor, grad_q: Tensor, p: float, reduction: Reduction) -> Tensor:
    """dL/dA from dL/dQ for Q = reduce_c |A_c|^p; (B, C, H, W), (B, H, W) -> (B, C, H, W) in A's dtype."""
    scale = 1.0 / a.shape[1] if reduction == "mean" else 1.0
    grad_q = grad_q.unsqueeze(1)  # (B, 1, H, W), broadcast over channels
    if reduction == "max":
        # Only the channel holding the maximum receives gradient (first one on ties, as torch.max does).
        index = a.abs().argmax(dim=1, keepdim=True)  # (B, 1, H, W)
        picked = a.gather(1, index).to(grad_q.dtype)
        value = grad_q * _abs_pow_derivative(picked, p)
        return torch.zeros_like(a).scatter_(1, index, value.to(a.dtype))
    if p == 2:
        return a * (grad_q * (2.0 * scale)).to(a.dtype)  # one pass over A: dQ/dA = 2A (docs/papers.md, 1.6)
    return (_abs_pow_derivative(a, p) * (grad_q * scale)).to(a.dtype)


def _abs_pow_derivative(a: Tensor, p: float) -> Tensor:
    """d|a|^p/da = p |a|^(p-1) sign(a), taken as 0 at a = 0 (also for p < 1, where it is unbounded)."""
    if p == 1:
        return a.sign()
    derivative = a.abs().pow(p - 1).mul_(a.sign()).mul_(p)
    return derivative.masked_fill_(a == 0, 0) if p < 1 else derivative


class AttentionMapFunction(torch.autograd.Function):
    """Fused attention map Y = Q / max(||Q||_2, eps) with Q = reduce_c |A_c|^p and a hand-derived backward.

    ``AttentionMapFunction.apply(features, p, reduction, normalize, eps)``: (B, C, H, W) -> (B, H, W).
    Saved for backward: the input features, the output map (B, H, W) and the norms (B,) - no
    activation-sized buffer. The backward is first-order only (``once_differentiable``); use the eager
    formula (``attention_map(..., fused=False)``) for higher orders.
    """

    @staticmethod
    def forward(ctx, features: Tensor, p: float, reduction: Reduction, normalize: bool, eps: float) -> Tensor:
        if normalize and reduction == "mean":
            # Normalisation removes the 1/C of the mean: Q_mean/max(||Q_mean||, eps) = Q_sum/max(||Q_sum||, C*eps).
            reduction, eps = "sum", eps * features.shape[1]
        q = _reduce_channels(features, p, reduction)  # (B, H, W)
        ctx.p, ctx.reduction, ctx.normalize, ctx.eps = p, reduction, normalize, eps
        if not normalize:
            ctx.save_for_backward(features, q)
            return q
        norm = torch.linalg.vector_norm(q.flatten(1), dim=1)[:, None, None]  # (B, 1, 1)
        y = q.div_(norm.clamp_min(eps))
        ctx.save_for_backward(features, y, norm)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        features, y, *rest = ctx.saved_tensors
        grad_q = grad_out
        if ctx.normalize:
            (norm,) = rest
            # docs/papers.md, 1.6: dY_i/dQ_j = delta_ij/||Q|| - Q_i Q_j/||Q||^3, so g_Q = (g - Y <g, Y>) / ||Q||.
            # Where the norm was clamped to eps, Y = Q/eps and the Jacobian is just I/eps.
            dot = (grad_out * y).sum(dim=(1, 2), keepdim=True).masked_fill_(norm <= ctx.eps, 0)  # (B, 1, 1)
            grad_q = (grad_out - y * dot) / norm.clamp_min(ctx.eps)
        grad_features = _reduce_channels_backward(features, grad_q, ctx.p, ctx.reduction)
        return grad_features, None, None, None, None


def normalize_map(maps: Tensor, eps: float = DEFAULT_EPS) -> Tensor:
    """Divide each sample's map by its L2 norm (over all positions): (B, H, W) -> (B, H, W)."""
    norm = torch.linalg.vector_norm(maps.flatten(1), dim=1).clamp_min(eps)  # (B,)
    return maps / norm[:, None, None]


def resize_map(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize (B, H, W) maps to ``size`` = (h, w): area averaging when shrinking, bilinear when enlarging.

    Area averaging keeps every position's mass when a 32x32 student map meets a 16x16 teacher map; bilinear
    (align_corners=False) interpolates smoothly otherwise. Sizes need not be square.
    """
    h, w = _check_size(size)
    if maps.shape[-2:] == (h, w):
        return maps
    x = maps.unsqueeze(1)  # (B, 1, H, W)
    if h <= maps.shape[-2] and w <= maps.shape[-1]:
        x = F.adaptive_avg_pool2d(x, (h, w))
    else:
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    return x.squeeze(1)


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    ):
        raise ValueError(f"size must be a pair of positive ints (height, width), got {size!r}")
    return int(size[0]), int(size[1])


def attention_map(
    features: Tensor,
    p: float = 2.0,
    reduction: Reduction = "mean",
    normalize: bool = True,
    size: tuple[int, int] | None = None,
    eps: float = DEFAULT_EPS,
    fused: bool = True,
) -> Tensor:
    """Activation-based spatial attention map of a layer output (Zagoruyko & Komodakis 2017, eq. 1-3).

    Args:
        features: (B, C, H, W) layer output A. Any floating dtype; the map is computed in at least float32.
        p: exponent applied to |A| before the channel reduction, any real p > 0 (p = 2 is the paper's best).
        reduction: ``"mean"`` or ``"sum"`` over channels gives F_sum^p (the two differ only by the factor C,
            which normalisation removes); ``"max"`` gives F_max^p.
        normalize: divide each sample's flattened map by its own L2 norm (clamped below by ``eps``).
        size: optional (h, w) to resize the map to (before normalising), for comparing maps of layers with
            different resolutions; non-square sizes are allowed.
        eps: lower bound of the norm, so that an all-zero map stays zero instead of becoming NaN.
        fused: use :class:`AttentionMapFunction` (hand-derived backward, less memory traffic). ``False``
            evaluates the plain formula with autograd; both agree to rounding.

    Returns:
        (B, H, W) map, or (B, h, w) when ``size`` is given.

    >>> a = torch.tensor([[[[1.0, 0.0]], [[1.0, 2.0]]]])  # (1, 2, 1, 2)
    >>> attention_map(a, p=2, reduction="sum", normalize=False)
    tensor([[[2., 4.]]])
    """
    check_features(features)
    check_positive("p", p)
    check_reduction(reduction)
    check_positive("eps", eps)
    resize = size is not None and tuple(features.shape[-2:]) != _check_size(size)
    if fused:
        maps = AttentionMapFunction.apply(features, float(p), reduction, normalize and not resize, eps)
    else:
        maps = _attention_map_eager(features, float(p), reduction)
        if normalize and not resize:
            maps = normalize_map(maps, eps)
    if resize:
        maps = resize_map(maps, size)
        if normalize:
            maps = normalize_map(maps, eps)
    return maps


def _attention_map_eager(features: Tensor, p: float, reduction: Reduction) -> Tensor:
    """The plain autograd formula, (B, C, H, W) -> (B, H, W), as the official code writes it for p = 2."""
    powered = _abs_pow(features.to(_accumulate_dtype(features.dtype)), p)
    if reduction == "max":
        return powered.amax(dim=1)
    return powered.mean(dim=1) if reduction == "mean" else powered.sum(dim=1)
