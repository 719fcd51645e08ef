"""Integrated Gradients, SmoothGrad and Guided Backpropagation (through captum) against the papers' definitions."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnkit.explain import GuidedBackprop, IntegratedGradients, Saliency, SmoothGrad
from explain_toys import LinearHeadNet, SmoothNet
from helpers import assert_close

X = torch.randn(3, 2, 6, 6, generator=torch.Generator().manual_seed(0))
TARGET = torch.tensor([0, 3, 1])


def _linear_model() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Flatten(), nn.Linear(2 * 6 * 6, 4))


def test_integrated_gradients_of_a_linear_model_is_input_times_weight():
    # S(x) = <W_t, x> + b: the gradient is W_t on the whole path, so IG = (x - 0) ⊙ W_t, summed over channels.
    model = _linear_model()
    weights = model[1].weight.detach()[TARGET].view(3, 2, 6, 6)
    assert_close(IntegratedGradients(model, steps=4).attribute(X, TARGET), (X * weights).sum(1), rtol=1e-5, atol=1e-6)


def test_integrated_gradients_equals_a_riemann_sum_of_the_path_integral_and_is_complete():
    torch.manual_seed(0)
    model = SmoothNet().double().eval()
    x, target = torch.randn(2, 1, 5, 5, dtype=torch.float64), torch.tensor([1, 0])
    # The paper's definition, (x - x') ⊙ integral_0^1 dS/dx(x' + a (x - x')) da with x' = 0, by the midpoint rule.
    points = 400
    total = torch.zeros_like(x)
    for a in (torch.arange(points, dtype=torch.float64) + 0.5) / points:
        scaled = (a * x).requires_grad_(True)
        (grad,) = torch.autograd.grad(model(scaled).gather(1, target[:, None]).sum(), scaled)
        total += grad / points
    expected = (x * total).sum(1)
    maps = IntegratedGradients(model, steps=50).attribute(x, target)
    assert_close(maps, expected, rtol=1e-4, atol=1e-7)
    with torch.no_grad():  # completeness: the attributions add up to S(x) - S(x')
        gap = (model(x) - model(torch.zeros_like(x))).gather(1, target[:, None]).squeeze(1)
    assert_close(maps.flatten(1).sum(1), gap, rtol=1e-4, atol=1e-7)


def test_smoothgrad_is_the_mean_gradient_over_noisy_copies():
    # Linear model: every noisy copy has the same gradient W_t, so SmoothGrad = max_c |W_t| exactly.
    model = _linear_model()
    weights = model[1].weight.detach()[TARGET].view(3, 2, 6, 6)
    assert_close(SmoothGrad(model, samples=5).attribute(X, TARGET), weights.abs().amax(1), rtol=1e-6, atol=1e-7)
    # S(x) = sum_i a_i x_i^2: dS/dx = 2 a ⊙ x, and its mean over x + N(0, s^2) copies is 2 a ⊙ (x + mean noise),
    # whose expectation is 2 a ⊙ x; the mean of n copies' noise has standard deviation s / sqrt(n).
    a = torch.rand(1, 1, 6, 6) + 0.5
    quadratic = lambda z: (a * z.pow(2)).flatten(1).sum(1, keepdim=True).expand(-1, 2)  # noqa: E731

    class Quadratic(nn.Module):
        def forward(self, z):
            return quadratic(z)

    x = torch.randn(2, 1, 6, 6)
    smooth = SmoothGrad(Quadratic(), samples=2000, stdev=0.3, samples_batch_size=500).attribute(x, 0)
    four_sigma = 4 * 2 * a.max() * 0.3 / 2000**0.5
    torch.testing.assert_close(smooth, (2 * a * x).abs()[:, 0], rtol=0, atol=float(four_sigma))
    # No noise: the saliency map. The same seed: the same map; another seed: another map.
    nonlinear = LinearHeadNet().eval()
    assert_close(SmoothGrad(nonlinear, samples=3, stdev=0.0).attribute(X, TARGET), Saliency(nonlinear).attribute(X, TARGET))
    first, again = (SmoothGrad(nonlinear, samples=4).attribute(X, TARGET) for _ in range(2))
    assert torch.equal(first, again)
    assert not torch.equal(first, SmoothGrad(nonlinear, samples=4, seed=1).attribute(X, TARGET))


def test_guided_backprop_passes_back_only_positive_gradients_through_relus():
    model = LinearHeadNet().eval()
    pre = F.conv2d(X, model.conv.weight, model.conv.bias, stride=2, padding=1).detach()  # (3, 3, 3, 3)
    expected = []
    for b in range(3):
        grad_a = model.fc.weight.detach()[TARGET[b]].view(1, 3, 3, 3)  # dS/dA
        guided = grad_a.clamp_min(0) * (pre[b : b + 1] > 0)  # ReLU backward, guided: positive gradients only
        grad_x = F.conv_transpose2d(guided, model.conv.weight.detach(), stride=2, padding=1, output_padding=1)
        expected.append(grad_x.abs().amax(1)[0])
    assert_close(GuidedBackprop(model).attribute(X, TARGET), torch.stack(expected), rtol=1e-5, atol=1e-7)
    assert not torch.allclose(Saliency(model).attribute(X, TARGET), torch.stack(expected))  # negative paths dropped


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 0}, "steps must be a positive int"), ({"internal_batch_size": -1}, "internal_batch_size"),
])
def test_integrated_gradients_option_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        IntegratedGradients(_linear_model(), **kwargs)
    with pytest.raises(ValueError, match="stdev must be a number >= 0"):
        SmoothGrad(_linear_model(), stdev=-1)
