"""The forward-pass tracing behind :func:`attnkit.features.resolution_groups` for models without ``feature_info``:
every module's first input and output tensor, in execution order, read with hooks that are always removed."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

__all__ = ["trace_group_outputs"]


def trace_group_outputs(model: nn.Module, example_input: Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """(path, (C, H, W)) of the output module of each resolution group, highest resolution first, from one traced
    forward pass in the caller's modes (:func:`attnkit.features.resolution_groups` gives the rule)."""
    events: list[tuple[str, str, Tensor | None]] = []  # (kind, path, first tensor) in execution order
    handles = []
    for path, module in model.named_modules():
        if path:
            handles.append(module.register_forward_pre_hook(lambda m, a, p=path: events.append(("in", p, _first_tensor(a)))))
            handles.append(module.register_forward_hook(lambda m, a, o, p=path: events.append(("out", p, _first_tensor(o)))))
    try:
        model(example_input)
    finally:
        for handle in handles:
            handle.remove()

    starts: dict[str, int] = {}
    inputs: dict[str, Tensor | None] = {}
    outputs: list[tuple[int, str, Tensor]] = []  # (event index, path, 4-D output)
    for index, (kind, path, tensor) in enumerate(events):
        if kind == "in":
            starts.setdefault(path, index)
            inputs.setdefault(path, tensor)
        elif _spatial(tensor) is not None:
            outputs.append((index, path, tensor))

    def producer(tensor: Tensor, before: int) -> str | None:
        # Shallowest module returning this very tensor, the one finishing last among equals; if a functional
        # op made it, the last module before `before` with an output of the same resolution.
        same = [p for _, p, t in outputs if t is tensor]
        if same:
            return min(reversed(same), key=lambda p: p.count("."))
        earlier = [p for i, p, t in outputs if i < before and _spatial(t) == _spatial(tensor)]
        return earlier[-1] if earlier else None

    # Downsampling modules in the order they start: the outermost one (a whole stage) comes first.
    groups: dict[tuple[int, int], str] = {}
    for index, path, out in sorted(outputs, key=lambda e: starts[e[1]]):
        given = inputs[path]
        resolution = _spatial(given)
        if resolution is None or resolution == _spatial(out) or given is example_input or resolution in groups:
            continue
        source = producer(given, starts[path])
        if source is not None:
            groups[resolution] = source
    spatial_outputs = [(i, p, t) for i, p, t in outputs if _spatial(t) != (1, 1)]
    if spatial_outputs:
        index, path, last = spatial_outputs[-1]
        groups.setdefault(_spatial(last), producer(last, index) or path)
    shapes = {p: tuple(t.shape[1:]) for _, p, t in outputs}
    ordered = sorted(groups.items(), key=lambda kv: -(kv[0][0] * kv[0][1]))
    return [(path, shapes[path]) for _, path in ordered]


def _first_tensor(value: Any) -> Tensor | None:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], Tensor):
        return value[0]
    return None


def _spatial(tensor: Tensor | None) -> tuple[int, int] | None:
    return tuple(tensor.shape[-2:]) if tensor is not None and tensor.dim() == 4 else None
