"""Neuron selectivity transfer (Huang & Wang 2017) against references written from the paper and RepDistiller."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attnkit.functional import nst_loss
from attnkit.losses import NSTLoss


def reference_mmd2(student, teacher, d=2, c=0.0):
    """The paper's MMD^2 with loops, float64, for one same-resolution pair: mean over images of MMD^2 between
    the L2-normalised channel maps of the teacher (C_T samples) and the student (C_S samples)."""
    def kernel(x, y):
        return (float(np.dot(x, y)) + c) ** d

    total = 0.0
    for s, t in zip(student.double().numpy(), teacher.double().numpy()):
        fs = [m.ravel() / np.linalg.norm(m) for m in s]
        ft = [m.ravel() / np.linalg.norm(m) for m in t]
        tt = sum(kernel(a, b) for a in ft for b in ft) / len(ft) ** 2
        ss = sum(kernel(a, b) for a in fs for b in fs) / len(fs) ** 2
        st = sum(kernel(a, b) for a in fs for b in ft) / (len(fs) * len(ft))
        total += tt + ss - 2 * st
    return total / len(student)


def repdistiller_style_nst(f_s, f_t):
    """RepDistiller's ``NSTLoss.nst_loss`` formulation, re-derived: pool the larger map to the smaller's
    (square) size, normalise each channel, squared-dot kernel by broadcasting, means over (B, C, C)."""
    s_h, t_h = f_s.shape[2], f_t.shape[2]
    if s_h > t_h:
        f_s = F.adaptive_avg_pool2d(f_s, (t_h, t_h))
    elif s_h < t_h:
        f_t = F.adaptive_avg_pool2d(f_t, (s_h, s_h))
    f_s = F.normalize(f_s.flatten(2), dim=2)
    f_t = F.normalize(f_t.flatten(2), dim=2)

    def poly(a, b):
        return (a.unsqueeze(1) * b.unsqueeze(2)).sum(-1).pow(2)

    return poly(f_t, f_t).mean() + poly(f_s, f_s).mean() - 2 * poly(f_s, f_t).mean()


def test_matches_paper_reference_and_repdistiller_formulation():
    student = [torch.randn(3, 4, 8, 8), torch.randn(3, 6, 4, 4)]
    teacher = [torch.randn(3, 7, 4, 4), torch.randn(3, 3, 4, 4)]  # pair 0: student pooled 8x8 -> 4x4
    pooled = F.adaptive_avg_pool2d(student[0], (4, 4))
    expected = 50.0 * (reference_mmd2(pooled, teacher[0]) + 2.0 * reference_mmd2(student[1], teacher[1]))
    assert nst_loss(student, teacher, weights=[1.0, 2.0]).item() == pytest.approx(expected, rel=1e-5)
    repdistiller = 50.0 * (repdistiller_style_nst(student[0], teacher[0])
                           + 2.0 * repdistiller_style_nst(student[1], teacher[1]))
    assert repdistiller.item() == pytest.approx(expected, rel=1e-5)
    assert NSTLoss(weights=[1.0, 2.0])(student, teacher).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("d, c", [(1, 0.0), (3, 1.0), (2, 0.5)])
def test_other_polynomial_kernels_match_the_paper_formula(d, c):
    student, teacher = [torch.randn(2, 3, 3, 3)], [torch.randn(2, 5, 3, 3)]
    expected = reference_mmd2(student[0], teacher[0], d, c)
    assert nst_loss(student, teacher, beta=1.0, d=d, c=c).item() == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert "d=3" in repr(NSTLoss(d=3))


def test_quadratic_kernel_mmd_is_the_distance_of_second_moments():
    # k(x, y) = (x^T y)^2 = <x x^T, y y^T>_F, so MMD^2 = ||mean_i f_S^i f_S^i^T - mean_k f_T^k f_T^k^T||_F^2.
    student, teacher = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.randn(2, 5, 4, 4, dtype=torch.float64)

    def second_moment(a):
        f = F.normalize(a.flatten(2), dim=2)  # (B, C, N)
        return f.transpose(1, 2) @ f / a.shape[1]  # (B, N, N)

    expected = (second_moment(student) - second_moment(teacher)).pow(2).sum(dim=(1, 2)).mean()
    assert nst_loss([student], [teacher], beta=1.0).item() == pytest.approx(expected.item(), rel=1e-9)


def test_zero_when_the_channel_distributions_agree():
    teacher = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    # The same channels, reordered, rescaled and each listed twice: the same empirical distribution.
    student = torch.cat([teacher[:, [2, 0, 3, 1]] * 5.0, teacher], dim=1)  # (2, 8, 3, 3)
    assert nst_loss([student], [teacher]).item() == pytest.approx(0.0, abs=1e-9)
    assert nst_loss([torch.randn(2, 4, 3, 3, dtype=torch.float64)], [teacher]).item() > 0


def test_gradient_reaches_student_only_and_gradcheck():
    student = torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, 4, 2, 2, dtype=torch.float64, requires_grad=True)
    nst_loss([student], [teacher]).backward()
    assert student.grad.abs().sum() > 0 and teacher.grad is None
    assert torch.autograd.gradcheck(lambda s: nst_loss([s], [teacher.detach()], beta=1.0, d=3, c=0.5),
                                    (student.detach().requires_grad_(),))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"d": 0}, r"d \(the kernel degree\) must be a positive int"),
        ({"d": 2.5}, r"d \(the kernel degree\) must be a positive int"),
        ({"c": -1.0}, "c must be a finite number >= 0"),
        ({"beta": -1.0}, "beta must be"),
    ],
)
def test_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        nst_loss([torch.randn(2, 3, 4, 4)], [torch.randn(2, 3, 4, 4)], **kwargs)
    with pytest.raises(ValueError, match="batch sizes differ in pair 0"):
        nst_loss([torch.randn(2, 3, 4, 4)], [torch.randn(3, 3, 4, 4)])
