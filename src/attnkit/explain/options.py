"""The options of map methods named by their registry names (``attnkit maps``), checked before any model is bound.

:func:`method_options` turns options for the CAM family as a whole (its layers, ``aug_smooth``, ``eigen_smooth``)
and options for one method each (``{"scorecam": {"channel_batch_size": 32}}``) into the constructor keyword
arguments of every chosen method, and refuses, naming the method and the key, an option no chosen method takes.

>>> method_options(["gradcam", "saliency", "scorecam"], {"scorecam": {"channel_batch_size": 32}},
...                cam={"layer": ["layer2", "layer3"]})
{'gradcam': {'layer': ['layer2', 'layer3']}, 'scorecam': {'layer': ['layer2', 'layer3'], 'channel_batch_size': 32}}
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from ..validation import suggest
from . import METHOD_ALIASES, METHODS
from ._cam_base import CAMMethod

__all__ = ["CAM_FAMILY", "method_options", "option_names"]

CAM_FAMILY = tuple(name for name, cls in METHODS.items() if issubclass(cls, CAMMethod))  # gradcam ... ablationcam


def option_names(method: str) -> list[str]:
    """The keyword arguments of a method's constructor after the model, e.g. ``["steps", "baseline", ...]``."""
    parameters = list(inspect.signature(METHODS[METHOD_ALIASES.get(method, method)].__init__).parameters)
    return parameters[2:]  # self, model


def method_options(
    methods: Sequence[str],
    options: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    cam: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """{method: constructor keyword arguments} for the chosen ``methods`` (registry names or aliases).

    Args:
        methods: the methods that will run.
        options: {method: {key: value}}, each key a keyword argument of that method's constructor; these win
            over ``cam``.
        cam: keyword arguments for every method of the CAM family among ``methods`` (:data:`CAM_FAMILY`: layer,
            relu, aug_smooth, eigen_smooth), e.g. ``{"layer": ["layer2", "layer3"], "aug_smooth": True}``.

    Raises:
        ValueError: an option for a method that is not chosen or does not exist, a key the method does not take,
            a value that is a mapping (``METHOD.KEY.SUB=...``), or ``cam`` options without any CAM-family method.
    """
    chosen = {METHOD_ALIASES.get(name, name): name for name in methods}
    result: dict[str, dict[str, Any]] = {}
    if cam:
        family = [name for name in chosen if name in CAM_FAMILY]
        if not family:
            raise ValueError(f"{', '.join(cam)} apply to the CAM methods ({', '.join(CAM_FAMILY)}), but none of the "
                             f"methods chosen is one ({', '.join(methods)}); add one, e.g. gradcam")
        for name in family:
            result[chosen[name]] = dict(cam)
    for given, values in (options or {}).items():
        name = METHOD_ALIASES.get(given, given)
        if name not in METHODS:
            raise ValueError(f"option for an unknown method {given!r}; {suggest(given, METHODS)}")
        if name not in chosen:
            raise ValueError(f"options given for {given}, which is not among the methods chosen ({', '.join(methods)}); "
                             "add it to the methods or drop its options")
        if not isinstance(values, Mapping):
            raise ValueError(f"options of {given} look like {given}.KEY=VALUE (e.g. {given}.{option_names(name)[0]}=...)"
                             if option_names(name) else f"{given} takes no options")
        known = option_names(name)
        for key, value in values.items():
            if key not in known:
                takes = f"its options: {', '.join(known)}" if known else "it takes none"
                raise ValueError(f"{given} has no option {key!r}; {takes}")
            if isinstance(value, Mapping):
                raise ValueError(f"{given}.{key}: give one value (a number, a word or a [list]), not a mapping")
        result.setdefault(chosen[name], {}).update(values)
    return result
