"""FitNets hints (Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015, section 2.2).

A learned regressor r maps the student's "guided" layer onto the teacher's "hint" layer, and the student is
trained so that r(student) predicts the teacher's activations.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from .checks import at_least_float32, check_features, check_non_negative

__all__ = ["hint_loss"]


def hint_loss(
    student_feature: Tensor,
    teacher_feature: Tensor,
    regressor: Callable[[Tensor], Tensor] | None = None,
    beta: float = 100.0,
) -> Tensor:
    """Hint loss ``beta * mean (regressor(A_S) - A_T)^2`` over batch, channels and positions.

    The paper's hint loss is ``1/2 ||u_h(x) - r(v_g(x))||^2``, a sum over the hint's elements, trained
    in a first stage on its own before a KD stage. We follow RepDistiller (``HintLoss``) and mdistiller
    (``FitNet``): the *mean* squared error, weighted 100 and added to the cross-entropy in a single stage; that
    weight is ``beta``'s default. :class:`attnkit.losses.HintLoss` builds and owns the regressor.

    Args:
        student_feature: (B, C_S, H_S, W_S) output of the student's guided layer, in its graph.
        teacher_feature: (B, C_T, H_T, W_T) output of the teacher's hint layer; never receives gradient.
        regressor: maps the student feature to the teacher's shape (a learned conv, see
            :class:`attnkit.losses.HintLoss`); None when the shapes already agree.
        beta: loss weight, >= 0.

    Returns:
        Scalar loss (float32 or wider).
    """
    check_features(student_feature, "student_feature")
    check_features(teacher_feature, "teacher_feature")
    check_non_negative("beta", beta)
    if student_feature.shape[0] != teacher_feature.shape[0]:
        raise ValueError(
            f"batch sizes differ: student_feature {student_feature.shape[0]}, teacher_feature "
            f"{teacher_feature.shape[0]}; both must come from the same images"
        )
    predicted = student_feature if regressor is None else regressor(student_feature)
    if predicted.shape != teacher_feature.shape:
        what = "student_feature" if regressor is None else "regressor(student_feature)"
        raise ValueError(
            f"{what} has shape {tuple(predicted.shape)} but teacher_feature has {tuple(teacher_feature.shape)}; "
            "pass a regressor that maps one onto the other (attnkit.losses.HintLoss builds it)"
        )
    return beta * F.mse_loss(at_least_float32(predicted), at_least_float32(teacher_feature.detach()))
