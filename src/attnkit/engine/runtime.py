"""Where and how a run computes: device, precision, memory format, seeds and processes (torchrun / DDP).

Nothing here assumes hardware: bf16 is used only where the device reports native support (CUDA bf16, or a
CPU with AVX512-BF16 or AMX). On CUDA ``precision=auto`` is bf16 where supported; on a CPU with native bf16 it is
measured against fp32 (native bf16 is not always faster there), with the memory format, in :mod:`.memory_format`.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

import torch
import torch.distributed as dist

__all__ = [
    "DEFAULT_DDP_TIMEOUT",
    "RECORDED_PRECISIONS",
    "Distributed",
    "DistributedTimeout",
    "Precision",
    "autocast",
    "bf16_supported",
    "cpu_model",
    "parse_device",
    "precision_candidates",
    "resolve_device",
    "resolve_precision",
    "seed_everything",
]


# auto: CUDA bf16 where supported; a CPU with native bf16: fp32 or bf16, whichever its probe measured faster; else fp32
Precision = Literal["auto", "fp32", "bf16", "fp16"]
RECORDED_PRECISIONS = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}  # run.json's name -> the setting
DEFAULT_DDP_TIMEOUT = 300.0  # seconds a process waits in a collective for the others (config key ddp_timeout)
_LONG_WAIT = 24 * 3600.0  # seconds ranks wait while one downloads the data (a barrier of its own)
# Words of the backends' errors when a peer stopped answering (gloo: "Timed out waiting 10000ms for recv
# operation", "Connection closed by peer"; NCCL's watchdog: "Watchdog caught collective operation timeout").
_PEER_LOST = ("timed out", "timeout", "connection closed by peer", "connection reset by peer", "broken pipe")


class DistributedTimeout(TimeoutError):
    """A process of a multi-process run stopped answering (stopped, died or far slower): the run ends."""


def resolve_device(spec: str) -> torch.device:
    """``auto`` -> the local CUDA device when available (LOCAL_RANK under torchrun), else the CPU."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    device = parse_device(spec)
    if device.type == "meta":
        raise ValueError(f"device {spec!r} holds no data (shapes only), so nothing can be trained or evaluated on it; "
                         "use device=cpu or device=cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} was asked for but CUDA is not available; use device=cpu")
    backend = getattr(torch, device.type, None) if device.type not in ("cpu", "cuda") else None
    if backend is not None and callable(getattr(backend, "is_available", None)) and not backend.is_available():
        raise ValueError(f"device {spec!r} was asked for but {device.type} is not available here; use device=cpu")
    return device


def parse_device(spec: str) -> torch.device:
    """``torch.device(spec)``, with a ``ValueError`` naming the accepted forms for text that is not a device."""
    try:
        return torch.device(spec)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be auto, cpu, cuda, cuda:N or another torch device type, got {spec!r}") from None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows: what a measurement was taken on."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bf16_supported(device: torch.device) -> bool:
    """Native bf16 arithmetic: CUDA's own report, or a CPU with AVX512-BF16 / AMX (detected, never assumed)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        # torch.cpu exposes the CPU's instruction-set flags (private names, hence the guarded lookup).
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    return False


def precision_candidates(spec: Precision, device: torch.device) -> tuple[tuple[torch.dtype | None, ...], str]:
    """The autocast dtypes a run may use (None = plain fp32) and, when there is one, the rule that chose it.

    ``fp32`` / ``bf16`` / ``fp16``: that one ("set"; a ``ValueError`` if the device lacks it). ``auto``: on CUDA
    bf16 where supported, else fp32 ("cuda"); on a CPU with native bf16 both fp32 and bf16 ("measure": the
    faster is taken, see :func:`.memory_format.choose_step_format`; measured 1.7-1.85x faster on one CPU with
    AVX512-BF16 and 0.77-0.81x on another); without native bf16, fp32 ("no-bf16").
    """
    if spec != "auto":
        return (resolve_precision(spec, device),), "set"
    if device.type == "cuda":
        return (resolve_precision(spec, device),), "cuda"
    if bf16_supported(device):
        return (None, torch.bfloat16), "measure"
    return (None,), "no-bf16"


def resolve_precision(spec: Precision, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32. ``auto`` = bf16 where supported natively, else fp32: the rule
    of a run that recorded no precision (a run's own ``auto`` is :func:`precision_candidates`)."""
    if spec == "fp32":
        return None
    if spec == "auto":
        return torch.bfloat16 if bf16_supported(device) else None
    if spec == "bf16":
        if not bf16_supported(device):
            raise ValueError(f"precision bf16 was asked for but {device} has no native bf16; use precision=fp32")
        return torch.bfloat16
    if spec == "fp16":
        if device.type != "cuda":
            raise ValueError("precision fp16 needs a CUDA device (CPU autocast uses bf16); use precision=bf16 or fp32")
        return torch.float16
    raise ValueError(f"unknown precision {spec!r}")


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device``, or nothing when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    """Seed Python and torch (all devices). Data order and augmentation are seeded by the loaders themselves."""
    random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Distributed:
    """This process's place in a (possibly single-process) run; set up from torchrun's environment.

    Under ``torchrun`` (RANK / WORLD_SIZE / MASTER_ADDR set), :meth:`from_environment` joins the process group
    (NCCL on CUDA, gloo on the CPU). Rank 0 writes files; metrics are summed over ranks with :meth:`all_reduce`.

    Every collective waits at most ``timeout`` seconds (config key ``ddp_timeout``) for the other processes: a
    process that is stopped, hangs or died ends the run within that time, and :meth:`explain_failure` turns the
    backend's error into a :class:`DistributedTimeout` naming the ranks that no longer answer.
    """

    rank: int = 0
    world_size: int = 1
    initialized_here: bool = False
    timeout: float = DEFAULT_DDP_TIMEOUT

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device: torch.device, timeout: float = DEFAULT_DDP_TIMEOUT) -> Distributed:
        world_size = int(os.environ.get("WORLD_SIZE", 1))
        if world_size <= 1:
            return cls()
        if dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), timeout=timeout)
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            # Ranks on one machine share its cores; more threads than cores makes OpenMP spin (measured: a
            # 2-process run on 2 cores with 2 threads each was 60x slower per step than with 1 thread each).
            local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
        try:
            dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout))
        except RuntimeError as err:  # e.g. DistStoreError "Timed out ... waiting for clients. 1/2 clients joined"
            if not _peer_lost(err):
                raise
            rank = os.environ.get("RANK", "?")
            raise DistributedTimeout(
                f"rank {rank} of {world_size}: not every process joined the run within ddp_timeout={timeout:g} s "
                f"({_first_line(err)}); start them all (torchrun does), or raise ddp_timeout") from err
        return cls(dist.get_rank(), dist.get_world_size(), initialized_here=True, timeout=timeout)

    def all_reduce(self, values: torch.Tensor) -> torch.Tensor:
        """Sum a tensor over all ranks (in place and returned); a no-op for one process."""
        if self.enabled:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def average_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Average the gradients of parameters that live outside the DDP-wrapped model over all ranks."""
        grads = [p.grad for p in params if p.grad is not None]
        if not self.enabled or not grads:
            return
        flat = torch.cat([g.flatten() for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        for grad, part in zip(grads, flat.split([g.numel() for g in grads])):
            grad.copy_(part.view_as(grad))

    def broadcast_object(self, value: object) -> object:
        """Rank 0's ``value`` on every rank."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather_object(self, value: object) -> list[object]:
        """Every rank's ``value``, in rank order."""
        if not self.enabled:
            return [value]
        values: list[object] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def barrier(self, long: bool = False) -> None:
        """Wait for every rank; ``long``: without the ddp_timeout (e.g. while one rank downloads the data)."""
        if not self.enabled:
            return
        if not long:
            dist.barrier()
            return
        group = dist.new_group(backend="gloo", timeout=timedelta(seconds=_LONG_WAIT))
        try:
            dist.barrier(group=group)
        finally:
            dist.destroy_process_group(group)

    def explain_failure(self, err: BaseException) -> BaseException:
        """``err``, or a :class:`DistributedTimeout` naming the silent ranks if ``err`` is a collective that timed
        out or lost its peers. Takes a few seconds: the ranks still alive tell each other so through the store."""
        if not self.enabled or isinstance(err, DistributedTimeout) or not _peer_lost(err):
            return err
        silent = self._silent_ranks(grace=min(5.0, max(1.0, self.timeout / 4)))
        if silent:
            who = f"rank{'s' if len(silent) > 1 else ''} {', '.join(map(str, silent))} of {self.world_size}"
            what = f"{who} stopped answering"
        else:
            what = f"a process of the {self.world_size} stopped answering"
        return DistributedTimeout(
            f"{what} (rank {self.rank} gave up after ddp_timeout={self.timeout:g} s: {_first_line(err)}); a process "
            "was stopped, died or is far slower than the others. Raise ddp_timeout if steps are that slow")

    def _silent_ranks(self, grace: float) -> list[int] | None:
        """Ranks that did not report themselves alive within ``grace`` seconds, or None if that cannot be told."""
        try:  # the rendezvous store outlives the failed collective; its accessor is not public
            store = dist.distributed_c10d._get_default_store()
            store.set_timeout(timedelta(seconds=grace))
            store.set(f"attnkit/alive/{self.rank}", "1")
            time.sleep(grace)  # the other live ranks fail at about the same moment and report in the meantime
            return [r for r in range(self.world_size) if not store.check([f"attnkit/alive/{r}"])]
        except Exception:  # the store lived in the lost process, or the API changed: say less
            return None

    def shutdown(self) -> None:  # after a failure, see explain_failure instead
        """Leave the process group together: a rank tearing it down while another still talks to it can abort."""
        if self.initialized_here and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def _peer_lost(err: BaseException) -> bool:
    """``err`` is a backend's report of a collective that timed out or whose peer went away."""
    return isinstance(err, RuntimeError) and any(word in str(err).lower() for word in _PEER_LOST)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__
