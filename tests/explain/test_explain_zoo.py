"""Every registered model works with the map methods the moment it is registered (timm-style contract tests)."""

import pytest
import torch

from attnkit.explain import CAM, ActivationMap, GradCAM, HiResCAM, ModelAttention
from attnkit.features import extract_features
from attnkit.models import create_model, list_models
from helpers import assert_close, hook_count


def _inputs(model) -> torch.Tensor:
    channels, height, width = model.default_input_size
    return torch.randn(2, channels, min(height, 64), min(width, 64))  # ImageNet-size models at 64x64 (test time)


@pytest.mark.parametrize("name", list_models())
def test_maps_of_every_registered_model(name):
    model = create_model(name, num_classes=5).eval()
    x, target = _inputs(model), torch.tensor([0, 4])
    gradcam = GradCAM(model)
    maps = gradcam.attribute(x, target)
    assert maps.shape == (2, *x.shape[2:]) and bool(torch.isfinite(maps).all()) and hook_count(model) == 0
    # The default layer is the module whose output forward_features returns.
    _, (layer_output,) = extract_features(model, x, [gradcam.layer_name], detach=True)
    with torch.no_grad():
        assert_close(layer_output, model.forward_features(x))
    layers = ActivationMap(model).attribute_layers(x, upsample=False)
    assert list(layers) == [info.module for info in model.feature_info]
    for info, layer_maps in zip(model.feature_info, layers.values()):
        assert layer_maps.shape[1] == -(-x.shape[2] // info.reduction)  # h = ceil(H / reduction)
    if getattr(model, "head_is_gap_linear", True):
        # GAP + linear head: Grad-CAM = HiResCAM = ReLU(CAM) / (h w), computed three different ways.
        cam = CAM(model, relu=True).attribute(x, target, upsample=False)
        raw = gradcam.attribute(x, target, upsample=False)
        assert_close(raw, cam / (cam.shape[1] * cam.shape[2]), rtol=1e-4, atol=1e-6)
        assert_close(HiResCAM(model).attribute(x, target, upsample=False), raw, rtol=1e-4, atol=1e-6)
    else:
        with pytest.raises(ValueError, match="head_is_gap_linear = False"):
            CAM(model)
    if hasattr(model, "forward_with_attention"):
        with torch.no_grad():
            _, expected = model.forward_with_attention(x)
        own = ModelAttention(model).attribute_layers(x, upsample=False)
        assert list(own) == list(expected)
        for key, value in expected.items():
            assert_close(own[key], value if value.dim() == 3 else value.mean(1))
    else:
        with pytest.raises(TypeError, match="no forward_with_attention"):
            ModelAttention(model)


def test_ltpa_attention_maps_are_softmax_weights_and_upsampled():
    model = create_model("ltpa_vgg_att3", num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    raw = ModelAttention(model).attribute_layers(x, upsample=False)
    assert {k: tuple(v.shape) for k, v in raw.items()} == {"level1": (2, 32, 32), "level2": (2, 16, 16), "level3": (2, 8, 8)}
    for maps in raw.values():
        assert_close(maps.flatten(1).sum(1), torch.ones(2), rtol=1e-5)  # softmax over positions
    assert ModelAttention(model, layer="level2").attribute(x).shape == (2, 32, 32)
    assert GradCAM(model).layer_name.startswith("(")  # found at the first call
    method = GradCAM(model)
    method.attribute(x[:1], 0)
    assert method.layer_name == "block5"  # l3, the deepest attended level
