"""Run directories, weights and resumable checkpoints; every write is atomic.

A run directory holds::

    config.yaml             the resolved RunConfig (a valid recipe: rerun with `attnkit train config.yaml`)
    run.json                what the weights need to be used: model, classes, input size, normalisation, versions
    model.safetensors       final weights          (metadata "attnkit" = run.json's content)
    best.safetensors        weights of the best evaluated epoch
    checkpoint.json         pointer to the newest complete training checkpoint
    ckpt-EEEE-SSSSSS.safetensors / .pt   model weights / optimiser, schedule, RNG, epoch, step
    metrics.jsonl, summary.json

Every file is written to a temporary name, flushed to disk and renamed over its target, so a crash leaves either
the old or the new file, never half of one. A training checkpoint is two files; it only becomes *the*
checkpoint when the pointer file, written last, names it, so a crash between the two writes leaves the previous
checkpoint in force. Checkpoint state is read with ``torch.load(weights_only=True)``: no pickled code.
"""

from __future__ import annotations

import json
import os
import platform
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..models import create_model

__all__ = [
    "atomic_write",
    "check_state_dict",
    "latest_checkpoint",
    "library_versions",
    "load_model",
    "load_run_info",
    "load_weights",
    "restore_rng_state",
    "rng_state",
    "save_checkpoint",
    "save_weights",
    "write_json",
    "write_text",
    "write_yaml",
]

METADATA_KEY = "attnkit"


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(temporary_path)``, fsync the result and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(str(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not supported everywhere (e.g. Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path: str | Path, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(path, write)


def write_json(path: str | Path, value: Any) -> None:
    write_text(path, json.dumps(value, indent=2, sort_keys=False) + "\n")


def write_yaml(path: str | Path, value: Any) -> None:
    write_text(path, yaml.safe_dump(value, sort_keys=False))


def library_versions() -> dict[str, str]:
    """Versions recorded with every run."""
    import numpy

    from .. import __version__

    return {"attnkit": __version__, "torch": torch.__version__, "numpy": numpy.__version__, "python": platform.python_version()}


def save_weights(model: nn.Module, path: str | Path, info: Mapping[str, Any]) -> None:
    """Save the model's state dict as safetensors with ``info`` (JSON) in the metadata, atomically."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in _unwrap(model).state_dict().items()}
    metadata = {METADATA_KEY: json.dumps(info)}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata))


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
    info = json.loads(metadata[METADATA_KEY]) if METADATA_KEY in metadata else {}
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


def _weights_path(path: str | Path, weights: str) -> Path:
    path = Path(path)
    if path.is_dir():
        if weights not in ("final", "best", "last"):
            raise ValueError(f"weights must be final, best or last, got {weights!r}")
        if weights == "last":
            pointer = latest_checkpoint(path)
            if pointer is None:
                raise FileNotFoundError(f"{path} has no training checkpoint")
            return path / pointer["weights"]
        candidate = path / ("model.safetensors" if weights == "final" else "best.safetensors")
        if not candidate.is_file():
            hint = " (the run has not finished; use weights='last')" if (path / "checkpoint.json").is_file() else ""
            raise FileNotFoundError(f"no {candidate.name} in run directory {path}{hint}")
        return candidate
    if path.is_file():
        return path
    raise FileNotFoundError(f"no run directory or weights file at {path}")


def load_run_info(path: str | Path, weights: str = "final") -> dict[str, Any]:
    """The run information stored with a run directory or weights file (model, classes, normalisation...)."""
    path = Path(path)
    if path.is_dir() and (path / "run.json").is_file():
        with open(path / "run.json") as f:
            return json.load(f)
    _, info = load_weights(_weights_path(path, weights))
    if not info:
        raise ValueError(f"{path} carries no attnkit metadata; load it with create_model(...) and load_state_dict")
    return info


def load_model(
    path: str | Path, device: str | torch.device = "cpu", weights: str = "final", model_name: str | None = None
) -> nn.Module:
    """Build the model a run directory or weights file describes, load its weights, return it in eval mode.

    Args:
        path: a run directory or a ``.safetensors`` file written by attnkit.
        device: where to put the model.
        weights: for run directories, ``"final"`` (model.safetensors), ``"best"`` or ``"last"`` (newest checkpoint).
        model_name: the architecture expected (e.g. the teacher asked for in a recipe). A file recording another
            architecture, or weights that do not fit, raise a ``ValueError`` saying which.
    """
    file = _weights_path(path, weights)
    state, info = load_weights(file)
    if not info and model_name is None:
        raise ValueError(f"{file} carries no attnkit metadata; say which architecture it is (model_name=...)")
    name = info.get("model", model_name) or model_name
    if name is None:
        raise ValueError(f"{file} holds weights of a custom {info.get('model_class', 'model')} that is not in the registry; "
                         "build it yourself and call load_state_dict(attnkit.engine.checkpoint.load_weights(path)[0])")
    if model_name is not None and name != model_name:
        raise ValueError(f"{file} holds a {name!r} but {model_name!r} was asked for")
    model = create_model(name, num_classes=info.get("num_classes", 10), in_chans=info.get("in_chans", 3),
                         **info.get("model_kwargs", {}))
    check_state_dict(model, state, str(file))
    model.load_state_dict(state)
    return model.to(device).eval()


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


def save_checkpoint(
    run_dir: str | Path, model: nn.Module, info: Mapping[str, Any], state: Mapping[str, Any], epoch: int, step: int
) -> None:
    """Write weights + training state for (epoch, step), point checkpoint.json at them, drop older pairs.

    ``state`` holds the optimiser/scheduler state dicts, RNG state and counters; it must contain only tensors,
    numbers, strings, lists, tuples and dicts (it is read back with ``weights_only=True``).
    """
    run_dir = Path(run_dir)
    stem = f"ckpt-{epoch:04d}-{step:06d}"
    save_weights(model, run_dir / f"{stem}.safetensors", info)
    atomic_write(run_dir / f"{stem}.pt", lambda tmp: torch.save(dict(state, epoch=epoch, step=step), tmp))
    write_json(run_dir / "checkpoint.json", {"epoch": epoch, "step": step, "weights": f"{stem}.safetensors", "state": f"{stem}.pt"})
    for old in run_dir.glob("ckpt-*"):
        if old.stem != stem:
            old.unlink(missing_ok=True)


def latest_checkpoint(run_dir: str | Path) -> dict[str, Any] | None:
    """The pointer of the newest complete checkpoint, or None."""
    pointer = Path(run_dir) / "checkpoint.json"
    if not pointer.is_file():
        return None
    with open(pointer) as f:
        return json.load(f)


def load_checkpoint(run_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(model state dict, training state) of the newest checkpoint; raises if there is none."""
    run_dir = Path(run_dir)
    pointer = latest_checkpoint(run_dir)
    if pointer is None:
        raise FileNotFoundError(f"nothing to resume in {run_dir}: no checkpoint.json")
    weights, _ = load_weights(run_dir / pointer["weights"])
    state = torch.load(run_dir / pointer["state"], map_location="cpu", weights_only=True)
    if (state.get("epoch"), state.get("step")) != (pointer["epoch"], pointer["step"]):
        raise ValueError(f"checkpoint files in {run_dir} disagree with checkpoint.json; the run directory was edited")
    return weights, state
