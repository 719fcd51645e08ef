"""Argument checks shared by every layer: "did you mean" hints, strict integers, choices from a ``Literal``.

This module imports nothing from attnkit, so any layer (functional, data, models, engine, explain) may use it.
Each layer owns its vocabulary as a ``Literal`` type (``functional.attention.Reduction``, ``data.loader.PadMode``,
``engine.optim.OptimizerName``, ...); :func:`choices` reads the allowed values back from it, so a list of names
is written once.

>>> suggest("lrr", ["lr", "momentum", "epochs"])
'did you mean lr?'
>>> check_int("epoch", 3)
3
>>> check_choice("mode", "cod", ("code", "paper"))
Traceback (most recent call last):
...
ValueError: mode must be code or paper, got 'cod'; did you mean code?
"""

from __future__ import annotations

import difflib
import math
import typing
from collections.abc import Iterable
from typing import Any

__all__ = ["check_choice", "check_finite", "check_int", "choices", "describe_choices", "is_int", "is_real", "suggest"]


def suggest(
    name: str, candidates: Iterable[str], *, fallback: str | None = None, lead: str = "did you mean",
    n: int = 3, cutoff: float = 0.6,
) -> str:
    """A hint naming the candidates closest to ``name``: ``"did you mean a, b?"``.

    Args:
        name: what the user wrote.
        candidates: the valid names.
        fallback: the hint when nothing is close (default: ``"choose from <all candidates>"``).
        lead: the words before the close names.
        n, cutoff: at most ``n`` names with a ``difflib`` similarity of at least ``cutoff``.
    """
    candidates = [str(c) for c in candidates]
    close = difflib.get_close_matches(str(name), candidates, n=n, cutoff=cutoff)
    if close:
        return f"{lead} {', '.join(close)}?"
    return fallback if fallback is not None else f"choose from {', '.join(candidates)}"


def is_int(value: Any) -> bool:
    """An integer that is not a bool (``True`` is an ``int`` to Python, never to a user)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """An int or float that is not a bool (NaN and infinity included; check finiteness separately)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_int(name: str, value: Any, minimum: int = 0, note: str = "") -> int:
    """Return ``value`` if it is an integer >= ``minimum``, else raise ``ValueError`` naming ``name``.

    The message says "a positive int" for ``minimum=1`` and "an int >= minimum" otherwise; ``note`` follows it
    (e.g. ``" (the global batch over all ranks)"``).
    """
    if not is_int(value) or value < minimum:
        what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {what}{note}, got {value!r}")
    return value


def choices(literal: Any) -> tuple[Any, ...]:
    """The values a ``Literal[...]`` type allows, in order (``Literal["a"] | Literal["b"]`` is flattened)."""
    args = typing.get_args(literal)
    if typing.get_origin(literal) is typing.Literal:
        return args
    return tuple(value for arg in args for value in choices(arg))


def describe_choices(values: Iterable[Any]) -> str:
    """``"a, b or c"``; booleans are written as YAML writes them (true, false)."""
    words = [("true" if v else "false") if isinstance(v, bool) else str(v) for v in values]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``allowed`` (a tuple, or a ``Literal`` type), else raise ``ValueError``.

    Values match by type as well as by equality, so ``1`` is not ``True`` and ``0.0`` is not ``"0"``.
    """
    allowed = choices(allowed) if typing.get_origin(allowed) is not None else tuple(allowed)
    if any(type(value) is type(option) and value == option for option in allowed):
        return value
    hint = suggest(value, [str(a) for a in allowed], fallback="") if isinstance(value, str) else ""
    raise ValueError(f"{name} must be {describe_choices(allowed)}, got {value!r}" + (f"; {hint}" if hint else ""))


def check_finite(name: str, value: float) -> float:
    """Return ``value`` unless it is NaN or infinite."""
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return value
