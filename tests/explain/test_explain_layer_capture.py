"""Which tensor a map method reads and changes at its layer: the layer's own output, also when an in-place
operation follows it (a BatchNorm and its ReLU(inplace=True)), and the captured call of a module that runs several
times in one forward (Ablation-CAM ablates only that call). References: captum's layer methods and loops here."""

import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerActivation, LayerGradCam, LayerGradientXActivation
from torch import nn

from attnkit.explain import AblationCAM, ActivationMap, EigenCAM, GradCAM, HiResCAM, ScoreCAM
from attnkit.explain.cam import first_component
from attnkit.functional import attention_map
from attnkit.models import create_model
from helpers import assert_close, hook_count

X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
TARGET = torch.tensor([1, 3])


def _scorecam_reference(model, A):
    """Algorithm 1 of the Score-CAM paper on the layer output A (B, C, h, w), with explicit loops."""
    maps = torch.zeros(A.shape[0], *A.shape[2:])
    with torch.no_grad():
        for b in range(A.shape[0]):
            scores = []
            for k in range(A.shape[1]):
                up = F.interpolate(A[b, k][None, None], size=X.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
                span = up.max() - up.min()
                mask = (up - up.min()) / span if span > 0 else torch.zeros_like(up)
                scores.append(model(X[b : b + 1] * mask)[0, TARGET[b]])
            weights = torch.softmax(torch.stack(scores), dim=0)
            maps[b] = (weights[:, None, None] * A[b]).sum(0)
    return maps.clamp_min(0)


def _ablation_reference(model, module, A, call=1, images=X, target=TARGET):
    """The Ablation-CAM paper's weights, ablating channel k of the ``call``-th output of ``module`` only (a full
    forward per channel and image, the output replaced by a hook)."""
    maps = torch.zeros(A.shape[0], *A.shape[2:])
    with torch.no_grad():
        for b in range(A.shape[0]):
            y = model(images[b : b + 1])[0, target[b]]
            for k in range(A.shape[1]):
                seen = []

                def ablate(m, inputs, output, k=k):
                    seen.append(1)
                    if len(seen) == call:
                        output = output.clone()
                        output[:, k] = 0
                        return output

                handle = module.register_forward_hook(ablate)
                ablated = model(images[b : b + 1])[0, target[b]]
                handle.remove()
                maps[b] += (y - ablated) / y.abs() * A[b, k]
    return maps.clamp_min(0)


def test_every_layer_method_reads_a_batchnorm_output_that_an_in_place_relu_overwrites(small_wrn):
    # WRN's final `bn` is followed by `relu = ReLU(inplace=True)`, which writes into bn's output tensor. Once,
    # every method read the ReLU's output instead: GradCAM(layer="bn") equalled GradCAM(layer="relu").
    model = small_wrn
    A = LayerActivation(model, model.bn).attribute(X)  # captum: the BatchNorm's own output
    assert A.min() < 0  # else the ReLU would change nothing and the test would prove nothing
    captum_gradcam = LayerGradCam(model, model.bn).attribute(X, target=TARGET, relu_attributions=True)[:, 0]
    assert_close(GradCAM(model, layer="bn").attribute(X, TARGET, upsample=False), captum_gradcam, rtol=1e-5, atol=1e-7)
    assert (GradCAM(model, layer="bn").attribute(X, TARGET) - GradCAM(model, layer="relu").attribute(X, TARGET)).abs().max() > 1e-4
    hires = LayerGradientXActivation(model, model.bn).attribute(X, target=TARGET).sum(1).clamp_min(0)
    assert_close(HiResCAM(model, layer=model.bn).attribute(X, TARGET, upsample=False), hires, rtol=1e-5, atol=1e-7)
    assert_close(EigenCAM(model, layer="bn").attribute(X, upsample=False), first_component(A).clamp_min(0), rtol=1e-4, atol=1e-5)
    assert_close(ScoreCAM(model, layer="bn").attribute(X, TARGET, upsample=False), _scorecam_reference(model, A),
                 rtol=1e-4, atol=1e-6)
    assert_close(AblationCAM(model, layer="bn").attribute(X, TARGET, upsample=False),
                 _ablation_reference(model, model.bn, A), rtol=1e-4, atol=1e-5)
    assert_close(ActivationMap(model, layer="bn").attribute(X, upsample=False), attention_map(A), rtol=1e-5, atol=1e-7)
    assert hook_count(model) == 0


def test_differentiable_maps_at_a_layer_an_in_place_op_follows(small_wrn):
    model = small_wrn
    expected = LayerGradCam(model, model.bn).attribute(X, target=TARGET, relu_attributions=True)[:, 0]
    maps = GradCAM(model, layer="bn").attribute(X, TARGET, create_graph=True, upsample=False)
    assert maps.grad_fn is not None
    assert_close(maps.detach(), expected, rtol=1e-5, atol=1e-7)


class TwiceUsedConv(nn.Module):
    """One conv module run twice (y = conv(x0), z = conv(relu(y))), its calls of equal shape; the head adds both.
    With ``concat`` the head also reads the input, concatenated on the channels: the prefix cannot be reused."""

    def __init__(self, concat: bool = False) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv0, self.conv = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.concat = concat
        self.fc = nn.Linear(4 + 3 * concat, 5)

    def forward(self, x):
        x0 = F.relu(self.conv0(x))
        y = self.conv(x0)
        z = self.conv(F.relu(y))
        features = (y + z).relu()
        if self.concat:
            features = torch.cat([features, x], dim=1)
        return self.fc(features.mean(dim=(2, 3)))


@pytest.mark.parametrize("concat", [False, True], ids=["prefix reused", "whole model per copy"])
def test_ablationcam_ablates_only_the_captured_last_call_of_a_module_run_twice(concat):
    model = TwiceUsedConv(concat).eval()
    calls = []
    handle = model.conv.register_forward_hook(lambda m, i, o: calls.append(o.detach().clone()))
    with torch.no_grad():
        model(X)
    handle.remove()
    expected = _ablation_reference(model, model.conv, calls[-1], call=2)
    maps = AblationCAM(model, layer="conv", channel_batch_size=3).attribute(X, TARGET, upsample=False)
    assert_close(maps, expected, rtol=1e-4, atol=1e-6)
    assert hook_count(model) == 0


@pytest.mark.parametrize("layer", ["stage1.0.relu", "stage4.0.relu"])
def test_ablationcam_on_a_residual_attention_relu_that_runs_three_times(layer):
    # A pre-activation bottleneck runs its one ReLU module three times (after bn1, bn2, bn3). Once, every call was
    # replaced by the ablated copies: stage1.0.relu's map was wrong, stage4.0.relu's (256 then 64 channels) crashed.
    torch.manual_seed(0)
    model = create_model("attention56_cifar", num_classes=10).eval()
    module = model.get_submodule(layer)
    x = torch.randn(1, 3, 32, 32)
    outputs = []
    handle = module.register_forward_hook(lambda m, i, o: outputs.append(o.detach().clone()))
    with torch.no_grad():
        model(x)
    handle.remove()
    assert len(outputs) == 3
    expected = _ablation_reference(model, module, outputs[-1], call=3, images=x, target=[1])
    maps = AblationCAM(model, layer=layer).attribute(x, 1, upsample=False)
    assert expected.max() > 0
    assert_close(maps, expected, rtol=1e-4, atol=1e-5 * float(expected.max()))


class Picky(TwiceUsedConv):
    """Raises ``error`` when the layer's output batch differs from the input's (the shortcut's two ablated copies
    of one image), or, with ``every_later_call``, on every forward after the first, whatever the batch."""

    def __init__(self, error: Exception, every_later_call: bool = False) -> None:
        super().__init__()
        self.error, self.every_later_call, self.forwards = error, every_later_call, 0

    def forward(self, x):
        self.forwards += 1
        x0 = F.relu(self.conv0(x))
        y = self.conv(F.relu(self.conv(x0)))
        if y.shape[0] != x.shape[0] or (self.every_later_call and self.forwards > 1):
            raise self.error
        return self.fc(y.relu().mean(dim=(2, 3)))


def test_ablationcam_falls_back_to_whole_model_copies_only_on_unequal_batch_sizes():
    # The shortcut (the prefix run once, two ablated copies after the layer) expects one failure: torch's
    # RuntimeError for tensors of unequal batch sizes. Then, and only then, every copy runs through the whole model.
    model = Picky(RuntimeError("Sizes of tensors must match except in dimension 1")).eval()
    calls = []
    handle = model.conv.register_forward_hook(lambda m, i, o: calls.append(o.detach().clone()))
    with torch.no_grad():
        model(X)
    handle.remove()
    maps = AblationCAM(model, layer="conv", channel_batch_size=3).attribute(X, TARGET, upsample=False)
    assert_close(maps, _ablation_reference(model, model.conv, calls[-1], call=2), rtol=1e-4, atol=1e-6)
    assert hook_count(model) == 0


@pytest.mark.parametrize(
    "error, every_later_call",
    [(LookupError("batch mismatch"), False), (torch.OutOfMemoryError("out of memory"), False),
     (RuntimeError("broken after the first forward"), True)],
    ids=["another exception type", "out of memory", "a RuntimeError one copy raises too"],
)
def test_ablationcam_lets_every_other_failure_of_the_shortcut_propagate(error, every_later_call):
    # Once any Exception meant "fall back": a model's own error, or memory running out, was hidden (and paid for
    # again by the plain path). Now it reaches the caller unchanged.
    model = Picky(error, every_later_call).eval()
    with pytest.raises(type(error), match=str(error)):
        AblationCAM(model, layer="conv", channel_batch_size=3).attribute(X, TARGET, upsample=False)
    assert hook_count(model) == 0
