"""Knowledge distillation (Hinton, Vinyals & Dean 2015), as the attention-transfer code uses it.

KD = T^2 * (1/B) * sum_b KL( softmax(t_b / T) || softmax(s_b / T) ),  T = 4 and alpha = 0.9 in the paper.
The T^2 factor keeps the soft-target gradients on the scale of the hard-target ones when T changes.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .checks import at_least_float32, check_logits_pair, check_positive

__all__ = ["distillation_loss", "kd_loss"]


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, T: float = 4.0) -> Tensor:
    """Soft-target distillation loss ``T^2 * KL(teacher || student)``, summed over classes, averaged over the batch.

    Args:
        student_logits: (B, K) raw scores of the student (in its graph).
        teacher_logits: (B, K) raw scores of the teacher; detached, never receives gradient.
        T: softmax temperature (> 0).

    Returns:
        Scalar float32 loss; 0 when the two sets of logits agree.
    """
    check_logits_pair(student_logits, teacher_logits)
    check_positive("T", T)
    log_student = F.log_softmax(at_least_float32(student_logits) / T, dim=1)  # (B, K)
    log_teacher = F.log_softmax(at_least_float32(teacher_logits.detach()) / T, dim=1)  # (B, K)
    return F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True) * (T * T)


def distillation_loss(
    student_logits: Tensor, teacher_logits: Tensor, targets: Tensor, T: float = 4.0, alpha: float = 0.9
) -> Tensor:
    """Hinton's mixture ``(1 - alpha) * CE(student, targets) + alpha * kd_loss(student, teacher, T)``.

    Args:
        student_logits: (B, K) student scores.
        teacher_logits: (B, K) teacher scores (detached).
        targets: (B,) integer class labels.
        T: temperature (> 0).
        alpha: weight of the soft targets, in [0, 1].
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    ce = F.cross_entropy(at_least_float32(student_logits), targets)
    if alpha == 0:
        return ce
    return (1.0 - alpha) * ce + alpha * kd_loss(student_logits, teacher_logits, T)
