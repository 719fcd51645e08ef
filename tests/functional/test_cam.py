"""Grad-CAM / HiResCAM as pure functions, and CAM transfer: maps and losses written out by hand, gradcheck."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnkit.functional import cam_transfer_loss, grad_cam
from attnkit.losses import CAMTransferLoss


def square_mean_scores(features, weights, labels):
    """S_b = sum_k W[y_b, k] mean_ij A_bkij^2: dS/dA = 2 W[y, k] A_k / (h w) varies with the position."""
    return (features.pow(2).mean(dim=(2, 3)) @ weights.T).gather(1, labels[:, None])[:, 0]


def test_grad_cam_and_hirescam_equal_their_formulas():
    torch.manual_seed(0)
    a = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    w, y = torch.randn(4, 3, dtype=torch.float64), torch.tensor([1, 3])
    s = square_mean_scores(a, w, y)
    grads = 2 * w[y][:, :, None, None] * a.detach() / 20  # (B, C, h, w), by hand
    expected_grad_cam = (grads.mean(dim=(2, 3), keepdim=True) * a.detach()).sum(1).clamp_min(0)
    expected_hires = (grads * a.detach()).sum(1).clamp_min(0)
    torch.testing.assert_close(grad_cam(a, s), expected_grad_cam)
    torch.testing.assert_close(grad_cam(a, square_mean_scores(a, w, y), method="hirescam"), expected_hires)
    assert not torch.equal(expected_grad_cam, expected_hires)  # this head tells the two apart
    unrectified = grad_cam(a, square_mean_scores(a, w, y), relu=False)
    assert unrectified.min() < 0 and grad_cam(a, square_mean_scores(a, w, y)).grad_fn is None


class GapNet(nn.Module):
    """conv3x3 -> tanh -> (features) -> GAP -> linear: smooth, so gradcheck sees no kinks but the map's ReLU."""

    def __init__(self, channels: int, size_reduction: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, channels, 3, padding=1, stride=size_reduction, bias=False)
        self.fc = nn.Linear(channels, 3)

    def features(self, x):
        return torch.tanh(self.conv(x))

    def forward(self, x):
        features = self.features(x)
        return features, self.fc(features.mean(dim=(2, 3)))


def test_cam_transfer_is_ats_comparison_of_the_normalised_true_class_maps():
    torch.manual_seed(0)
    student, teacher = GapNet(4).double(), GapNet(6, size_reduction=2).double()
    x, y = torch.randn(3, 1, 4, 4, dtype=torch.float64), torch.tensor([0, 2, 1])
    s_feat, s_logits = student(x)
    t_feat, t_logits = teacher(x)
    loss = CAMTransferLoss(beta=1000.0)([s_feat], s_logits, [t_feat], t_logits, y)
    # By hand: with a GAP-linear head dS/dA_k = W[y, k] / (h w) everywhere, so Grad-CAM is Zhou et al.'s CAM / (h w).
    s_map = (student.fc.weight[y][:, :, None, None] * s_feat).sum(1).clamp_min(0) / 16  # (3, 4, 4)
    t_map = (teacher.fc.weight[y][:, :, None, None] * t_feat).sum(1).clamp_min(0) / 4  # (3, 2, 2)
    s_small = s_map.view(3, 2, 2, 2, 2).mean(dim=(2, 4))  # area-averaged 4x4 -> 2x2
    s_unit = F.normalize(s_small.flatten(1), dim=1)
    t_unit = F.normalize(t_map.flatten(1), dim=1)
    torch.testing.assert_close(loss, 1000.0 * (s_unit - t_unit.detach()).pow(2).mean())
    t_feat, t_logits = teacher(x)  # the loss freed the teacher's graph; a network matching itself scores 0
    scores = t_logits.gather(1, y[:, None])[:, 0]
    assert cam_transfer_loss([t_feat], scores, [t_feat], scores).item() == pytest.approx(0.0, abs=1e-12)


def test_cam_transfer_passes_gradcheck_in_the_students_parameters():
    torch.manual_seed(0)
    student, teacher = GapNet(3).double(), GapNet(5).double().requires_grad_(False)
    x, y = torch.randn(2, 1, 4, 4, dtype=torch.float64), torch.tensor([0, 2])

    def loss(conv_weight, fc_weight):
        features = torch.tanh(F.conv2d(x, conv_weight, padding=1))
        logits = F.linear(features.mean(dim=(2, 3)), fc_weight, student.fc.bias)
        t_feat = teacher.features(x).requires_grad_(True)
        t_logits = teacher.fc(t_feat.mean(dim=(2, 3)))
        pick = lambda z: z.gather(1, y[:, None])[:, 0]  # noqa: E731
        return cam_transfer_loss([features], pick(logits), [t_feat], pick(t_logits), beta=10.0)

    params = (student.conv.weight.detach().clone().requires_grad_(True), student.fc.weight.detach().clone().requires_grad_(True))
    assert torch.autograd.gradcheck(loss, params, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_the_students_parameters_learn_through_its_map():
    torch.manual_seed(0)
    student, teacher = GapNet(3), GapNet(5).eval().requires_grad_(False)
    x, y = torch.randn(4, 1, 6, 6), torch.tensor([0, 1, 2, 0])
    s_feat, s_logits = student(x)
    t_feat = teacher.features(x).requires_grad_(True)  # a frozen teacher's layer, made a root of its graph
    t_logits = teacher.fc(t_feat.mean(dim=(2, 3)))
    CAMTransferLoss(beta=1000.0)([s_feat], s_logits, [t_feat], t_logits, y).backward()
    # The classifier weight does not shape the features: its gradient can only come through dS/dA in the map
    # (double backprop). Its bias does not move dS/dA, so it gets none.
    assert student.fc.weight.grad is not None and student.fc.weight.grad.abs().sum() > 0
    assert student.conv.weight.grad.abs().sum() > 0
    assert student.fc.bias.grad is None or student.fc.bias.grad.abs().sum() == 0
    assert all(p.grad is None for p in teacher.parameters())


def test_features_outside_the_graph_of_the_scores_are_refused():
    a = torch.randn(2, 3, 2, 2)
    with pytest.raises(ValueError, match="inside the autograd graph"):
        grad_cam(a, a.sum(dim=(1, 2, 3)))
    b = a.clone().requires_grad_(True)
    with pytest.raises(ValueError, match=r"one value per image, shape \(B,\)"):
        grad_cam(b, b.sum(dim=(2, 3)))
    with pytest.raises(ValueError, match="must be one of"):
        grad_cam(b, b.sum(dim=(1, 2, 3)), method="gradcam++")
