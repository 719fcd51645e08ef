"""Activation-based transfer losses: attention transfer (AT) and full activation transfer (F-ActT).

Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017, section 3.1 and Table 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..validation import choices
from .attention import DEFAULT_EPS, Reduction, attention_map
from .checks import (
    at_least_float32,
    check_non_negative,
    check_pairs,
    check_positive,
    check_weights,
    find_non_finite_pair,
)

__all__ = ["MODES", "Mode", "activation_transfer_loss", "at_loss", "attention_pair_maps"]

Mode = Literal["code", "paper"]  # AT's scale: "code" (the official code, published numbers) or "paper" (eq. 2 as printed)
MODES: tuple[str, ...] = choices(Mode)


def attention_pair_maps(
    student_features: Tensor,
    teacher_features: Tensor,
    p: float = 2.0,
    reduction: Reduction = "mean",
    eps: float = DEFAULT_EPS,
    fused: bool = True,
) -> tuple[Tensor, Tensor]:
    """Normalised student and teacher attention maps of one layer pair, flattened to (B, h*w).

    When the two layers have different resolutions, the larger map is resized to the smaller (per dimension)
    before normalisation, as the paper allows ("attention maps can be interpolated to match their shapes").
    The teacher map is computed without gradient.
    """
    size = (
        min(student_features.shape[-2], teacher_features.shape[-2]),
        min(student_features.shape[-1], teacher_features.shape[-1]),
    )
    student_map = attention_map(student_features, p, reduction, size=size, eps=eps, fused=fused)
    with torch.no_grad():
        teacher_map = attention_map(teacher_features.detach(), p, reduction, size=size, eps=eps, fused=fused)
    return student_map.flatten(1), teacher_map.flatten(1)


def at_loss(
    student_features: Sequence[Tensor],
    teacher_features: Sequence[Tensor],
    p: float = 2.0,
    beta: float = 1000.0,
    mode: Mode = "code",
    weights: Sequence[float] | None = None,
    *,
    reduction: Reduction = "mean",
    norm_p: float | None = None,
    eps: float = DEFAULT_EPS,
    fused: bool = True,
    check_finite: bool = True,
) -> Tensor:
    """Attention-transfer loss summed over layer pairs j (Zagoruyko & Komodakis 2017, eq. 2).

    With Y_S^j, Y_T^j the L2-normalised attention maps (B, h*w) of pair j and w_j its weight:

    * ``mode="code"`` (default; the published numbers come from it):
      ``beta * sum_j w_j * mean_{b, i} (Y_S^j - Y_T^j)^2``, the official code's ``(at(x) - at(y)).pow(2).mean()``
      times beta; the mean over batch and positions is its reading of the paper's normalisation of beta.
    * ``mode="paper"``: the equation as printed with the paper's normalisation of beta. Eq. 2 adds
      ``beta/2 * sum_j || Q_S^j / ||Q_S^j||_2 - Q_T^j / ||Q_T^j||_2 ||_p`` per image, and section 4.1 sets beta
      "to 10^3 divided by number of elements in attention map and batch size for each layer". So, with
      ``beta = 1000`` and n_j = h_j * w_j the number of elements of pair j's (compared) map,
      ``beta/2 * sum_j w_j / n_j * mean_b ||Y_S^j[b] - Y_T^j[b]||_{norm_p}``, i.e. the sum over the batch
      weighted by 1000 / (n_j * B). The norm is not squared, unlike the code's difference.

    Args:
        student_features: one (B, C_j, H_j, W_j) tensor per pair, in the student's graph.
        teacher_features: one (B, C'_j, H'_j, W'_j) tensor per pair; never receives gradient.
        p: exponent of the attention function F_sum^p / F_max^p (> 0).
        beta: loss weight (1000 in the paper and official code); must be >= 0.
        mode: ``"code"`` or ``"paper"``, see above.
        weights: optional per-pair multipliers w_j (default 1).
        reduction: channel reduction of the attention function: "mean"/"sum" (F_sum^p) or "max" (F_max^p).
        norm_p: order of the norm of the difference in "paper" mode; ``None`` uses ``p``, as the paper uses
            one p for both.
        eps: lower bound of the map norms.
        fused: use the fused attention-map operation (see :func:`attention_map`).
        check_finite: raise on a NaN/inf loss. The check reads the loss back to the host, which on a GPU
            costs a synchronisation per call; a training loop that watches its total loss may turn it off.

    Returns:
        Scalar loss (float32 or wider).

    Raises:
        ValueError: empty or unequal pair lists, non-4-D features, different batch sizes, p <= 0, or NaN/inf
            in any features (the message names the pair and side).
    """
    check_pairs(student_features, teacher_features)
    check_positive("p", p)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    check_non_negative("beta", beta)
    weights = check_weights(weights, len(student_features))
    if norm_p is not None:
        check_positive("norm_p", norm_p)

    terms = []
    for s, t, w in zip(student_features, teacher_features, weights):
        ys, yt = attention_pair_maps(s, t, p, reduction, eps, fused)
        if mode == "code":
            term = (ys - yt).pow(2).mean()
        else:  # per image the norm of the difference; beta / (map elements * batch size), as the paper sets it
            term = torch.linalg.vector_norm(ys - yt, ord=norm_p or p, dim=1).mean() / ys.shape[1]
        terms.append(w * term)
    loss = torch.stack(terms).sum() * (beta if mode == "code" else beta / 2)
    if check_finite:
        _raise_if_non_finite(loss, student_features, teacher_features)
    return loss


def activation_transfer_loss(
    student_features: Sequence[Tensor],
    teacher_features: Sequence[Tensor],
    adapters: Sequence[nn.Module | None] | None = None,
    beta: float = 1.0,
    weights: Sequence[float] | None = None,
    normalize: bool = True,
    check_finite: bool = True,
) -> Tensor:
    """Full activation transfer (F-ActT), the baseline of the paper's Table 1.

    ``beta * sum_j w_j * mean_b || N(adapter_j(A_S^j)[b]) - N(A_T^j[b]) ||_2^2``, where N divides each sample's
    flattened (C*H*W) activation by its L2 norm. Each pair's term lies in [0, 4]. A learnable 1x1 convolution
    ``adapter_j`` maps the student's channels to the teacher's where they differ (FitNets' regressor;
    :class:`attnkit.losses.ActivationTransferLoss` creates and owns them); where resolutions differ the
    student activation is resized to the teacher's (bilinear).

    The paper gives neither the weight nor the scaling of F-ActT. We normalise per sample, as AT does its
    maps, because raw activations of pre-activation residual networks grow with depth and a raw L2 term then
    swamps the cross-entropy and diverges (measured: WRN-16-1 <- WRN-16-2 at lr 0.05 blew up in one epoch);
    ``normalize=False`` gives the raw mean squared difference.

    Args:
        student_features: one (B, C_j, H_j, W_j) tensor per pair.
        teacher_features: one (B, C'_j, H'_j, W'_j) tensor per pair; never receives gradient.
        adapters: one module (or None) per pair, applied to the student features.
        beta: loss weight, >= 0.
        weights: optional per-pair multipliers.
        normalize: per-sample L2 normalisation (default); False = raw ``mean (A_S - A_T)^2``.
        check_finite: raise on a NaN/inf loss, naming the pair (see :func:`at_loss`).

    Returns:
        Scalar loss.
    """
    check_pairs(student_features, teacher_features)
    check_non_negative("beta", beta)
    weights = check_weights(weights, len(student_features))
    if adapters is None:
        adapters = [None] * len(student_features)
    if len(adapters) != len(student_features):
        raise ValueError(f"got {len(adapters)} adapters for {len(student_features)} layer pairs; give one per pair")

    terms = []
    for j, (s, t, adapter, w) in enumerate(zip(student_features, teacher_features, adapters, weights)):
        if adapter is not None:
            s = adapter(s)
        if s.shape[1] != t.shape[1]:
            raise ValueError(
                f"pair {j}: student has {s.shape[1]} channels but teacher has {t.shape[1]}; "
                "pass a 1x1 conv adapter for this pair (attnkit.losses.ActivationTransferLoss makes them)"
            )
        if s.shape[-2:] != t.shape[-2:]:
            s = F.interpolate(s, size=t.shape[-2:], mode="bilinear", align_corners=False)
        s, t = at_least_float32(s).flatten(1), at_least_float32(t.detach()).flatten(1)  # (B, C*H*W)
        if normalize:
            diff = F.normalize(s, dim=1, eps=DEFAULT_EPS) - F.normalize(t, dim=1, eps=DEFAULT_EPS)
            terms.append(w * diff.pow(2).sum(dim=1).mean())
        else:
            terms.append(w * (s - t).pow(2).mean())
    loss = torch.stack(terms).sum() * beta
    if check_finite:
        _raise_if_non_finite(loss, student_features, teacher_features)
    return loss


def _raise_if_non_finite(loss: Tensor, student: Sequence[Tensor], teacher: Sequence[Tensor]) -> None:
    """One check of the scalar loss; only when it is NaN/inf, look for the pair that caused it."""
    if bool(torch.isfinite(loss)):
        return
    culprit = find_non_finite_pair(student, teacher)
    where = culprit or "the features are finite but the loss overflowed (try float32 features)"
    raise ValueError(f"transfer loss is not finite: {where}; check the model for diverged weights or bad input")
