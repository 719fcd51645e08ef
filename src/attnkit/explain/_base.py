"""The shared base of every attention-map method: targets, batching, eval mode and resizing, in one place.

Every method is a class bound to a model (and layer) in its constructor, with one call (as captum's)::

    maps = Method(model, layer=...).attribute(images, target=None)   # (B, C, H, W) -> (B, H, W)

* ``target``: ``None`` (each image's predicted class), one ``int`` for every image, one class per image
  (a (B,) tensor or list), or a function of the logits returning the scores to explain (captum's and
  pytorch-grad-cam's custom targets, e.g. ``lambda logits: logits[:, 3] - logits[:, 5]``); methods that need
  a class index (CAM, gradient attention) refuse functions. Methods whose map does not depend on a class
  (activation maps, the model's own attention, Eigen-CAM) accept and ignore it, so that every method is called
  the same way.
* **A target function acts row by row**: it receives (n, K) logits for any number n of rows and returns the
  (n,) scores, row i's score computed from row i alone. n is rarely the batch: Score-CAM and Ablation-CAM
  call it on batches of masked or ablated copies of one image, ``aug_smooth`` on all views at once, and the
  faithfulness metrics (:mod:`attnkit.explain.metrics`) on their perturbed copies. A closure over per-image
  labels (``lambda logits: logits.gather(1, labels[:, None])``) breaks that rule: pass ``labels`` as the target
  instead. Its result is checked to hold one score per row.
* ``layer`` (where a method has one): a module path as ``named_modules()`` names it (``"layer3"``), the
  module itself (``model.layer3``), or, for the CAM family, a list of them (maps fused, see
  :mod:`attnkit.explain.cam`). Paths are what is stored, so a method can be rebound to a copy of its model.
* ``upsample=True`` resizes the method's raw map to the input resolution with
  :func:`attnkit.functional.resize_map` (bilinear, ``align_corners=False``); ``upsample=False`` returns the
  raw map at the resolution where the method computes it (a layer's h x w, or the input's H x W).
* ``batch_size``: run the images in chunks of this many (for many images or costly methods such as
  occlusion); the maps equal those of one call on the whole batch.
* The model is put in eval mode for the call and every module's own train/eval flag is restored afterwards;
  parameters' ``.grad`` are never touched (gradients are taken with ``torch.autograd.grad``).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from typing import ClassVar, TypeVar

import torch
from torch import Tensor, nn

from ..features import eval_mode, resolve_module
from ..functional import resize_map
from ..functional.checks import check_features
from ..functional.gradient import as_target
from ..validation import check_int

__all__ = [
    "AttentionMethod",
    "LayerSpec",
    "ScoreFunction",
    "Target",
    "bind_target",
    "check_images",
    "check_logits",
    "function_scores",
    "layer_paths",
    "require_contract",
    "resolve_target",
    "target_scores",
]

ScoreFunction = Callable[[Tensor], Tensor]  # (n, K) logits -> (n,) scores to explain, row by row
Target = int | Sequence[int] | Tensor | ScoreFunction | None
LayerSpec = str | nn.Module | Sequence[str | nn.Module]
_Result = TypeVar("_Result", Tensor, dict)


def check_images(images: Tensor) -> Tensor:
    """Raise unless ``images`` is a non-empty floating-point (B, C, H, W) batch; return it detached."""
    if isinstance(images, Tensor) and images.dim() == 4 and not images.is_floating_point():
        raise TypeError(
            f"images must be floating point (normalised as for training), got dtype {images.dtype}; "
            "convert uint8 images with images.float() / 255 and normalise them with the data set's mean/std"
        )
    check_features(images, "images")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch; pass at least one image")
    return images.detach()


def layer_paths(model: nn.Module, layer: LayerSpec) -> list[str]:
    """Module paths of ``layer``: a path, a submodule of ``model``, or a list of them (checked, in order).

    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    >>> layer_paths(model, model[1]), layer_paths(model, ["0", model[1]])
    (['1'], ['0', '1'])
    """
    # A module is one layer even when it is iterable (nn.Sequential): only lists and tuples hold several.
    items = list(layer) if isinstance(layer, (list, tuple)) else [layer]
    if not items:
        raise ValueError("layer is an empty list; give at least one module path or module")
    paths = []
    for item in items:
        if isinstance(item, str):
            resolve_module(model, item)  # fails now, naming close paths, rather than at the first call
            paths.append(item)
        elif isinstance(item, nn.Module):
            path = next((name for name, module in model.named_modules() if module is item and name), None)
            if path is None:
                raise ValueError(
                    f"layer {type(item).__name__} is not a submodule of {type(model).__name__}; pass one of the "
                    "model's own modules (e.g. model.layer3) or its path"
                )
            paths.append(path)
        else:
            raise TypeError(f"layer must be a module path, a module or a list of them, got {type(item).__name__}")
    return paths


def require_contract(model: nn.Module, methods: tuple[str, ...], method_name: str, fix: str) -> None:
    """Raise a TypeError naming what is missing unless ``model`` has the attnkit model contract's ``methods``."""
    missing = [m for m in methods if not callable(getattr(model, m, None))]
    if missing:
        raise TypeError(
            f"{method_name} needs the attnkit model contract ({', '.join(methods)}), but "
            f"{type(model).__name__} lacks {', '.join(missing)}; {fix}"
        )


def _is_score_function(target: object) -> bool:
    return callable(target) and not isinstance(target, Tensor)


def _per_image_targets(target: Target, batch: int) -> Tensor | int | ScoreFunction | None:
    """None, int and functions stay as they are; anything else becomes a (B,) int64 tensor of the right length."""
    if target is None or (isinstance(target, int) and not isinstance(target, bool)) or _is_score_function(target):
        return target
    if isinstance(target, bool):
        raise TypeError("target must be None, an int or one int per image, got a bool")
    target = torch.as_tensor(target).reshape(-1)
    if target.is_floating_point() or target.dtype == torch.bool:
        raise TypeError(f"target must hold class indices (integers), got dtype {target.dtype}")
    if target.numel() != batch:
        raise ValueError(f"got {target.numel()} targets for a batch of {batch}; give one per image or one int")
    return target.long()


class AttentionMethod:
    """Base class: ``Method(model, ...).attribute(images, target=None, upsample=True) -> (B, H, W)``.

    Subclasses set ``name`` (the registry name), ``uses_target``, ``scores_own_forward`` and implement
    ``_attribute(images, target)`` on one chunk: (b, C, H, W) images and the target (``None`` when
    ``uses_target`` is False; as given, a (b,) slice where per image, with ``scores_own_forward``, which then
    resolves it with :func:`bind_target` / :func:`target_scores` on the logits of its own forward pass; else
    (b,) int64 classes) -> (b, h, w) raw maps. Layer paths are resolved on every call, so :meth:`with_model`
    can rebind a method to a copy of the model (the randomisation sanity check does).
    """

    name: ClassVar[str] = ""
    uses_target: ClassVar[bool] = True  # False: the map does not depend on a class; target is ignored
    # True: _attribute gets the target as given (None, int, (b,) tensor or function) and reads the classes from
    # its own forward pass (no extra forward to resolve them); False: (b,) class indices, resolved first.
    scores_own_forward: ClassVar[bool] = False

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model

    def attribute(
        self, images: Tensor, target: Target = None, *, upsample: bool = True, batch_size: int | None = None
    ) -> Tensor:
        """Attention maps of ``images``: (B, C, H, W) -> (B, H, W), or the raw (B, h, w) with ``upsample=False``.

        Args:
            images: normalised input batch, as the model was trained on.
            target: None (predicted class), one int, one class per image, or a function of the (B, K) logits
                returning the (B,) scores to explain.
            upsample: resize to the input's H x W (bilinear); False keeps the method's own resolution.
            batch_size: compute in chunks of this many images (same result, less memory).
        """
        return self._run(self._attribute, images, target, upsample, batch_size)

    def with_model(self, model: nn.Module) -> AttentionMethod:
        """The same method (same layer and options) bound to another model of the same architecture."""
        method = copy.copy(self)
        method.model = model
        return method

    def _attribute(self, images: Tensor, target: Tensor | None) -> Tensor:
        raise NotImplementedError

    def _run(
        self,
        compute: Callable[[Tensor, Tensor | None], _Result],
        images: Tensor,
        target: Target,
        upsample: bool,
        batch_size: int | None,
        keep_graph: bool = False,
    ) -> _Result:
        """Eval mode, targets and chunking around ``compute``; resizes a tensor or every map of a dict.

        ``keep_graph`` returns the maps in the autograd graph (differentiable maps), otherwise detached.
        """
        images = check_images(images)
        size = (int(images.shape[-2]), int(images.shape[-1]))
        targets = _per_image_targets(target, images.shape[0]) if self.uses_target else None
        results = []
        with _evaluating(self.model):
            for chunk, chunk_target in self._chunks(images, targets, batch_size):
                if self.uses_target and not self.scores_own_forward:
                    chunk_target = self._resolve_target(chunk, chunk_target)
                result = compute(chunk, chunk_target)
                result = result if keep_graph else _detach(result)
                results.append(_resize(result, size) if upsample else result)
        if len(results) == 1:  # one chunk: no copy
            return results[0]
        if isinstance(results[0], dict):
            return {name: torch.cat([r[name] for r in results]) for name in results[0]}
        return torch.cat(results)

    @staticmethod
    def _chunks(
        images: Tensor, targets: Tensor | int | None, batch_size: int | None
    ) -> Iterator[tuple[Tensor, Tensor | int | None]]:
        if batch_size is not None:
            check_int("batch_size", batch_size, minimum=1, note=" or None")
        step = batch_size or images.shape[0]
        for start in range(0, images.shape[0], step):
            chunk_target = targets[start : start + step] if isinstance(targets, Tensor) else targets
            yield images[start : start + step], chunk_target

    def _resolve_target(self, images: Tensor, target: Tensor | int | ScoreFunction | None) -> Tensor:
        return resolve_target(self.model, images, self._class_target(target))

    def _class_target(self, target: Tensor | int | ScoreFunction | None) -> Tensor | int | None:
        """``target`` unchanged, unless it is a function: this method needs class indices."""
        if _is_score_function(target):
            raise TypeError(
                f"{type(self).__name__} needs class indices as target (None, an int or one per image), "
                "not a function of the logits"
            )
        return target


def _evaluating(model: nn.Module) -> contextlib.AbstractContextManager:
    """:func:`attnkit.features.eval_mode`, skipped when every module is in eval mode already (the usual case for
    a trained model: saves flipping and restoring each module's flag, ~0.25 ms for a WRN-16-2 on every call)."""
    return eval_mode(model) if any(module.training for module in model.modules()) else contextlib.nullcontext()


def check_logits(logits: object) -> Tensor:
    """Raise unless the model's output is a (B, K) tensor of logits; return it."""
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"model must return (B, num_classes) logits, got {shape}")
    return logits


def resolve_target(model: nn.Module, images: Tensor, target: Target) -> Tensor:
    """(B,) int64 classes on the images' device: None -> the model's predictions, an int for every image, or
    one per image (checked against the number of classes). Runs one no-grad forward in the model's current mode.
    """
    target = _per_image_targets(target, images.shape[0])
    with torch.no_grad():
        logits = check_logits(model(images))  # (B, K); also gives K for the range check of given targets
    return as_target(target, logits)


def bind_target(target: Tensor | int | ScoreFunction | None, logits: Tensor) -> Tensor | ScoreFunction:
    """The target of the images whose (B, K) ``logits`` are given: a function stays as it is; None becomes
    the predicted classes, an int or (B,) classes a (B,) int64 tensor checked against K."""
    return target if _is_score_function(target) else as_target(target, check_logits(logits).detach())


def target_scores(logits: Tensor, target: Tensor | ScoreFunction, repeats: int = 1) -> Tensor:
    """(R B, K) logits -> (R B,) scores: each row's target-class logit, or ``target(logits)`` for a function.

    ``repeats`` = R: the logits hold R copies of a batch of B images (views, perturbations) and ``target`` is
    the (B,) classes of one copy.

    >>> target_scores(torch.tensor([[1.0, 2.0], [3.0, 5.0]]), torch.tensor([1, 0]))
    tensor([2., 3.])
    """
    logits = check_logits(logits)
    if _is_score_function(target):
        return function_scores(target, logits)
    classes = target.repeat(repeats) if repeats > 1 else target
    return logits.gather(1, classes.to(logits.device)[:, None]).squeeze(1)


def function_scores(target: ScoreFunction, logits: Tensor) -> Tensor:
    """(n, K) logits -> the (n,) scores of a target function, which must act row by row (module docstring).

    >>> function_scores(lambda z: z[:, 1] - z[:, 0], torch.tensor([[1.0, 2.0], [3.0, 5.0], [0.0, 0.0]]))
    tensor([1., 2., 0.])
    """
    rows = logits.shape[0]
    rule = ("a target function must score any number of rows, each from its own row (it also gets perturbed copies "
            "and test-time views); for one class per image pass the classes as target instead")
    try:
        scores = target(logits)
    except Exception as err:  # most often a closure over per-image labels, given copies or views instead
        raise ValueError(f"the target function failed on ({rows}, {logits.shape[1]}) logits "
                         f"({type(err).__name__}: {err}); {rule}") from err
    if not isinstance(scores, Tensor) or scores.shape != (rows,):
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"a target function must return one score per row of its ({rows}, K) logits, ({rows},), "
                         f"got {shape}; {rule}")
    return scores


def _detach(result: Tensor | dict[str, Tensor]) -> Tensor | dict[str, Tensor]:
    if isinstance(result, dict):
        return {name: maps.detach() for name, maps in result.items()}
    return result.detach()


def _resize(result: Tensor | dict[str, Tensor], size: tuple[int, int]) -> Tensor | dict[str, Tensor]:
    if isinstance(result, dict):
        return {name: resize_map(maps, size) for name, maps in result.items()}
    return resize_map(result, size)
