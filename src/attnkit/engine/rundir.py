"""A run directory: its layout, what it records about the run, and how to read it back.

    config.yaml             the resolved RunConfig (a valid recipe)
    run.json                RunInfo: model, classes, input size, normalisation, versions, memory format
    model.safetensors       final weights          (metadata "attnkit" = run.json's content)
    best.safetensors        weights of the best evaluated epoch
    checkpoint.json         pointer to the newest complete training checkpoint
    ckpt-EEEE-SSSSSS.safetensors / .pt   model weights / optimiser, schedule, RNG, epoch, step
    metrics.jsonl           one record per epoch;   summary.json   the finished run;   tensorboard/
    run.lock                held (an OS file lock) by the process training in the directory

Everyone who reads a run (training and resuming, ``attnkit eval``, the report, the demo) goes through
:class:`RunDir`; ``load_model`` and ``load_run_info`` also take a bare weights file: ``.safetensors`` (attnkit's
carry the run information) or another tool's PyTorch state dict (``.pt``/``.pth``, see :mod:`.state_files`).
A training checkpoint is two files; it only becomes *the* checkpoint when the pointer file, written last, names
it, so a crash between the two writes leaves the previous checkpoint in force. Checkpoint state is read with
``torch.load(weights_only=True)``: no pickled code. A file that cannot be read (truncated, edited, hostile) is a
``ValueError`` naming it; one run at a time trains in a directory (:meth:`RunDir.lock`, :mod:`.run_lock`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ..models import create_model
from ..models._external import NAMED_MODELS_ENV, check_named_spec, is_spec
from ..recipes import load_recipe
from .checkpoint import check_state_dict, load_weights, save_state, save_weights, write_json, write_yaml
from .config import RunConfig, config_from_dict, config_to_dict
from .run_info import RunInfo, is_passed_in, passed_in_name, qualified_name
from .run_lock import LOCK_FILE, RunLock
from .state_files import clean_state_dict, is_torch_file, load_torch_state_dict

__all__ = ["RunDir", "RunInfo", "Weights", "is_passed_in", "load_model", "load_run_info", "parse_metrics",
           "passed_in_name", "qualified_name", "read_metrics", "read_weights_file", "weights_file"]

# How a user names a recorded spec to allow it (models._external.check_named_spec); SPEC is filled in.
NAME_A_RECORDED_SPEC = (f"pass model_name='SPEC' to load_model in Python, or run attnkit eval, maps or report with "
                        f"{NAMED_MODELS_ENV}=SPEC in the environment")

Weights = Literal["final", "best", "last"]  # model.safetensors, best.safetensors, the newest training checkpoint


class RunDir:
    """The run directory at ``path`` (which need not exist yet)."""

    CONFIG, INFO, POINTER, METRICS, SUMMARY = "config.yaml", "run.json", "checkpoint.json", "metrics.jsonl", "summary.json"
    LOCK = LOCK_FILE
    WEIGHTS = {"final": "model.safetensors", "best": "best.safetensors"}
    TENSORBOARD = "tensorboard"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def file(self, name: str) -> Path:
        """The path of one of the directory's files (e.g. ``RunDir.METRICS``)."""
        return self.path / name

    def holds_run(self) -> bool:
        """A run was started here (a checkpoint) or finished here (final weights)."""
        return self.checkpoint_pointer() is not None or self.file(self.WEIGHTS["final"]).is_file()

    def lock(self) -> RunLock:
        """Take the directory's run lock (created if needed) for a run; raises ``RunDirLocked`` if a run holds it."""
        return RunLock.acquire(self.path)

    # -- what the run records ----------------------------------------------------------------------------

    def config_values(self) -> dict[str, Any]:
        """config.yaml as a nested dict, its ``out`` set to where the directory is now."""
        if not self.path.is_dir():
            raise FileNotFoundError(f"no run directory at {self.path}")
        if not self.file(self.CONFIG).is_file():
            raise FileNotFoundError(f"{self.path} is not an attnkit run directory (no {self.CONFIG}); if a run was "
                                    "stopped before writing it, start it again with its train command")
        return {**load_recipe(self.file(self.CONFIG)), "out": str(self.path)}

    def config(self) -> RunConfig:
        """The run's config; ``out`` is where the directory is now (it may have been moved or copied)."""
        return config_from_dict(self.config_values())

    def info(self, which: Weights = "final") -> RunInfo:
        """run.json, else the metadata of the ``which`` weights."""
        if self.file(self.INFO).is_file():
            return RunInfo.from_dict(_read_json(self.file(self.INFO)), str(self.file(self.INFO)))
        _, info = load_weights(self.weights(which))
        if not info:
            raise ValueError(f"{self.path} has no run.json and its weights carry no attnkit metadata")
        return RunInfo.from_dict(info, f"the metadata of {self.weights(which)}")

    def metrics(self) -> list[dict[str, Any]]:
        """The per-epoch records, oldest first ([] before the first epoch ends)."""
        return read_metrics(self.file(self.METRICS))

    def summary(self) -> dict[str, Any] | None:
        """summary.json of a finished run, else None."""
        path = self.file(self.SUMMARY)
        return _read_json(path) if path.is_file() else None

    def write_start(self, config: RunConfig, info: RunInfo) -> None:
        """config.yaml and run.json of a new run."""
        write_yaml(self.file(self.CONFIG), config_to_dict(config))
        write_json(self.file(self.INFO), info.to_dict())

    # -- weights and checkpoints ---------------------------------------------------------------------------

    def weights(self, which: Weights = "final") -> Path:
        """The file of the final, best or newest checkpoint weights; raises if the run has none."""
        if which not in ("final", "best", "last"):
            raise ValueError(f"weights must be final, best or last, got {which!r}")
        if which == "last":
            pointer = self.checkpoint_pointer()
            if pointer is None:
                raise FileNotFoundError(f"{self.path} has no training checkpoint")
            return self.file(pointer["weights"])
        candidate = self.file(self.WEIGHTS[which])
        if not candidate.is_file():
            if not self.path.is_dir():
                raise FileNotFoundError(f"no run directory or weights file at {self.path}")
            hint = (" (the run has not finished: take its newest checkpoint with --weights last, weights='last' in "
                    "Python)") if self.file(self.POINTER).is_file() else ""
            raise FileNotFoundError(f"no {candidate.name} in run directory {self.path}{hint}")
        return candidate

    def save_weights(self, model: nn.Module, which: Literal["final", "best"], info: RunInfo) -> None:
        save_weights(model, self.file(self.WEIGHTS[which]), info.to_dict())

    def load_model(self, which: Weights = "final", device: str | torch.device = "cpu", model_name: str | None = None) -> nn.Module:
        """The model of the ``which`` weights, in eval mode on ``device`` (see :func:`load_model`)."""
        return _model_from_file(self.weights(which), device, model_name)

    def checkpoint_pointer(self) -> dict[str, Any] | None:
        """checkpoint.json: the newest complete checkpoint's epoch, step and files, or None."""
        pointer = self.file(self.POINTER)
        if not pointer.is_file():
            return None
        values = _read_json(pointer)
        if not (isinstance(values, dict) and {"epoch", "step", "weights", "state"} <= set(values)):
            raise ValueError(f"{pointer} does not name a checkpoint (epoch, step, weights, state); the run directory "
                             "was edited")
        return values

    def save_checkpoint(self, model: nn.Module, info: RunInfo | Mapping[str, Any], state: Mapping[str, Any],
                        epoch: int, step: int) -> None:
        """Write weights + training state for (epoch, step), point checkpoint.json at them, drop older pairs.

        ``state`` holds the optimiser/scheduler state dicts, RNG state and counters; it must contain only tensors,
        numbers, strings, lists, tuples and dicts (it is read back with ``weights_only=True``).
        """
        stem = f"ckpt-{epoch:04d}-{step:06d}"
        metadata = info.to_dict() if isinstance(info, RunInfo) else dict(info)
        save_weights(model, self.file(f"{stem}.safetensors"), metadata)
        save_state(dict(state, epoch=epoch, step=step), self.file(f"{stem}.pt"))
        write_json(self.file(self.POINTER), {"epoch": epoch, "step": step, "weights": f"{stem}.safetensors", "state": f"{stem}.pt"})
        for old in self.path.glob("ckpt-*"):
            if old.stem != stem:
                old.unlink(missing_ok=True)

    def load_checkpoint(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(model state dict, training state) of the newest checkpoint; raises if there is none."""
        pointer = self.checkpoint_pointer()
        if pointer is None:
            raise FileNotFoundError(f"nothing to resume in {self.path}: no checkpoint.json")
        weights, _ = load_weights(self.file(pointer["weights"]))
        state = _load_state(self.file(pointer["state"]))
        if (state.get("epoch"), state.get("step")) != (pointer["epoch"], pointer["step"]):
            raise ValueError(f"checkpoint files in {self.path} disagree with checkpoint.json; the run directory was edited")
        return weights, state


def read_weights_file(file: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, attnkit info or {}) of a ``.safetensors`` file or a PyTorch state dict (``.pt``, ``.pth``, ...).

    Files from other tools are cleaned (:func:`~.state_files.clean_state_dict`): nested ``state_dict``/``model``
    keys unwrapped, ``module.`` / ``_orig_mod.`` prefixes stripped.
    """
    file = Path(file)
    if file.is_file() and is_torch_file(file):  # by content: .pt, .pth, .pth.tar, .bin, ... alike
        return load_torch_state_dict(file), {}
    state, info = load_weights(file)
    if not info:
        return clean_state_dict(state, str(file)), {}
    RunInfo.from_dict(info, f"the metadata of {file}")  # checked: a damaged record is one line naming the key
    return state, info


def _model_from_file(file: Path, device: str | torch.device, model_name: str | None, num_classes: int | None = None,
                     in_chans: int | None = None, model_kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    state, info = read_weights_file(file)
    if not info and model_name is None:
        raise ValueError(f"{file} carries no attnkit metadata; name its architecture (distill.teacher_model=NAME for "
                         "a teacher, model_name=NAME in Python)")
    name = info.get("model") or model_name
    if name is None:
        raise ValueError(f"{file} holds the weights of a {info.get('model_class') or 'model'} passed in from Python, "
                         "which attnkit cannot rebuild (so attnkit eval, maps and report cannot load it); in Python, "
                         "load_model(path, model_name='package.module:callable') with a callable building that class, "
                         "or build it yourself and call model.load_state_dict(attnkit.engine.rundir."
                         "read_weights_file(path)[0])")
    if model_name is not None and name != model_name:
        raise ValueError(f"{file} holds a {name!r} but {model_name!r} was asked for")
    recorded = info.get("model") is not None  # the file says how to build it; else the caller does
    if recorded:  # a spec runs code: built from a record only when the caller names it (models._external)
        check_named_spec(name, [model_name], str(file), NAME_A_RECORDED_SPEC)
    kwargs = dict(info.get("model_kwargs") or {}) if recorded else dict(model_kwargs or {})
    num_classes = info.get("num_classes") or num_classes
    if num_classes is None:
        raise ValueError(f"{file} does not record how many classes its model predicts; pass num_classes=...")
    try:
        model = create_model(name, num_classes=num_classes, in_chans=info.get("in_chans") or in_chans or 3, **kwargs)
    except (KeyError, TypeError, ValueError) as err:
        reason = err.args[0] if err.args else err
        if is_spec(name):  # a model of another package: its module or builder is missing or refuses the arguments
            raise ValueError(f"{file}: {reason}") from None
        hint = "was it written by another version of attnkit?" if recorded else "check the model name and kwargs"
        raise ValueError(f"{file} describes a model attnkit cannot build ({name}, model_kwargs {kwargs}: {reason}); "
                         f"{hint}") from None
    check_state_dict(model, state, str(file))
    model.load_state_dict(state)
    return model.to(device).eval()


def _read_json(path: Path) -> Any:
    """A JSON file of the run directory; a damaged one is a ``ValueError`` naming the file and the place."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not text (UTF-8); it was damaged or replaced") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); "
                         "it was truncated or edited") from None


def _load_state(path: Path) -> dict[str, Any]:
    """A checkpoint's training state: ``torch.load(weights_only=True)``, refusing pickled code, naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; checkpoint.json names it, so the run directory was edited")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says what matters
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:  # permission denied, I/O error: the OS's message names the file
        raise
    except Exception as err:  # UnpicklingError (code refused), RuntimeError (truncated zip), EOFError, ...
        # torch wraps the refusal in advice (load with weights_only=False: run the file's code); keep the refusal
        lines = [line.strip() for line in str(err).splitlines() if line.strip() and not line.strip().startswith(
            ("Weights only load failed", "Please file an issue", "Check the documentation"))]
        reason = lines[0] if lines else type(err).__name__
        raise ValueError(f"{path} is not a readable attnkit training checkpoint ({reason}); only tensors, numbers "
                         "and containers of them are loaded, never pickled code") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not an attnkit training checkpoint (it holds a {type(state).__name__})")
    return state


def weights_file(path: str | Path, weights: Weights = "final") -> Path:
    """The weights file ``path`` is, or the ``weights`` file of the run directory ``path``."""
    path = Path(path)
    if path.is_file():
        return path
    return RunDir(path).weights(weights)


# -- the functions users know, for run directories and bare weights files ----------------------------------


def load_model(
    path: str | Path, device: str | torch.device = "cpu", weights: Weights = "final", model_name: str | None = None,
    *, num_classes: int | None = None, in_chans: int | None = None, model_kwargs: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Build the model a run directory or weights file describes, load its weights, return it in eval mode.

    Args:
        path: a run directory, a ``.safetensors`` file, or a PyTorch state dict (``.pt``/``.pth``, read with
            ``torch.load(weights_only=True)``; see :func:`read_weights_file`).
        device: where to put the model.
        weights: for run directories, ``"final"`` (model.safetensors), ``"best"`` or ``"last"`` (newest checkpoint).
        model_name: the architecture expected (e.g. the teacher asked for in a recipe), a registry name or a
            spec (``package.module:callable``, ``torchvision:NAME``). A file recording another architecture, or
            weights that do not fit, raise a ``ValueError`` saying which. Needed for files without attnkit metadata.
        num_classes, in_chans, model_kwargs: how to build ``model_name`` for a file that does not record it.

    >>> # teacher = load_model("teacher.pth", model_name="torchvision:resnet18", num_classes=10)
    """
    return _model_from_file(weights_file(path, weights), device, model_name, num_classes, in_chans, model_kwargs)


def load_run_info(path: str | Path, weights: Weights = "final") -> dict[str, Any]:
    """The run information stored with a run directory or weights file (model, classes, normalisation...).

    A weights file without attnkit metadata (another tool's ``.pth`` or ``.safetensors``) gives ``{}``.
    """
    path = Path(path)
    if path.is_dir():
        return RunDir(path).info(weights).to_dict()
    if path.is_file() and is_torch_file(path):
        return {}
    file = weights_file(path, weights)
    _, info = load_weights(file)
    if info:
        RunInfo.from_dict(info, f"the metadata of {file}")  # checked: a damaged record is one line naming the key
    return info


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file, oldest first ([] if there is none).

    A torn last line (the run was killed, or the disk filled, while appending it) is left out; any other line
    that is not a JSON record with an ``epoch`` raises a ``ValueError`` naming the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        return []
    return parse_metrics(path)[0]


def parse_metrics(path: Path) -> tuple[list[dict[str, Any]], int | None]:
    """(the records, the number of a torn last line that was left out, or None)."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError:  # a torn multi-byte character can only be at the very end
        lines = path.read_bytes().decode("utf-8", "replace").split("\n")
    numbered = [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]
    records, torn = [], None
    for index, (number, line) in enumerate(numbered):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if index == len(numbered) - 1:  # the last line: an append that did not finish
                torn = number
                break
            raise ValueError(f"{path} line {number} is not a JSON record ({err.msg}, column {err.colno}); the file "
                             "was edited or damaged: delete that line") from None
        if not (isinstance(record, dict) and isinstance(record.get("epoch"), int)):
            raise ValueError(f"{path} line {number} is not an epoch record (no integer 'epoch'); the file was edited")
        records.append(record)
    return records, torn
