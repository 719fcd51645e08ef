"""``attnkit bench core``: the fused attention map against the eager formula, forward + backward.

Shapes: the issue's (128, 64, 32, 32) and the three group outputs of WRN-16-1 and WRN-16-2 at batch 128.
Eager = the official code's ``F.normalize(a.pow(2).mean(1).view(B, -1))`` under autograd; fused =
:class:`attnkit.functional.AttentionMapFunction` with its hand-derived backward. Both backpropagate the same
random upstream gradient into the activation, as inside a training step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..functional import attention_map
from ._measure import compare, mib

SHAPES = {
    "issue (128,64,32,32)": (128, 64, 32, 32),
    "WRN-16-1 group1": (128, 16, 32, 32),
    "WRN-16-1 group2": (128, 32, 16, 16),
    "WRN-16-1 group3": (128, 64, 8, 8),
    "WRN-16-2 group1": (128, 32, 32, 32),
    "WRN-16-2 group2": (128, 64, 16, 16),
    "WRN-16-2 group3": (128, 128, 8, 8),
}


def eager_attention(a: torch.Tensor) -> torch.Tensor:
    """The official attention-transfer code's formula, written the plain way."""
    return F.normalize(a.pow(2).mean(1).view(a.size(0), -1))


def fused_attention(a: torch.Tensor) -> torch.Tensor:
    return attention_map(a).flatten(1)


def run(device: str = "cpu", repeats: int = 10, channels_last: bool = False) -> list[dict]:
    """Measure every shape; returns one row per shape with times (ms), peaks (MiB) and ratios."""
    dev = torch.device(device)
    rows = []
    for name, shape in SHAPES.items():
        a = torch.randn(shape, device=dev)
        if channels_last:
            a = a.contiguous(memory_format=torch.channels_last)
        a.requires_grad_(True)
        upstream = torch.randn(shape[0], shape[2] * shape[3], device=dev)

        def step(fn=None):
            fn(a).backward(upstream)
            a.grad = None

        results = compare({"eager": lambda: step(eager_attention), "fused": lambda: step(fused_attention)}, dev, min_repeats=repeats)
        eager, fused = results["eager"], results["fused"]
        rows.append({
            "shape": name,
            "eager_ms": eager.milliseconds,
            "fused_ms": fused.milliseconds,
            "speedup": eager.seconds / fused.seconds,
            "eager_peak_mib": mib(eager.peak_bytes),
            "fused_peak_mib": mib(fused.peak_bytes),
            "peak_ratio": (fused.peak_bytes / eager.peak_bytes) if eager.peak_bytes and fused.peak_bytes is not None else None,
        })
    return rows


COLUMNS = [
    ("shape", "shape", "{}"),
    ("eager_ms", "eager ms", "{:.2f}"),
    ("fused_ms", "fused ms", "{:.2f}"),
    ("speedup", "speed-up", "{:.2f}x"),
    ("eager_peak_mib", "eager peak MiB", "{:.1f}"),
    ("fused_peak_mib", "fused peak MiB", "{:.1f}"),
    ("peak_ratio", "fused/eager peak", "{:.2f}"),
]
