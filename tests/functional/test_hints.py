"""FitNets hints (Romero et al. 2015): hint_loss and the HintLoss module with its learned regressors."""

import pytest
import torch
from torch import nn

from attnkit.functional import hint_loss
from attnkit.losses import HintLoss, HintRegressor


def repdistiller_regressor_rule(s_chw, t_chw):
    """RepDistiller's ``ConvReg`` choice, re-derived from the heights: (layer type, kernel, stride, padding)."""
    (_, s_h, s_w), (_, t_h, t_w) = s_chw, t_chw
    if s_h == 2 * t_h:
        return nn.Conv2d, (3, 3), (2, 2), (1, 1)
    if s_h * 2 == t_h:
        return nn.ConvTranspose2d, (4, 4), (2, 2), (1, 1)
    return nn.Conv2d, (1 + s_h - t_h, 1 + s_w - t_w), (1, 1), (0, 0)


@pytest.mark.parametrize(
    "student_shape, teacher_shape",
    [((8, 16, 16), (32, 8, 8)), ((8, 4, 4), (16, 8, 8)), ((8, 8, 8), (16, 8, 8)), ((8, 8, 8), (4, 6, 6)),
     ((4, 9, 7), (6, 5, 4))],
)
def test_regressor_follows_repdistiller_and_maps_onto_the_teacher_shape(student_shape, teacher_shape):
    regressor = HintRegressor(student_shape, teacher_shape)
    kind, kernel, stride, padding = repdistiller_regressor_rule(student_shape, teacher_shape)
    conv = regressor.conv
    assert type(conv) is kind and (conv.kernel_size, conv.stride, conv.padding) == (kernel, stride, padding)
    assert conv.bias is None and isinstance(regressor.bn, nn.BatchNorm2d) and isinstance(regressor.relu, nn.ReLU)
    out = regressor(torch.randn(2, *student_shape))
    assert out.shape == (2, *teacher_shape) and bool((out >= 0).all())
    assert isinstance(HintRegressor(student_shape, teacher_shape, relu=False).relu, nn.Identity)


def test_regressor_refuses_a_smaller_student_map_and_bad_shapes():
    with pytest.raises(ValueError, match="no hint regressor from student size 4x4 to teacher size 16x16"):
        HintRegressor((8, 4, 4), (8, 16, 16))
    with pytest.raises(ValueError, match=r"student_shape must be a \(C, H, W\) triple"):
        HintRegressor((2, 8, 4, 4), (8, 4, 4))
    with pytest.raises(ValueError, match="1 student and 2 teacher shapes"):
        HintLoss([(8, 4, 4)], [(8, 4, 4), (8, 2, 2)])
    with pytest.raises(ValueError, match="2 feature pairs but this HintLoss was built for 1"):
        HintLoss([(3, 4, 4)], [(3, 4, 4)])([torch.randn(2, 3, 4, 4)] * 2, [torch.randn(2, 3, 4, 4)] * 2)


def test_hint_loss_is_beta_times_mean_squared_error_after_the_regressor():
    torch.manual_seed(1)
    regressor = nn.Conv2d(3, 5, 3, stride=2, padding=1).double()
    student, teacher = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.randn(2, 5, 4, 4, dtype=torch.float64)
    predicted = regressor(student)
    # Written out: the paper's squared L2 of the difference, summed over elements, then divided by the count
    # (RepDistiller's nn.MSELoss, weighted 100) instead of halved.
    diff = 0.0
    for b in range(2):
        for c in range(5):
            for i in range(4):
                for j in range(4):
                    diff += (predicted[b, c, i, j].item() - teacher[b, c, i, j].item()) ** 2
    expected = 100.0 * diff / (2 * 5 * 4 * 4)
    assert hint_loss(student, teacher, regressor).item() == pytest.approx(expected, rel=1e-9)
    assert hint_loss(teacher, teacher.clone()).item() == 0.0  # no regressor where the shapes agree
    check = torch.autograd.gradcheck(lambda s: hint_loss(s, teacher, regressor, beta=1.0),
                                     (student.clone().requires_grad_(),))
    assert check


def test_hint_module_trains_its_regressors_and_the_student_never_the_teacher():
    student = [torch.randn(4, 4, 8, 8, requires_grad=True), torch.randn(4, 8, 4, 4, requires_grad=True)]
    teacher = [torch.randn(4, 6, 4, 4, requires_grad=True), torch.randn(4, 8, 4, 4, requires_grad=True)]
    module = HintLoss([(4, 8, 8), (8, 4, 4)], [(6, 4, 4), (8, 4, 4)], beta=2.0, weights=[1.0, 0.5], relu=False)
    loss = module(student, teacher)
    pairs = zip(student, teacher, module.regressors, [1.0, 0.5])
    expected = 2.0 * sum(w * (r(s) - t).pow(2).mean() for s, t, r, w in pairs)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    assert all(s.grad is not None for s in student) and all(t.grad is None for t in teacher)
    assert "beta=2.0, relu=False" in repr(module)
    # A few steps of SGD on the regressors alone lower the loss.
    fixed = [s.detach() for s in student]
    optimizer = torch.optim.SGD(module.parameters(), lr=0.05)
    first = module(fixed, teacher).item()
    for _ in range(5):
        optimizer.zero_grad()
        module(fixed, teacher).backward()
        optimizer.step()
    assert module(fixed, teacher).item() < first


@pytest.mark.parametrize(
    "student, teacher, regressor, kwargs, message",
    [
        (torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4), None, {}, r"student_feature has shape \(2, 3, 4, 4\) but teacher"),
        (torch.randn(2, 3, 4, 4), torch.randn(2, 5, 2, 2), nn.Conv2d(3, 5, 1), {}, r"regressor\(student_feature\) has shape"),
        (torch.randn(2, 3, 4, 4), torch.randn(3, 3, 4, 4), None, {}, "batch sizes differ: student_feature 2"),
        (torch.randn(2, 3, 4), torch.randn(2, 3, 4, 4), None, {}, "student_feature must be 4-D"),
        (torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), None, {"beta": -1.0}, "beta must be"),
    ],
)
def test_bad_input(student, teacher, regressor, kwargs, message):
    with pytest.raises(ValueError, match=message):
        hint_loss(student, teacher, regressor, **kwargs)


@pytest.mark.parametrize("shape", [(True, 4, 4), (8, 4), (8, 0, 4), (8.0, 4, 4)])
def test_hint_loss_refuses_a_layer_shape_that_is_not_three_positive_ints(shape):
    with pytest.raises(ValueError, match="student_shape must be a \\(C, H, W\\) triple of positive ints"):
        HintLoss([shape], [(8, 4, 4)])
