import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnkit.functional import flip_symmetry_loss, grad_at_loss, input_gradient
from attnkit.losses import FlipSymmetryLoss, GradATLoss
from helpers import assert_close, toy_cnn


def test_input_gradient_of_linear_model_is_hand_computed():
    # logits = W x (no bias): dCE/dx = W^T (softmax(Wx) - onehot(y)).
    linear = nn.Linear(6, 3, bias=False).double()
    model = nn.Sequential(nn.Flatten(), linear)
    x = torch.randn(2, 1, 2, 3, dtype=torch.float64)
    target = torch.tensor([2, 0])
    probs = torch.softmax(x.flatten(1) @ linear.weight.T, dim=1)
    expected = ((probs - F.one_hot(target, 3).double()) @ linear.weight).view_as(x)
    assert_close(input_gradient(model, x, target), expected, rtol=1e-10)
    # One int target for all images, and None = predicted class.
    assert_close(input_gradient(model, x, 1), input_gradient(model, x, torch.tensor([1, 1])))
    predicted = probs.argmax(1)
    assert_close(input_gradient(model, x), input_gradient(model, x, predicted))


def test_input_gradient_is_per_sample_and_leaves_input_untouched():
    model = toy_cnn().eval()
    x = torch.randn(3, 3, 8, 8)
    target = torch.tensor([0, 1, 2])
    batched = input_gradient(model, x, target)
    single = torch.cat([input_gradient(model, x[i : i + 1], target[i : i + 1]) for i in range(3)])
    assert_close(batched, single, rtol=1e-5, atol=1e-7)
    assert not x.requires_grad and x.grad is None


def test_input_gradient_refuses_inference_mode():
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        input_gradient(toy_cnn(), torch.randn(1, 3, 8, 8), 0)


def test_input_gradient_bad_target():
    with pytest.raises(ValueError, match="targets must lie in"):
        input_gradient(toy_cnn(num_classes=5), torch.randn(2, 3, 8, 8), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="3 targets for a batch of 2"):
        input_gradient(toy_cnn(), torch.randn(2, 3, 8, 8), torch.tensor([0, 1, 2]))


def test_grad_at_loss_double_backprop_reaches_student_weights():
    student, teacher = toy_cnn(widths=(4, 8)), toy_cnn(widths=(8, 16))
    for p in teacher.parameters():
        p.requires_grad_(False)
    x, target = torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,))
    teacher_grad = input_gradient(teacher.eval(), x, target)
    student_grad, logits = input_gradient(student, x, target, create_graph=True, return_logits=True)
    assert student_grad.requires_grad and not teacher_grad.requires_grad
    loss = grad_at_loss(student_grad, teacher_grad, beta=2.0)
    expected = (student_grad - teacher_grad).flatten(1).norm(dim=1).mean()  # beta/2 = 1
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    weights = [p for p in student.parameters() if p.dim() > 1]
    grads = torch.autograd.grad(loss, weights)
    assert all(g.abs().sum() > 0 for g in grads)  # d/dW of dL/dx: the second-order path
    assert all(p.grad is None for p in teacher.parameters())
    assert GradATLoss(beta=2.0)(student_grad, teacher_grad).item() == pytest.approx(loss.item())


def test_grad_at_loss_double_backprop_matches_finite_differences():
    torch.manual_seed(3)
    student = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 16, 3)).double()
    x, target = torch.randn(2, 1, 4, 4, dtype=torch.float64), torch.tensor([0, 2])
    teacher_grad = torch.randn(2, 1, 4, 4, dtype=torch.float64) * 0.1
    weight = student[0].weight

    def loss_value():
        return grad_at_loss(input_gradient(student, x, target, create_graph=True), teacher_grad)

    (analytic,) = torch.autograd.grad(loss_value(), weight)
    eps, index = 1e-6, (1, 0, 1, 2)
    with torch.no_grad():
        weight[index] += eps
    plus = loss_value().item()
    with torch.no_grad():
        weight[index] -= 2 * eps
    minus = loss_value().item()
    assert analytic[index].item() == pytest.approx((plus - minus) / (2 * eps), rel=1e-4)


def test_flip_symmetry_loss_hand_computed_and_zero_for_symmetric_maps():
    grad = torch.tensor([[[[1.0, 2.0, 3.0]]]])
    assert flip_symmetry_loss(grad, grad.flip(-1)).item() == 0.0
    other = torch.tensor([[[[0.0, 2.0, 3.0]]]])  # flip -> [3, 2, 0]; diff [-2, 0, 3]
    assert flip_symmetry_loss(grad, other, beta=4.0).item() == pytest.approx(2.0 * 13 ** 0.5)
    assert FlipSymmetryLoss(beta=4.0)(grad, other).item() == pytest.approx(2.0 * 13 ** 0.5)


def test_flip_symmetry_of_a_mirror_symmetric_model_is_zero():
    # A conv with a left-right symmetric kernel followed by global pooling is flip-invariant.
    conv = nn.Conv2d(1, 2, 3, padding=1).double()
    with torch.no_grad():
        conv.weight.copy_((conv.weight + conv.weight.flip(-1)) / 2)
    model = nn.Sequential(conv, nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3)).double()
    x, target = torch.randn(2, 1, 5, 5, dtype=torch.float64), torch.tensor([0, 1])
    loss = flip_symmetry_loss(input_gradient(model, x, target), input_gradient(model, x.flip(-1), target))
    assert loss.item() == pytest.approx(0.0, abs=1e-12)


def test_shape_mismatch_errors():
    with pytest.raises(ValueError, match="same shape"):
        grad_at_loss(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 5))
    with pytest.raises(ValueError, match="beta"):
        flip_symmetry_loss(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), beta=-1.0)


def test_input_gradient_is_per_image_in_eval_mode_but_batch_norm_couples_images_in_train_mode():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 3)).double()
    x, target = torch.randn(4, 3, 5, 5, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    others = torch.randn(3, 3, 5, 5, dtype=torch.float64)  # other images to batch image 0 with

    def image0_gradient(batch):
        return input_gradient(model, batch, torch.tensor([0] * len(batch)))[0]

    # eval mode: the running statistics normalise every image alike, so image 0's gradient is its own.
    model.eval()
    alone = image0_gradient(x[:1])
    assert_close(image0_gradient(torch.cat([x[:1], x[1:]])), alone, rtol=1e-10, atol=1e-12)
    assert_close(image0_gradient(torch.cat([x[:1], others])), alone, rtol=1e-10, atol=1e-12)
    # train mode: batch statistics; J[0] is the gradient of the whole batch's summed loss with respect to
    # image 0, so it changes with the images it is batched with.
    model.train()
    with_x, with_others = image0_gradient(x), image0_gradient(torch.cat([x[:1], others]))
    assert (with_x - with_others).abs().max() > 1e-3 * with_x.abs().max()
    batch = x.clone().requires_grad_(True)
    summed = F.cross_entropy(model(batch), target, reduction="sum")
    (expected,) = torch.autograd.grad(summed, batch)
    assert_close(input_gradient(model, x, target), expected, rtol=1e-10, atol=1e-12)
