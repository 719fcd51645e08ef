import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attnkit.functional import distillation_loss, kd_loss
from attnkit.losses import KDLoss


def reference_kd(student, teacher, T):
    s = student.double().numpy() / T
    t = teacher.double().numpy() / T
    log_ps = s - np.log(np.exp(s).sum(1, keepdims=True))
    log_pt = t - np.log(np.exp(t).sum(1, keepdims=True))
    kl = (np.exp(log_pt) * (log_pt - log_ps)).sum(1)  # KL(teacher || student) per sample
    return T * T * kl.mean()


@pytest.mark.parametrize("T", [1.0, 4.0, 10.0])
def test_kd_matches_reference(T):
    student, teacher = torch.randn(6, 10) * 3, torch.randn(6, 10) * 3
    assert kd_loss(student, teacher, T).item() == pytest.approx(reference_kd(student, teacher, T), rel=1e-5)


def test_kd_zero_when_logits_agree_and_shift_invariant():
    logits = torch.randn(4, 7)
    assert kd_loss(logits, logits.clone()).item() == pytest.approx(0.0, abs=1e-7)
    assert kd_loss(logits, logits + 5.0).item() == pytest.approx(0.0, abs=1e-6)  # softmax ignores shifts


def test_kd_gradient_reaches_student_only():
    student = torch.randn(4, 5, requires_grad=True)
    teacher = torch.randn(4, 5, requires_grad=True)
    kd_loss(student, teacher).backward()
    assert student.grad.abs().sum() > 0 and teacher.grad is None


def test_mixture_equals_weighted_sum():
    student, teacher = torch.randn(8, 10), torch.randn(8, 10)
    targets = torch.randint(0, 10, (8,))
    expected = 0.1 * F.cross_entropy(student, targets) + 0.9 * reference_kd(student, teacher, 4.0)
    assert distillation_loss(student, teacher, targets).item() == pytest.approx(float(expected), rel=1e-5)
    assert distillation_loss(student, teacher, targets, alpha=0.0).item() == pytest.approx(
        F.cross_entropy(student, targets).item()
    )
    assert KDLoss(T=2.0)(student, teacher).item() == pytest.approx(reference_kd(student, teacher, 2.0), rel=1e-5)


@pytest.mark.parametrize(
    "student, teacher, kwargs, message",
    [
        (torch.randn(4, 10), torch.randn(4, 100), {}, "student has 10 classes but teacher has 100"),
        (torch.randn(4, 10), torch.randn(5, 10), {}, "batch sizes differ"),
        (torch.randn(4), torch.randn(4, 10), {}, r"\(B, num_classes\)"),
        (torch.randn(4, 10), torch.randn(4, 10), {"T": 0.0}, "T must be"),
    ],
)
def test_bad_logits(student, teacher, kwargs, message):
    with pytest.raises(ValueError, match=message):
        kd_loss(student, teacher, **kwargs)


def test_bad_alpha():
    with pytest.raises(ValueError, match="alpha"):
        distillation_loss(torch.randn(2, 3), torch.randn(2, 3), torch.tensor([0, 1]), alpha=1.5)
