"""Similarity-preserving KD (Tung & Mori 2019) against references written from the paper and RepDistiller."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attnkit.functional import similarity_matrix, sp_loss
from attnkit.losses import SPLoss


def reference_sp(student, teacher, beta=1.0, weights=None):
    """The paper's definitions with loops, float64: G~[i, j] = <q_i, q_j>, rows L2-normalised, ||.||_F^2 / b^2."""
    total = 0.0
    weights = weights or [1.0] * len(student)
    for s, t, w in zip(student, teacher, weights):
        grams = []
        for a in (s, t):
            q = a.detach().double().reshape(a.shape[0], -1).numpy()
            b = len(q)
            g = np.array([[float(np.dot(q[i], q[j])) for j in range(b)] for i in range(b)])
            grams.append(g / np.linalg.norm(g, axis=1, keepdims=True))
        total += w * ((grams[0] - grams[1]) ** 2).sum() / b**2
    return beta * total


def repdistiller_style_sp(f_s, f_t):
    """RepDistiller's ``Similarity.similarity_loss`` formulation, re-derived: mm, F.normalize, sum / bsz^2."""
    bsz = f_s.shape[0]
    g_s = F.normalize(torch.mm(f_s.view(bsz, -1), f_s.view(bsz, -1).t()))
    g_t = F.normalize(torch.mm(f_t.view(bsz, -1), f_t.view(bsz, -1).t()))
    return ((g_t - g_s) ** 2).sum() / (bsz * bsz)


def test_matches_paper_reference_and_repdistiller_formulation():
    student = [torch.randn(5, 4, 6, 6), torch.randn(5, 8, 3, 3)]
    teacher = [torch.randn(5, 16, 6, 6), torch.randn(5, 2, 2, 2)]  # channels and resolutions may differ
    expected = reference_sp(student, teacher, 3000.0, [1.0, 0.5])
    assert sp_loss(student, teacher, weights=[1.0, 0.5]).item() == pytest.approx(expected, rel=1e-5)
    repdistiller = 3000.0 * (repdistiller_style_sp(student[0], teacher[0])
                             + 0.5 * repdistiller_style_sp(student[1], teacher[1]))
    assert repdistiller.item() == pytest.approx(expected, rel=1e-5)
    assert SPLoss(weights=[1.0, 0.5])(student, teacher).item() == pytest.approx(expected, rel=1e-5)
    assert "beta=3000.0" in repr(SPLoss())


def test_hand_computed_two_images():
    # Student rows q = (1, 0), (1, 1): G~ = [[1, 1], [1, 2]], rows / sqrt(2), / sqrt(5). Teacher orthogonal: G = I.
    student = [torch.tensor([[1.0, 0.0], [1.0, 1.0]]).view(2, 2, 1, 1)]
    teacher = [torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(2, 2, 1, 1)]
    r2, r5 = math.sqrt(2), math.sqrt(5)
    expected = ((1 / r2 - 1) ** 2 + (1 / r2) ** 2 + (1 / r5) ** 2 + (2 / r5 - 1) ** 2) / 4
    assert sp_loss(student, teacher, beta=1.0).item() == pytest.approx(expected, rel=1e-6)
    assert torch.allclose(similarity_matrix(student[0]), torch.tensor([[1 / r2, 1 / r2], [1 / r5, 2 / r5]]))


def test_scale_invariant_permutation_equivariant_and_zero_for_equal_features():
    student, teacher = [torch.randn(6, 3, 4, 4, dtype=torch.float64)], [torch.randn(6, 5, 4, 4, dtype=torch.float64)]
    base = sp_loss(student, teacher).item()
    assert sp_loss([student[0] * 9.0], [teacher[0] * 0.1]).item() == pytest.approx(base, rel=1e-9)
    order = torch.randperm(6)
    assert sp_loss([student[0][order]], [teacher[0][order]]).item() == pytest.approx(base, rel=1e-9)
    assert sp_loss(student, [student[0].clone()]).item() == pytest.approx(0.0, abs=1e-9)
    assert 0 < base / 3000.0 <= 4 / 6  # rows are unit vectors


def test_gradient_reaches_student_only_and_gradcheck():
    student = torch.randn(3, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(3, 4, 2, 2, dtype=torch.float64, requires_grad=True)
    sp_loss([student], [teacher]).backward()
    assert student.grad.abs().sum() > 0 and teacher.grad is None
    assert torch.autograd.gradcheck(lambda s: sp_loss([s], [teacher.detach()], beta=1.0),
                                    (student.detach().requires_grad_(),))


@pytest.mark.parametrize(
    "student, teacher, kwargs, message",
    [
        (torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), {}, "lists of"),
        ([torch.randn(2, 3, 4, 4)], [torch.randn(3, 3, 4, 4)], {}, "batch sizes differ in pair 0"),
        ([torch.randn(2, 12)], [torch.randn(2, 12)], {}, "must be 4-D"),
        ([torch.randn(2, 3, 4, 4)], [torch.randn(2, 3, 4, 4)], {"beta": -1.0}, "beta must be"),
        ([torch.randn(2, 3, 4, 4)], [torch.randn(2, 3, 4, 4)], {"weights": [1.0, 1.0]}, "2 weights for 1"),
    ],
)
def test_bad_input(student, teacher, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        sp_loss(student, teacher, **kwargs)
