import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attnkit.functional import dkd_loss, kd_loss, standardize_logits
from attnkit.losses import DKDLoss, KDLoss
from helpers import assert_close


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
    mixture = 0.1 * F.cross_entropy(student, targets) + 0.9 * kd_loss(student, teacher, 4.0)
    assert mixture.item() == pytest.approx(float(expected), rel=1e-5)  # the engine's kd_alpha = 0.9 (test_objective)
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


# --- logit standardisation (Sun et al. CVPR 2024) ---------------------------------------------------------


def reference_zscore(logits):
    """The paper's Z-score with the authors' code conventions: unbiased std (K - 1), 1e-7 added to it."""
    z = logits.double().numpy()
    return (z - z.mean(1, keepdims=True)) / (z.std(1, ddof=1, keepdims=True) + 1e-7)


def test_kd_default_is_bit_identical_to_plain_kd():
    student, teacher = torch.randn(6, 10) * 3, torch.randn(6, 10) * 3
    T = 4.0
    plain = F.kl_div(F.log_softmax(student / T, 1), F.log_softmax(teacher / T, 1), reduction="batchmean",
                     log_target=True) * (T * T)
    assert torch.equal(kd_loss(student, teacher, T), plain)
    assert torch.equal(kd_loss(student, teacher, T, standardize=False), plain)
    assert torch.equal(KDLoss(T=T)(student, teacher), plain)


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_standardized_kd_matches_reference(T):
    student, teacher = torch.randn(6, 10) * 3 + 1, torch.randn(6, 10) * 0.5
    s, t = reference_zscore(student), reference_zscore(teacher)
    expected = reference_kd(torch.from_numpy(s), torch.from_numpy(t), T)
    assert kd_loss(student, teacher, T, standardize=True).item() == pytest.approx(expected, rel=1e-5)
    assert KDLoss(T, standardize=True)(student, teacher).item() == pytest.approx(expected, rel=1e-5)
    assert "standardize=True" in repr(KDLoss(T, standardize=True))


def test_standardized_kd_ignores_each_models_logit_scale_and_shift():
    # The point of the method: the student matches the teacher's logit relations, not their range.
    student, teacher = torch.randn(5, 8, dtype=torch.float64), torch.randn(5, 8, dtype=torch.float64)
    base = kd_loss(student, teacher, 2.0, standardize=True)
    rescaled = kd_loss(student * 7.0 - 3.0, teacher * 0.2 + 1.0, 2.0, standardize=True)
    assert rescaled.item() == pytest.approx(base.item(), rel=1e-6)
    assert kd_loss(student * 7.0, student, 2.0, standardize=True).item() == pytest.approx(0.0, abs=1e-9)
    assert kd_loss(student * 7.0, student, 2.0).item() > 1.0  # plain KD asks for the same range


def test_standardize_logits_moments_and_one_class_error():
    logits = torch.randn(4, 6, dtype=torch.float64) * 5 + 2
    z = standardize_logits(logits)
    assert_close(z.mean(1), torch.zeros(4), atol=1e-12)
    assert_close(z.std(1), torch.ones(4), rtol=1e-6)
    with pytest.raises(ValueError, match="at least 2 classes"):
        kd_loss(torch.randn(3, 1), torch.randn(3, 1), standardize=True)


def test_standardized_kd_gradcheck():
    student = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(3, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s: kd_loss(s, teacher, 2.0, standardize=True), (student,))


# --- decoupled KD (Zhao et al. CVPR 2022) -----------------------------------------------------------------


def reference_dkd(student, teacher, targets, alpha, beta, T):
    """From the paper's definitions, sample by sample (float64): binary (target / rest) KL and the KL over the K - 1
    non-target classes (target removed, softmax renormalised over the rest), both times T^2, batch mean."""
    s, t = student.double().numpy() / T, teacher.double().numpy() / T
    total = 0.0
    for zs, zt, y in zip(s, t, targets.tolist()):
        ps, pt = np.exp(zs) / np.exp(zs).sum(), np.exp(zt) / np.exp(zt).sum()
        # b = [p_t, p_rest], p_rest = sum of the non-target probabilities (the paper's definition)
        bs, bt = np.array([ps[y], np.delete(ps, y).sum()]), np.array([pt[y], np.delete(pt, y).sum()])
        tckd = (bt * np.log(bt / bs)).sum()
        qs, qt = np.delete(np.exp(zs), y), np.delete(np.exp(zt), y)
        qs, qt = qs / qs.sum(), qt / qt.sum()
        nckd = (qt * np.log(qt / qs)).sum()
        total += alpha * tckd + beta * nckd
    return T * T * total / len(s)


def mdistiller_style_dkd(student, teacher, targets, alpha, beta, T):
    """The reference code's formulation, re-derived: gt mask, binary probabilities by masked sums, log of them,
    KL summed and divided by the batch; NCKD with the target logit pushed down by 1000 after dividing by T."""
    gt = torch.zeros_like(student).scatter_(1, targets[:, None], 1.0)
    ps, pt = F.softmax(student / T, 1), F.softmax(teacher / T, 1)
    bs = torch.stack([(ps * gt).sum(1), (ps * (1 - gt)).sum(1)], 1)
    bt = torch.stack([(pt * gt).sum(1), (pt * (1 - gt)).sum(1)], 1)
    tckd = (bt * (bt.log() - bs.log())).sum() / len(student)
    log_qs = F.log_softmax(student / T - 1000.0 * gt, 1)
    qt = F.softmax(teacher / T - 1000.0 * gt, 1)
    nckd = (torch.xlogy(qt, qt) - qt * log_qs).sum() / len(student)
    return (alpha * tckd + beta * nckd) * T * T


@pytest.mark.parametrize("alpha, beta, T", [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0), (0.0, 1.0, 2.0)])
def test_dkd_matches_paper_reference_and_mdistiller_formulation(alpha, beta, T):
    student, teacher = torch.randn(7, 10) * 3, torch.randn(7, 10) * 3
    targets = torch.randint(0, 10, (7,))
    expected = reference_dkd(student, teacher, targets, alpha, beta, T)
    got = dkd_loss(student, teacher, targets, alpha, beta, T)
    assert got.dtype == torch.float32 and got.item() == pytest.approx(expected, rel=1e-5)
    assert mdistiller_style_dkd(student, teacher, targets, alpha, beta, T).item() == pytest.approx(expected, rel=1e-4)
    assert DKDLoss(alpha, beta, T)(student, teacher, targets).item() == pytest.approx(expected, rel=1e-5)


def test_kd_is_tckd_plus_teacher_weighted_nckd():
    # The paper's reformulation of KD, per sample: KD = TCKD + (1 - p_t of the teacher) * NCKD.
    student, teacher = torch.randn(1, 6, dtype=torch.float64), torch.randn(1, 6, dtype=torch.float64)
    target, T = torch.tensor([2]), 3.0
    teacher_rest = 1 - torch.softmax(teacher / T, 1)[0, 2].item()
    dkd = dkd_loss(student, teacher, target, alpha=1.0, beta=teacher_rest, T=T)
    assert dkd.item() == pytest.approx(kd_loss(student, teacher, T).item(), rel=1e-9)


def test_dkd_zero_for_equal_logits_and_finite_for_a_confident_student():
    logits, targets = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    assert dkd_loss(logits, logits.clone(), targets).item() == pytest.approx(0.0, abs=1e-6)
    # The non-target probabilities underflow to 0 in float32 (logit gap / T = 500): the reference code's
    # log of them is -inf and its loss infinite; the log-sum-exp here stays finite.
    student = torch.tensor([[2000.0, 0.0, 0.0, 0.0]])
    teacher = torch.tensor([[2.0, 1.0, 0.0, 0.0]])
    got = dkd_loss(student, teacher, torch.tensor([0]))
    assert torch.isfinite(got)
    assert got.item() == pytest.approx(reference_dkd(student, teacher, torch.tensor([0]), 1.0, 8.0, 4.0), rel=1e-5)
    assert not torch.isfinite(mdistiller_style_dkd(student, teacher, torch.tensor([0]), 1.0, 8.0, 4.0))


def test_dkd_standardize_and_gradients():
    student = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([5, 0, 2])
    standardized = dkd_loss(student, teacher, targets, standardize=True)
    plain_of_z = dkd_loss(standardize_logits(student), standardize_logits(teacher), targets)
    assert standardized.item() == pytest.approx(plain_of_z.item(), rel=1e-12)
    standardized.backward()
    assert student.grad.abs().sum() > 0 and teacher.grad is None
    assert torch.autograd.gradcheck(lambda s: dkd_loss(s, teacher.detach(), targets, 1.0, 8.0, 2.0),
                                    (student.detach().requires_grad_(),))


@pytest.mark.parametrize(
    "targets, kwargs, message",
    [
        (torch.tensor([0, 1, 2]), {}, "got 3 targets for 4 logits"),
        (torch.tensor([0, 1, 2, 10]), {}, r"targets must lie in \[0, 9\]"),
        (torch.tensor([0.0, 1.0, 2.0, 3.0]), {}, "targets must be a 1-D integer tensor"),
        (torch.tensor([[0, 1, 2, 3]]), {}, "targets must be a 1-D integer tensor"),
        (torch.tensor([0, 1, 2, 3]), {"alpha": -1.0}, "alpha must be"),
        (torch.tensor([0, 1, 2, 3]), {"beta": float("inf")}, "beta must be"),
        (torch.tensor([0, 1, 2, 3]), {"T": 0.0}, "T must be"),
    ],
)
def test_dkd_bad_input(targets, kwargs, message):
    with pytest.raises(ValueError, match=message):
        dkd_loss(torch.randn(4, 10), torch.randn(4, 10), targets, **kwargs)
