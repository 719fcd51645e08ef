import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from attnkit.functional import activation_transfer_loss, at_loss, attention_map
from attnkit.losses import ActivationTransferLoss, ATLoss
from helpers import assert_close


def reference_at_loss(student, teacher, p=2.0, beta=1000.0, mode="code", weights=None):
    """Independent float64 NumPy version of the AT loss, same-resolution pairs only."""
    total = 0.0
    weights = weights or [1.0] * len(student)
    for s, t, w in zip(student, teacher, weights):
        maps = []
        for a in (s, t):
            a = a.detach().double().numpy()
            q = (np.abs(a) ** p).mean(axis=1).reshape(a.shape[0], -1)
            maps.append(q / np.maximum(np.sqrt((q ** 2).sum(axis=1, keepdims=True)), 1e-12))
        diff = maps[0] - maps[1]
        if mode == "code":
            total += w * (diff ** 2).mean()
        else:  # the paper: beta / (map elements * batch size) per layer, times the sum over the batch
            total += w * ((np.abs(diff) ** p).sum(axis=1) ** (1 / p)).sum() / (diff.shape[1] * diff.shape[0])
    return beta * total if mode == "code" else beta / 2 * total


def random_pairs(batch=3):
    student = [torch.randn(batch, 4, 8, 8), torch.randn(batch, 8, 4, 4)]
    teacher = [torch.randn(batch, 16, 8, 8), torch.randn(batch, 32, 4, 4)]
    return student, teacher


@pytest.mark.parametrize("mode", ["code", "paper"])
@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_matches_float64_reference(mode, p):
    student, teacher = random_pairs()
    weights = [0.5, 2.0]
    expected = reference_at_loss(student, teacher, p, 1000.0, mode, weights)
    for fused in (True, False):
        got = at_loss(student, teacher, p=p, mode=mode, weights=weights, fused=fused)
        assert got.dtype == torch.float32
        assert got.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("mode", ["code", "paper"])
def test_zero_for_identical_features(mode):
    student, _ = random_pairs()
    assert at_loss(student, [s.clone() for s in student], mode=mode).item() == pytest.approx(0.0, abs=1e-9)


@given(
    student_scale=st.lists(st.floats(min_value=1e-2, max_value=1e2), min_size=3, max_size=3),
    teacher_scale=st.lists(st.floats(min_value=1e-2, max_value=1e2), min_size=3, max_size=3),
    mode=st.sampled_from(["code", "paper"]),
)
def test_invariant_to_positive_per_sample_scaling(student_scale, teacher_scale, mode):
    gen = torch.Generator().manual_seed(1)
    student = [torch.randn(3, 4, 6, 6, generator=gen, dtype=torch.float64)]
    teacher = [torch.randn(3, 8, 6, 6, generator=gen, dtype=torch.float64)]
    s = torch.tensor(student_scale, dtype=torch.float64).view(3, 1, 1, 1)
    t = torch.tensor(teacher_scale, dtype=torch.float64).view(3, 1, 1, 1)
    base = at_loss(student, teacher, mode=mode)
    assert_close(at_loss([student[0] * s], [teacher[0] * t], mode=mode), base, rtol=1e-9, atol=1e-12)


def test_code_mode_is_beta_times_mean_squared_difference_of_maps():
    # Hand-computed: one sample, one channel, two positions. Student map [3,4]/5, teacher [1,0].
    student = [torch.tensor([[[[3.0 ** 0.5, 2.0]]]])]  # squares 3, 4 -> normalised [0.6, 0.8]
    teacher = [torch.tensor([[[[1.0, 0.0]]]])]
    # mean((0.6-1)^2, (0.8-0)^2) = (0.16 + 0.64) / 2 = 0.4
    assert at_loss(student, teacher, beta=1000).item() == pytest.approx(400.0, rel=1e-6)
    # paper mode: beta = 1000 / (2 positions * 1 image), 1/2 * beta * ||(-0.4, 0.8)||_2 = 250 * sqrt(0.8)
    assert at_loss(student, teacher, mode="paper").item() == pytest.approx(250 * 0.8 ** 0.5, rel=1e-6)


def test_paper_mode_divides_beta_by_map_size_and_batch_size_per_layer():
    # The same per-image map differences at 32x32, 16x16 and 8x8: the paper's beta = 1000 / (h*w * B) makes
    # each layer's term (1000 / 2) * mean_b ||Y_S - Y_T||_2 / (h*w), so a nearest-upsampled copy of a map
    # (the same unit map spread over k times more positions, its difference norm unchanged) weighs 1/k as much.
    gen = torch.Generator().manual_seed(3)
    student8, teacher8 = torch.rand(2, 3, 8, 8, generator=gen), torch.rand(2, 5, 8, 8, generator=gen)
    losses = {}
    for size in (8, 16, 32):
        s = torch.nn.functional.interpolate(student8, size=size, mode="nearest")
        t = torch.nn.functional.interpolate(teacher8, size=size, mode="nearest")
        losses[size] = at_loss([s], [t], mode="paper", beta=1000).item()
        maps = [attention_map(a).flatten(1) for a in (s, t)]
        norms = (maps[0] - maps[1]).norm(dim=1)  # (B,), independent of the upsampling
        assert losses[size] == pytest.approx(1000 / (size * size * 2) / 2 * norms.sum().item(), rel=1e-5)
    assert losses[8] / losses[16] == pytest.approx(4, rel=1e-5) and losses[8] / losses[32] == pytest.approx(16, rel=1e-5)


def test_student_gets_gradient_teacher_none():
    student, teacher = random_pairs()
    student = [s.requires_grad_(True) for s in student]
    teacher = [t.requires_grad_(True) for t in teacher]
    at_loss(student, teacher).backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in student)
    assert all(t.grad is None for t in teacher)


def test_different_resolutions_are_resized_to_the_smaller():
    student = [torch.randn(2, 4, 8, 8, dtype=torch.float64)]
    teacher = [torch.randn(2, 6, 4, 4, dtype=torch.float64)]
    # Reference: 2x2 average of the student's raw map, then normalise.
    q = student[0].pow(2).mean(1).view(2, 4, 2, 4, 2).mean(dim=(2, 4))
    ys = (q / q.flatten(1).norm(dim=1)[:, None, None]).flatten(1)
    qt = teacher[0].pow(2).mean(1).flatten(1)
    yt = qt / qt.norm(dim=1, keepdim=True)
    assert at_loss(student, teacher).item() == pytest.approx(1000 * (ys - yt).pow(2).mean().item(), rel=1e-9)


@pytest.mark.parametrize(
    "student, teacher, kwargs, message",
    [
        ([], [], {}, "no layer pairs"),
        ([torch.randn(2, 3, 4, 4)], [], {}, "no layer pairs"),
        ([torch.randn(2, 3, 4, 4)] * 2, [torch.randn(2, 3, 4, 4)], {}, "2 student feature maps but 1 teacher"),
        ([torch.randn(2, 3, 4, 4)], [torch.randn(3, 3, 4, 4)], {}, "batch sizes differ in pair 0"),
        ([torch.randn(2, 3, 4)], [torch.randn(2, 3, 4, 4)], {}, "student features of pair 0 must be 4-D"),
        ([torch.randn(2, 3, 4, 4)], [torch.randn(2, 3, 4, 4)], {"p": 0.0}, "p must be"),
        ([torch.randn(2, 3, 4, 4)], [torch.randn(2, 3, 4, 4)], {"p": -2.0}, "p must be"),
        ([torch.randn(2, 3, 4, 4)], [torch.randn(2, 3, 4, 4)], {"mode": "both"}, "mode must be"),
        ([torch.randn(2, 3, 4, 4)], [torch.randn(2, 3, 4, 4)], {"beta": -1.0}, "beta must be"),
        ([torch.randn(2, 3, 4, 4)], [torch.randn(2, 3, 4, 4)], {"weights": [1.0, 2.0]}, "2 weights for 1"),
        (torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), {}, "lists of"),
    ],
)
def test_bad_input_raises_clear_error(student, teacher, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        at_loss(student, teacher, **kwargs)


@pytest.mark.parametrize("side", ["student", "teacher"])
def test_non_finite_features_name_the_pair(side):
    student, teacher = random_pairs()
    target = student if side == "student" else teacher
    target[1][0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=f"the {side} features of pair 1 contain NaN or inf"):
        at_loss(student, teacher)
    target[1][0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=f"{side} features of pair 1"):
        at_loss(student, teacher)


def test_atloss_module_holds_hyperparameters():
    student, teacher = random_pairs()
    module = ATLoss(p=3.0, beta=10.0, mode="paper", weights=[1.0, 0.0])
    assert module(student, teacher).item() == pytest.approx(
        reference_at_loss(student, teacher, 3.0, 10.0, "paper", [1.0, 0.0]), rel=1e-5
    )
    assert "beta=10.0" in repr(module)


def test_activation_transfer_zero_for_equal_and_needs_adapters():
    s = [torch.randn(2, 4, 4, 4)]
    assert activation_transfer_loss(s, [s[0].clone()]).item() == 0.0
    with pytest.raises(ValueError, match="pair 0: student has 4 channels but teacher has 8"):
        activation_transfer_loss(s, [torch.randn(2, 8, 4, 4)])


def test_activation_transfer_value_and_adapter_learning():
    student = [torch.randn(2, 4, 8, 8, requires_grad=True), torch.randn(2, 8, 4, 4, requires_grad=True)]
    teacher = [torch.randn(2, 6, 8, 8), torch.randn(2, 8, 2, 2)]
    resized = torch.nn.functional.interpolate(student[1], size=(2, 2), mode="bilinear", align_corners=False)
    for normalize in (True, False):
        loss_fn = ActivationTransferLoss([4, 8], [6, 8], beta=2.0, normalize=normalize)
        assert isinstance(loss_fn.adapters[1], torch.nn.Identity)
        loss = loss_fn(student, teacher)
        adapted = loss_fn.adapters[0](student[0])
        if normalize:  # per sample: || s/||s|| - t/||t|| ||^2, averaged over the batch
            def unit(a):
                a = a.flatten(1)
                return a / a.norm(dim=1, keepdim=True)
            expected = 2.0 * sum((unit(s) - unit(t)).pow(2).sum(1).mean() for s, t in zip([adapted, resized], teacher))
        else:
            expected = 2.0 * ((adapted - teacher[0]).pow(2).mean() + (resized - teacher[1]).pow(2).mean())
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
        loss.backward()
        assert loss_fn.adapters[0].weight.grad is not None and student[0].grad is not None


def test_normalized_activation_transfer_is_scale_free_and_bounded():
    s, t = [torch.randn(3, 4, 5, 5)], [torch.randn(3, 4, 5, 5)]
    base = activation_transfer_loss(s, t)
    assert activation_transfer_loss([s[0] * 7.0], [t[0] * 0.01]).item() == pytest.approx(base.item(), rel=1e-5)
    assert activation_transfer_loss(s, [-s[0]]).item() == pytest.approx(4.0, rel=1e-6)  # opposite unit vectors
