"""Timing and peak-memory measurement shared by every benchmark suite.

Times are medians over repeats after warm-up, with the device synchronised around each call. Peak memory is
the highest total size of live tensors allocated inside the measured call: ``torch.cuda.max_memory_allocated``
on a GPU, PyTorch's profiler memory timeline on the CPU.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

__all__ = ["Measurement", "compare", "mib", "peak_memory_bytes", "time_calls"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(
    fns: dict[str, Callable[[], object]],
    device: torch.device,
    min_repeats: int = 10,
    min_seconds: float = 0.5,
    block: int = 5,
) -> dict[str, float]:
    """Median wall time in seconds of each function, measured in alternating blocks (A x5, B x5, A x5, ...).

    Alternating blocks expose every variant to the same drift of clocks and load, so their ratio is fair;
    each block starts with one untimed call so that no variant pays for the allocator state another left.
    Blocks continue until each function ran ``min_repeats`` timed calls and ``min_seconds`` have passed.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    while min(len(t) for t in times.values()) < min_repeats or time.perf_counter() - start < min_seconds:
        for name, fn in fns.items():
            fn()  # untimed: warm-up, and settles the allocator after the previous variant
            _sync(device)
            for _ in range(block):
                begin = time.perf_counter()
                fn()
                _sync(device)
                times[name].append(time.perf_counter() - begin)
    return {name: statistics.median(t) for name, t in times.items()}


def peak_memory_bytes(fn: Callable[[], object], device: torch.device) -> int | None:
    """Peak bytes of tensors alive during one call of ``fn()`` (beyond those alive before), or None if unknown."""
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    try:  # the CPU has no allocator statistics; the profiler's memory timeline records every tensor's life
        from torch.profiler import ProfilerActivity, profile
        from torch.profiler._memory_profiler import Action

        with _native_stderr_silenced(), profile(
            activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True
        ) as prof:
            fn()
        live = peak = 0
        for _, action, _, size in prof._memory_profile().timeline:
            if action == Action.CREATE:
                live += size
            elif action == Action.DESTROY:
                live -= size
            peak = max(peak, live)
        return peak
    except Exception:  # private API: report "unknown" rather than a wrong number
        return None


def compare(fns: dict[str, Callable[[], object]], device: torch.device, **timing) -> dict[str, "Measurement"]:
    """Interleaved timing plus one peak-memory measurement per function."""
    seconds = time_calls(fns, device, **timing)
    return {name: Measurement(seconds[name], peak_memory_bytes(fn, device)) for name, fn in fns.items()}


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """The profiler's C++ side logs start/stop lines straight to file descriptor 2; hide them while it runs."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def mib(n: int | None) -> float | None:
    """Bytes in MiB (None stays None: a peak the profiler could not measure)."""
    return None if n is None else n / 2**20


@dataclass
class Measurement:
    seconds: float
    peak_bytes: int | None

    @property
    def milliseconds(self) -> float:
        return self.seconds * 1e3
