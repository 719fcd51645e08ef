"""The shared base of every attention-map method: targets, batching, eval mode and resizing, in one place.

Every method is a class bound to a model (and layer) in its constructor, with one call (as captum's)::

    maps = Method(model, layer=...).attribute(images, target=None)   # (B, C, H, W) -> (B, H, W)

* ``target``: ``None`` (each image's predicted class), one ``int`` for every image, or one class per image
  (a (B,) tensor or list). Methods whose map does not depend on a class (activation maps, the model's own
  attention) accept and ignore it, so that every method is called the same way.
* ``upsample=True`` resizes the method's raw map to the input resolution with
  :func:`attnkit.functional.resize_map` (bilinear, ``align_corners=False``); ``upsample=False`` returns the
  raw map at the resolution where the method computes it (a layer's h x w, or the input's H x W).
* ``batch_size``: run the images in chunks of this many (for many images or costly methods such as
  occlusion); the maps equal those of one call on the whole batch.
* The model is put in eval mode for the call and every module's own train/eval flag is restored afterwards;
  parameters' ``.grad`` are never touched (gradients are taken with ``torch.autograd.grad``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from typing import ClassVar, TypeVar

import torch
from torch import Tensor, nn

from ..features import eval_mode
from ..functional import resize_map
from ..functional._checks import check_features
from ..functional.gradient import _as_target

__all__ = ["AttentionMethod", "Target", "check_images", "resolve_target"]

Target = int | Sequence[int] | Tensor | None
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


def _per_image_targets(target: Target, batch: int) -> Tensor | int | None:
    """None and int stay as they are; anything else becomes a (B,) int64 tensor of the right length."""
    if target is None or (isinstance(target, int) and not isinstance(target, bool)):
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

    Subclasses set ``name`` (the registry name), ``uses_target`` and implement ``_attribute(images, target)``
    on one chunk: (b, C, H, W) images and (b,) int64 targets (``None`` when ``uses_target`` is False) ->
    (b, h, w) raw maps. Layer paths are resolved on every call, so :meth:`with_model` can rebind a method to
    a copy of the model (the randomisation sanity check does).
    """

    name: ClassVar[str] = ""
    uses_target: ClassVar[bool] = True  # False: the map does not depend on a class; target is ignored

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
            target: None (predicted class), one int, or one class per image.
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
    ) -> _Result:
        """Eval mode, targets and chunking around ``compute``; resizes a tensor or every map of a dict."""
        images = check_images(images)
        size = (int(images.shape[-2]), int(images.shape[-1]))
        targets = _per_image_targets(target, images.shape[0]) if self.uses_target else None
        results = []
        with eval_mode(self.model):
            for chunk, chunk_target in self._chunks(images, targets, batch_size):
                if self.uses_target:
                    chunk_target = self._resolve_target(chunk, chunk_target)
                result = _detach(compute(chunk, chunk_target))
                results.append(_resize(result, size) if upsample else result)
        if isinstance(results[0], dict):
            return {name: torch.cat([r[name] for r in results]) for name in results[0]}
        return torch.cat(results)

    @staticmethod
    def _chunks(
        images: Tensor, targets: Tensor | int | None, batch_size: int | None
    ) -> Iterator[tuple[Tensor, Tensor | int | None]]:
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
        step = batch_size or images.shape[0]
        for start in range(0, images.shape[0], step):
            chunk_target = targets[start : start + step] if isinstance(targets, Tensor) else targets
            yield images[start : start + step], chunk_target

    def _resolve_target(self, images: Tensor, target: Tensor | int | None) -> Tensor:
        return resolve_target(self.model, images, target)


def resolve_target(model: nn.Module, images: Tensor, target: Target) -> Tensor:
    """(B,) int64 classes on the images' device: None -> the model's predictions, an int for every image, or
    one per image (checked against the number of classes). Runs one no-grad forward in the model's current mode.
    """
    target = _per_image_targets(target, images.shape[0])
    with torch.no_grad():
        logits = model(images)  # (B, K); also gives K for the range check of given targets
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"model must return (B, num_classes) logits, got {shape}")
    return _as_target(target, logits)


def _detach(result: Tensor | dict[str, Tensor]) -> Tensor | dict[str, Tensor]:
    if isinstance(result, dict):
        return {name: maps.detach() for name, maps in result.items()}
    return result.detach()


def _resize(result: Tensor | dict[str, Tensor], size: tuple[int, int]) -> Tensor | dict[str, Tensor]:
    if isinstance(result, dict):
        return {name: resize_map(maps, size) for name, maps in result.items()}
    return resize_map(result, size)
