import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnkit.models import create_model
from attnkit.models._blocks import PreActBottleneck
from attnkit.models.residual_attention import AttentionModule, SoftMaskBranch, mask_activation
from helpers import assert_close


def make_units_identity(module: nn.Module) -> None:
    """Zero the last conv of every bottleneck unit: a unit without projection then returns its input."""
    for unit in module.modules():
        if isinstance(unit, PreActBottleneck):
            assert unit.shortcut is None
            nn.init.zeros_(unit.conv3.weight)


def test_attention_residual_and_naive_attention_by_hand():
    # Units are identities, so T(x) = x and the module's output is H itself. Mask head: the first 1x1 conv is 0,
    # the BN after it (eval: mean 0, var 1) outputs its bias b = log(k) >= 0, ReLU keeps it, the second 1x1 conv
    # is the identity, so M_c = sigmoid(log k) = k / (k + 1) for k = 1, 3, 7, 15 at every position.
    module = AttentionModule(channels=4, pools=2).eval()
    make_units_identity(module)
    head = module.mask.head  # BN, ReLU, conv, BN, ReLU, conv
    with torch.no_grad():
        head[2].weight.zero_()
        head[3].bias.copy_(torch.log(torch.tensor([1.0, 3.0, 7.0, 15.0])))
        head[5].weight.copy_(torch.eye(4).view(4, 4, 1, 1))
    x = torch.randn(2, 4, 5, 7)
    mask = torch.tensor([1 / 2, 3 / 4, 7 / 8, 15 / 16]).view(1, 4, 1, 1)
    with torch.no_grad():
        assert_close(module.mask(x), mask.expand(2, 4, 5, 7), rtol=1e-6, atol=1e-6)
        residual = module(x)
        module.attention_residual = False
        naive = module(x)
    assert_close(residual, x * (1 + mask), rtol=1e-6, atol=1e-6)  # (1 + M) * T: 1.5x, 1.75x, 1.875x, 1.9375x
    assert_close(naive, x * mask, rtol=1e-6, atol=1e-6)  # M * T: 0.5x, 0.75x, 0.875x, 0.9375x
    assert_close(residual - naive, x, rtol=1e-6, atol=1e-6)  # ARL keeps the trunk's features in full


def test_hourglass_adds_each_skip_once_and_no_size_reference():
    # Identity units: every level of a constant input c is c. Correct: bottom c, + skip c = 2c, + skip c = 3c.
    # The port bug (also adding each Interp's size-reference input, and the trunk at the end) would give 6c.
    branch = SoftMaskBranch(channels=4, pools=3).eval()
    make_units_identity(branch)
    x = torch.full((1, 4, 9, 9), 2.0)
    with torch.no_grad():
        assert_close(branch.hourglass(x), torch.full_like(x, 6.0))


def test_hourglass_upsamples_to_the_exact_odd_sizes():
    branch = SoftMaskBranch(channels=4, pools=3).eval()
    make_units_identity(branch)
    x = torch.randn(1, 4, 9, 11)

    def pool(t):
        return F.max_pool2d(t, 3, stride=2, padding=1)

    def up(t, like):
        return F.interpolate(t, size=like.shape[-2:], mode="bilinear", align_corners=True)

    p1 = pool(x)  # 5 x 6
    p2 = pool(p1)  # 3 x 3
    p3 = pool(p2)  # 2 x 2
    expected = up(up(up(p3, p2) + p2, p1) + p1, x)  # the skips (identity units) are p2 and p1
    with torch.no_grad():
        out = branch.hourglass(x)
        mask = branch(x)
    assert out.shape == x.shape and mask.shape == x.shape
    assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_mask_activations_by_hand():
    logits = torch.tensor([[[[3.0, 0.0]], [[4.0, 0.0]]]])  # (1, 2, 1, 2): channels (3, 4) at position 0, (0, 0) at 1
    assert_close(mask_activation(logits, "mixed"), torch.sigmoid(logits))
    assert_close(mask_activation(logits, "channel"), torch.tensor([[[[0.6, 0.0]], [[0.8, 0.0]]]]))
    # Each channel's map over the 2 positions standardised: (3, 0) and (4, 0) both become (1, -1).
    s = torch.sigmoid(torch.tensor(1.0)).item()
    assert_close(mask_activation(logits, "spatial"), torch.tensor([[[[s, 1 - s]], [[s, 1 - s]]]]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="unknown mask activation 'soft'; choose one of mixed, channel, spatial"):
        mask_activation(logits, "soft")


def test_unknown_mask_activation_fails_at_construction():
    with pytest.raises(ValueError, match="choose one of mixed, channel, spatial"):
        create_model("attention56_cifar", mask_activation="softmax")


@pytest.mark.parametrize("kind", ["channel", "spatial"])
def test_channel_and_spatial_masks(kind):
    model = create_model("attention56_cifar", mask_activation=kind).eval()
    with torch.no_grad():
        _, masks = model.forward_with_attention(torch.randn(2, 3, 16, 16))
    for mask in masks.values():
        if kind == "channel":  # unit L2 norm across channels at every position
            assert_close(mask.norm(dim=1), torch.ones(mask.shape[0], *mask.shape[2:]), rtol=1e-5, atol=1e-5)
        else:  # sigmoid of a map standardised per channel: logits have zero mean over the positions
            assert 0 <= mask.min() and mask.max() <= 1
            assert torch.logit(mask.double()).mean((2, 3)).abs().max() < 1e-4


def test_options_reach_every_module_and_masks_stay_in_the_graph():
    model = create_model("attention92_cifar", attention_residual=False)
    modules = [m for m in model.modules() if isinstance(m, AttentionModule)]
    assert len(modules) == 6 and not any(m.attention_residual for m in modules)
    logits, masks = model.forward_with_attention(torch.randn(2, 3, 16, 16))
    assert list(masks) == ["stage1.0", "stage2.0", "stage2.1", "stage3.0", "stage3.1", "stage3.2"]
    masks["stage3.2"].mean().backward()  # a loss on a mask trains the mask branch
    assert model.stage3[3].mask.head[5].weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "name, projected",
    [
        ("attention56", ["stage1.0", "stage2.0", "stage3.0", "stage4.0"]),
        ("attention56_cifar", ["stage1.0", "stage2.0", "stage3.0"]),  # the CIFAR final stage keeps 256 channels, 8x8
    ],
)
def test_projection_shortcut_only_where_the_shape_changes(name, projected):
    with torch.device("meta"):
        model = create_model(name)
    units = {n: m for n, m in model.named_modules() if isinstance(m, PreActBottleneck)}
    assert [n for n, m in units.items() if m.shortcut is not None] == projected
