"""Input checks shared by the functional core and by :mod:`attnkit.explain`.

Every public function in :mod:`attnkit.functional` validates its arguments with these helpers, so that bad
input raises one clear error (what was wrong and how to fix it) instead of returning a silently wrong number.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..validation import is_real

__all__ = [
    "at_least_float32",
    "check_features",
    "check_logits_pair",
    "check_non_negative",
    "check_pairs",
    "check_positive",
    "check_targets",
    "check_weights",
    "find_non_finite_pair",
]


def check_positive(name: str, value: float) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite real number > 0."""
    if not is_real(value):
        raise TypeError(f"{name} must be a real number > 0, got {type(value).__name__} {value!r}")
    if not (value > 0 and value != float("inf")):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_non_negative(name: str, value: float) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number >= 0 (loss weights)."""
    if not is_real(value) or not (0 <= value < float("inf")):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def check_features(features: Tensor, what: str = "features") -> None:
    """Raise unless ``features`` is a floating-point (B, C, H, W) tensor."""
    if not isinstance(features, Tensor):
        raise TypeError(f"{what} must be a torch.Tensor of shape (B, C, H, W), got {type(features).__name__}")
    if features.dim() != 4:
        raise ValueError(
            f"{what} must be 4-D (B, C, H, W), got shape {tuple(features.shape)}; "
            "pass convolutional feature maps (for a single image add a batch dimension with x[None])"
        )
    if not features.is_floating_point():
        raise TypeError(f"{what} must be a floating-point tensor, got dtype {features.dtype}")


def check_pairs(student: Sequence[Tensor], teacher: Sequence[Tensor]) -> None:
    """Validate lists of student/teacher feature tensors that are compared pair by pair.

    Checks: both are non-empty sequences of equal length, every tensor is (B, C, H, W), and all tensors share
    one batch size.
    """
    if isinstance(student, Tensor) or isinstance(teacher, Tensor):
        raise TypeError(
            "student and teacher features must be lists of (B, C, H, W) tensors, one per layer pair; "
            "for a single pair pass [student_features], [teacher_features]"
        )
    if len(student) == 0 or len(teacher) == 0:
        raise ValueError("no layer pairs given: pass at least one (student, teacher) pair of feature maps")
    if len(student) != len(teacher):
        raise ValueError(
            f"got {len(student)} student feature maps but {len(teacher)} teacher feature maps; "
            "each student layer needs exactly one teacher layer (see attnkit.features.pair_layers)"
        )
    batch = student[0].shape[0] if isinstance(student[0], Tensor) else None
    for j, (s, t) in enumerate(zip(student, teacher)):
        check_features(s, f"student features of pair {j}")
        check_features(t, f"teacher features of pair {j}")
        if s.shape[0] != batch or t.shape[0] != batch:
            raise ValueError(
                f"batch sizes differ in pair {j}: student {s.shape[0]}, teacher {t.shape[0]} "
                f"(pair 0 has {batch}); student and teacher must see the same images"
            )


def check_weights(weights: Sequence[float] | None, num_pairs: int) -> list[float]:
    """Return per-pair weights (default all 1.0), checking their count and values."""
    if weights is None:
        return [1.0] * num_pairs
    weights = [float(w) for w in weights]
    if len(weights) != num_pairs:
        raise ValueError(f"got {len(weights)} weights for {num_pairs} layer pairs; give one weight per pair")
    for j, w in enumerate(weights):
        if not w >= 0 or w == float("inf"):
            raise ValueError(f"weight of pair {j} must be a finite number >= 0, got {w!r}")
    return weights


def check_logits_pair(student_logits: Tensor, teacher_logits: Tensor) -> None:
    """Raise unless both logits are (B, K) tensors of the same shape."""
    for what, logits in (("student logits", student_logits), ("teacher logits", teacher_logits)):
        if not isinstance(logits, Tensor) or logits.dim() != 2:
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(f"{what} must be a (B, num_classes) tensor, got {shape}")
    if student_logits.shape[1] != teacher_logits.shape[1]:
        raise ValueError(
            f"student has {student_logits.shape[1]} classes but teacher has {teacher_logits.shape[1]}; "
            "distillation needs both models trained on the same label set"
        )
    if student_logits.shape[0] != teacher_logits.shape[0]:
        raise ValueError(
            f"batch sizes differ: student logits {student_logits.shape[0]}, teacher logits "
            f"{teacher_logits.shape[0]}; both must come from the same images"
        )


def check_targets(targets: Tensor, logits: Tensor) -> None:
    """Raise unless ``targets`` holds one integer class label in [0, K) per row of the (B, K) ``logits``."""
    if not isinstance(targets, Tensor) or targets.dim() != 1 or targets.is_floating_point() or targets.is_complex():
        shape = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
        raise ValueError(f"targets must be a 1-D integer tensor of class labels (B,), got {shape}")
    batch, num_classes = logits.shape
    if targets.shape[0] != batch:
        raise ValueError(f"got {targets.shape[0]} targets for {batch} logits; give one class label per image")
    if batch and (int(targets.min()) < 0 or int(targets.max()) >= num_classes):
        raise ValueError(
            f"targets must lie in [0, {num_classes - 1}], got range {int(targets.min())}..{int(targets.max())}"
        )


def find_non_finite_pair(student: Sequence[Tensor], teacher: Sequence[Tensor]) -> str | None:
    """Describe the first pair whose features contain NaN or inf, or return None if all are finite."""
    for j, (s, t) in enumerate(zip(student, teacher)):
        for side, tensor in (("student", s), ("teacher", t)):
            if not bool(torch.isfinite(tensor).all()):
                return f"the {side} features of pair {j} contain NaN or inf"
    return None


def at_least_float32(tensor: Tensor) -> Tensor:
    """Upcast bf16/fp16 to float32 for loss arithmetic; float32 and float64 are kept as they are."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))
