"""Run configuration: nested dataclasses built and validated from YAML recipes and ``key=value`` overrides.

A recipe is a YAML mapping with the sections of :class:`RunConfig`::

    model: {name: wrn_16_1}
    data: {name: cifar10, batch_size: 128}
    optim: {lr: 0.1, epochs: 200, milestones: [60, 120, 160], gamma: 0.2, weight_decay: 5.0e-4}
    distill: {teacher: runs/wrn_16_2, at_beta: 1000}

Overrides address fields by dotted path (``optim.lr=0.05``, ``distill.kd_alpha=0.9``); values are parsed as
YAML scalars. Recipes are read (by path or packaged name) by :mod:`attnkit.recipes`. Every invalid value raises
:class:`ConfigError` naming its key.

Types are checked from the field annotations (:func:`_coerce`): numbers must be finite, and a ``Literal`` field
accepts exactly the values of the vocabulary it names, which the layer that uses it owns (pad modes in
:mod:`attnkit.data.loader`, AT modes and reductions in :mod:`attnkit.functional`, optimiser and schedule names
in :mod:`.optim`, precisions in :mod:`.runtime`). :func:`validate` adds ranges and cross-field checks.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..data.folder import Channels
from ..data.folder_setup import Normalization
from ..data.loader import PadMode

# Reading recipe files (``base:`` chains, packaged names) and ``key=value`` overrides belongs to attnkit.recipes;
# they are re-exported here so that ``from attnkit.engine.config import load_recipe`` keeps working.
from ..recipes import ConfigError, apply_overrides, load_recipe
from ..validation import choices, describe_choices, is_int, is_real, suggest
from .distill_config import DistillConfig
from .optim import OptimConfig, WeightSchedule
from .runtime import DEFAULT_DDP_TIMEOUT, Precision, parse_device
from .terms import TERMS, plan_terms

__all__ = [
    "ConfigError",
    "DataConfig",
    "DistillConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_recipe",
]


@dataclass
class ModelConfig:
    name: str = "wrn_16_1"  # registered model (`attnkit models`) or package.module:callable, torchvision:NAME, timm:NAME
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra builder arguments, e.g. {dropout: 0.3}


@dataclass
class DataConfig:
    name: str = "mnist5k"  # data set (cifar10, cifar100, svhn, mnist, fashion-mnist, mnist5k, cluttered-mnist, folder)
    root: str | None = None  # data directory (default: $ATTNKIT_DATA or ~/.cache/attnkit/data); folder: the image folder
    download: bool = False  # download missing archives (checksummed)
    batch_size: int = 128  # global batch size, summed over all processes
    eval_batch_size: int = 512  # batch size for evaluation
    augment: bool = True  # pad + random crop (+ flip) on training batches
    flip: bool | None = None  # horizontal flips; None = the data set's default (off for digits)
    pad: int = 4  # padding of the random crop, in pixels
    pad_mode: PadMode = "reflect"  # reflect (the attention-transfer code) | symmetric | zeros
    image_size: int = 224  # folders: side of the square images the model sees
    channels: Channels = "auto"  # folders: 1 (grey) | 3 (RGB) | auto (1 when every training image is grey)
    normalization: Normalization = "measured"  # folders: mean/std measured on the training split | imagenet
    val_fraction: float | None = None  # folders without val/: share of each class held out for testing (null: 0.1)
    memory_budget_mb: float = 1024  # folders: decoded once into device memory if they fit in this many MiB (0: stream)
    workers: int = 4  # folders: decoding processes (DataLoader workers)
    train_limit: int | None = None  # train on a fixed random subset of N images, the same for every seed (quick runs)
    test_limit: int | None = None  # evaluate on a fixed random subset of N test images


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)  # the network trained (the student when distilling)
    data: DataConfig = field(default_factory=DataConfig)  # the images: data set, batches, augmentation
    optim: OptimConfig = field(default_factory=OptimConfig)  # optimiser and learning-rate schedule
    distill: DistillConfig = field(default_factory=DistillConfig)  # the teacher and the distillation terms
    out: str = "runs/run"  # run directory: config, checkpoints, metrics, final weights
    seed: int = 0  # seeds weights, data order and augmentation
    device: str = "auto"  # auto (cuda if available, else cpu) | cpu | cuda | cuda:N
    precision: Precision = "auto"  # auto (CUDA: bf16 if supported; CPU: bf16 only if measured faster) | fp32 | bf16 | fp16
    channels_last: Literal["auto"] | bool = "auto"  # auto (CUDA: on; CPU: measured once, cached) | true | false
    compile: bool = False  # torch.compile the model (not for double-backprop steps)
    compile_backend: str = "inductor"  # torch.compile backend (inductor = generated kernels; aot_eager = tracing only)
    sync_bn: bool = False  # multi-GPU runs: batch-norm statistics over all processes (SyncBatchNorm is CUDA-only)
    ddp_timeout: float = DEFAULT_DDP_TIMEOUT  # multi-process runs: seconds to wait for a stopped or lost process
    eval_every: int = 1  # evaluate every N epochs (and always after the last)
    checkpoint_every_steps: int = 0  # also checkpoint every N steps inside an epoch (0 = at epoch ends only)
    progress: Literal["auto"] | bool = "auto"  # auto (a bar on a terminal, none under CI) | true | false
    tensorboard: bool = True  # also log to TensorBoard when it is installed


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "distill": DistillConfig}


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """Plain nested dict (YAML-serialisable) of a config."""
    return dataclasses.asdict(config)


def config_from_dict(values: Mapping[str, Any]) -> RunConfig:
    """Build a validated :class:`RunConfig` from a nested mapping; unknown keys are errors naming the key."""
    if not isinstance(values, Mapping):
        raise ConfigError("recipe", f"must be a mapping of sections, got {type(values).__name__}")
    top = {}
    for key, value in values.items():
        if key in _SECTIONS:
            top[key] = _build(_SECTIONS[key], value, key)
        else:
            top[key] = value
    config = _build(RunConfig, top, "")
    validate(config)
    return config


def _build(cls: type, values: Any, prefix: str) -> Any:
    if isinstance(values, cls):
        return values
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(prefix or "recipe", f"must be a mapping, got {values!r}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else key
        if key not in names:
            valid = "valid keys: " + ", ".join(names)
            raise ConfigError(path, f"unknown key; {suggest(str(key), names, fallback=valid)}")
        kwargs[key] = value if key in _SECTIONS and not prefix else _coerce(value, hints[key], path)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against a type hint (int, float, str, bool, Literal[...], list[...], dict, unions of them)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):  # a nested setting (WeightSchedule): a mapping, or a string naming its kind
        if isinstance(value, hint):
            return value
        return _build(hint, {"kind": value} if isinstance(value, str) else value, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, key)
            except ConfigError as err:
                errors.append(err)
        if all(a is bool or typing.get_origin(a) is Literal for a in args):  # e.g. Literal["auto"] | bool
            values = [v for a in args for v in ((True, False) if a is bool else choices(a))]
            raise ConfigError(key, f"must be {describe_choices(values)}, got {value!r}")
        raise errors[-1]
    if origin is Literal:
        if any(type(value) is type(option) and value == option for option in args):
            return value
        close = suggest(value, args, fallback="") if isinstance(value, str) else ""
        raise ConfigError(key, f"must be {describe_choices(args)}, got {value!r}" + (f"; {close}" if close else ""))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, f"must be true or false, got {value!r}")
    if hint in (int, float) and isinstance(value, str):
        value = _parse_number(value, hint, key)  # YAML reads 1e-4 (no dot) as a string
    if hint is int:
        if is_int(value):
            return value
        raise ConfigError(key, f"must be an integer, got {value!r}")
    if hint is float:
        if is_real(value):
            if not math.isfinite(value):
                raise ConfigError(key, f"must be a finite number, got {value!r}")
            return float(value)
        raise ConfigError(key, f"must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(key, f"must be a string, got {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"must be a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"must be a mapping, got {value!r}")
        return dict(value)
    return value


def _parse_number(text: str, kind: type, key: str) -> int | float:
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(key, f"must be {'an integer' if kind is int else 'a number'}, got {text!r}") from None


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(key, message)


def validate(config: RunConfig) -> None:
    """Value checks that do not need the file system or the model zoo (those happen when a run is built)."""
    d, o, k = config.data, config.optim, config.distill
    _require(d.batch_size >= 1, "data.batch_size", f"must be >= 1, got {d.batch_size}")
    _require(d.eval_batch_size >= 1, "data.eval_batch_size", f"must be >= 1, got {d.eval_batch_size}")
    _require(d.pad >= 0, "data.pad", f"must be >= 0, got {d.pad}")
    _require(d.workers >= 0, "data.workers", f"must be >= 0 (0: decode in the training process), got {d.workers}")
    _require(0 <= config.seed < 2**32, "seed", f"must be in [0, 2**32) (NumPy's seeds), got {config.seed}")
    for key in ("train_limit", "test_limit"):
        limit = getattr(d, key)
        _require(limit is None or limit >= 1, f"data.{key}", f"must be >= 1 or null, got {limit}")
    _require(d.image_size >= 1, "data.image_size", f"must be >= 1, got {d.image_size}")
    _require(d.val_fraction is None or 0 < d.val_fraction < 1, "data.val_fraction",
             f"must be in (0, 1) or null, got {d.val_fraction}")
    _require(d.memory_budget_mb >= 0, "data.memory_budget_mb", f"must be >= 0, got {d.memory_budget_mb}")
    for key, default in (("channels", "auto"), ("normalization", "measured"), ("val_fraction", None)):
        _require(d.name == "folder" or getattr(d, key) == default, f"data.{key}",
                 f"applies to data.name=folder only (data set {d.name!r} has its own); drop it")
    _require(o.lr > 0, "optim.lr", f"must be > 0, got {o.lr}")
    _require(o.epochs >= 1, "optim.epochs", f"must be >= 1, got {o.epochs}")
    _require(o.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {o.weight_decay}")
    _require(0 <= o.momentum < 1, "optim.momentum", f"must be in [0, 1), got {o.momentum}")
    _require(0 < o.gamma <= 1, "optim.gamma", f"must be in (0, 1], got {o.gamma}")
    _require(o.warmup_epochs >= 0, "optim.warmup_epochs", f"must be >= 0, got {o.warmup_epochs}")
    _require(o.grad_clip is None or o.grad_clip > 0, "optim.grad_clip", f"must be > 0 or null, got {o.grad_clip}")
    _require(list(o.milestones) == sorted(o.milestones), "optim.milestones", f"must be increasing, got {o.milestones}")
    _validate_distill(k, o.epochs)
    double = ", ".join(f"distill.{t.weight}" for t in TERMS.values() if t.double_backprop)
    _require(not (config.compile and plan_terms(k).double_backprop), "compile",
             f"torch.compile cannot be used with double-backprop terms ({double})")
    if config.device != "auto":
        try:
            parse_device(config.device)
        except ValueError as err:
            raise ConfigError("device", str(err).removeprefix("device ")) from None
    _require(config.ddp_timeout > 0, "ddp_timeout", f"must be > 0 seconds, got {config.ddp_timeout}")
    _require(config.eval_every >= 1, "eval_every", f"must be >= 1, got {config.eval_every}")
    _require(config.checkpoint_every_steps >= 0, "checkpoint_every_steps", f"must be >= 0, got {config.checkpoint_every_steps}")


def _validate_distill(k: DistillConfig, epochs: int) -> None:
    for term in TERMS.values():
        for key in term.weights:
            _require(getattr(k, key) >= 0, f"distill.{key}", f"must be >= 0, got {getattr(k, key)}")
        if hasattr(k, term.schedule):
            _validate_schedule(getattr(k, term.schedule), f"distill.{term.schedule}")
    if k.ce_weight is None:
        _require(0 <= k.kd_alpha <= 1, "distill.kd_alpha", f"must be in [0, 1], got {k.kd_alpha} "
                                                           "(or set distill.ce_weight to weigh CE and KD separately)")
        # A schedule may raise a weight (gamma > 1): w_CE = 1 - sum of the mixed weights must stay >= 0 throughout.
        mixed = [(t, getattr(k, t.weight) * getattr(k, t.schedule).max_factor(epochs))
                 for t in TERMS.values() if t.mixes_with_ce and getattr(k, t.weight) > 0]
        for term, peak in mixed:
            _require(sum(p for _, p in mixed) <= 1, f"distill.{term.schedule}",
                     f"raises {term.weight}={getattr(k, term.weight)} to {peak:g} within {epochs} epochs, which makes the "
                     f"cross-entropy weight 1 - {term.weight} negative; keep gamma <= 1 or set distill.ce_weight")
    else:
        _require(k.ce_weight >= 0, "distill.ce_weight", f"must be >= 0 or null, got {k.ce_weight}")
    for key in ("kd_temperature", "dkd_temperature", "at_p"):
        _require(getattr(k, key) > 0, f"distill.{key}", f"must be > 0, got {getattr(k, key)}")
    for key in dict.fromkeys(t.layers for t in TERMS.values() if t.layers is not None):  # each pairs field once
        _validate_pairs(getattr(k, key), f"distill.{key}")


def _validate_pairs(pairs: list[str] | None, key: str) -> None:
    if pairs is None:
        return
    _require(bool(pairs), key, "must list at least one 'student_path:teacher_path' pair, or be null (the default rule)")
    for i, pair in enumerate(pairs):
        _require(pair.count(":") == 1 and all(pair.split(":")), f"{key}[{i}]", f"must be 'student_path:teacher_path', got {pair!r}")
    students = [pair.split(":")[0] for pair in pairs]
    repeated = sorted({path for path in students if students.count(path) > 1})
    _require(not repeated, key, f"student layer(s) {repeated} appear in more than one pair; give each student layer one teacher layer")


def _validate_schedule(schedule: WeightSchedule, key: str) -> None:
    _require(schedule.gamma > 0, f"{key}.gamma", f"must be > 0, got {schedule.gamma}")
    _require(schedule.warmup_epochs >= 0, f"{key}.warmup_epochs", f"must be >= 0, got {schedule.warmup_epochs}")
    _require(list(schedule.milestones) == sorted(schedule.milestones), f"{key}.milestones",
             f"must be increasing, got {schedule.milestones}")
    _require(schedule.kind != "step" or bool(schedule.milestones), f"{key}.milestones",
             "a step schedule needs at least one milestone (the epochs at which the weight is multiplied by gamma)")
