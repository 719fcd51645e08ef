"""Thin ``nn.Module`` wrappers around :mod:`attnkit.functional`, holding their hyperparameters.

Each module's ``forward`` calls exactly one functional loss; the docstrings there give the formulas.

>>> import torch
>>> loss = ATLoss(beta=1000)
>>> s, t = [torch.randn(2, 4, 8, 8)], [torch.randn(2, 8, 8, 8)]
>>> float(loss(s, s)) == 0.0
True
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from . import functional as AF
from .functional.attention import Reduction
from .functional.transfer import Mode

__all__ = ["ATLoss", "ActivationTransferLoss", "FlipSymmetryLoss", "GradATLoss", "KDLoss"]


class ATLoss(nn.Module):
    """Attention transfer over layer pairs; see :func:`attnkit.functional.at_loss`."""

    def __init__(
        self,
        p: float = 2.0,
        beta: float = 1000.0,
        mode: Mode = "code",
        weights: Sequence[float] | None = None,
        reduction: Reduction = "mean",
        norm_p: float | None = None,
        fused: bool = True,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        self.p, self.beta, self.mode, self.reduction, self.norm_p, self.fused = p, beta, mode, reduction, norm_p, fused
        self.check_finite = check_finite  # False where the caller checks its total loss anyway (no extra sync)
        self.weights = None if weights is None else list(weights)

    def forward(self, student_features: Sequence[Tensor], teacher_features: Sequence[Tensor]) -> Tensor:
        return AF.at_loss(
            student_features,
            teacher_features,
            self.p,
            self.beta,
            self.mode,
            self.weights,
            reduction=self.reduction,
            norm_p=self.norm_p,
            fused=self.fused,
            check_finite=self.check_finite,
        )

    def extra_repr(self) -> str:
        return f"p={self.p}, beta={self.beta}, mode={self.mode!r}, reduction={self.reduction!r}"


class KDLoss(nn.Module):
    """Soft-target distillation ``T^2 * KL(teacher || student)``; see :func:`attnkit.functional.kd_loss`.

    For Hinton's ``(1 - alpha) * CE + alpha * KD`` mixture use :func:`attnkit.functional.distillation_loss`.
    """

    def __init__(self, T: float = 4.0) -> None:
        super().__init__()
        self.T = T

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        return AF.kd_loss(student_logits, teacher_logits, self.T)

    def extra_repr(self) -> str:
        return f"T={self.T}"


class ActivationTransferLoss(nn.Module):
    """Full activation transfer (F-ActT) with learnable 1x1 adapters where channel counts differ.

    The adapters are parameters of this module: give them to the optimiser together with the student's.
    See :func:`attnkit.functional.activation_transfer_loss`.

    Args:
        student_channels: channels of each student layer of the pairs.
        teacher_channels: channels of each teacher layer of the pairs.
        beta: loss weight.
        weights: optional per-pair multipliers.
        normalize: per-sample L2 normalisation of the activations (default; see the functional docstring).
    """

    def __init__(
        self,
        student_channels: Sequence[int],
        teacher_channels: Sequence[int],
        beta: float = 1.0,
        weights: Sequence[float] | None = None,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        if len(student_channels) != len(teacher_channels):
            raise ValueError(
                f"got {len(student_channels)} student and {len(teacher_channels)} teacher channel counts; "
                "give one of each per layer pair"
            )
        self.beta, self.normalize = beta, normalize
        self.weights = None if weights is None else list(weights)
        self.adapters = nn.ModuleList(
            nn.Identity() if cs == ct else nn.Conv2d(cs, ct, kernel_size=1, bias=False)
            for cs, ct in zip(student_channels, teacher_channels)
        )

    def forward(self, student_features: Sequence[Tensor], teacher_features: Sequence[Tensor]) -> Tensor:
        return AF.activation_transfer_loss(
            student_features, teacher_features, list(self.adapters), self.beta, self.weights, self.normalize
        )

    def extra_repr(self) -> str:
        return f"beta={self.beta}, normalize={self.normalize}"


class GradATLoss(nn.Module):
    """Gradient-based attention transfer ``beta/2 * ||J_S - J_T||_2``; see :func:`attnkit.functional.grad_at_loss`."""

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = beta

    def forward(self, student_grad: Tensor, teacher_grad: Tensor) -> Tensor:
        return AF.grad_at_loss(student_grad, teacher_grad, self.beta)

    def extra_repr(self) -> str:
        return f"beta={self.beta}"


class FlipSymmetryLoss(nn.Module):
    """Flip-invariance of the input gradient (the paper's L_sym); see :func:`attnkit.functional.flip_symmetry_loss`."""

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = beta

    def forward(self, grad: Tensor, flipped_grad: Tensor) -> Tensor:
        return AF.flip_symmetry_loss(grad, flipped_grad, self.beta)

    def extra_repr(self) -> str:
        return f"beta={self.beta}"
