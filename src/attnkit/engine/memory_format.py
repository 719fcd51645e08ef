"""channels_last or not: decided by a rule or by one measurement per machine and model, never by timing noise.

On CUDA, channels_last (NHWC) is on: tensor cores want it. On a CPU it depends: oneDNN is faster in NHWC for some
models and CPUs and slower for others (double backprop measured 2x slower), so the choice is measured -- but a
measurement taken at the start of every run would make two runs of one config differ (the two formats round
differently) whenever a busy machine tips the timing. So the CPU choice is measured once per

    (CPU model, torch version, threads, model architecture and kwargs, input size, batch size of the probe
     (the run's, at most 32), precision, step kind: plain / double backprop)

and kept in ``channels_last.json`` under the cache directory (``$ATTNKIT_CACHE``, else ``~/.cache/attnkit``).
Runs take it from there. The file is read, measured into and written while holding an OS lock on
``channels_last.json.lock`` (``fcntl.flock``), and written atomically, so runs started together measure once and
agree. Each run records the choice and where it came from ("set", "cuda", "cached", "measured") in run.json.
The probe alternates the two formats step by step, so that load from other processes slows both alike; to
measure again (new hardware settings, a measurement taken on a very busy machine), delete the file.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from .checkpoint import write_json

try:  # POSIX; elsewhere runs are not locked against each other (the choice is still cached)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

__all__ = ["CACHE_ENV", "Source", "cache_dir", "choose_channels_last", "probe_channels_last"]

CACHE_ENV = "ATTNKIT_CACHE"  # overrides the cache directory ~/.cache/attnkit
CACHE_FILE = "channels_last.json"
# Where a run's memory format came from ("checkpoint": resumed from a run older than this record).
Source = Literal["set", "cuda", "cached", "measured", "checkpoint"]

_clock = time.perf_counter  # the probe's timer (tests replace it)


def cache_dir() -> Path:
    """``$ATTNKIT_CACHE`` if set, else ``~/.cache/attnkit``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "attnkit").expanduser()


def probe_channels_last(
    model: nn.Module, example: torch.Tensor, run_step: Callable[[nn.Module, torch.Tensor], None], repeats: int = 5
) -> bool:
    """Time ``run_step`` (forward + backward) in both memory formats on ``example``; True if channels_last wins.

    The formats take turns, step by step, on two copies of ``model`` (``model`` itself stays as it is), so that
    a burst of load from other processes slows both alike; each format's time is the fastest of its ``repeats``
    steps (the minimum is what the hardware can do; slower steps were disturbed by something else).
    """
    formats = (torch.contiguous_format, torch.channels_last)
    copies = [copy.deepcopy(model).to(memory_format=fmt) for fmt in formats]
    inputs = [example.contiguous(memory_format=fmt) for fmt in formats]
    for m, x in zip(copies, inputs):
        run_step(m, x)  # warm-up (oneDNN picks kernels on first use)
    fastest = [float("inf"), float("inf")]
    for _ in range(repeats):
        for i, (m, x) in enumerate(zip(copies, inputs)):
            start = _clock()
            run_step(m, x)
            fastest[i] = min(fastest[i], _clock() - start)
    return fastest[1] < fastest[0]


def choose_channels_last(
    setting: bool | str,
    device: torch.device,
    model: nn.Module,
    input_size: tuple[int, ...] | list[int],
    batch_size: int,
    run_step: Callable[[nn.Module, torch.Tensor], None],
    key_parts: dict[str, object],
) -> tuple[bool, Source]:
    """The memory format of a run and where it came from.

    Args:
        setting: the config's ``channels_last``: True / False (used as set) or ``"auto"``.
        device: the run's device (CUDA: on).
        model: the student; probed on a deep copy, with the global RNG left as it was.
        input_size: (C, H, W) of one image.
        batch_size: images per step on this process (the probe uses up to 32).
        run_step: one training step of the run's kind on (model, batch), see :func:`probe_channels_last`.
        key_parts: what identifies the measurement besides the machine (model, kwargs, precision, step kind...).
    """
    if setting is not True and setting is not False and setting != "auto":
        raise ValueError(f"channels_last must be auto, true or false, got {setting!r}")
    if setting != "auto":
        return bool(setting), "set"
    if device.type == "cuda":
        return True, "cuda"
    key = _cache_key(model, input_size, batch_size, key_parts)
    with _locked(cache_dir() / f"{CACHE_FILE}.lock"):
        entries = _read(cache_dir() / CACHE_FILE)
        if key in entries:
            return bool(entries[key]["channels_last"]), "cached"
        generator = torch.Generator(device).manual_seed(0)  # leaves the global RNG alone
        example = torch.randn(min(32, batch_size), *input_size, device=device, generator=generator)
        with torch.random.fork_rng(devices=[]):  # dropout in the probe must not move the run's random stream
            use = probe_channels_last(model, example, run_step)  # on copies: their BN statistics move
        entries[key] = {"channels_last": use, "measured": time.strftime("%Y-%m-%d %H:%M:%S"), **_describe(key_parts)}
        write_json(cache_dir() / CACHE_FILE, entries)
    return use, "measured"


def _cache_key(model: nn.Module, input_size, batch_size: int, key_parts: dict[str, object]) -> str:
    # The module tree's repr names every layer and its shape: the architecture, whatever built it.
    architecture = hashlib.sha256(repr(model).encode()).hexdigest()[:16]
    parts = {"cpu": _cpu_model(), "torch": torch.__version__, "threads": torch.get_num_threads(),
             "architecture": architecture, "input_size": list(input_size), "batch_size": min(32, batch_size),
             **_describe(key_parts)}
    return json.dumps(parts, sort_keys=True)


def _describe(parts: dict[str, object]) -> dict[str, object]:
    """``parts`` as JSON values (anything JSON cannot hold, e.g. a dtype, as its text)."""
    return json.loads(json.dumps(parts, default=str))


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
