"""Models from outside the registry, named by a spec string wherever a model name is accepted.

* ``package.module:callable`` -- any importable callable returning an ``nn.Module`` (a function or a class),
  e.g. ``mypkg.nets:tiny_net``. The module is imported with :func:`importlib.import_module`; the current
  directory is searched first, as ``python -m`` does, so a package beside the command is found.
* ``torchvision:NAME`` -- ``torchvision.models.NAME`` (e.g. ``torchvision:resnet18``), where torchvision is installed.
* ``timm:NAME`` -- ``timm.create_model(NAME, ...)``, where timm is installed.

The builder is called with ``num_classes`` (the data decides it) and, when the images are not RGB, ``in_chans``
(a builder without an ``in_chans`` parameter cannot take them: read the images as RGB with ``data.channels=3``),
plus the user's keyword arguments (``model.kwargs``). Errors are ``ValueError`` naming the module or attribute and what to do.

Building a spec imports and calls code, so a spec read from a file someone else may have written (a run's
``run.json`` or ``config.yaml``, a weights file's metadata) is built only when the user names that same spec
(:func:`check_named_spec`): a recorded ``os:system`` or ``torch.hub:load`` is refused, never called. Registry
names carry no code and are rebuilt from records as they are.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from ..validation import suggest

__all__ = ["NAMED_MODELS_ENV", "build_external", "check_named_spec", "external_builder", "is_spec"]

NAMED_MODELS_ENV = "ATTNKIT_MODELS"  # comma-separated specs the user allows commands to rebuild from run records
_LIBRARIES = {"torchvision": "pip install torchvision", "timm": "pip install timm"}


def is_spec(name: str) -> bool:
    """Whether ``name`` names a model outside the registry (``module:callable``, ``torchvision:X``, ``timm:X``)."""
    return isinstance(name, str) and ":" in name


def check_named_spec(spec: str, named: Iterable[str | None], source: str, how: str) -> None:
    """Refuse to build ``spec``, recorded in ``source``, unless the user named it: in ``named`` (the model names
    they gave: ``model_name=``, ``model.name``, ``distill.teacher_model``) or in ``$ATTNKIT_MODELS``.

    ``how`` says where this caller's user names a model (e.g. ``"add model.name=SPEC to the command"``); the
    message gives it with the spec filled in. Registry names pass: they import no code of the file's choosing.
    """
    if not is_spec(spec):
        return
    allowed = {name for name in named if name} | {
        name.strip() for name in os.environ.get(NAMED_MODELS_ENV, "").split(",") if name.strip()}
    if spec in allowed:
        return
    raise ValueError(f"{source} records the model {spec!r}, which is built by importing and calling that code; "
                     f"attnkit does so only for a model you name yourself: if you trust it, "
                     f"{how.replace('SPEC', spec)}")


def external_builder(spec: str) -> Callable[..., Any]:
    """The callable a spec names; ``ValueError`` naming the module or attribute when it cannot be found."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"model spec {spec!r} must be package.module:callable, torchvision:NAME or timm:NAME")
    if module_name == "timm":
        timm = _import(module_name, spec)
        if attribute not in timm.list_models():
            raise ValueError(f"timm has no model {attribute!r} (see timm.list_models())")
        return lambda **kwargs: timm.create_model(attribute, **kwargs)
    if module_name == "torchvision":
        module_name = "torchvision.models"
    module = _import(module_name, spec)
    builder = module
    for part in attribute.split("."):  # a class method or a nested name: pkg.mod:Class.build
        if not hasattr(builder, part):
            public = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
            raise ValueError(f"module {module_name!r} has no attribute {attribute!r} (model spec {spec!r}); "
                             + suggest(attribute, public, fallback=f"its callables: {', '.join(public[:12]) or 'none'}"))
        builder = getattr(builder, part)
    if not callable(builder):
        raise ValueError(f"{module_name}:{attribute} is a {type(builder).__name__}, not a callable that builds a model")
    return builder


def build_external(spec: str, num_classes: int, in_chans: int = 3, **kwargs: Any) -> nn.Module:
    """Build the model ``spec`` names with ``num_classes`` outputs for ``in_chans``-channel images.

    ``num_classes`` is passed always; ``in_chans`` only when it is not 3, and only to a callable that names an
    ``in_chans`` parameter (or to timm, whose ``create_model`` takes it): torchvision's builders take none.
    """
    builder = external_builder(spec)
    accepts = _accepted(builder)
    if "num_classes" not in accepts and "**" not in accepts:
        raise ValueError(f"{spec} takes no num_classes argument; wrap it in a function that does "
                         "(attnkit sets the number of outputs from the data)")
    arguments = {"num_classes": num_classes, **kwargs}
    if in_chans != 3 and "in_chans" not in kwargs:
        if "in_chans" not in accepts and not spec.startswith("timm:"):
            raise ValueError(f"{spec} takes no in_chans argument, and the images have {in_chans} channel(s); "
                             "read them as RGB with data.channels=3, or give the builder an in_chans argument")
        arguments["in_chans"] = in_chans
    call = f"{spec}({', '.join(f'{k}={v!r}' for k, v in arguments.items())})"
    try:
        model = builder(**arguments)
    except TypeError as err:  # most often arguments it does not take
        raise ValueError(f"{call} failed: {err}; check model.kwargs") from err
    except Exception as err:  # the user's constructor failed: their code, named, with its cause (chained)
        raise ValueError(f"{call} raised {type(err).__name__}: {err}; fix the builder or its model.kwargs") from err
    if not isinstance(model, nn.Module):
        raise ValueError(f"{spec} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _import(module_name: str, spec: str) -> Any:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)  # a package beside the command, as `python -m` finds it
    try:
        return importlib.import_module(module_name)
    except Exception as err:  # not only ImportError: the user's module may fail in any way while it runs
        reason = f"{type(err).__name__}: {err}"
        top = module_name.split(".")[0]
        if top in _LIBRARIES:
            raise ValueError(f"{spec} needs {top}, which cannot be imported here ({reason}); {_LIBRARIES[top]}") from None
        hint = ("run from the directory holding it, put it on PYTHONPATH or pip install it"
                if isinstance(err, ModuleNotFoundError) else "fix the module")
        raise ValueError(f"cannot import module {module_name!r} named by model spec {spec!r} ({reason}); {hint}") from None


def _accepted(builder: Callable[..., Any]) -> set[str]:
    """Keyword names the builder takes ("**" when it takes any)."""
    try:
        parameters = inspect.signature(builder).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable without a signature: let the call decide
        return {"**"}
    names = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names | ({"**"} if any(p.kind is p.VAR_KEYWORD for p in parameters) else set())
