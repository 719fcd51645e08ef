"""A config as a commented recipe (``attnkit config``): every key with its value and what it means.

The meaning of a key is the comment beside its field in :mod:`.config` -- the one place it is written: the
dataclasses are read back with :mod:`tokenize`, so a field added with a comment is documented everywhere at
once (a test checks that every field has one).

>>> from attnkit.engine import RunConfig
>>> print(describe_config(RunConfig()).splitlines()[1])
  name: wrn_16_1  # registered model (`attnkit models`) or package.module:callable, torchvision:NAME, timm:NAME
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import tokenize
from typing import Any

import yaml

from .config import RunConfig

__all__ = ["describe_config", "field_comments"]


@functools.cache
def field_comments(cls: type) -> dict[str, str]:
    """{field name: the comment on its line} of a dataclass defined in Python source (fields without one omitted)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    lines = inspect.getsource(cls)
    first_name: dict[int, str] = {}  # physical line -> first name token on it
    comments: dict[str, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(lines).readline):
        row = token.start[0]
        if token.type == tokenize.NAME:
            first_name.setdefault(row, token.string)
        elif token.type == tokenize.COMMENT and first_name.get(row) in fields:
            comments.setdefault(first_name[row], token.string.lstrip("#").strip())
    return comments


def describe_config(config: RunConfig, header: str | None = None) -> str:
    """``config`` as YAML (a valid recipe), each key followed by its field's comment.

    Keys come in the order of the dataclasses' fields; nested sections (model, data, ..., the term schedules)
    are indented under their key.
    """
    lines = [f"# {line}" for line in (header or "").splitlines()]
    lines += _section(config, indent="")
    return "\n".join(lines) + "\n"


def _section(values: Any, indent: str) -> list[str]:
    comments = field_comments(type(values))
    entries = []
    for f in dataclasses.fields(values):
        value = getattr(values, f.name)
        comment = comments.get(f.name, "")
        if dataclasses.is_dataclass(value):
            entries.append((f"{indent}{f.name}:", comment, _section(value, indent + "  ")))
        else:
            entries.append((f"{indent}{f.name}: {_flow(value)}", comment, []))
    width = min(max(len(text) for text, _, _ in entries), 34)  # a long value does not push every comment right
    lines = []
    for text, comment, nested in entries:
        lines.append(f"{text:<{width}}  # {comment}" if comment else text)
        lines += nested
    return lines


def _flow(value: Any) -> str:
    """One value as inline YAML (``[60, 120, 160]``, ``{}``, ``null``, quoted strings where YAML needs them)."""
    return yaml.safe_dump([value], default_flow_style=True, width=10**6).strip()[1:-1]  # "[VALUE]" -> "VALUE"
