"""``attnkit bench explain``: ms per image of every attention-map method, against captum where captum has it.

Model and batch: WRN-16-2 (the CIFAR teacher of ``bench distill``, 10 classes, seeded random weights, eval mode)
on 16 CIFAR-shaped 32 x 32 images with given target classes. Chosen so that the whole suite, Score-CAM's 2,048
forward passes per call included, runs in a few minutes on 2 CPU cores; a ResNet-18 at 224 x 224 would take
about 20 s per image for Score-CAM alone there.

* Pairs with captum: both produce the same (B, H, W) maps at the input resolution: captum's attribution, its
  channel reduction and, for layer methods, ``LayerAttribution.interpolate(..., "bilinear")``; the two are timed
  in alternating blocks (:func:`attnkit.bench._measure.time_calls`), ratio = attnkit / captum (< 1 is faster).
* Score-CAM and Ablation-CAM against their floor: K = 128 channels x 16 images forward passes of the whole model
  in batches of 64 (what a per-channel method must pay without reusing anything), ratio = method / floor.
* Peak memory: tensors alive during one call beyond those alive before (profiler timeline on the CPU).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..explain import create_method
from ..models import create_model
from ._measure import compare, mib

MODEL, NUM_CLASSES, BATCH, SIZE = "wrn_16_2", 10, 16, 32
CHANNEL_BATCH = 64  # masked / ablated copies per forward pass (Score-CAM, Ablation-CAM and their floor)
OPTIONS = {  # the same settings on both sides
    "integrated_gradients": {"steps": 50},
    "smoothgrad": {"samples": 25, "stdev": 0.5},
    "occlusion": {"window": 8, "stride": 4, "perturbations_per_eval": 16},
    "scorecam": {"channel_batch_size": CHANNEL_BATCH},
    "ablationcam": {"channel_batch_size": CHANNEL_BATCH},
}
SLOW = {"integrated_gradients", "smoothgrad", "occlusion", "scorecam", "ablationcam"}  # fewer repeats


def _captum_versions(model: nn.Module, images: Tensor, target: Tensor) -> dict[str, Callable[[], Tensor]]:
    """captum's implementation of each method that captum has, producing the same (B, H, W) maps."""
    from captum.attr import (
        GuidedBackprop,
        IntegratedGradients,
        LayerAttribution,
        LayerGradCam,
        LayerGradientXActivation,
        NoiseTunnel,
        Occlusion,
        Saliency,
    )

    size = tuple(images.shape[-2:])
    graded = images.clone().requires_grad_(True)

    def layer_map(maps: Tensor) -> Tensor:
        return LayerAttribution.interpolate(maps, size, interpolate_mode="bilinear").squeeze(1).detach()

    def guided() -> Tensor:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
            return GuidedBackprop(model).attribute(graded, target=target).detach().abs().amax(1)

    return {
        "gradcam": lambda: layer_map(LayerGradCam(model, model.relu).attribute(images, target=target, relu_attributions=True)),
        "hirescam": lambda: layer_map(
            LayerGradientXActivation(model, model.relu).attribute(images, target=target).sum(1, keepdim=True).clamp_min(0)
        ),
        "saliency": lambda: Saliency(model).attribute(graded, target=target, abs=True).detach().amax(1),
        "integrated_gradients": lambda: IntegratedGradients(model).attribute(graded, target=target, n_steps=50).detach().sum(1),
        "smoothgrad": lambda: NoiseTunnel(Saliency(model)).attribute(
            graded, nt_type="smoothgrad", nt_samples=25, stdevs=0.5, target=target, abs=False
        ).detach().abs().amax(1),
        "guided_backprop": guided,
        "occlusion": lambda: Occlusion(model).attribute(
            images, sliding_window_shapes=(3, 8, 8), strides=(3, 4, 4), baselines=0.0, target=target,
            perturbations_per_eval=16,
        ).mean(1),
    }


def _floor(model: nn.Module, images: Tensor, channels: int) -> Callable[[], None]:
    """``channels`` forward passes of every image, in batches of CHANNEL_BATCH (no gradient)."""
    copies = images.repeat_interleave(CHANNEL_BATCH, dim=0)[: CHANNEL_BATCH]  # any CHANNEL_BATCH images will do

    def run() -> None:
        with torch.no_grad():
            for _ in range(images.shape[0] * channels // CHANNEL_BATCH):
                model(copies)

    return run


def run(device: str = "cpu", repeats: int = 10, methods: tuple[str, ...] | None = None) -> list[dict]:
    """One row per method: attnkit ms/image, captum's where it has the method, the floor for Score-/Ablation-CAM."""
    dev = torch.device(device)
    torch.manual_seed(0)
    model = create_model(MODEL, NUM_CLASSES).to(dev).eval()
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(BATCH, 3, SIZE, SIZE, generator=gen).to(dev)
    target = torch.randint(0, NUM_CLASSES, (BATCH,), generator=gen).to(dev)
    captum = _captum_versions(model, images, target)
    channels = int(model.forward_features(images[:1]).shape[1])
    names = methods or ("activation", "gradient", "saliency", "integrated_gradients", "smoothgrad", "guided_backprop",
                        "cam", "gradcam", "hirescam", "gradcam++", "xgradcam", "layercam", "eigencam", "scorecam",
                        "ablationcam", "occlusion")
    rows = []
    for name in names:
        method = create_method(name, model, **OPTIONS.get(name, {}))
        fns = {"attnkit": lambda m=method: m.attribute(images, target)}
        if name in captum:
            fns["captum"] = captum[name]
        if name in ("scorecam", "ablationcam"):
            fns["floor"] = _floor(model, images, channels)
        timing = dict(min_repeats=3, min_seconds=0.0, block=1) if name in SLOW else dict(min_repeats=repeats, min_seconds=1.0)
        results = compare(fns, dev, **timing)
        ours, other, floor = results["attnkit"], results.get("captum"), results.get("floor")
        rows.append({
            "method": name,
            "attnkit_ms_per_image": ours.milliseconds / BATCH,
            "captum_ms_per_image": None if other is None else other.milliseconds / BATCH,
            "vs_captum": None if other is None else ours.seconds / other.seconds,
            "floor_ms_per_image": None if floor is None else floor.milliseconds / BATCH,
            "vs_floor": None if floor is None else ours.seconds / floor.seconds,
            "attnkit_peak_mib": mib(ours.peak_bytes),
            "captum_peak_mib": None if other is None else mib(other.peak_bytes),
        })
        print(f"  {name}: {rows[-1]['attnkit_ms_per_image']:.2f} ms/image", flush=True)
    return rows


COLUMNS = [
    ("method", "method", "{}"),
    ("attnkit_ms_per_image", "attnkit ms/img", "{:.2f}"),
    ("captum_ms_per_image", "captum ms/img", "{:.2f}"),
    ("vs_captum", "attnkit/captum", "{:.2f}x"),
    ("floor_ms_per_image", "K-forward floor ms/img", "{:.2f}"),
    ("vs_floor", "method/floor", "{:.2f}x"),
    ("attnkit_peak_mib", "attnkit peak MiB", "{:.1f}"),
    ("captum_peak_mib", "captum peak MiB", "{:.1f}"),
]
