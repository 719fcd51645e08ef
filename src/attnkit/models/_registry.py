"""The model registry: ``register_model`` for entry functions, ``create_model`` / ``list_models`` for users.

``create_model`` also builds models from outside the registry, named by a spec (``package.module:callable``,
``torchvision:NAME``, ``timm:NAME``; see ``_external.py``).

Each registered entry function only sets arguments and calls one builder (timm's style), e.g.::

    @register_model
    def wrn_16_1(**kwargs) -> WideResNet:
        return _create_wrn(depth=16, width=1, **kwargs)
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

from torch import nn

from ..validation import check_int, suggest
from ._external import build_external, external_builder, is_spec

__all__ = ["check_model_name", "create_model", "is_model", "list_models", "register_model"]

_ENTRYPOINTS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn`` under its function name; registering a name twice is an error."""
    name = fn.__name__
    if name in _ENTRYPOINTS:
        previous = _ENTRYPOINTS[name]
        raise ValueError(
            f"model name {name!r} is already registered by {previous.__module__}.{previous.__qualname__}; "
            "choose another function name"
        )
    _ENTRYPOINTS[name] = fn
    return fn


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted names of the registered models, optionally filtered by a shell-style pattern (``"wrn_*"``)."""
    names = sorted(_ENTRYPOINTS)
    return names if pattern is None else [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered model."""
    return name in _ENTRYPOINTS


def check_model_name(name: str) -> None:
    """Raise unless ``name`` is a registered model or a spec whose callable can be found (imports its module).

    ``KeyError`` for an unknown registry name (naming the closest), ``ValueError`` for a spec naming a module or
    attribute that cannot be found.
    """
    if is_spec(name):
        external_builder(name)
    elif name not in _ENTRYPOINTS:
        hint = suggest(name, _ENTRYPOINTS, fallback="see `attnkit models`, or name your own as package.module:callable",
                       n=5, cutoff=0.4)
        raise KeyError(f"unknown model {name!r}; {hint}")


def create_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    """Build the model ``name`` with ``num_classes`` outputs; ``kwargs`` go to its builder.

    ``name`` is a registered model (every one accepts ``in_chans``, input channels, default 3, besides its own
    options) or a spec of a model from elsewhere: ``package.module:callable``, ``torchvision:NAME``, ``timm:NAME``.

    >>> model = create_model("wrn_16_1", num_classes=10)
    >>> sum(p.numel() for p in model.parameters())
    175066
    """
    check_model_name(name)
    check_int("num_classes", num_classes, minimum=1)
    if is_spec(name):
        return build_external(name, num_classes, **kwargs)
    return _ENTRYPOINTS[name](num_classes=num_classes, **kwargs)
