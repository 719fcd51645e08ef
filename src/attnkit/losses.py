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

import torch
from torch import Tensor, nn

from . import functional as AF
from .functional.attention import Reduction
from .functional.cam import CAMMethodName
from .functional.checks import check_pairs, check_weights
from .functional.transfer import Mode
from .validation import is_int

__all__ = [
    "ATLoss",
    "ActivationTransferLoss",
    "CAMTransferLoss",
    "DKDLoss",
    "FlipSymmetryLoss",
    "GradATLoss",
    "HintLoss",
    "HintRegressor",
    "KDLoss",
    "NSTLoss",
    "SPLoss",
]


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

    Hinton's ``(1 - alpha) * CE + alpha * KD`` mixture is the engine's (``distill.kd_alpha``, :mod:`attnkit.engine.terms`).
    ``standardize=True`` z-scores both logits first (logit standardisation, Sun et al. 2024; T = 2 there).
    """

    def __init__(self, T: float = 4.0, *, standardize: bool = False) -> None:
        super().__init__()
        self.T, self.standardize = T, standardize

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        return AF.kd_loss(student_logits, teacher_logits, self.T, standardize=self.standardize)

    def extra_repr(self) -> str:
        return f"T={self.T}, standardize={self.standardize}"


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


class DKDLoss(nn.Module):
    """Decoupled KD ``alpha * TCKD + beta * NCKD`` (Zhao et al. 2022); see :func:`attnkit.functional.dkd_loss`.

    Needs the labels: ``loss(student_logits, teacher_logits, targets)``. The paper's 20-epoch linear warm-up
    of this term is a loss-weight schedule of the training loop, not part of the module.
    """

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, T: float = 4.0, *, standardize: bool = False) -> None:
        super().__init__()
        self.alpha, self.beta, self.T, self.standardize = alpha, beta, T, standardize

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, targets: Tensor) -> Tensor:
        return AF.dkd_loss(
            student_logits, teacher_logits, targets, self.alpha, self.beta, self.T, standardize=self.standardize
        )

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, T={self.T}, standardize={self.standardize}"


class SPLoss(nn.Module):
    """Similarity-preserving KD over layer pairs (Tung & Mori 2019); see :func:`attnkit.functional.sp_loss`."""

    def __init__(self, beta: float = 3000.0, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.beta = beta
        self.weights = None if weights is None else list(weights)

    def forward(self, student_features: Sequence[Tensor], teacher_features: Sequence[Tensor]) -> Tensor:
        return AF.sp_loss(student_features, teacher_features, self.beta, self.weights)

    def extra_repr(self) -> str:
        return f"beta={self.beta}"


class NSTLoss(nn.Module):
    """Neuron selectivity transfer (Huang & Wang 2017), polynomial-kernel MMD^2.

    See :func:`attnkit.functional.nst_loss`.
    """

    def __init__(
        self, beta: float = 50.0, weights: Sequence[float] | None = None, *, d: int = 2, c: float = 0.0
    ) -> None:
        super().__init__()
        self.beta, self.d, self.c = beta, d, c
        self.weights = None if weights is None else list(weights)

    def forward(self, student_features: Sequence[Tensor], teacher_features: Sequence[Tensor]) -> Tensor:
        return AF.nst_loss(student_features, teacher_features, self.beta, self.weights, d=self.d, c=self.c)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, d={self.d}, c={self.c}"


class HintRegressor(nn.Module):
    """FitNets' convolutional regressor from a student feature shape to a teacher's: conv -> BN (-> ReLU).

    The conv follows RepDistiller's ``ConvReg`` (also mdistiller's), chosen by the spatial sizes, for
    (C, H, W) shapes S (student) and T (teacher):

    * H_S = 2 H_T and W_S = 2 W_T: 3x3 conv, stride 2, padding 1 (halves the resolution);
    * 2 H_S = H_T and 2 W_S = W_T: 4x4 transposed conv, stride 2, padding 1 (doubles it);
    * H_S >= H_T and W_S >= W_T: conv of kernel (1 + H_S - H_T, 1 + W_S - W_T), no padding - a 1x1 conv at
      equal sizes, the "valid" convolution FitNets itself describes otherwise;
    * anything else is refused.

    RepDistiller decides from the heights only; we check both dimensions. Its conv has a bias, ours none: the
    batch norm right after subtracts any constant per channel, so the bias could never change the output.
    ``relu=True`` (RepDistiller's default) ends with a ReLU, right for post-ReLU teacher features; FitNets asks
    the regressor to share the hint layer's non-linearity, so use ``relu=False`` for features that can be
    negative (attnkit's WRN group outputs are pre-activation residual sums).
    """

    def __init__(self, student_shape: Sequence[int], teacher_shape: Sequence[int], relu: bool = True) -> None:
        super().__init__()
        (c_s, h_s, w_s), (c_t, h_t, w_t) = _chw(student_shape, "student_shape"), _chw(teacher_shape, "teacher_shape")
        if (h_s, w_s) == (2 * h_t, 2 * w_t):
            self.conv: nn.Module = nn.Conv2d(c_s, c_t, 3, stride=2, padding=1, bias=False)
        elif (2 * h_s, 2 * w_s) == (h_t, w_t):
            self.conv = nn.ConvTranspose2d(c_s, c_t, 4, stride=2, padding=1, bias=False)
        elif h_s >= h_t and w_s >= w_t:
            self.conv = nn.Conv2d(c_s, c_t, (1 + h_s - h_t, 1 + w_s - w_t), bias=False)
        else:
            raise ValueError(
                f"no hint regressor from student size {h_s}x{w_s} to teacher size {h_t}x{w_t}: the student map must "
                "be twice, half, or at least the teacher's size; pair a student layer of higher resolution"
            )
        self.bn = nn.BatchNorm2d(c_t)
        self.relu = nn.ReLU(inplace=True) if relu else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))  # (B, C_S, H_S, W_S) -> (B, C_T, H_T, W_T)


def _chw(shape: Sequence[int], what: str) -> tuple[int, int, int]:
    shape = tuple(shape)
    if len(shape) != 3 or not all(is_int(n) and n > 0 for n in shape):
        raise ValueError(f"{what} must be a (C, H, W) triple of positive ints, got {shape!r}")
    return shape  # type: ignore[return-value]


class HintLoss(nn.Module):
    """FitNets hints over layer pairs, each with its own learned :class:`HintRegressor`.

    ``beta * sum_j w_j * mean (r_j(A_S^j) - A_T^j)^2``; FitNets uses one pair (the student's middle layer, the
    "guided" layer, and the teacher's, the "hint"). The regressors are parameters of this module: give them to
    the optimiser together with the student's, and switch the module to train()/eval() with the student (their
    batch norms). See :func:`attnkit.functional.hint_loss`.

    Args:
        student_shapes: (C, H, W) of each student layer of the pairs (``attnkit.features.LayerPair.student_shape``).
        teacher_shapes: (C, H, W) of each teacher layer.
        beta: loss weight (100 in RepDistiller and mdistiller).
        weights: optional per-pair multipliers.
        relu: end each regressor with a ReLU (see :class:`HintRegressor`).
    """

    def __init__(
        self,
        student_shapes: Sequence[Sequence[int]],
        teacher_shapes: Sequence[Sequence[int]],
        beta: float = 100.0,
        weights: Sequence[float] | None = None,
        relu: bool = True,
    ) -> None:
        super().__init__()
        if len(student_shapes) != len(teacher_shapes) or not student_shapes:
            raise ValueError(
                f"got {len(student_shapes)} student and {len(teacher_shapes)} teacher shapes; "
                "give one (C, H, W) of each per layer pair, at least one pair"
            )
        self.beta, self.relu = beta, relu
        self.weights = None if weights is None else list(weights)
        self.regressors = nn.ModuleList(HintRegressor(s, t, relu) for s, t in zip(student_shapes, teacher_shapes))

    def forward(self, student_features: Sequence[Tensor], teacher_features: Sequence[Tensor]) -> Tensor:
        check_pairs(student_features, teacher_features)
        if len(student_features) != len(self.regressors):
            raise ValueError(
                f"got {len(student_features)} feature pairs but this HintLoss was built for {len(self.regressors)}"
            )
        weights = check_weights(self.weights, len(self.regressors))
        terms = [
            AF.hint_loss(s, t, regressor, beta=self.beta * w)
            for s, t, regressor, w in zip(student_features, teacher_features, self.regressors, weights)
        ]
        return torch.stack(terms).sum()

    def extra_repr(self) -> str:
        return f"beta={self.beta}, relu={self.relu}"


class CAMTransferLoss(nn.Module):
    """CAM transfer: the student matches the teacher's Grad-CAM (or HiResCAM) map of each image's true class.

    ``loss(student_features, student_logits, teacher_features, teacher_logits, labels)``; the features of each
    side must be in the autograd graph of its logits (the teacher's captured as graph roots). See
    :func:`attnkit.functional.cam_transfer_loss` for the definition; the student's map is differentiated through
    its gradient (double backprop).
    """

    def __init__(self, beta: float = 1000.0, method: CAMMethodName = "gradcam", weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.beta, self.method = beta, method
        self.weights = None if weights is None else list(weights)

    def forward(
        self,
        student_features: Sequence[Tensor],
        student_logits: Tensor,
        teacher_features: Sequence[Tensor],
        teacher_logits: Tensor,
        labels: Tensor,
    ) -> Tensor:
        index = labels.long()[:, None]  # (B, 1)
        return AF.cam_transfer_loss(
            student_features, student_logits.gather(1, index)[:, 0], teacher_features, teacher_logits.gather(1, index)[:, 0],
            self.beta, method=self.method, weights=self.weights,
        )

    def extra_repr(self) -> str:
        return f"beta={self.beta}, method={self.method!r}"
