import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from attnkit.functional import AttentionMapFunction, attention_map, resize_map
from helpers import assert_close

# A (1, 2, 1, 2) tensor: channel 0 = [1, 0], channel 1 = [-1, 2].
A = torch.tensor([[[[1.0, 0.0]], [[-1.0, 2.0]]]], dtype=torch.float64)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize(
    "p, reduction, expected",
    [
        (1, "sum", [2.0, 2.0]),  # F_sum: |1|+|-1|, |0|+|2|
        (2, "sum", [2.0, 4.0]),  # F_sum^2
        (2, "mean", [1.0, 2.0]),  # F_sum^2 / C
        (3, "sum", [2.0, 8.0]),  # F_sum^3
        (2, "max", [1.0, 4.0]),  # F_max^2
        (0.5, "sum", [2.0, 2 ** 0.5]),  # any real p > 0
    ],
)
def test_hand_computed_maps(p, reduction, expected, fused):
    raw = attention_map(A, p=p, reduction=reduction, normalize=False, fused=fused)
    assert_close(raw, [[expected]])
    normalized = attention_map(A, p=p, reduction=reduction, fused=fused)
    e = torch.tensor(expected, dtype=torch.float64)
    assert_close(normalized, [[(e / e.norm()).tolist()]])


@pytest.mark.parametrize("p", [0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "max"])
@pytest.mark.parametrize("normalize", [True, False])
def test_fused_gradcheck(p, reduction, normalize):
    # Values bounded away from 0 and ties: |a|^p is smooth there for every p.
    x = (torch.rand(2, 3, 4, 5, dtype=torch.float64) + 0.2) * torch.tensor([1.0, -1.0]).repeat(30)[:60].view(1, 3, 4, 5)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: AttentionMapFunction.apply(t, p, reduction, normalize, 1e-12), (x,))


@pytest.mark.parametrize("p", [1.0, 2.0, 2.5])
@pytest.mark.parametrize("reduction", ["mean", "sum", "max"])
def test_fused_equals_eager_forward_and_backward(p, reduction):
    x = torch.randn(3, 7, 6, 5, dtype=torch.float64)
    weight = torch.randn(3, 6, 5, dtype=torch.float64)
    grads = []
    for fused in (True, False):
        xi = x.clone().requires_grad_(True)
        out = attention_map(xi, p=p, reduction=reduction, fused=fused)
        (out * weight).sum().backward()
        grads.append((out.detach(), xi.grad))
    assert_close(grads[0][0], grads[1][0], rtol=1e-10, atol=1e-12)
    assert_close(grads[0][1], grads[1][1], rtol=1e-8, atol=1e-10)


def test_channels_last_and_float32_paths_agree():
    x = torch.randn(4, 16, 8, 8)
    reference = attention_map(x.double(), fused=False)
    for tensor in (x, x.contiguous(memory_format=torch.channels_last)):
        xi = tensor.clone().requires_grad_(True)
        out = attention_map(xi)
        assert_close(out, reference.float(), rtol=1e-5, atol=1e-6)
        out.sum().backward()
        assert torch.isfinite(xi.grad).all()


def test_bfloat16_features_give_float32_maps():
    x = torch.randn(2, 8, 4, 4)
    out = attention_map(x.bfloat16())
    assert out.dtype == torch.float32
    assert_close(out, attention_map(x), rtol=2e-2, atol=2e-2)


@given(
    scale=st.lists(st.floats(min_value=1e-3, max_value=1e3), min_size=2, max_size=2),
    p=st.sampled_from([1.0, 2.0, 4.0]),
    reduction=st.sampled_from(["mean", "sum", "max"]),
)
def test_normalized_map_invariant_to_positive_per_sample_scale(scale, p, reduction):
    x = torch.randn(2, 5, 4, 3, dtype=torch.float64)
    scaled = x * torch.tensor(scale, dtype=torch.float64).view(2, 1, 1, 1)
    assert_close(attention_map(scaled, p, reduction), attention_map(x, p, reduction), rtol=1e-9, atol=1e-12)


def test_normalization_is_per_sample_unit_norm():
    out = attention_map(torch.randn(5, 3, 6, 7))
    assert_close(out.flatten(1).norm(dim=1), torch.ones(5), rtol=1e-5)


def test_zero_features_give_zero_map_and_finite_gradient():
    x = torch.zeros(2, 3, 4, 4, requires_grad=True)
    out = attention_map(x)
    assert torch.equal(out, torch.zeros(2, 4, 4))
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_resize_non_square_and_normalized():
    x = torch.randn(2, 3, 8, 12, dtype=torch.float64)
    out = attention_map(x, size=(4, 3))
    assert out.shape == (2, 4, 3)
    assert_close(out.flatten(1).norm(dim=1), torch.ones(2, dtype=torch.float64))
    # Shrinking is area averaging of the raw map, then normalisation.
    raw = attention_map(x, normalize=False)
    pooled = raw.view(2, 4, 2, 3, 4).mean(dim=(2, 4))
    assert_close(out, pooled / pooled.flatten(1).norm(dim=1)[:, None, None])
    assert resize_map(raw, (16, 20)).shape == (2, 16, 20)  # enlarging: bilinear


def test_fused_op_keeps_no_activation_sized_buffer():
    x = torch.randn(4, 32, 8, 8, requires_grad=True)
    saved: list[torch.Tensor] = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        attention_map(x)
    map_size = 4 * 8 * 8
    for t in saved:
        assert t.data_ptr() == x.data_ptr() or t.numel() <= map_size, tuple(t.shape)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"features": torch.randn(3, 4, 4)}, "4-D"),
        ({"features": torch.randn(1, 2, 3, 4), "p": 0}, "p must be"),
        ({"features": torch.randn(1, 2, 3, 4), "p": -1.0}, "p must be"),
        ({"features": torch.randn(1, 2, 3, 4), "reduction": "median"}, "reduction"),
        ({"features": torch.randn(1, 2, 3, 4), "size": (0, 2)}, "size"),
        ({"features": torch.randint(0, 3, (1, 2, 3, 4))}, "floating-point"),
    ],
)
def test_bad_input_raises_clear_error(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        attention_map(**kwargs)
