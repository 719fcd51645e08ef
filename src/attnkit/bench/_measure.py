"""Timing and peak-memory measurement shared by every benchmark suite.

Times are medians over repeats after warm-up, with the device synchronised around each call; the calls of the
variants compared alternate in rounds, whose paired ratios give a ratio's spread. Peak memory is
the highest total size of live tensors allocated inside the measured call: ``torch.cuda.max_memory_allocated``
on a GPU, PyTorch's profiler memory timeline on the CPU.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["Measurement", "compare", "mib", "peak_memory_bytes", "spread", "time_calls", "time_rounds"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_rounds(
    fns: dict[str, Callable[[], object]],
    device: torch.device,
    min_rounds: int = 2,
    min_seconds: float = 0.5,
    block: int = 5,
    settle_every_round: bool = True,
) -> dict[str, list[list[float]]]:
    """Wall times in seconds of each function, in interleaved rounds: each round runs every function's block of
    ``block`` timed calls in turn (A x5, B x5, then A x5, B x5, ...); returns {name: [round: [seconds, ...]]}.

    Alternating blocks expose every variant to the same drift of clocks and load, so the ratio of two variants'
    times in one round is fair, and the rounds' ratios show how much it moves. With ``settle_every_round`` each
    block starts with one untimed call, so that no variant pays for the allocator state another left; without,
    only the first round does (for calls of seconds, where that state does not matter and the call would double
    the cost). Rounds continue until there are ``min_rounds`` and ``min_seconds`` have passed.
    """
    rounds: dict[str, list[list[float]]] = {name: [] for name in fns}
    start = time.perf_counter()
    while min(len(r) for r in rounds.values()) < min_rounds or time.perf_counter() - start < min_seconds:
        for name, fn in fns.items():
            if settle_every_round or not rounds[name]:
                fn()  # untimed: warm-up, and settles the allocator after the previous variant
                _sync(device)
            times = []
            for _ in range(block):
                begin = time.perf_counter()
                fn()
                _sync(device)
                times.append(time.perf_counter() - begin)
            rounds[name].append(times)
    return rounds


def time_calls(
    fns: dict[str, Callable[[], object]],
    device: torch.device,
    min_repeats: int = 10,
    min_seconds: float = 0.5,
    block: int = 5,
) -> dict[str, float]:
    """Median wall time in seconds of each function over at least ``min_repeats`` timed calls, measured in
    alternating blocks (:func:`time_rounds`)."""
    rounds = time_rounds(fns, device, -(-min_repeats // block), min_seconds, block)
    return {name: statistics.median(t for r in rs for t in r) for name, rs in rounds.items()}


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, lower quartile, upper quartile) of ``values`` (inclusive quartiles; one value: all three)."""
    values = list(values)
    if len(values) < 2:
        return values[0], values[0], values[0]
    low, middle, high = statistics.quantiles(values, n=4, method="inclusive")
    return middle, low, high


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


def compare(
    fns: dict[str, Callable[[], object]], device: torch.device, min_repeats: int = 10, min_seconds: float = 0.5,
    block: int = 5, settle_every_round: bool = True,
) -> dict[str, "Measurement"]:
    """Interleaved timing (:func:`time_rounds`, at least ``min_repeats`` timed calls) plus one peak-memory
    measurement per function; each :class:`Measurement` keeps the median of every round."""
    rounds = time_rounds(fns, device, -(-min_repeats // block), min_seconds, block, settle_every_round)
    return {
        name: Measurement(statistics.median(t for r in rounds[name] for t in r), peak_memory_bytes(fn, device),
                          [statistics.median(r) for r in rounds[name]])
        for name, fn in fns.items()
    }


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
    seconds: float  # median over every timed call
    peak_bytes: int | None
    rounds: list[float] = field(default_factory=list)  # median of each round, in order (paired across variants)

    @property
    def milliseconds(self) -> float:
        return self.seconds * 1e3
