"""What a run records about its model and data (``run.json``, and every weights file's metadata): :class:`RunInfo`.

Read back from files that may have been damaged or edited, so :meth:`RunInfo.from_dict` checks every key it knows
and names the file and key of a wrong value. A model passed in from Python is recorded as what it is
(:func:`passed_in_name`), never under a name attnkit would rebuild another model by.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

__all__ = ["RunInfo", "is_passed_in", "passed_in_name", "qualified_name"]


@dataclass
class RunInfo:
    """What a run's weights need to be used; written to run.json and into every weights file's metadata."""

    dataset: str | None = None  # data set the model was trained on
    num_classes: int | None = None  # outputs of the model
    classes: list[str] = field(default_factory=list)  # class names, indexed by label
    in_chans: int | None = None  # image channels
    input_size: list[int] | None = None  # (C, H, W) of the training images
    mean: list[float] | None = None  # per-channel normalisation, 0..1 scale
    std: list[float] | None = None
    folder: dict[str, Any] | None = None  # image folders: how they were read (layout, channels, normalisation, memory)
    model: str | None = None  # registry name or spec to rebuild the model by (None: a model passed in, not rebuildable)
    model_class: str | None = None  # the model's class, qualified by its module (e.g. mypkg.nets.TinyNet)
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # builder arguments besides num_classes, in_chans
    versions: dict[str, str] = field(default_factory=dict)  # attnkit, torch, numpy, python
    precision: str | None = None  # float32 | bfloat16 | float16: the autocast dtype trained with
    precision_source: str | None = None  # where that came from: set | cuda | no-bf16 | cached | measured (None: older)
    channels_last: bool | None = None  # memory format trained in
    channels_last_source: str | None = None  # where that came from: set | cuda | cached | measured
    teacher_sha256: str | None = None  # SHA-256 of the teacher's weights file (distillation from a file or run)
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as they are

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "run information") -> RunInfo:
        """The information in ``values`` (run.json or a weights file's metadata, named by ``source``); a key of the
        wrong type (a damaged or hand-edited file) is a ``ValueError`` naming ``source`` and the key."""
        if not isinstance(values, Mapping):
            raise ValueError(f"{source} must hold a JSON object of run information, not a {type(values).__name__}")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        for key, value in values.items():
            if key in _INFO_TYPES and value is not None and not _INFO_TYPES[key][0](value):
                raise ValueError(f"{source}: key {key!r} must be {_INFO_TYPES[key][1]}, got {value!r:.80}; the file "
                                 "was damaged or edited (restore it, or retrain)")
        return cls(**{k: v for k, v in values.items() if k in names},
                   extra={k: v for k, v in values.items() if k not in names})

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**values, **self.extra}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _numbers(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                           for v in value)


# RunInfo's keys: (check of a value that is not None, what it must be)
_INFO_TYPES: dict[str, tuple[Any, str]] = {
    "dataset": (lambda v: isinstance(v, str), "a data set name"),
    "num_classes": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    "classes": (lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v), "a list of class names"),
    "in_chans": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    "input_size": (lambda v: isinstance(v, list) and len(v) == 3 and all(_is_int(n) and n >= 1 for n in v),
                   "[channels, height, width]"),
    "mean": (_numbers, "a list of numbers"),
    "std": (lambda v: _numbers(v) and all(x > 0 for x in v), "a list of positive numbers"),
    "folder": (lambda v: isinstance(v, dict), "an object"),
    "model": (lambda v: isinstance(v, str) and bool(v), "a model name"),
    "model_class": (lambda v: isinstance(v, str), "a class name"),
    "model_kwargs": (lambda v: isinstance(v, dict), "an object of builder arguments"),
    "versions": (lambda v: isinstance(v, dict), "an object"),
    "precision": (lambda v: v in ("float32", "bfloat16", "float16"), "float32, bfloat16 or float16"),
    "precision_source": (lambda v: isinstance(v, str), "a string"),
    "channels_last": (lambda v: isinstance(v, bool), "true or false"),
    "channels_last_source": (lambda v: isinstance(v, str), "a string"),
    "teacher_sha256": (lambda v: isinstance(v, str) and len(v) == 64, "a SHA-256 hex digest"),
}


def qualified_name(model: nn.Module) -> str:
    """``module.QualName`` of the model's class, e.g. ``torch.nn.modules.container.Sequential``."""
    return f"{type(model).__module__}.{type(model).__qualname__}"


def passed_in_name(model: nn.Module) -> str:
    """What config.yaml records as ``model.name`` for a model passed in from Python: its class, marked as such (no
    registry name or spec: nothing attnkit could rebuild it by)."""
    return f"passed in ({qualified_name(model)})"


def is_passed_in(name: str | None) -> bool:
    """Whether a recorded model name is :func:`passed_in_name`'s."""
    return isinstance(name, str) and name.startswith("passed in (")
