"""Gradient-based attention transfer (Zagoruyko & Komodakis 2017, section 3.2).

The attention of a network is the gradient of its loss with respect to the input image, J = dL/dx. The student
learns to match the teacher's J:

    L = CE(student) + beta/2 * || J_S - J_T ||_2,

which needs double backpropagation (J_S is built with ``create_graph=True`` so that the loss can be
differentiated through it). The flip-invariance regulariser asks a network's J to commute with horizontal
flips:

    L_sym = CE + beta/2 * || dL/dx(x) - flip( dL/dx(flip(x)) ) ||_2.

The paper gives no default for beta in these losses; 1.0 is ours, tune it on your data.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import at_least_float32, check_non_negative

__all__ = ["as_target", "flip_symmetry_loss", "grad_at_loss", "input_gradient"]


def input_gradient(
    model: nn.Module,
    x: Tensor,
    target: Tensor | int | None = None,
    create_graph: bool = False,
    return_logits: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Gradient of the cross-entropy loss with respect to the input, J = dL/dx.

    The per-sample losses are summed (not averaged), so the batch size does not scale J. J[b] is the gradient
    of image b's own loss, independent of the other images, only when the model treats the images of a batch
    separately: in eval mode, or with no layer that mixes the batch. Batch norm in train mode normalises with
    the batch's statistics, so every image's logits depend on every other image; J[b] is then the gradient of
    the summed loss of the whole batch with respect to image b, and changes with the batch it is computed in
    (which is why the engine's flip-symmetry term computes J(x) and J(flip(x)) in two passes, one per batch).

    Args:
        model: maps (B, ...) inputs to (B, K) logits. Its mode (train/eval) is left as it is.
        x: (B, C, H, W) input batch; not modified.
        target: (B,) class labels, one int for every image, or None for each image's predicted class.
        create_graph: keep J in the autograd graph (needed to train through J: double backprop).
        return_logits: also return the (B, K) logits of the same forward pass (saves a second forward when
            the caller needs them for its own loss).

    Returns:
        J with x's shape, or ``(J, logits)`` when ``return_logits``.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "input_gradient needs autograd but runs under torch.inference_mode(); call it outside that block"
        )
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {type(x).__name__}")
    x = (x.clone() if x.is_inference() else x.detach()).requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        if logits.dim() != 2:
            raise ValueError(f"model must return (B, num_classes) logits, got shape {tuple(logits.shape)}")
        target = as_target(target, logits)
        loss = F.cross_entropy(at_least_float32(logits), target, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x, create_graph=create_graph)
    return (grad, logits) if return_logits else grad


def as_target(target: Tensor | int | None, logits: Tensor) -> Tensor:
    """(B,) int64 class indices from ``target``: None = each image's predicted class, an int = that class for
    every image, a tensor or sequence = one class per image (checked against the batch and the classes)."""
    batch, num_classes = logits.shape
    if target is None:
        return logits.detach().argmax(dim=1)
    if isinstance(target, int):
        target = torch.full((batch,), target, dtype=torch.long, device=logits.device)
    target = torch.as_tensor(target, device=logits.device).long().reshape(-1)
    if target.numel() != batch:
        raise ValueError(f"got {target.numel()} targets for a batch of {batch}; give one per image or one int")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        raise ValueError(f"targets must lie in [0, {num_classes - 1}], got range {int(target.min())}..{int(target.max())}")
    return target


def _check_same_shape(a: Tensor, b: Tensor, what: str) -> None:
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError(f"{what} must be tensors")
    if a.shape != b.shape:
        raise ValueError(f"{what} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dim() < 2:
        raise ValueError(f"{what} must be batched (B, ...) tensors, got shape {tuple(a.shape)}")


def grad_at_loss(student_grad: Tensor, teacher_grad: Tensor, beta: float = 1.0) -> Tensor:
    """Gradient attention-transfer loss ``beta/2 * mean_b || J_S[b] - J_T[b] ||_2``.

    Args:
        student_grad: (B, ...) student input gradient, built with ``create_graph=True`` so that the loss
            reaches the student's weights by double backprop.
        teacher_grad: (B, ...) teacher input gradient; detached here.
        beta: weight, >= 0.
    """
    _check_same_shape(student_grad, teacher_grad, "student and teacher input gradients")
    check_non_negative("beta", beta)
    diff = (at_least_float32(student_grad) - at_least_float32(teacher_grad.detach())).flatten(1)  # (B, N)
    return beta / 2 * torch.linalg.vector_norm(diff, dim=1).mean()


def flip_symmetry_loss(grad: Tensor, flipped_grad: Tensor, beta: float = 1.0) -> Tensor:
    """Flip-invariance penalty ``beta/2 * mean_b || J(x)[b] - flip(J(flip(x)))[b] ||_2`` (the paper's L_sym).

    Args:
        grad: (B, C, H, W) input gradient at x (``create_graph=True`` to train through it).
        flipped_grad: (B, C, H, W) input gradient at flip(x), the horizontally flipped batch.
        beta: weight, >= 0.
    """
    _check_same_shape(grad, flipped_grad, "the input gradients at x and flip(x)")
    check_non_negative("beta", beta)
    # flip(J(flip(x))) maps the gradient at the mirrored image back onto x's pixel grid (width axis).
    diff = (at_least_float32(grad) - at_least_float32(flipped_grad).flip(-1)).flatten(1)
    return beta / 2 * torch.linalg.vector_norm(diff, dim=1).mean()


