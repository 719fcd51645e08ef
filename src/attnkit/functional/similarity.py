"""Similarity-preserving knowledge distillation (Tung & Mori, "Similarity-Preserving Knowledge Distillation",
ICCV 2019, section 3).

The student need not mimic the teacher's activations, only which images of the batch look alike to it: with
Q the (B, C*H*W) flattened activations of a layer, G = row-normalise(Q Q^T) is the batch's (B, B) similarity
matrix, and the loss is the squared Frobenius distance of the student's and the teacher's G.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .attention import DEFAULT_EPS
from .checks import at_least_float32, check_non_negative, check_pairs, check_weights

__all__ = ["similarity_matrix", "sp_loss"]


def similarity_matrix(features: Tensor, eps: float = DEFAULT_EPS) -> Tensor:
    """Row-L2-normalised Gram matrix of the batch, the paper's G (section 3): (B, C, H, W) -> (B, B).

    G~ = Q Q^T with Q = features.flatten(1) (B, C*H*W); row i of G is row i of G~ divided by its L2 norm
    (clamped below by ``eps``, so that an all-zero sample gives a zero row instead of NaN).

    >>> similarity_matrix(torch.tensor([[1.0, 0.0], [1.0, 1.0]]).view(2, 2, 1, 1))  # rows (1, 1)/sqrt 2, (1, 2)/sqrt 5
    tensor([[0.7071, 0.7071],
            [0.4472, 0.8944]])
    """
    q = at_least_float32(features).flatten(1)  # (B, C*H*W)
    return F.normalize(q @ q.T, dim=1, eps=eps)  # (B, B)


def sp_loss(
    student_features: Sequence[Tensor],
    teacher_features: Sequence[Tensor],
    beta: float = 3000.0,
    weights: Sequence[float] | None = None,
) -> Tensor:
    """Similarity-preserving loss ``beta * sum_j w_j * ||G_S^j - G_T^j||_F^2 / B^2`` (Tung & Mori 2019, section 3).

    Pairs j may differ in channels and resolution (each side has its own (B, B) G). The paper sums over the
    layer pairs and divides by b^2; so do RepDistiller (``Similarity``, one pair: the last feature map before
    the pooling, ``feat[-2]``) and mdistiller (``sp_loss``, sum over the pairs given). Its total loss is
    ``CE + gamma * L_SP`` with gamma = 3000 in the CIFAR-10 experiments, the weight RepDistiller and mdistiller
    also use on CIFAR-100; ``beta`` is that gamma.

    Args:
        student_features: one (B, C_j, H_j, W_j) tensor per pair, in the student's graph.
        teacher_features: one (B, C'_j, H'_j, W'_j) tensor per pair; never receives gradient.
        beta: loss weight (the paper's gamma), >= 0.
        weights: optional per-pair multipliers w_j (default 1).

    Returns:
        Scalar loss (float32 or wider); each pair's term lies in [0, 4 / B] (the rows of G are unit vectors).
    """
    check_pairs(student_features, teacher_features)
    check_non_negative("beta", beta)
    weights = check_weights(weights, len(student_features))
    batch = student_features[0].shape[0]
    terms = []
    for s, t, w in zip(student_features, teacher_features, weights):
        with torch.no_grad():
            g_teacher = similarity_matrix(t.detach())  # (B, B)
        g_student = similarity_matrix(s)  # (B, B)
        terms.append(w * (g_student - g_teacher).pow(2).sum() / batch**2)
    return beta * torch.stack(terms).sum()
