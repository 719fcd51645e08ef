"""Gradient class activation maps as pure functions, and CAM transfer, the distillation loss built on them.

For a layer output A (B, C, h, w) and a score per image S (B,) computed from it (the logit of the class to
explain), g = dS/dA (B, C, h, w) and

    Grad-CAM  (Selvaraju et al., ICCV 2017):  map = ReLU(sum_k mean_ij(g_k) A_k)     (B, h, w)
    HiResCAM  (Draelos & Carin, 2020):        map = ReLU(sum_k g_k ⊙ A_k)

``create_graph=True`` keeps g, and so the map, in the autograd graph: a loss on the map trains the network
through a second backward pass (double backpropagation). :mod:`attnkit.explain`'s GradCAM and HiResCAM take
their gradients and weights from here.

**CAM transfer** (attnkit's; no paper or public library defines it, docs/papers.md section 6.6): the student
matches the teacher's Grad-CAM (or HiResCAM) map of each image's true class, compared as attention transfer
compares activation maps (Zagoruyko & Komodakis 2017, the code's form):

    L_CAM = beta * sum_j w_j * mean_{b, i} (Y_S^j[b, i] - Y_T^j[b, i])^2,   Y = map / ||map||_2 per image

with the larger of two maps of a pair area-averaged to the smaller one's size first. The teacher's map is a
constant (no graph is kept through the frozen teacher); the student's is differentiated through g.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from ..validation import choices
from .attention import DEFAULT_EPS, normalize_map, resize_map
from .checks import at_least_float32, check_non_negative, check_pairs, check_weights

__all__ = ["CAMMethodName", "CAM_METHODS", "cam_transfer_loss", "cam_weights", "grad_cam", "grad_cam_weights",
           "score_gradients"]

CAMMethodName = Literal["gradcam", "hirescam"]  # channel weights (Grad-CAM) or element-wise weights (HiResCAM)
CAM_METHODS: tuple[str, ...] = choices(CAMMethodName)


def score_gradients(features: Sequence[Tensor], scores: Tensor, create_graph: bool = False) -> list[Tensor]:
    """g = dS/dA of every layer output in one backward pass: (B,) scores -> one (B, C, h, w) per layer.

    The scores are summed over the batch before differentiating, so g[b] is d S_b / d A[b] as long as no other
    image's score depends on A[b]: true in eval mode, or when no batch-norm layer in train mode lies between
    the layer and the scores (the output of ``forward_features`` for attnkit's models).

    Args:
        features: layer outputs, each (B, C, h, w), in the autograd graph of ``scores``.
        scores: (B,) the score explained for each image, e.g. ``logits.gather(1, labels[:, None])[:, 0]``.
        create_graph: keep the gradients in the graph (to train through a map).
    """
    if scores.dim() != 1:
        raise ValueError(f"scores must be one value per image, shape (B,), got {tuple(scores.shape)}")
    if not scores.requires_grad or not all(f.requires_grad for f in features):
        raise ValueError(
            "the scores must be computed from the features inside the autograd graph; capture the layer outputs "
            "with gradient enabled (for a frozen network: make them require grad, as attnkit.features.FeatureCapture"
            "(..., graph_root=True) does)"
        )
    return list(torch.autograd.grad(scores.sum(), list(features), create_graph=create_graph))


def grad_cam_weights(grads: Tensor) -> Tensor:
    """Grad-CAM's channel weights, the spatial mean of dS/dA: (B, C, h, w) -> (B, C, 1, 1)."""
    return grads.mean(dim=(2, 3), keepdim=True)


def cam_weights(grads: Tensor, method: CAMMethodName = "gradcam") -> Tensor:
    """The weights W of ``map = ReLU(sum_k W_k ⊙ A_k)``: Grad-CAM's (B, C, 1, 1) or HiResCAM's (B, C, h, w)."""
    if method == "gradcam":
        return grad_cam_weights(grads)
    if method == "hirescam":
        return grads
    raise ValueError(f"method must be one of {CAM_METHODS}, got {method!r}")


def grad_cam(
    features: Tensor, scores: Tensor, *, method: CAMMethodName = "gradcam", create_graph: bool = False, relu: bool = True
) -> Tensor:
    """Grad-CAM (or HiResCAM) map of a layer output for per-image scores: (B, C, h, w), (B,) -> (B, h, w).

    Args:
        features: the layer output A, in the autograd graph of ``scores``.
        scores: (B,) the score explained per image.
        method: ``"gradcam"`` or ``"hirescam"`` (module docstring).
        create_graph: return the map in the autograd graph (differentiable in the network's parameters);
            False returns it detached.
        relu: apply the final ReLU (the papers' map).

    >>> a = torch.tensor([[[[1.0, 2.0]], [[3.0, -1.0]]]], requires_grad=True)  # (1, 2, 1, 2)
    >>> s = (a[:, 0].sum(dim=(1, 2)) - a[:, 1].sum(dim=(1, 2)))  # dS/dA = +1 on channel 0, -1 on channel 1
    >>> grad_cam(a, s)  # ReLU(1 * [1, 2] - 1 * [3, -1])
    tensor([[[0., 3.]]])
    """
    (grads,) = score_gradients([features], scores, create_graph)
    if create_graph:
        return _cam_map(features, grads, method, relu)
    with torch.no_grad():  # not half in the graph (through A but not through g): detached
        return _cam_map(features, grads, method, relu)


def _cam_map(features: Tensor, grads: Tensor, method: CAMMethodName, relu: bool = True) -> Tensor:
    """sum_k W_k ⊙ A_k over channels (then ReLU), in at least float32: (B, C, h, w) x2 -> (B, h, w)."""
    maps = (at_least_float32(cam_weights(grads, method)) * at_least_float32(features)).sum(dim=1)
    return maps.clamp_min(0) if relu else maps


def cam_transfer_loss(
    student_features: Sequence[Tensor],
    student_scores: Tensor,
    teacher_features: Sequence[Tensor],
    teacher_scores: Tensor,
    beta: float = 1000.0,
    *,
    method: CAMMethodName = "gradcam",
    weights: Sequence[float] | None = None,
    eps: float = DEFAULT_EPS,
) -> Tensor:
    """CAM transfer ``beta * sum_j w_j * mean_{b,i} (Y_S^j - Y_T^j)^2`` of Grad-CAM maps (module docstring).

    Args:
        student_features: one (B, C_j, h_j, w_j) layer output per pair, in the graph of ``student_scores``.
        student_scores: (B,) the student's score of each image's true class (its logit).
        teacher_features: one (B, C'_j, h'_j, w'_j) output per pair, in the graph of ``teacher_scores`` (for a
            frozen teacher: captured as graph roots, see :func:`score_gradients`).
        teacher_scores: (B,) the teacher's score of the same classes.
        beta: loss weight (>= 0); 1000 by default, AT's weight for the same comparison of normalised maps.
        method: ``"gradcam"`` or ``"hirescam"``.
        weights: optional per-pair multipliers w_j (default 1).
        eps: lower bound of the map norms (an all-zero map stays zero).

    Returns:
        Scalar float32 loss; each pair's term lies in [0, 2 / (h*w)] (the maps are non-negative unit vectors).
    """
    check_pairs(student_features, teacher_features)
    check_non_negative("beta", beta)
    weights = check_weights(weights, len(student_features))
    if student_scores.shape != (student_features[0].shape[0],) or teacher_scores.shape != student_scores.shape:
        raise ValueError(
            f"student_scores and teacher_scores must be (B,) = ({student_features[0].shape[0]},), got "
            f"{tuple(student_scores.shape)} and {tuple(teacher_scores.shape)}"
        )
    student_grads = score_gradients(student_features, student_scores, create_graph=True)
    with torch.enable_grad():
        teacher_grads = score_gradients(teacher_features, teacher_scores)
    terms = []
    for s, g_s, t, g_t, w in zip(student_features, student_grads, teacher_features, teacher_grads, weights):
        student_map = _cam_map(s, g_s, method)  # (B, h, w), differentiable through g_s
        with torch.no_grad():
            teacher_map = _cam_map(t, g_t, method)
        size = (min(s.shape[-2], t.shape[-2]), min(s.shape[-1], t.shape[-1]))
        y_s = normalize_map(resize_map(student_map, size), eps).flatten(1)  # (B, h*w)
        y_t = normalize_map(resize_map(teacher_map, size), eps).flatten(1)
        terms.append(w * (y_s - y_t).pow(2).mean())
    return beta * torch.stack(terms).sum()
