"""Neuron selectivity transfer (Huang & Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity
Transfer", arXiv 1707.01219, 2017, section 3).

Each channel's (H*W) activation map is one sample of the layer's "neuron selectivity" distribution; the student's
distribution (its C_S channels) is matched to the teacher's (C_T channels) by the squared maximum mean
discrepancy, so channel counts may differ and no adapter is needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..validation import check_int
from .attention import DEFAULT_EPS
from .checks import at_least_float32, check_non_negative, check_pairs, check_weights

__all__ = ["nst_loss"]


def nst_loss(
    student_features: Sequence[Tensor],
    teacher_features: Sequence[Tensor],
    beta: float = 50.0,
    weights: Sequence[float] | None = None,
    *,
    d: int = 2,
    c: float = 0.0,
) -> Tensor:
    """NST loss ``beta * sum_j w_j * mean_b MMD^2(F_S^j[b], F_T^j[b])`` with a polynomial kernel.

    For one image, f_S^i (i < C_S) and f_T^k (k < C_T) are the channels' H*W maps, each divided by its own L2
    norm, and (paper, section 3)

        MMD^2 = 1/C_T^2 sum_{k,k'} K(f_T^k, f_T^k') + 1/C_S^2 sum_{i,i'} K(f_S^i, f_S^i')
                - 2/(C_S C_T) sum_{i,k} K(f_S^i, f_T^k),    K(x, y) = (x^T y + c)^d.

    d = 2, c = 0 is the paper's polynomial kernel (its best) and the only one RepDistiller (``NSTLoss``) and
    mdistiller implement; with it MMD^2 = ||M_S - M_T||_F^2 for the (H*W, H*W) second moments M = mean_i f^i f^i^T.
    The teacher-only term gets no gradient but is kept (as in those codes), so the loss is the MMD^2 itself:
    >= 0 and 0 when the student's channels equal the teacher's (in any order). Where the resolutions differ,
    the larger map is average-pooled to the smaller (per dimension), as RepDistiller does.

    Weight: the paper writes the total loss as ``CE + lambda/2 * MMD^2``; RepDistiller and mdistiller add
    ``50 * MMD^2`` (no 1/2) summed over the middle feature maps (``feat[1:-1]``; mdistiller ``feats[1:]``).
    ``beta`` multiplies MMD^2 directly, default 50 as theirs (= lambda 100 in the paper's notation).

    Args:
        student_features: one (B, C_j, H_j, W_j) tensor per pair, in the student's graph.
        teacher_features: one (B, C'_j, H'_j, W'_j) tensor per pair; never receives gradient.
        beta: loss weight, >= 0.
        weights: optional per-pair multipliers w_j (default 1).
        d: degree of the polynomial kernel (a positive int).
        c: offset of the polynomial kernel (>= 0, so that the kernel is positive definite).

    Returns:
        Scalar loss (float32 or wider).

    >>> teacher = torch.rand(2, 4, 3, 3)
    >>> float(nst_loss([teacher[:, [3, 1, 0, 2]] * 2], [teacher])) < 1e-5  # same channels, any order and scale
    True
    """
    check_pairs(student_features, teacher_features)
    check_non_negative("beta", beta)
    weights = check_weights(weights, len(student_features))
    check_int("d (the kernel degree)", d, minimum=1)
    check_non_negative("c", c)
    terms = []
    for s, t, w in zip(student_features, teacher_features, weights):
        size = (min(s.shape[-2], t.shape[-2]), min(s.shape[-1], t.shape[-1]))
        f_s = _unit_channel_maps(s, size)  # (B, C_S, h*w)
        with torch.no_grad():
            f_t = _unit_channel_maps(t.detach(), size)  # (B, C_T, h*w)
            teacher_term = _mean_kernel(f_t, f_t, d, c)  # (B,)
        mmd2 = teacher_term + _mean_kernel(f_s, f_s, d, c) - 2 * _mean_kernel(f_s, f_t, d, c)  # (B,)
        terms.append(w * mmd2.mean())
    return beta * torch.stack(terms).sum()


def _unit_channel_maps(features: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, C, H, W) -> (B, C, h*w): average-pooled to ``size``, each channel's map divided by its L2 norm."""
    if tuple(features.shape[-2:]) != size:
        features = F.adaptive_avg_pool2d(features, size)
    return F.normalize(at_least_float32(features).flatten(2), dim=2, eps=DEFAULT_EPS)


def _mean_kernel(a: Tensor, b: Tensor, d: int, c: float) -> Tensor:
    """mean_{i,k} (a_i^T b_k + c)^d for each sample: (B, C_a, N), (B, C_b, N) -> (B,)."""
    return (torch.bmm(a, b.transpose(1, 2)) + c).pow(d).mean(dim=(1, 2))
