"""The CAM family against references written from the papers: loops over channels and positions on
LinearHeadNet, whose gradient dS_c/dA is its classifier's weight row (no autograd in the references)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attnkit.explain import (
    AblationCAM,
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
    create_method,
)
from attnkit.explain.cam import first_component
from attnkit.models import create_model
from explain_toys import ConcatSkipNet, GapLinearNet, LinearHeadNet, SmoothNet
from helpers import assert_close, hook_count

X = torch.randn(3, 2, 6, 6, generator=torch.Generator().manual_seed(0))
TARGET = torch.tensor([0, 3, 1])


def _layer(model, x):
    """The layer output A = ReLU(conv(x)), (B, 3, 3, 3), computed here with torch's functional ops."""
    return F.relu(F.conv2d(x, model.conv.weight, model.conv.bias, stride=2, padding=1)).detach()


def _grad(model, c):
    return model.fc.weight.detach()[c, :27].view(3, 3, 3)  # dS_c / dA_{k,i,j}


def _reference(model, weights_of):
    """ReLU(sum_k W_kij A_kij) per image, W from weights_of(A, g) with explicit loops."""
    A = _layer(model, X)
    maps = torch.zeros(3, 3, 3)
    for b in range(3):
        g = _grad(model, TARGET[b])
        W = weights_of(A[b], g)
        for k in range(3):
            for i in range(3):
                for j in range(3):
                    maps[b, i, j] += W[k][i][j] * A[b, k, i, j]
    return maps.clamp_min(0)


def _per_channel(weight):
    """W_kij = weight(k) for every position."""
    return lambda A, g: [[[weight(A, g, k)] * 3] * 3 for k in range(3)]


def _gradcam_pp_weight(A, g, k):
    total = float(A[k].sum())
    w = 0.0
    for i in range(3):
        for j in range(3):
            gij = float(g[k, i, j])
            denominator = 2 * gij**2 + total * gij**3
            alpha = gij**2 / denominator if denominator != 0 else 0.0
            w += alpha * max(gij, 0.0)
    return w


def _xgradcam_weight(A, g, k):
    total = float(A[k].sum())
    return 0.0 if total == 0 else sum(float(A[k, i, j] * g[k, i, j]) / total for i in range(3) for j in range(3))


REFERENCES = {
    GradCAM: _per_channel(lambda A, g, k: float(g[k].mean())),
    HiResCAM: lambda A, g: g.tolist(),
    GradCAMPlusPlus: _per_channel(_gradcam_pp_weight),
    XGradCAM: _per_channel(_xgradcam_weight),
    LayerCAM: lambda A, g: g.clamp_min(0).tolist(),
}


@pytest.mark.parametrize("method", list(REFERENCES), ids=lambda cls: cls.name)
def test_gradient_cams_equal_their_paper_formulas(method):
    model = LinearHeadNet().eval()
    maps = method(model, layer="act").attribute(X, TARGET, upsample=False)
    assert_close(maps, _reference(model, REFERENCES[method]), rtol=1e-5, atol=1e-6)
    assert maps.max() > 0


def test_gradient_cams_on_a_gap_linear_head():
    # GAP + linear: dS/dA_k = w_k / (h w) at every position, so XGrad-CAM's activation-weighted mean of the
    # gradient is the gradient itself (XGrad-CAM = Grad-CAM), and Layer-CAM = ReLU(sum_k ReLU(w_k) A_k) / (h w).
    model = GapLinearNet()
    x = torch.tensor([[1.0, 2.0], [0.5, 3.0]]).view(1, 1, 2, 2)  # A_0 = x, A_1 = -x
    gradcam = GradCAM(model).attribute(x, 1, upsample=False)
    assert_close(XGradCAM(model).attribute(x, 1, upsample=False), gradcam)
    # Class 1: w = (2, -1): Layer-CAM keeps only channel 0: ReLU(2 x) / 4.
    assert_close(LayerCAM(model).attribute(x, 1, upsample=False), (2 * x[0]).clamp_min(0) / 4)


def test_eigencam_is_the_first_principal_component_with_the_stated_sign():
    model = create_model("wrn", depth=10, width=1, num_classes=5).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        features = model.forward_features(x).double()  # (2, 64, 4, 4)
    expected = []
    for f in features.numpy():
        samples = f.reshape(f.shape[0], -1).T  # (positions, channels)
        centred = samples - samples.mean(axis=0)
        _, _, vt = np.linalg.svd(centred)
        projection = centred @ vt[0]
        if projection @ centred.sum(axis=1) < 0:  # sign: agree with the (centred) channel sum
            projection = -projection
        expected.append(np.maximum(projection, 0).reshape(f.shape[1:]))
    maps = EigenCAM(model).attribute(x, upsample=False)
    assert_close(maps, torch.tensor(np.stack(expected), dtype=torch.float32), rtol=1e-4, atol=1e-5)
    assert_close(first_component(features).clamp_min(0), torch.tensor(np.stack(expected)), rtol=1e-8, atol=1e-10)


def test_scorecam_equals_algorithm_1_of_the_paper():
    model = LinearHeadNet().eval()
    A = _layer(model, X)  # channel 2 is dead (0 everywhere): its mask is 0, its score that of the zero image
    expected = torch.zeros(3, 3, 3)
    with torch.no_grad():
        for b in range(3):
            scores = []
            for k in range(3):
                up = F.interpolate(A[b, k][None, None], size=(6, 6), mode="bilinear", align_corners=False)[0, 0]
                span = up.max() - up.min()
                mask = (up - up.min()) / span if span > 0 else torch.zeros(6, 6)
                scores.append(model(X[b : b + 1] * mask)[0, TARGET[b]])
            weights = torch.softmax(torch.stack(scores), dim=0)
            expected[b] = sum(weights[k] * A[b, k] for k in range(3)).clamp_min(0)
    for batch_size in (1, 4, 64):
        maps = ScoreCAM(model, layer=model.act, channel_batch_size=batch_size).attribute(X, TARGET, upsample=False)
        assert_close(maps, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("net", [LinearHeadNet, ConcatSkipNet])
def test_ablationcam_equals_the_paper_with_and_without_reusing_the_prefix(net):
    # LinearHeadNet's head broadcasts: the prefix runs once per chunk; ConcatSkipNet's concatenation needs the
    # input's batch: every ablated copy runs the whole model. Both must give the paper's weights.
    model = net().eval()
    A = _layer(model, X)
    expected = torch.zeros(3, 3, 3)
    with torch.no_grad():
        extra = F.avg_pool2d(X, 2).flatten(1) if net is ConcatSkipNet else torch.zeros(3, 0)
        head = lambda a, b: model.fc(torch.cat([a.flatten(), extra[b]]))[TARGET[b]]  # noqa: E731
        for b in range(3):
            y = head(A[b], b)
            for k in range(3):
                ablated = A[b].clone()
                ablated[k] = 0
                expected[b] += (y - head(ablated, b)) / abs(y) * A[b, k]
    maps = AblationCAM(model, layer="act", channel_batch_size=2).attribute(X, TARGET, upsample=False)
    assert_close(maps, expected.clamp_min(0), rtol=1e-4, atol=1e-5)
    assert hook_count(model) == 0


@pytest.mark.parametrize("name", ["gradcam", "layercam", "scorecam", "ablationcam", "eigencam"])
def test_fused_layers_are_the_mean_of_per_layer_maps_scaled_to_unit_range(name):
    model = create_model("wrn", depth=10, width=1, num_classes=5).eval()
    x, target = torch.randn(2, 3, 16, 16), torch.tensor([1, 4])
    singles = [create_method(name, model, layer=layer).attribute(x, target, upsample=False) for layer in ("layer2", "relu")]
    expected = []
    for maps in singles:  # (2, 8, 8) and (2, 4, 4): scale each image's map to [0, 1], resize to 8x8
        low, high = maps.amin(dim=(1, 2), keepdim=True), maps.amax(dim=(1, 2), keepdim=True)
        scaled = torch.nan_to_num((maps - low) / (high - low))  # a flat map (0 / 0) counts as 0
        expected.append(scaled if scaled.shape[1] == 8 else F.interpolate(scaled[:, None], size=(8, 8), mode="bilinear")[:, 0])
    fused = create_method(name, model, layer=[model.layer2, "relu"]).attribute(x, target, upsample=False)
    assert_close(fused, (expected[0] + expected[1]) / 2, rtol=1e-4, atol=1e-5)


def test_fusion_rule_by_hand_scaled_resized_to_the_finest_layer_averaged_not_rescaled():
    from attnkit.explain._cam_base import fuse_layers

    fine = torch.arange(16.0).view(1, 4, 4) * 3 - 5  # scaled: arange / 15, the maximum 1 at (3, 3)
    coarse = torch.tensor([[[7.0, -1.0], [-1.0, -1.0]]])  # scaled: 1 at (0, 0), else 0
    # coarse upsampled 2 x (bilinear, align_corners=False): output i reads source (i + 0.5) / 2 - 0.5, clamped to
    # [0, 1] = 0, 0.25, 0.75, 1, so the 1 at (0, 0) weighs (1, 0.75, 0.25, 0) along each axis.
    weights = torch.tensor([1.0, 0.75, 0.25, 0.0])
    expected = (torch.arange(16.0).view(4, 4) / 15 + torch.outer(weights, weights)) / 2
    fused = fuse_layers([coarse, fine])  # the finest layer's size wins whatever the order
    assert fused.shape == (1, 4, 4)
    assert_close(fused[0], expected, rtol=1e-6, atol=1e-7)
    assert float(fused.max()) == pytest.approx((4 / 15 + 0.75) / 2)  # at (1, 0): below 1, the mean is not rescaled
    assert_close(fuse_layers([fine]), fine)  # one layer: unchanged
    flat = torch.full((1, 2, 2), 3.0)
    assert_close(fuse_layers([fine, flat]), torch.arange(16.0).view(1, 4, 4) / 30)  # a flat map counts as 0


def test_fused_signed_maps_with_relu_false():
    model = create_model("wrn", depth=10, width=1, num_classes=5).eval()
    x, target = torch.randn(2, 3, 16, 16), torch.tensor([1, 4])
    signed = [GradCAM(model, layer=layer, relu=False).attribute(x, target, upsample=False) for layer in ("layer2", "relu")]
    assert all(float(maps.min()) < 0 for maps in signed)  # else relu=False would change nothing here
    scaled = [(m - m.amin((1, 2), keepdim=True)) / (m.amax((1, 2), keepdim=True) - m.amin((1, 2), keepdim=True)) for m in signed]
    expected = (scaled[0] + F.interpolate(scaled[1][:, None], size=(8, 8), mode="bilinear")[:, 0]) / 2
    fused = GradCAM(model, layer=["layer2", "relu"], relu=False).attribute(x, target, upsample=False)
    assert_close(fused, expected, rtol=1e-4, atol=1e-5)


def test_aug_smooth_averages_the_maps_of_flipped_and_shifted_views_mapped_back():
    model = create_model("wrn", depth=10, width=1, num_classes=5).eval()
    x, target = torch.randn(2, 3, 16, 16), torch.tensor([1, 4])
    plain = GradCAM(model)
    views = []
    for flip in (False, True):
        for shift in (0, 1, -1):  # s = 16 // 16 = 1 pixel
            seen = torch.roll(x.flip(-1) if flip else x, (shift, shift), dims=(-2, -1))
            maps = torch.roll(plain.attribute(seen, target), (-shift, -shift), dims=(-2, -1))
            views.append(maps.flip(-1) if flip else maps)
    smoothed = GradCAM(model, aug_smooth=True).attribute(x, target, upsample=False)
    assert smoothed.shape == (2, 16, 16)  # combined at the input resolution
    assert_close(smoothed, torch.stack(views).mean(0), rtol=1e-4, atol=1e-6)


def test_eigen_smooth_projects_the_weighted_activations():
    model = LinearHeadNet().eval()
    A = _layer(model, X)
    weighted = torch.stack([float(_grad(model, t)[k].mean()) * A[b, k] for b, t in enumerate(TARGET) for k in range(3)])
    expected = first_component(weighted.view(3, 3, 3, 3)).clamp_min(0)
    assert_close(GradCAM(model, layer="act", eigen_smooth=True).attribute(X, TARGET, upsample=False), expected, rtol=1e-5, atol=1e-6)


def test_layers_given_as_modules_paths_or_lists():
    model = create_model("resnet18", num_classes=5).eval()
    x = torch.randn(1, 3, 64, 64)
    by_module = GradCAM(model, layer=model.layer4).attribute(x, 2)  # once: TypeError 'ReLU' object is not iterable
    assert_close(by_module, GradCAM(model, layer="layer4").attribute(x, 2))
    assert GradCAM(model, layer=[model.layer3, "layer4"]).layer_name == "layer3, layer4"
    other = create_model("resnet18", num_classes=5)
    with pytest.raises(ValueError, match="not a submodule of ResNet"):
        GradCAM(model, layer=other.layer4)
    with pytest.raises(ValueError, match="empty list"):
        LayerCAM(model, layer=[])
    with pytest.raises(TypeError, match="module path, a module or a list"):
        XGradCAM(model, layer=3)


def test_frozen_model_and_no_grad_caller_still_get_gradient_maps():
    model = SmoothNet().eval().requires_grad_(False)  # a frozen teacher: no parameter requires grad
    x = torch.randn(2, 1, 5, 5)
    with torch.no_grad():
        maps = GradCAMPlusPlus(model, layer="act2").attribute(x, 1)
    assert maps.shape == (2, 5, 5) and not maps.requires_grad and maps.max() > 0


@pytest.mark.parametrize("method", [GradCAM, HiResCAM, GradCAMPlusPlus, XGradCAM, LayerCAM], ids=lambda c: c.name)
def test_differentiable_maps_pass_gradcheck_in_float64(method):
    torch.manual_seed(0)
    model = SmoothNet().double().eval()
    x, target = torch.randn(2, 1, 4, 4, dtype=torch.float64), torch.tensor([0, 1])
    cam = method(model, layer="act2", relu=False)
    params = (model.conv1.weight, model.conv2.weight, model.fc.weight)

    def maps(*_):  # gradcheck perturbs the parameters in place: the model reads them itself
        return cam.attribute(x, target, create_graph=True, upsample=False)

    assert torch.autograd.gradcheck(maps, params, eps=1e-6, atol=1e-5, rtol=1e-4)
    # As a training loss: the map has a grad_fn and every weight receives a gradient through it (the classifier's
    # bias does not move dS/dA, so the map does not depend on it).
    loss = method(model, layer="act2").attribute(x, target, create_graph=True).pow(2).mean()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    assert model.fc.bias.grad is None
    assert cam.attribute(x, target).grad_fn is None  # the default: detached


def test_a_closure_over_per_image_labels_is_refused_with_the_row_by_row_rule():
    # Score-CAM scores masked copies of one image at a time, aug_smooth all six views at once: a function that
    # only works on the B rows of the batch fails there, with a message that says why and what to pass instead.
    model = create_model("wrn", depth=10, width=1, num_classes=5).eval()
    x, labels = torch.randn(2, 3, 16, 16), torch.tensor([1, 3])
    per_image = lambda logits: logits.gather(1, labels[:, None]).squeeze(1)  # noqa: E731
    with pytest.raises(ValueError, match=r"\(8, K\) logits, \(8,\), got \(2,\); .*each from its own row.*pass the classes"):
        ScoreCAM(model, channel_batch_size=8).attribute(x, per_image)
    with pytest.raises(ValueError, match=r"one score per row of its \(12, K\) logits, \(12,\), got \(2,\)"):
        GradCAM(model, aug_smooth=True).attribute(x, lambda logits: logits[:2, 1])


def test_differentiable_maps_are_computed_in_eval_mode_and_leave_the_running_statistics_alone():
    torch.manual_seed(0)
    model = create_model("wrn", depth=10, width=1, num_classes=5).train()
    x, target = torch.randn(4, 3, 16, 16), torch.tensor([1, 3, 0, 2])
    statistics = {name: b.clone() for name, b in model.named_buffers()}
    maps = GradCAM(model, layer="layer2").attribute(x, target, create_graph=True)
    assert model.training and all(m.training for m in model.modules())  # every flag restored
    assert all(torch.equal(b, statistics[name]) for name, b in model.named_buffers())  # no running-stat update
    model.eval()
    assert_close(maps.detach(), GradCAM(model, layer="layer2").attribute(x, target), rtol=1e-5, atol=1e-7)
    one = GradCAM(model.train(), layer="layer2").attribute(x[:1], target[:1], create_graph=True)
    assert_close(one.detach(), maps[:1].detach(), rtol=1e-5, atol=1e-7)  # each image's map is its own


def test_channel_batch_size_is_the_constructors_name_and_batch_size_the_images_per_chunk():
    model = LinearHeadNet().eval()
    for method in (ScoreCAM, AblationCAM):
        cam = method(model, layer="act", channel_batch_size=2)
        assert cam.channel_batch_size == 2
        assert_close(cam.attribute(X, TARGET, batch_size=1), cam.attribute(X, TARGET), rtol=1e-5, atol=1e-6)
        with pytest.raises(TypeError, match="batch_size"):
            method(model, layer="act", batch_size=2)
        with pytest.raises(ValueError, match="channel_batch_size must be a positive int"):
            method(model, layer="act", channel_batch_size=0)
