"""Logit distillation: knowledge distillation, logit standardisation and decoupled KD.

* KD (Hinton, Vinyals & Dean 2015), as the attention-transfer code uses it:
  ``T^2 * (1/B) * sum_b KL( softmax(t_b / T) || softmax(s_b / T) )``, T = 4 and alpha = 0.9 in the AT paper.
  The T^2 factor keeps the soft-target gradients on the scale of the hard-target ones when T changes. Hinton's
  mixture with the labels, ``(1 - alpha) * CE + alpha * KD``, is the engine's (``distill.kd_alpha``; the term
  table in :mod:`attnkit.engine.terms` weighs cross-entropy by 1 - alpha times alpha's schedule).
* Logit standardisation (Sun et al., "Logit Standardization in Knowledge Distillation", CVPR 2024): each
  sample's logits are z-scored, student and teacher separately, before the temperature softmax.
* DKD (Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022): KD split into a target-class term (TCKD)
  and a non-target-class term (NCKD), weighted separately.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import at_least_float32, check_logits_pair, check_non_negative, check_positive, check_targets

__all__ = ["dkd_loss", "kd_loss", "standardize_logits"]

STANDARDIZE_EPS = 1e-7  # added to the standard deviation, as the logit-standardisation authors' code does
NON_TARGET_MASK = 1000.0  # mdistiller subtracts this from the target logit (after / T) to drop it from NCKD


def standardize_logits(logits: Tensor, eps: float = STANDARDIZE_EPS) -> Tensor:
    """Z-score of each sample's logits: ``(z - mean(z)) / (eps + std(z))`` over the K classes, (B, K) -> (B, K).

    Sun et al. (CVPR 2024), the Z-score of its Algorithm 1. ``std`` is the unbiased estimate (divides by K - 1) and
    ``eps = 1e-7`` is added to it, as in the authors' code (``logit.std(-1)``); a population standard deviation
    (1/K) only rescales the result by sqrt((K - 1) / K), i.e. acts as a slightly different temperature.

    >>> standardize_logits(torch.tensor([[1.0, 2.0, 3.0]]))
    tensor([[-1.0000,  0.0000,  1.0000]])
    """
    if logits.shape[-1] < 2:
        raise ValueError(f"logit standardisation needs at least 2 classes, got logits of shape {tuple(logits.shape)}")
    mean = logits.mean(dim=-1, keepdim=True)
    std = logits.std(dim=-1, keepdim=True)
    return (logits - mean) / (std + eps)


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, T: float = 4.0, *, standardize: bool = False) -> Tensor:
    """Soft-target distillation loss ``T^2 * KL(teacher || student)``, summed over classes, averaged over the batch.

    With ``standardize=True`` (logit standardisation, Sun et al. CVPR 2024) both sets of logits are first
    z-scored per sample (:func:`standardize_logits`), so the student matches the teacher's logit *relations*
    and not their range; T then acts as the paper's "base temperature" and the loss keeps the T^2 factor, as
    the authors' mdistiller-based code does. Their CIFAR-100 runs use T = 2 with this loss weighted 9 and the
    cross-entropy weighted 0.1 (``--logit-stand --base-temp 2 --kd-weight 9``); T = 4 is Hinton KD's setting.

    Args:
        student_logits: (B, K) raw scores of the student (in its graph).
        teacher_logits: (B, K) raw scores of the teacher; detached, never receives gradient.
        T: softmax temperature (> 0).
        standardize: z-score each sample's logits first (default False: plain KD, bit-identical to before).

    Returns:
        Scalar float32 loss; 0 when the two sets of logits agree.
    """
    check_logits_pair(student_logits, teacher_logits)
    check_positive("T", T)
    student, teacher = at_least_float32(student_logits), at_least_float32(teacher_logits.detach())
    if standardize:
        student, teacher = standardize_logits(student), standardize_logits(teacher)
    log_student = F.log_softmax(student / T, dim=1)  # (B, K)
    log_teacher = F.log_softmax(teacher / T, dim=1)  # (B, K)
    return F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True) * (T * T)


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    T: float = 4.0,
    *,
    standardize: bool = False,
) -> Tensor:
    """Decoupled knowledge distillation ``alpha * TCKD + beta * NCKD`` (Zhao et al., CVPR 2022, section 3).

    With p = softmax(z / T) over the K classes and t the true class of a sample:

    * TCKD = T^2 * mean_b KL(b_T || b_S), the binary distributions b = [p_t, 1 - p_t] (target vs. the rest);
    * NCKD = T^2 * mean_b KL(p^_T || p^_S), p^ = softmax over the K - 1 non-target classes only.

    Classical KD equals TCKD + (1 - p_t^T) NCKD; DKD frees NCKD from the teacher's confidence. Follows
    mdistiller's ``dkd_loss`` (the authors' code): NCKD drops the target class by subtracting 1000 from its
    logit after dividing by T (the same as the K - 1 class softmax unless logits / T differ by ~1000), both
    terms are summed over classes, divided by the batch size and multiplied by T^2. One difference, in
    rounding only: mdistiller takes ``log`` of the binary probabilities, which is -inf (and the loss infinite)
    once the student's non-target probabilities all underflow to 0 (logit gaps beyond ~87 T in float32); we
    take the log of the non-target mass as a log-sum-exp of log-probabilities, which stays finite.

    The paper's CIFAR-100 defaults: alpha = 1, beta = 8 (1 to 8 per teacher-student pair), T = 4, cross-entropy
    weight 1, and a linear warm-up of the DKD term over the first 20 epochs (``min(epoch / 20, 1)``); the
    warm-up is a loss-weight schedule and belongs to the training loop, not to this function.
    ``standardize=True`` applies logit standardisation (Sun et al. 2024) to both logits first, as their code does.

    Args:
        student_logits: (B, K) student scores, K >= 2.
        teacher_logits: (B, K) teacher scores; detached.
        targets: (B,) integer class labels in [0, K).
        alpha: weight of TCKD (>= 0).
        beta: weight of NCKD (>= 0).
        T: temperature (> 0).
        standardize: z-score each sample's logits first (see :func:`standardize_logits`).

    Returns:
        Scalar float32 loss; 0 when the two sets of logits agree.

    >>> logits = torch.tensor([[2.0, 1.0, 0.0]])
    >>> dkd_loss(logits, logits.clone(), torch.tensor([0]))
    tensor(0.)
    """
    check_logits_pair(student_logits, teacher_logits)
    check_targets(targets, student_logits)
    check_non_negative("alpha", alpha)
    check_non_negative("beta", beta)
    check_positive("T", T)
    if student_logits.shape[1] < 2:
        raise ValueError(f"DKD needs at least 2 classes, got logits of shape {tuple(student_logits.shape)}")
    student, teacher = at_least_float32(student_logits), at_least_float32(teacher_logits.detach())
    if standardize:
        student, teacher = standardize_logits(student), standardize_logits(teacher)
    is_target = F.one_hot(targets.long(), student.shape[1]).bool()  # (B, K), mdistiller's gt_mask
    tckd = _kl_batchmean(_log_binary(student / T, is_target), _log_binary(teacher / T, is_target))
    mask = NON_TARGET_MASK * is_target.to(student.dtype)
    nckd = _kl_batchmean(F.log_softmax(student / T - mask, dim=1), F.log_softmax(teacher / T - mask, dim=1))
    return (alpha * tckd + beta * nckd) * (T * T)


def _log_binary(scaled_logits: Tensor, is_target: Tensor) -> Tensor:
    """log [p_t, sum_{k != t} p_k] of p = softmax(scaled_logits): (B, K) -> (B, 2), finite even where p underflows."""
    log_p = F.log_softmax(scaled_logits, dim=1)  # (B, K)
    log_target = log_p.masked_fill(~is_target, float("-inf")).logsumexp(dim=1)  # (B,), log p_t
    log_rest = log_p.masked_fill(is_target, float("-inf")).logsumexp(dim=1)  # (B,), log sum_{k != t} p_k
    return torch.stack([log_target, log_rest], dim=1)


def _kl_batchmean(log_student: Tensor, log_teacher: Tensor) -> Tensor:
    """KL(teacher || student) from log-probabilities, summed over classes and averaged over the batch."""
    return F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
