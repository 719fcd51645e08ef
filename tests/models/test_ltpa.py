import math

import pytest
import torch

from attnkit.models import create_model
from attnkit.models.ltpa import LinearAttention
from helpers import assert_close

# Local features (1, 2, 1, 2): position 0 has l = (1, 0), position 1 has l = (0, 2); global feature g = (1, 1).
LOCAL = torch.tensor([[[[1.0, 0.0]], [[0.0, 2.0]]]], dtype=torch.float64)
GLOBAL = torch.tensor([[1.0, 1.0]], dtype=torch.float64)


def softmax2(c0: float, c1: float) -> list[float]:
    e0, e1 = math.exp(c0), math.exp(c1)
    return [e0 / (e0 + e1), e1 / (e0 + e1)]


def sigmoid(c: float) -> float:
    return 1 / (1 + math.exp(-c))


def attention(compatibility: str, normalization: str) -> LinearAttention:
    level = LinearAttention(2, compatibility, normalization).double()
    if level.u is not None:
        with torch.no_grad():
            level.u.weight.copy_(torch.tensor([1.0, -1.0]).view(1, 2, 1, 1))  # u = (1, -1)
    return level


@pytest.mark.parametrize(
    "compatibility, scores",
    [
        ("dp", (1.0, 2.0)),  # <l_i, g>: 1*1 + 0*1, 0*1 + 2*1
        ("pc", (1.0, -2.0)),  # <u, l_i + g>: (2 - 1), (1 - 3)
    ],
)
def test_compatibility_and_softmax_by_hand(compatibility, scores):
    weights, attended = attention(compatibility, "softmax")(LOCAL, GLOBAL)
    a0, a1 = softmax2(*scores)
    assert_close(weights, [[[a0, a1]]])
    assert_close(attended, [[a0 * 1 + a1 * 0, a0 * 0 + a1 * 2]])  # sum_i a_i l_i


@pytest.mark.parametrize("compatibility, scores", [("dp", (1.0, 2.0)), ("pc", (1.0, -2.0))])
def test_sigmoid_normalisation_by_hand(compatibility, scores):
    weights, attended = attention(compatibility, "sigmoid")(LOCAL, GLOBAL)
    a0, a1 = sigmoid(scores[0]), sigmoid(scores[1])
    assert_close(weights, [[[a0, a1]]])
    assert_close(attended, [[(a0 * 1 + a1 * 0) / 2, (a0 * 0 + a1 * 2) / 2]])  # mean_i a_i l_i


@pytest.mark.parametrize(
    "compatibility, normalization, g_matters",
    [("pc", "softmax", False), ("dp", "softmax", True), ("pc", "sigmoid", True)],
)
def test_global_feature_cancels_only_for_pc_with_softmax(compatibility, normalization, g_matters):
    model = create_model("ltpa_vgg_att2", compatibility=compatibility, normalization=normalization).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        model.global_fc.bias.add_(torch.randn(512))  # a different g
        after = model(x)
    assert not torch.allclose(before, after, atol=1e-5) if g_matters else torch.allclose(before, after, atol=1e-5)


def test_att3_levels_shapes_and_feature_info():
    model = create_model("ltpa_vgg_att3", num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, maps = model.forward_with_attention(x)
        assert_close(model.forward_head(model.local_features(x)), logits)
        assert model.forward_features(x).shape == (2, 512, 8, 8)  # l3, layer 13
    shapes = {k: tuple(v.shape) for k, v in maps.items()}
    assert shapes == {"level1": (2, 32, 32), "level2": (2, 16, 16), "level3": (2, 8, 8)}
    assert [(i.module, i.channels, i.reduction) for i in model.feature_info] == [
        ("block3", 256, 1), ("block4", 512, 2), ("block5", 512, 4),
    ]
    assert model.get_classifier().in_features == 3 * 512


def test_sigmoid_maps_are_in_unit_interval():
    model = create_model("ltpa_vgg_att2", normalization="sigmoid", compatibility="dp").eval()
    with torch.no_grad():
        _, maps = model.forward_with_attention(torch.randn(2, 3, 32, 32))
    assert list(maps) == ["level1", "level2"] and maps["level1"].shape == (2, 16, 16)
    assert all(0 <= m.min() and m.max() <= 1 for m in maps.values())


def test_indep_head_is_the_mean_of_the_level_predictions():
    # concat with weight [W1, W2] / 2 and bias (b1 + b2) / 2 computes (W1 g_a1 + b1 + W2 g_a2 + b2) / 2, the mean
    # of the two levels' logits: load the indep model's weights into a concat model and compare.
    indep = create_model("ltpa_vgg_att2", head="indep").eval()
    concat = create_model("ltpa_vgg_att2", head="concat").eval()
    state = {k: v for k, v in indep.state_dict().items() if not k.startswith("fc.")}
    concat.load_state_dict(state, strict=False)
    fc1, fc2 = indep.get_classifier()
    with torch.no_grad():
        concat.fc.weight.copy_(torch.cat([fc1.weight, fc2.weight], dim=1) / 2)
        concat.fc.bias.copy_((fc1.bias + fc2.bias) / 2)
        x = torch.randn(2, 3, 32, 32)
        assert_close(indep(x), concat(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"compatibility": "cosine"}, "unknown compatibility 'cosine'; choose one of pc, dp"),
        ({"normalization": "relu"}, "unknown normalization 'relu'; choose one of softmax, sigmoid"),
        ({"head": "sum"}, "unknown head 'sum'; choose one of concat, indep"),
    ],
)
def test_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_model("ltpa_vgg_att3", **kwargs)
