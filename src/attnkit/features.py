"""Capture intermediate features of any ``nn.Module`` and pair student with teacher layers.

Layers are named by their module path, exactly as ``model.named_modules()`` names them (``"layer2"``,
``"features.7"``, ``"layer3.1.conv2"``). Outputs are captured with forward hooks that are removed when the
``with`` block ends, also when it ends with an exception.

>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
>>> with FeatureCapture(model, ["1", "2"]) as features:
...     _ = model(torch.randn(2, 3, 8, 8))
>>> [tuple(features[k].shape) for k in ("1", "2")]
[(2, 8, 8, 8), (2, 8, 4, 4)]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ._tracing import trace_group_outputs
from .validation import suggest

__all__ = [
    "FeatureCapture",
    "LayerPair",
    "PairRule",
    "default_pairs",
    "eval_mode",
    "eval_no_grad",
    "extract_features",
    "output_module",
    "pair_layers",
    "resolution_groups",
    "resolve_module",
]


def resolve_module(model: nn.Module, path: str) -> nn.Module:
    """Return the submodule at ``path`` (as ``named_modules()`` names it), or raise naming close valid paths."""
    modules = dict(model.named_modules())
    if path in modules and path != "":
        return modules[path]
    names = [name for name in modules if name]
    hint = suggest(path, names, lead="closest valid paths:", n=5, cutoff=0.5,
                   fallback=f"top-level modules: {', '.join(n for n, _ in model.named_children())}")
    raise KeyError(f"{type(model).__name__} has no module at path {path!r}; {hint}")


class FeatureCapture:
    """Context manager that records the outputs of the modules at ``paths`` during forward passes.

    ``with FeatureCapture(model, paths) as features: model(x)`` fills the dict ``features`` (path -> output
    tensor, in the order of ``paths``). A module that runs several times in one forward keeps its last output;
    ``calls[path]`` counts its calls since the block began. All paths are checked before any hook is installed;
    every hook is removed on exit, also after an error.

    **In-place operations after a layer** (a ``ReLU(inplace=True)`` after a BatchNorm, ``out += identity``) write
    into the very tensor the layer returned. With ``copy=True`` the hook hands the rest of the forward a copy of
    the output and keeps the output itself, so the recorded value is what the module returned, whatever follows
    (one copy of the output per call). Without it nothing is copied, and :meth:`ordered` raises if a recorded
    output was changed in place after the layer (its version counter moved), rather than return a wrong value.

    Args:
        model: any module.
        paths: module paths to capture.
        detach: store detached outputs (for inspection), instead of outputs in the autograd graph (for losses).
        graph_root: where autograd is on but an output needs no gradient (a frozen network's layer), replace it by
            a leaf that does, so that the rest of the forward records a graph from it: d(output of the network)
            / d(captured output) then exists (Grad-CAM of a frozen teacher). The forward goes on from a copy of
            the leaf (a leaf cannot be changed in place), which is also what is recorded unless ``copy=True``.
        copy: record the outputs safe from in-place operations after the layer (above).
        graph_from_layers: run the block's forward without autograd up to the first captured layer, whose hook
            switches it on (implies ``graph_root``): the layers before it record no graph (maps that only need
            d score / d output). The grad mode is restored on exit, also after an error.
    """

    def __init__(
        self, model: nn.Module, paths: Iterable[str], detach: bool = False, graph_root: bool = False, *,
        copy: bool = False, graph_from_layers: bool = False,
    ) -> None:
        graph_root = graph_root or graph_from_layers
        if detach and graph_root:
            raise ValueError("detach=True stores outputs outside the graph; graph_root=True needs them in it")
        self.paths = list(dict.fromkeys(paths))
        if not self.paths:
            raise ValueError("no module paths given to capture; pass at least one path")
        self.modules = {path: resolve_module(model, path) for path in self.paths}
        self.detach, self.graph_root, self.copy, self.graph_from_layers = detach, graph_root, copy, graph_from_layers
        self.features: dict[str, Tensor] = {}
        self.calls: dict[str, int] = {}
        self._versions: dict[str, int] = {}  # version counter of each recorded output when it was recorded
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._grad_mode: bool | None = None

    def _hook(self, path: str):
        def record(module: nn.Module, inputs: Any, output: Any) -> Tensor | None:
            if not isinstance(output, Tensor):
                raise TypeError(
                    f"module {path!r} ({type(module).__name__}) returned {type(output).__name__}, not a tensor; "
                    "capture a submodule that returns a tensor"
                )
            if self.graph_from_layers:
                torch.set_grad_enabled(True)  # from here on: the graph from this layer to the output
            kept, forward = output, None  # forward: what the rest of the model runs on, if not the output itself
            if self.graph_root and torch.is_grad_enabled() and not output.requires_grad:
                kept = output.detach().requires_grad_(True)  # a leaf: d(...) / d(captured output) exists
                forward = kept.clone()  # not a leaf: in-place operations after the layer still work
                kept = kept if self.copy else forward
            elif self.copy:
                forward = output.clone()
            self.features[path] = kept.detach() if self.detach else kept
            self.calls[path] = self.calls.get(path, 0) + 1
            if not self.copy and not kept.is_inference() and not torch.compiler.is_compiling():
                self._versions[path] = kept._version
            return forward

        return record

    def __enter__(self) -> dict[str, Tensor]:
        self.features.clear()
        self.calls.clear()
        self._versions.clear()
        try:
            for path, module in self.modules.items():
                self._handles.append(module.register_forward_hook(self._hook(path)))
            if self.graph_from_layers:
                self._grad_mode = torch.is_grad_enabled()
                torch.set_grad_enabled(False)
        except BaseException:
            self.remove()
            raise
        return self.features

    def __exit__(self, *exc_info: object) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook this object installed and restore the grad mode it changed (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._grad_mode is not None:
            torch.set_grad_enabled(self._grad_mode)
            self._grad_mode = None

    def ordered(self) -> list[Tensor]:
        """The captured outputs in the order of ``paths``; raises if a module did not run, or if its output was
        changed in place after it was recorded (without ``copy=True``)."""
        missing = [p for p in self.paths if p not in self.features]
        if missing:
            raise RuntimeError(f"modules {missing} did not run in the forward pass, so nothing was captured")
        changed = [p for p, version in self._versions.items() if self.features[p]._version != version]
        if changed:
            raise RuntimeError(
                f"the outputs of modules {changed} were changed in place after they were captured (e.g. by a "
                "ReLU(inplace=True) that follows them), so they no longer hold what those modules returned; capture "
                "with copy=True, or capture the module that changes them"
            )
        return [self.features[p] for p in self.paths]


def output_module(model: nn.Module, run: Callable[[], Any]) -> str:
    """The path of the submodule of ``model`` whose output is the very tensor ``run()`` returns.

    ``run`` is called once (e.g. ``lambda: model.forward_features(x)``) with a forward hook on every submodule;
    the hooks are removed afterwards, also after an error. Among several modules returning that tensor (a
    ``Sequential`` and its last layer, a BatchNorm and the in-place ReLU after it) the shallowest wins, and among
    equally shallow ones the last to finish (the in-place ReLU, whose output is what follows).

    >>> model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Sequential(nn.BatchNorm2d(4), nn.ReLU(inplace=True)))
    >>> output_module(model, lambda: model(torch.zeros(1, 3, 2, 2)))
    '1'
    """
    finished: list[tuple[str, Any]] = []  # (path, output) in the order the modules finish
    handles = []
    try:
        for path, module in model.named_modules():
            if path:
                handles.append(module.register_forward_hook(lambda m, a, out, p=path: finished.append((p, out))))
        result = run()
    finally:
        for handle in handles:
            handle.remove()
    candidates = [path for path, out in finished if isinstance(result, Tensor) and out is result]
    if not candidates:
        raise ValueError(
            f"no submodule of {type(model).__name__} returns that output (a function, not a module, computes it); "
            "name the layer by its module path"
        )
    return min(reversed(candidates), key=lambda path: path.count("."))


def extract_features(
    model: nn.Module, x: Tensor, paths: Sequence[str], detach: bool = False, *, copy: bool = False
) -> tuple[Any, list[Tensor]]:
    """Run ``model(x)`` once and return ``(output, [features at each path])`` (arguments: :class:`FeatureCapture`)."""
    capture = FeatureCapture(model, paths, detach=detach, copy=copy)
    with capture:
        output = model(x)
    return output, capture.ordered()


@dataclass(frozen=True)
class LayerPair:
    """A student layer and the teacher layer whose attention it learns, with their output shapes (C, H, W)."""

    student: str
    teacher: str
    student_shape: tuple[int, ...] = ()
    teacher_shape: tuple[int, ...] = ()


@dataclass(frozen=True)
class _GroupOutput:
    path: str
    shape: tuple[int, int, int]  # (C, H, W)


def resolution_groups(model: nn.Module, example_input: Tensor) -> list[_GroupOutput]:
    """The output layer of each resolution group of ``model``, from the highest resolution to the lowest.

    Models with a ``feature_info`` attribute (every attnkit model) name their attention points themselves.
    For any other model one forward pass is traced (no gradient, every module in eval mode, modes restored):
    the group output of a resolution is the module whose output tensor feeds the first downsampling module
    (for a ResNet stage, the stage itself, not the pre-activation BN-ReLU of the next stage); the last group is
    the last module with a spatial output before global pooling. Among modules returning the same tensor the
    shallowest path wins (``layer1`` rather than ``layer1.1``).
    """
    if hasattr(model, "feature_info"):
        paths = [info.module for info in model.feature_info]
        with eval_no_grad(model):
            _, feats = extract_features(model, example_input, paths, detach=True, copy=True)
        return [_GroupOutput(p, tuple(f.shape[1:])) for p, f in zip(paths, feats)]
    with eval_no_grad(model):
        traced = trace_group_outputs(model, example_input)
    return [_GroupOutput(path, shape) for path, shape in traced]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module of ``model`` in eval mode for the ``with`` block, then restore each module's own flag.

    Gradients stay enabled (attribution methods need them); restoring per module keeps a mixed state such as a
    frozen teacher's BatchNorm in eval inside a training model.
    """
    flags = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, flag in flags.items():
            module.training = flag


@contextmanager
def eval_no_grad(model: nn.Module) -> Iterator[None]:
    """Run a model in eval mode without gradient, restoring each module's training flag afterwards."""
    with eval_mode(model), torch.no_grad():
        yield


def pair_layers(
    student: nn.Module,
    teacher: nn.Module,
    example_input: Tensor,
    mapping: Mapping[str, str] | None = None,
) -> list[LayerPair]:
    """Pair student and teacher layers for attention transfer.

    By default, group by group at equal output resolution: the last layer of each resolution group of the
    student is paired with the teacher's at the same resolution, as the paper does for networks of different
    depth (WRN-16-1 <- WRN-40-1 pairs the three group outputs). An explicit ``mapping`` (student path ->
    teacher path) overrides this; its paths are checked and their shapes reported.

    Args:
        student, teacher: the two networks (any ``nn.Module``).
        example_input: one batch (B >= 1) that both networks accept, e.g. ``torch.zeros(1, 3, 32, 32)``.
        mapping: optional explicit pairs.

    Returns:
        One :class:`LayerPair` per pair, from high to low resolution.
    """
    if mapping is not None:
        if not mapping:
            raise ValueError("mapping is empty: give at least one student path -> teacher path pair")
        for side, model, paths in (("student", student, mapping.keys()), ("teacher", teacher, mapping.values())):
            for path in paths:
                try:
                    resolve_module(model, path)
                except KeyError as err:
                    raise KeyError(f"{side}: {err.args[0]}") from None
        s_shapes = _shapes(student, example_input, list(mapping.keys()))
        t_shapes = _shapes(teacher, example_input, list(mapping.values()))
        return [LayerPair(s, t, s_shapes[s], t_shapes[t]) for s, t in mapping.items()]

    s_groups = resolution_groups(student, example_input)
    t_groups = resolution_groups(teacher, example_input)
    t_by_res = {g.shape[1:]: g for g in t_groups}
    pairs = [LayerPair(s.path, t_by_res[s.shape[1:]].path, s.shape, t_by_res[s.shape[1:]].shape)
             for s in s_groups if s.shape[1:] in t_by_res]
    if not pairs:
        if len(s_groups) != len(t_groups) or not s_groups:
            raise ValueError(
                f"cannot pair layers: student groups {[(g.path, g.shape) for g in s_groups]} and teacher groups "
                f"{[(g.path, g.shape) for g in t_groups]} share no resolution; pass mapping={{student_path: teacher_path}}"
            )
        # Same number of groups at different resolutions: pair in order; at_loss resizes the maps.
        pairs = [LayerPair(s.path, t.path, s.shape, t.shape) for s, t in zip(s_groups, t_groups)]
    return pairs


PairRule = Literal["groups", "last", "middle", "output"]  # the default pairs of a distillation term, see default_pairs


def default_pairs(student: nn.Module, teacher: nn.Module, example_input: Tensor, rule: PairRule = "groups") -> list[LayerPair]:
    """The layer pairs a distillation term uses by default.

    * ``"groups"``: every resolution group, paired by resolution (:func:`pair_layers`; AT, F-ActT, NST);
    * ``"last"``: the deepest of those pairs (similarity-preserving KD; RepDistiller's ``feat[-2]``);
    * ``"middle"``: the middle resolution group of each network, ``groups[(n - 1) // 2]`` of its n groups
      (FitNets' guided and hint layers; RepDistiller's ``hint_layer = 2``: the second of three groups);
    * ``"output"``: the module producing each network's ``forward_features`` output (:func:`output_module`;
      the layer Grad-CAM explains by default), or for a model without ``forward_features`` its last resolution
      group.
    """
    if rule == "groups":
        return pair_layers(student, teacher, example_input)
    if rule == "last":
        return pair_layers(student, teacher, example_input)[-1:]
    if rule == "middle":
        s_groups, t_groups = resolution_groups(student, example_input), resolution_groups(teacher, example_input)
        s, t = s_groups[(len(s_groups) - 1) // 2], t_groups[(len(t_groups) - 1) // 2]
        return [LayerPair(s.path, t.path, s.shape, t.shape)]
    if rule == "output":
        paths = []
        for side, model in (("student", student), ("teacher", teacher)):
            if callable(getattr(model, "forward_features", None)):
                with eval_no_grad(model):
                    paths.append(output_module(model, lambda m=model: m.forward_features(example_input)))
            else:  # any other model: its last traced group, the last spatial map before pooling (as Grad-CAM's)
                groups = resolution_groups(model, example_input)
                if not groups:
                    raise ValueError(f"the {side} has no module with a spatial output; name its layer by module path")
                paths.append(groups[-1].path)
        return pair_layers(student, teacher, example_input, {paths[0]: paths[1]})
    raise ValueError(f"rule must be groups, last, middle or output, got {rule!r}")


def _shapes(model: nn.Module, example_input: Tensor, paths: list[str]) -> dict[str, tuple[int, ...]]:
    with eval_no_grad(model):
        _, feats = extract_features(model, example_input, paths, detach=True, copy=True)
    return {p: tuple(f.shape[1:]) for p, f in zip(paths, feats)}
