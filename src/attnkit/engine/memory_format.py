"""Precision and memory format of a step: decided by a rule or by one measurement per machine and model, never by
timing noise.

On CUDA, channels_last (NHWC) is on (tensor cores want it) and bf16 is used where supported. On a CPU both depend:
oneDNN is faster in NHWC for some models and CPUs and slower for others (double backprop measured 2x slower), and
native bf16 (AVX512-BF16 / AMX) made one step 1.7-1.85x faster on one CPU and 0.77-0.81x on another. So on a CPU
what the config leaves open (``precision=auto`` where the CPU has native bf16: fp32 or bf16; ``channels_last=auto``:
NCHW or NHWC; both: the four combinations) is measured -- but a measurement taken at the start of every run would
make two runs of one config differ (the variants round differently) whenever a busy machine tips the timing. So
the CPU choice is measured once per

    (CPU model, torch version, threads, model architecture and kwargs, input size, batch size of the probe
     (the run's, at most 32), the settings left open and those fixed, step kind: plain / double backprop)

and kept in ``channels_last.json`` (its name from when it held the memory format alone) under the cache directory
(``$ATTNKIT_CACHE``, else ``~/.cache/attnkit``). Runs take it from there. The file is read, measured into and
written while holding an OS lock on ``channels_last.json.lock`` (``fcntl.flock``), and written atomically, so runs
started together measure once and agree. Each run records both choices and where each came from ("set", "cuda",
"no-bf16", "cached", "measured") in run.json. The probe alternates the variants step by step, so that load from
other processes slows them alike; to measure again (new hardware settings, a measurement taken on a very busy
machine), delete the file.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from .checkpoint import write_json
from .runtime import Precision, cpu_model, precision_candidates

try:  # POSIX; elsewhere runs are not locked against each other (the choice is still cached)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

__all__ = ["CACHE_ENV", "Source", "StepFormat", "cache_dir", "choose_step_format", "probe_step_formats"]

CACHE_ENV = "ATTNKIT_CACHE"  # overrides the cache directory ~/.cache/attnkit
CACHE_FILE = "channels_last.json"
# Where a run's precision or memory format came from ("no-bf16": precision=auto on a device without native bf16;
# "checkpoint": resumed from a run older than this record).
Source = Literal["set", "cuda", "no-bf16", "cached", "measured", "checkpoint"]
# One training step as the probe runs it: (model, batch, autocast dtype or None for fp32).
ProbeStep = Callable[[nn.Module, torch.Tensor, "torch.dtype | None"], None]
Variant = tuple["torch.dtype | None", bool]  # (autocast dtype or None, channels_last)

_clock = time.perf_counter  # the probe's timer (tests replace it)


@dataclass(frozen=True)
class StepFormat:
    """How a run's steps compute, and where each half of that came from."""

    amp_dtype: torch.dtype | None  # autocast dtype (None = plain fp32)
    channels_last: bool  # memory format of the models and batches
    precision_source: Source
    channels_last_source: Source


def cache_dir() -> Path:
    """``$ATTNKIT_CACHE`` if set, else ``~/.cache/attnkit``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "attnkit").expanduser()


def probe_step_formats(model: nn.Module, example: torch.Tensor, run_step: ProbeStep, variants: Sequence[Variant],
                       repeats: int = 5) -> Variant:
    """Time ``run_step`` (forward + backward) in each (autocast dtype, channels_last) variant on ``example``; the
    fastest (the first of equals: fp32 NCHW comes first, so a tie keeps the plain setting).

    The variants take turns, step by step, on copies of ``model`` (``model`` itself stays as it is), so that a
    burst of load from other processes slows them alike; each variant's time is the fastest of its ``repeats``
    steps (the minimum is what the hardware can do; slower steps were disturbed by something else).
    """
    formats = [torch.channels_last if channels_last else torch.contiguous_format for _, channels_last in variants]
    copies = [copy.deepcopy(model).to(memory_format=fmt) for fmt in formats]
    inputs = [example.contiguous(memory_format=fmt) for fmt in formats]
    dtypes = [dtype for dtype, _ in variants]
    for m, x, dtype in zip(copies, inputs, dtypes):
        run_step(m, x, dtype)  # warm-up (oneDNN picks kernels on first use)
    fastest = [float("inf")] * len(variants)
    for _ in range(repeats):
        for i, (m, x, dtype) in enumerate(zip(copies, inputs, dtypes)):
            start = _clock()
            run_step(m, x, dtype)
            fastest[i] = min(fastest[i], _clock() - start)
    return variants[fastest.index(min(fastest))]


def choose_step_format(
    precision: Precision,
    channels_last: bool | str,
    device: torch.device,
    model: nn.Module,
    input_size: tuple[int, ...] | list[int],
    batch_size: int,
    run_step: ProbeStep,
    key_parts: dict[str, object],
) -> StepFormat:
    """The precision and memory format of a run and where each came from: by rule, or measured once (see above).

    Args:
        precision: the config's ``precision``: fp32 / bf16 / fp16 (used as set) or ``"auto"``.
        channels_last: the config's ``channels_last``: True / False (used as set) or ``"auto"``.
        device: the run's device (CUDA: channels_last on, bf16 where supported).
        model: the student; probed on deep copies, with the global RNG left as it was.
        input_size: (C, H, W) of one image.
        batch_size: images per step on this process (the probe uses up to 32).
        run_step: one training step of the run's kind on (model, batch, autocast dtype), see
            :func:`probe_step_formats`.
        key_parts: what identifies the measurement besides the machine and settings (model, kwargs, step kind...).
    """
    if channels_last is not True and channels_last is not False and channels_last != "auto":
        raise ValueError(f"channels_last must be auto, true or false, got {channels_last!r}")
    dtypes, precision_source = precision_candidates(precision, device)
    if channels_last != "auto":
        formats, format_source = (bool(channels_last),), "set"
    elif device.type == "cuda":
        formats, format_source = (True,), "cuda"
    else:
        formats, format_source = (False, True), "measure"
    variants = list(itertools.product(dtypes, formats))  # fp32 before bf16, NCHW before channels_last
    if len(variants) == 1:
        return StepFormat(dtypes[0], formats[0], precision_source, format_source)
    # What was left open and what was fixed identify the measurement (a fixed precision keeps the key it had
    # when only the memory format was measured, so those entries stay valid).
    fixed = {"precision": str(dtypes[0] or torch.float32) if len(dtypes) == 1
             else "auto: " + " or ".join(map(_name, dtypes))}
    if len(formats) == 1:
        fixed["channels_last"] = formats[0]
    key = _cache_key(model, input_size, batch_size, {**key_parts, **fixed})
    with _locked(cache_dir() / f"{CACHE_FILE}.lock"):
        entries = _read(cache_dir() / CACHE_FILE)
        chosen = _cached(entries.get(key), variants)
        source: Source = "cached"
        if chosen is None:
            generator = torch.Generator(device).manual_seed(0)  # leaves the global RNG alone
            example = torch.randn(min(32, batch_size), *input_size, device=device, generator=generator)
            with torch.random.fork_rng(devices=[]):  # dropout in the probe must not move the run's random stream
                chosen = probe_step_formats(model, example, run_step, variants)  # on copies: their BN statistics move
            entries[key] = {**_describe({**key_parts, **fixed}), "channels_last": chosen[1],
                            "precision": _name(chosen[0]), "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
            write_json(cache_dir() / CACHE_FILE, entries)
            source = "measured"
    return StepFormat(chosen[0], chosen[1], source if len(dtypes) > 1 else precision_source,
                      source if len(formats) > 1 else format_source)


def _name(dtype: torch.dtype | None) -> str:
    return str(dtype or torch.float32).removeprefix("torch.")


def _cached(entry: object, variants: list[Variant]) -> Variant | None:
    """The variant a cache entry names (an entry written before precision was measured names only the format), or
    None for none or a damaged one (measured again)."""
    if not isinstance(entry, dict):
        return None
    for dtype, channels_last in variants:
        recorded = str(entry.get("precision", dtype)).removeprefix("torch.")  # older entries: "torch.float32"
        if entry.get("channels_last") is channels_last and recorded == _name(dtype):
            return dtype, channels_last
    return None


def _cache_key(model: nn.Module, input_size, batch_size: int, key_parts: dict[str, object]) -> str:
    # The module tree's repr names every layer and its shape: the architecture, whatever built it.
    architecture = hashlib.sha256(repr(model).encode()).hexdigest()[:16]
    parts = {"cpu": cpu_model(), "torch": torch.__version__, "threads": torch.get_num_threads(),
             "architecture": architecture, "input_size": list(input_size), "batch_size": min(32, batch_size),
             **_describe(key_parts)}
    return json.dumps(parts, sort_keys=True)


def _describe(parts: dict[str, object]) -> dict[str, object]:
    """``parts`` as JSON values (anything JSON cannot hold, e.g. a dtype, as its text)."""
    return json.loads(json.dumps(parts, default=str))


def _read(path: Path) -> dict[str, dict]:
    try:
        with open(path) as f:
            entries = json.load(f)
        return entries if isinstance(entries, dict) else {}
    except (OSError, ValueError):  # missing or damaged: measure again and rewrite it
        return {}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive OS lock on ``path`` (created if needed); released on exit, also when killed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
