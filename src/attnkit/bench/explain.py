"""``attnkit bench explain``: ms per image of every attention-map method, against captum where captum has it.

Model and batch: WRN-16-2 (the CIFAR teacher of ``bench distill``, 10 classes, seeded random weights, eval mode)
on 16 CIFAR-shaped 32 x 32 images with given target classes. Chosen so that the whole suite, Score-CAM's 2,048
forward passes per call included, runs in a few minutes on 2 CPU cores; a ResNet-18 at 224 x 224 would take
about 20 s per image for Score-CAM alone there.

* Pairs with captum: both produce the same (B, H, W) maps at the input resolution (checked on every run, before
  timing: ``captum_max_rel_diff``): captum's attribution, its channel reduction and, for layer methods,
  ``LayerAttribution.interpolate(..., "bilinear")``, at the layer attnkit's method chooses.
* Score-CAM and Ablation-CAM against their floor: K channels x B images forward passes of the whole model in
  batches of 64 (what a per-channel method must pay without reusing anything).
* Timing: the variants of a method run in interleaved rounds (:func:`attnkit.bench._measure.time_rounds`):
  ``repeats`` rounds of 3 timed calls each for the fast methods, ``max(1, repeats // 2)`` rounds of one call
  for the slow ones (>= 50 ms/image). A ratio is computed per round (attnkit's round median over the other's),
  and the median ratio is reported with its interquartile range over the rounds. Verdict: ``faster`` when the
  upper quartile is below 1, ``slower`` when the lower quartile is above 1, else (or with fewer than 3 rounds)
  ``equal within noise``.
* Peak memory: tensors alive during one call beyond those alive before (profiler timeline on the CPU).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..explain import create_method
from ..features import output_module, resolve_module
from ..models import create_model
from ._measure import Measurement, compare, mib, spread

MODEL, NUM_CLASSES, BATCH, SIZE = "wrn_16_2", 10, 16, 32
CHANNEL_BATCH = 64  # masked / ablated copies per forward pass (Score-CAM, Ablation-CAM and their floor)
OPTIONS = {  # the same settings on both sides
    "integrated_gradients": {"steps": 50},
    "smoothgrad": {"samples": 25, "stdev": 0.5, "seed": 0},
    "occlusion": {"window": 8, "stride": 4, "perturbations_per_eval": 16},
    "scorecam": {"channel_batch_size": CHANNEL_BATCH},
    "ablationcam": {"channel_batch_size": CHANNEL_BATCH},
}
SLOW = {"integrated_gradients", "smoothgrad", "occlusion", "scorecam", "ablationcam"}  # fewer rounds of 1 call
METHODS = ("activation", "gradient", "saliency", "integrated_gradients", "smoothgrad", "guided_backprop", "cam",
           "gradcam", "hirescam", "gradcam++", "xgradcam", "layercam", "eigencam", "scorecam", "ablationcam",
           "occlusion")


def captum_versions(model: nn.Module, images: Tensor, target: Tensor) -> dict[str, Callable[[], Tensor]]:
    """captum's implementation of each method that captum has, producing the same (B, H, W) maps as attnkit's
    method with :data:`OPTIONS` (layer methods at the layer attnkit's CAMs choose by default)."""
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
    with torch.no_grad():
        layer = resolve_module(model, output_module(model, lambda: model.forward_features(images[:1])))

    def layer_map(maps: Tensor) -> Tensor:
        return LayerAttribution.interpolate(maps, size, interpolate_mode="bilinear").squeeze(1).detach()

    def guided() -> Tensor:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
            return GuidedBackprop(model).attribute(graded, target=target).detach().abs().amax(1)

    def smoothgrad() -> Tensor:
        with torch.random.fork_rng(devices=[images.device.index or 0] if images.device.type == "cuda" else []):
            torch.manual_seed(OPTIONS["smoothgrad"]["seed"])  # the noise attnkit's SmoothGrad draws
            return NoiseTunnel(Saliency(model)).attribute(
                graded, nt_type="smoothgrad", nt_samples=25, stdevs=0.5, target=target, abs=False
            ).detach().abs().amax(1)

    return {
        "gradcam": lambda: layer_map(LayerGradCam(model, layer).attribute(images, target=target, relu_attributions=True)),
        "hirescam": lambda: layer_map(
            LayerGradientXActivation(model, layer).attribute(images, target=target).sum(1, keepdim=True).clamp_min(0)
        ),
        "saliency": lambda: Saliency(model).attribute(graded, target=target, abs=True).detach().amax(1),
        "integrated_gradients": lambda: IntegratedGradients(model).attribute(graded, target=target, n_steps=50).detach().sum(1),
        "smoothgrad": smoothgrad,
        "guided_backprop": guided,
        "occlusion": lambda: Occlusion(model).attribute(
            images, sliding_window_shapes=(images.shape[1], 8, 8), strides=(images.shape[1], 4, 4), baselines=0.0,
            target=target, perturbations_per_eval=16,
        ).mean(1),
    }


def relative_difference(ours: Tensor, theirs: Tensor) -> float:
    """max |ours - theirs| / max |theirs|: 0 for the same maps (up to float rounding, ~1e-7)."""
    return float((ours - theirs).abs().max() / theirs.abs().max().clamp_min(torch.finfo(theirs.dtype).tiny))


def _floor(model: nn.Module, images: Tensor, channels: int) -> Callable[[], None]:
    """``channels`` forward passes of every image, in batches of CHANNEL_BATCH (no gradient)."""
    copies = images.repeat_interleave(CHANNEL_BATCH, dim=0)[:CHANNEL_BATCH]  # any CHANNEL_BATCH images will do
    passes = max(1, images.shape[0] * channels // CHANNEL_BATCH)

    def run() -> None:
        with torch.no_grad():
            for _ in range(passes):
                model(copies)

    return run


def verdict(low: float, high: float, rounds: int) -> str:
    """``faster`` / ``slower`` when the ratio's interquartile range lies below / above 1, else equal within noise
    (also with fewer than 3 rounds, whose quartiles say nothing)."""
    if rounds < 3:
        return "equal within noise"
    return "faster" if high < 1 else "slower" if low > 1 else "equal within noise"


def _ratio(ours: Measurement, other: Measurement | None, prefix: str) -> dict:
    """The per-round ratios ours / other: median, quartiles (and the verdict against captum)."""
    if other is None:
        return {prefix: None, f"{prefix}_q1": None, f"{prefix}_q3": None}
    middle, low, high = spread([a / b for a, b in zip(ours.rounds, other.rounds)])
    return {prefix: middle, f"{prefix}_q1": low, f"{prefix}_q3": high}


def run(
    device: str = "cpu", repeats: int = 10, methods: tuple[str, ...] | None = None, model: str = MODEL,
    model_kwargs: dict | None = None, batch: int = BATCH, size: int = SIZE, num_classes: int = NUM_CLASSES,
) -> list[dict]:
    """One row per method: attnkit ms/image, captum's where it has the method (same maps, checked), the ratio
    per interleaved round with its spread, and the floor for Score-/Ablation-CAM."""
    dev = torch.device(device)
    torch.manual_seed(0)
    net = create_model(model, num_classes, **(model_kwargs or {})).to(dev).eval()
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, size, size, generator=gen).to(dev)
    target = torch.randint(0, num_classes, (batch,), generator=gen).to(dev)
    captum = captum_versions(net, images, target)
    with torch.no_grad():
        channels = int(net.forward_features(images[:1]).shape[1])
    print(f"  load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    rows = []
    for name in methods or METHODS:
        method = create_method(name, net, **OPTIONS.get(name, {}))
        fns = {"attnkit": lambda m=method: m.attribute(images, target)}
        difference = None
        if name in captum:
            fns["captum"] = captum[name]
            difference = relative_difference(fns["attnkit"](), fns["captum"]())  # the ratio means nothing otherwise
        if name in ("scorecam", "ablationcam"):
            fns["floor"] = _floor(net, images, channels)
        if name in SLOW:
            timing = dict(min_repeats=max(1, repeats // 2), min_seconds=0.0, block=1, settle_every_round=False)
        else:
            timing = dict(min_repeats=3 * repeats, min_seconds=1.0, block=3)
        results = compare(fns, dev, **timing)
        ours, other, floor = results["attnkit"], results.get("captum"), results.get("floor")
        versus = _ratio(ours, other, "vs_captum")
        row = {
            "method": name,
            "attnkit_ms_per_image": ours.milliseconds / batch,
            "captum_ms_per_image": None if other is None else other.milliseconds / batch,
            **versus,
            "verdict": None if other is None else verdict(versus["vs_captum_q1"], versus["vs_captum_q3"], len(ours.rounds)),
            "captum_max_rel_diff": difference,
            "floor_ms_per_image": None if floor is None else floor.milliseconds / batch,
            **_ratio(ours, floor, "vs_floor"),
            "rounds": len(ours.rounds),
            "attnkit_peak_mib": mib(ours.peak_bytes),
            "captum_peak_mib": None if other is None else mib(other.peak_bytes),
        }
        rows.append(row)
        print(f"  {name}: {row['attnkit_ms_per_image']:.2f} ms/image", flush=True)
    print(f"  load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    return rows


def _with_spread(key: str) -> Callable[[dict], str]:
    return lambda row: f"{row[key]:.2f}x [{row[key + '_q1']:.2f}, {row[key + '_q3']:.2f}]"


COLUMNS = [
    ("method", "method", "{}"),
    ("attnkit_ms_per_image", "attnkit ms/img", "{:.2f}"),
    ("captum_ms_per_image", "captum ms/img", "{:.2f}"),
    ("vs_captum", "attnkit/captum [IQR]", _with_spread("vs_captum")),
    ("verdict", "vs captum", "{}"),
    ("floor_ms_per_image", "K-forward floor ms/img", "{:.2f}"),
    ("vs_floor", "method/floor [IQR]", _with_spread("vs_floor")),
    ("rounds", "rounds", "{}"),
    ("attnkit_peak_mib", "attnkit peak MiB", "{:.1f}"),
    ("captum_peak_mib", "captum peak MiB", "{:.1f}"),
]
