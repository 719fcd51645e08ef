"""Where and how a run computes: device, precision, memory format, seeds and processes (torchrun / DDP).

Nothing here assumes hardware: bf16 is used only where the device reports native support (CUDA bf16, or a
CPU with AVX512-BF16 or AMX). The memory format is decided in :mod:`.memory_format`.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist

__all__ = [
    "Distributed",
    "Precision",
    "autocast",
    "bf16_supported",
    "resolve_device",
    "resolve_precision",
    "seed_everything",
]


Precision = Literal["auto", "fp32", "bf16", "fp16"]  # auto = bf16 where the device has it natively, else fp32


def resolve_device(spec: str) -> torch.device:
    """``auto`` -> the local CUDA device when available (LOCAL_RANK under torchrun), else the CPU."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} was asked for but CUDA is not available; use device=cpu")
    return device


def bf16_supported(device: torch.device) -> bool:
    """Native bf16 arithmetic: CUDA's own report, or a CPU with AVX512-BF16 / AMX (detected, never assumed)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        # torch.cpu exposes the CPU's instruction-set flags (private names, hence the guarded lookup).
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    return False


def resolve_precision(spec: Precision, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32. ``auto`` = bf16 where supported natively, else fp32."""
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
    """

    rank: int = 0
    world_size: int = 1
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device: torch.device) -> Distributed:
        world_size = int(os.environ.get("WORLD_SIZE", 1))
        if world_size <= 1:
            return cls()
        if dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            # Ranks on one machine share its cores; more threads than cores makes OpenMP spin (measured: a
            # 2-process run on 2 cores with 2 threads each was 60x slower per step than with 1 thread each).
            local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
        dist.init_process_group(backend=backend)
        return cls(dist.get_rank(), dist.get_world_size(), initialized_here=True)

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

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def shutdown(self) -> None:
        """Leave the process group together: a rank tearing it down while another still talks to it can abort."""
        if self.initialized_here and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
