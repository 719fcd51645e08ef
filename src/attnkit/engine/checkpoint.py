"""The files of a run, one at a time: atomic writes, safetensors weights with metadata, RNG state.

Every file is written to a temporary name, flushed to disk and renamed over its target, so a crash leaves either
the old or the new file, never half of one (:func:`attnkit._files.atomic_write`). Weights and training state
are serialised in memory and written with Python's file I/O, so a full disk is an ``OSError`` (ENOSPC) naming
the file, and a file holding NaN or inf is never written as a checkpoint (the trainer checks first). Where the files go, and checkpoints made of two of them, is the
business of :class:`attnkit.engine.rundir.RunDir`.
"""

from __future__ import annotations

import io
import json
import platform
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from .. import __version__
from .._files import atomic_write, write_bytes

__all__ = [
    "atomic_write",
    "check_state_dict",
    "library_versions",
    "load_weights",
    "restore_rng_state",
    "rng_state",
    "save_state",
    "save_weights",
    "write_json",
    "write_text",
    "write_yaml",
]

METADATA_KEY = "attnkit"


def write_text(path: str | Path, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(path, write)


def write_json(path: str | Path, value: Any) -> None:
    write_text(path, json.dumps(value, indent=2, sort_keys=False) + "\n")


class _PlainDumper(yaml.SafeDumper):
    """Writes repeated values out in full: recipes and config.yaml are read by a loader that refuses aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def write_yaml(path: str | Path, value: Any) -> None:
    write_text(path, yaml.dump(value, Dumper=_PlainDumper, sort_keys=False))


def library_versions() -> dict[str, str]:
    """Versions recorded with every run."""
    return {"attnkit": __version__, "torch": torch.__version__, "numpy": numpy.__version__, "python": platform.python_version()}


def save_weights(model: nn.Module, path: str | Path, info: Mapping[str, Any]) -> None:
    """Save the model's state dict as safetensors with ``info`` (JSON) in the metadata, atomically."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in _unwrap(model).state_dict().items()}
    write_bytes(path, safetensors_bytes(state, metadata={METADATA_KEY: json.dumps(info)}))


def save_state(state: Mapping[str, Any], path: str | Path) -> None:
    """``torch.save`` a training state (tensors, numbers, strings and containers of them) atomically."""
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    write_bytes(path, buffer.getbuffer())


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a safetensors file: (state dict, attnkit info from its metadata or {})."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        state = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types on corrupt files
        raise ValueError(f"{path} is not a readable safetensors file ({err}); was it truncated?") from None
    try:
        info = json.loads(metadata[METADATA_KEY]) if METADATA_KEY in metadata else {}
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: its attnkit metadata is not valid JSON ({err.msg}); the file was edited") from None
    if not isinstance(info, dict):
        raise ValueError(f"{path}: its attnkit metadata is not a mapping; the file was edited")
    return state, info


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise a clear error unless ``state`` fits ``model`` exactly (same keys, same shapes)."""
    expected = _unwrap(model).state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        details = "; ".join(
            part for part in (
                f"{len(missing)} missing (e.g. {', '.join(missing[:3])})" if missing else "",
                f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})" if unexpected else "",
                f"{len(shapes)} of another shape (e.g. {'; '.join(shapes[:2])})" if shapes else "",
            ) if part
        )
        raise ValueError(f"weights in {source} do not fit {type(_unwrap(model)).__name__}: {details}")


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DDP / torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


# -- training checkpoints ------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Global RNG states (dropout and other in-model randomness; data order is seeded separately)."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_python_random_state(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_python_random_state(value: Any) -> tuple:
    # torch.save turns the inner tuple into a tuple again, but be lenient with lists.
    version, internal, gauss = value
    return version, tuple(internal), gauss
