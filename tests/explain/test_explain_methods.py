import inspect

import pytest
import torch
from captum.attr import LayerGradCam
from torch import nn

from attnkit.explain import (
    CAM,
    METHODS,
    ActivationMap,
    GradCAM,
    GradientAttention,
    HiResCAM,
    ModelAttention,
    Occlusion,
    Saliency,
    create_method,
)
from attnkit.features import extract_features
from attnkit.functional import attention_map, input_gradient, resize_map
from explain_toys import GapLinearNet, LTPAStandIn, ResidualAttentionStandIn, SquareMeanNet
from helpers import assert_close, hook_count, toy_cnn

# One image x = [[1, 2], [0, -1]] (mean 0.5), asked for class 0 and class 1.
X = torch.tensor([[1.0, 2.0], [0.0, -1.0]]).view(1, 1, 2, 2).repeat(2, 1, 1, 1)
TARGETS = torch.tensor([0, 1])
TARGET_METHODS = [name for name, cls in METHODS.items() if cls.uses_target]
# Test time: 9 occluded copies per image instead of 49, 8 path points / noisy copies instead of 50 / 25.
FAST = {"occlusion": {"window": 8, "stride": 4}, "integrated_gradients": {"steps": 8}, "smoothgrad": {"samples": 8}}
RANDOM = {"smoothgrad"}  # noise drawn per call for the whole batch: a chunk's maps depend on the chunking


def test_gradcam_and_hirescam_by_hand():
    # SquareMeanNet: A_0 = x, A_1 = 2x, logit_t = sum_k W_tk mean(A_k^2), so d logit_t / dA_k = W_tk 2 A_k / 4.
    # Class 0, W_0 = (1, 0.5): dA_0 = x/2, dA_1 = x/2 -> alpha = (mean(x)/2, mean(x)/2) = (0.25, 0.25);
    #   Grad-CAM = ReLU(0.25 x + 0.25 * 2x) = ReLU(0.75 x); HiResCAM = ReLU(x/2 * x + x/2 * 2x) = 1.5 x^2.
    # Class 1, W_1 = (2, -1): dA_0 = x, dA_1 = -x -> alpha = (0.5, -0.5);
    #   Grad-CAM = ReLU(0.5 x - 0.5 * 2x) = ReLU(-0.5 x); HiResCAM = ReLU(x * x - x * 2x) = ReLU(-x^2) = 0.
    model = SquareMeanNet()
    x = X[0, 0]
    expected_gradcam = torch.stack([(0.75 * x).clamp_min(0), (-0.5 * x).clamp_min(0)])
    expected_hirescam = torch.stack([1.5 * x**2, torch.zeros(2, 2)])
    assert_close(GradCAM(model).attribute(X, TARGETS, upsample=False), expected_gradcam)
    assert_close(HiResCAM(model).attribute(X, TARGETS, upsample=False), expected_hirescam)
    # Without the ReLU the negative evidence stays; an explicit layer path gives the same maps.
    assert_close(GradCAM(model, relu=False).attribute(X, TARGETS), torch.stack([0.75 * x, -0.5 * x]))
    assert_close(HiResCAM(model, layer="conv", relu=False).attribute(X, TARGETS), torch.stack([1.5 * x**2, -(x**2)]))


def test_gradcam_equals_captum_layer_gradcam(small_wrn):
    x = torch.randn(3, 3, 16, 16)
    target = torch.tensor([0, 3, 1])
    # Default layer: the module producing forward_features' output, WRN's final (in-place) ReLU, not its BN.
    method = GradCAM(small_wrn)
    expected = LayerGradCam(small_wrn, small_wrn.relu).attribute(x, target=target, relu_attributions=True)
    assert_close(method.attribute(x, target, upsample=False), expected.squeeze(1), rtol=1e-5, atol=1e-5)
    assert method.layer_name == "relu" and hook_count(small_wrn) == 0
    expected = LayerGradCam(small_wrn, small_wrn.layer2).attribute(x, target=target, relu_attributions=True)
    maps = GradCAM(small_wrn, layer="layer2").attribute(x, target, upsample=False)
    assert maps.shape == (3, 8, 8) and maps.max() > 0
    assert_close(maps, expected.squeeze(1), rtol=1e-5, atol=1e-5)


def test_cam_by_hand_and_equal_to_gradcam_for_gap_linear_head(small_wrn):
    # GapLinearNet: A_0 = x, A_1 = -x; CAM_t = W_t0 A_0 + W_t1 A_1 (bias left out).
    # Class 0: 1 x - 0.5 x = 0.5 x; class 1: 2 x + 1 x = 3 x.
    x = X[0, 0]
    assert_close(CAM(GapLinearNet()).attribute(X, TARGETS), torch.stack([0.5 * x, 3 * x]))
    assert_close(CAM(GapLinearNet(), relu=True).attribute(X, TARGETS), torch.stack([0.5 * x, 3 * x]).clamp_min(0))
    # With GAP + linear, d score / dA_k = w_k / (h w) at every position: Grad-CAM = HiResCAM = ReLU(CAM) / (h w).
    images, target = torch.randn(2, 3, 16, 16), torch.tensor([4, 2])
    cam = CAM(small_wrn, relu=True).attribute(images, target, upsample=False)
    gradcam = GradCAM(small_wrn).attribute(images, target, upsample=False)
    hirescam = HiResCAM(small_wrn).attribute(images, target, upsample=False)
    assert gradcam.max() > 0
    assert_close(gradcam, cam / 16, rtol=1e-5, atol=1e-6)
    assert_close(hirescam, gradcam, rtol=1e-5, atol=1e-6)


def test_models_without_the_contract_get_traced_default_layers():
    model = toy_cnn(widths=(4, 8), num_classes=5)  # 0 conv 1 relu 2 pool | 3 conv 4 relu 5 pool | 6 GAP ...
    x = torch.randn(2, 3, 8, 8)
    activation = ActivationMap(model)
    assert activation.layers is None  # traced on the first images
    maps = activation.attribute_layers(x, upsample=False)
    assert activation.layers == ["1", "4", "5"] and {k: tuple(v.shape) for k, v in maps.items()} == {
        "1": (2, 8, 8), "4": (2, 4, 4), "5": (2, 2, 2)}
    _, (last,) = extract_features(model, x, ["5"])
    assert_close(maps["5"], attention_map(last), rtol=1e-6, atol=1e-8)
    gradcam = GradCAM(model)  # the last traced point: the last spatial map before global pooling
    assert_close(gradcam.attribute(x, [1, 3], upsample=False), GradCAM(model, layer="5").attribute(x, [1, 3], upsample=False))
    assert gradcam.layer_name == "5"


def test_cam_with_explicit_layer_and_classifier_and_refusals():
    model = toy_cnn(widths=(4, 8), num_classes=5)  # conv-relu-pool x2, GAP (6), flatten, linear (8)
    x = torch.randn(2, 3, 8, 8)
    _, (features,) = extract_features(model, x, ["5"])
    expected = torch.einsum("bc,bchw->bhw", model[8].weight[torch.tensor([1, 3])], features)
    assert_close(CAM(model, layer="5", classifier="8").attribute(x, [1, 3], upsample=False), expected, rtol=1e-5, atol=1e-7)
    with pytest.raises(TypeError, match="lacks forward_features.*pass layer="):
        CAM(model)
    with pytest.raises(ValueError, match="both layer= and classifier="):
        CAM(model, layer="5")
    with pytest.raises(ValueError, match="head_is_gap_linear = False.*gradcam"):
        CAM(SquareMeanNet())
    with pytest.raises(ValueError, match="nn.Linear classifier reading the 4 pooled channels"):
        CAM(model, layer="1", classifier="8").attribute(x, 0)


def test_saliency_and_occlusion_of_a_linear_model_by_hand():
    # logit_t = <W_t, x>: saliency = max_c |W_t,c|; occluding one pixel (every channel) with 0 drops the
    # score by sum_c W_t,c x_c at that pixel.
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 3 * 3, 4, bias=False))
    x, target = torch.randn(2, 2, 3, 3), torch.tensor([1, 3])
    weights = model[1].weight[target].view(2, 2, 3, 3)
    assert_close(Saliency(model).attribute(x, target), weights.abs().amax(dim=1))
    assert_close(Occlusion(model, window=1, stride=1).attribute(x, target), (weights * x).sum(1), rtol=1e-5, atol=1e-6)
    # 2x2 windows with stride 1: a pixel's value is the mean drop over the windows covering it.
    drops = torch.zeros(2, 3, 3)
    counts = torch.zeros(3, 3)
    contribution = (weights * x).sum(1)  # (2, 3, 3)
    for i in range(2):
        for j in range(2):
            drops[:, i : i + 2, j : j + 2] += contribution[:, i : i + 2, j : j + 2].sum(dim=(1, 2))[:, None, None]
            counts[i : i + 2, j : j + 2] += 1
    assert_close(Occlusion(model, window=2, stride=1).attribute(x, target), drops / counts, rtol=1e-5, atol=1e-6)


def test_gradient_attention_is_channel_reduced_input_gradient(small_wrn):
    x, target = torch.randn(2, 3, 16, 16), torch.tensor([1, 0])
    grad = input_gradient(small_wrn, x, target)
    assert_close(GradientAttention(small_wrn).attribute(x, target), grad.abs().sum(1), rtol=1e-5, atol=1e-9)
    squared = GradientAttention(small_wrn, p=2, reduction="max").attribute(x, target)
    assert_close(squared, grad.pow(2).amax(1), rtol=1e-5, atol=1e-12)


def test_activation_maps_equal_attention_map_of_captured_features(small_wrn):
    x = torch.randn(2, 3, 16, 16)
    _, feats = extract_features(small_wrn, x, ["layer1", "layer2", "layer3"], detach=True)
    layers = ActivationMap(small_wrn).attribute_layers(x, upsample=False)
    assert list(layers) == ["layer1", "layer2", "layer3"]
    for path, f in zip(layers, feats):
        assert_close(layers[path], attention_map(f), rtol=1e-6, atol=1e-8)
    # attribute() gives the last (deepest) layer, upsampled with resize_map; F_max^4 and F_sum on request.
    assert_close(ActivationMap(small_wrn).attribute(x), resize_map(attention_map(feats[2]), (16, 16)))
    f_max = ActivationMap(small_wrn, layer="layer2", p=4, reduction="max").attribute(x, upsample=False)
    assert_close(f_max, attention_map(feats[1], p=4, reduction="max"), rtol=1e-6, atol=1e-8)
    f_sum = ActivationMap(small_wrn, layer=["layer1"], p=1, reduction="sum", normalize=False).attribute(x, upsample=False)
    assert_close(f_sum, feats[0].abs().sum(1), rtol=1e-6, atol=1e-6)


def test_model_attention_of_ltpa_and_residual_attention_stand_ins():
    x = torch.randn(2, 3, 8, 8)
    ltpa = LTPAStandIn().eval()
    _, maps = ltpa.forward_with_attention(x)
    method = ModelAttention(ltpa)
    assert_close(method.attribute(x, upsample=False), maps["level2"])  # default: the last map
    assert_close(ModelAttention(ltpa, layer="level1").attribute(x, upsample=False), maps["level1"])
    levels = method.attribute_layers(x)
    assert list(levels) == ["level1", "level2"] and all(m.shape == (2, 8, 8) for m in levels.values())
    assert_close(levels["level1"], maps["level1"])  # already at input resolution: unchanged
    ran = ResidualAttentionStandIn().eval()
    _, masks = ran.forward_with_attention(x)
    stages = ModelAttention(ran).attribute_layers(x, upsample=False)
    assert_close(stages["stage2.0"], masks["stage2.0"].mean(1))  # (B, C, H, W) soft mask -> channel mean
    assert stages["stage1.0"].shape == (2, 8, 8)
    with pytest.raises(KeyError, match="returns no attention map 'level9'.*level1"):
        ModelAttention(ltpa, layer="level9").attribute(x)
    with pytest.raises(TypeError, match="no forward_with_attention"):
        ModelAttention(toy_cnn())


@pytest.mark.parametrize("name", TARGET_METHODS)
def test_batched_targets_equal_per_image_runs_and_int_equals_full_tensor(name, small_wrn):
    method = create_method(name, small_wrn, **FAST.get(name, {}))
    x, target = torch.randn(3, 3, 16, 16), torch.tensor([2, 0, 4])
    batched = method.attribute(x, target)
    if name not in RANDOM:
        single = torch.cat([method.attribute(x[i : i + 1], int(target[i])) for i in range(3)])
        assert_close(batched, single, rtol=1e-4, atol=1e-6)
        assert_close(method.attribute(x, target, batch_size=2), batched, rtol=1e-4, atol=1e-6)
    assert_close(method.attribute(x, 3), method.attribute(x, torch.full((3,), 3)))
    predicted = small_wrn(x).argmax(1)
    assert_close(method.attribute(x), method.attribute(x, predicted.tolist()))
    # A target function of the logits: the class-2 logit, written as one, gives the class-2 maps; methods that
    # need a class index (CAM's classifier row, gradient attention's cross-entropy) refuse functions.
    if name not in ("cam", "gradient"):
        assert_close(method.attribute(x, lambda logits: logits[:, 2]), method.attribute(x, 2), rtol=1e-5, atol=1e-7)
    else:
        with pytest.raises(TypeError, match="needs class indices as target"):
            method.attribute(x, lambda logits: logits[:, 2])


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_gives_finite_maps_of_the_right_shape(name, small_wrn):
    model = LTPAStandIn() if name == "model" else small_wrn
    x = torch.randn(2, 3, 16, 16)
    method = create_method(name, model, **FAST.get(name, {}))
    maps, raw = method.attribute(x), method.attribute(x, [0, 1], upsample=False)
    assert maps.shape == (2, 16, 16) and maps.dtype == torch.float32 and not maps.requires_grad
    assert bool(torch.isfinite(maps).all()) and bool(torch.isfinite(raw).all())
    assert raw.shape[0] == 2 and raw.dim() == 3 and raw.shape[1] <= 16


@pytest.mark.parametrize("name", list(METHODS))
def test_model_mode_restored_and_parameters_untouched(name):
    model = LTPAStandIn() if name == "model" else toy_cnn(widths=(4, 8), num_classes=5)
    kwargs = {"layer": "4"} if "layer" in inspect.signature(METHODS[name]).parameters and name != "model" else {}
    if name == "cam":
        kwargs["classifier"] = "8"
    model.train()
    model[2].eval() if isinstance(model, nn.Sequential) else model.conv2.eval()  # a mixed state survives too
    flags = [m.training for m in model.modules()]
    before = [p.detach().clone() for p in model.parameters()]
    create_method(name, model, **kwargs).attribute(torch.randn(2, 3, 8, 8))
    assert [m.training for m in model.modules()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


class _FailingHead(nn.Module):
    """A WRN whose head raises, so that errors happen while captum's or our hooks are installed."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.fail = False

    def forward(self, x):
        features = self.model.forward_features(x)
        if self.fail:
            raise RuntimeError("head failed")
        return self.model.forward_head(features)


@pytest.mark.parametrize(
    "name, kwargs",
    [("gradcam", {"layer": "model.layer2"}), ("hirescam", {"layer": "model.layer2"}), ("activation", {"layer": "model.layer1"}),
     ("layercam", {"layer": ["model.layer1", "model.layer2"]}), ("scorecam", {"layer": "model.layer3"}),
     ("ablationcam", {"layer": "model.layer3"}), ("eigencam", {"layer": "model.layer3"}), ("guided_backprop", {}),
     ("cam", {"layer": "model.relu", "classifier": "model.fc"}), ("saliency", {}), ("occlusion", {}), ("gradient", {})],
)
def test_hooks_removed_after_errors(name, kwargs, small_wrn):
    model = _FailingHead(small_wrn)
    method = create_method(name, model, **kwargs, **FAST.get(name, {}))
    x = torch.randn(2, 3, 16, 16)
    target = torch.tensor([0, 1])
    model.fail = True
    with pytest.raises(RuntimeError, match="head failed"):
        method.attribute(x, target)  # fails inside captum / FeatureCapture / autograd
    assert hook_count(model) == 0 and torch.is_grad_enabled()  # hooks gone, grad mode restored
    model.fail = False
    if METHODS[name].uses_target:
        with pytest.raises(ValueError, match="targets must lie in"):
            method.attribute(x, [0, 9])
    assert hook_count(model) == 0
    assert method.attribute(x, target).shape == (2, 16, 16)  # still works afterwards
    assert hook_count(model) == 0


def test_input_errors_are_clear(small_wrn):
    with pytest.raises(KeyError, match="unknown attention-map method 'gradcm'; did you mean gradcam"):
        create_method("gradcm", small_wrn)
    with pytest.raises(KeyError, match="closest valid paths: .*layer2"):
        GradCAM(small_wrn, layer="layr2")
    with pytest.raises(ValueError, match="4-D"):
        GradCAM(small_wrn).attribute(torch.randn(3, 16, 16))
    with pytest.raises(TypeError, match="floating point"):
        Saliency(small_wrn).attribute(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="3 targets for a batch of 2"):
        GradCAM(small_wrn).attribute(torch.randn(2, 3, 16, 16), [0, 1, 2])
    with pytest.raises(ValueError, match="pick a layer before global pooling"):
        GradCAM(small_wrn, layer="fc").attribute(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="reduction must be one of"):
        ActivationMap(small_wrn, reduction="median")
    with pytest.raises(ValueError, match="no module with a spatial"):
        ActivationMap(nn.Sequential(nn.Flatten(), nn.Linear(48, 2))).attribute(torch.randn(1, 3, 4, 4))
    with pytest.raises(ValueError, match="larger than the images"):
        Occlusion(small_wrn, window=20).attribute(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        Saliency(small_wrn).attribute(torch.randn(1, 3, 16, 16), batch_size=0)
