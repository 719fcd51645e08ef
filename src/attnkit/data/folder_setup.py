"""An image folder made ready for a run: channels, normalisation, the held-out split, and memory or streaming.

:func:`prepare_folder` takes the decisions in this order, each recorded (``ImageFolderData.details``, then the
run's ``run.json``) so that evaluating or explaining the run later reads its images the same way:

1. **channels** -- ``"auto"``: 1 (grey) when every training image is grey, else 3 (:func:`attnkit.data.pixels.grey_folder`);
2. **normalisation** -- ``"measured"`` (default): the per-channel mean and std of the training split, measured on
   at most :data:`STATS_IMAGES` images spread evenly through it (all of a smaller split), each decoded as the
   evaluation sees it; before ``train_limit``, so runs on subsets of one folder (a teacher and its students)
   share their normalisation. ``"imagenet"``: ImageNet's statistics, for natural photographs and for models
   pretrained on ImageNet;
3. **memory or streaming** -- when the decoded splits (N x C x S x S bytes) fit in ``memory_budget_mb``, every
   image is decoded once (:func:`decode_folder`: shorter side to S, the centre S x S) and the run trains from
   the device (:class:`~attnkit.data.DeviceLoader`: pad + random crop + flip, as for CIFAR). Larger folders
   stream through DataLoader workers (:class:`~attnkit.data.FolderLoader`: random resized crop + flip for
   training, the 0.875 centre crop for evaluation, as for ImageNet).

Why pad-crop-flip in memory: the stored images are already at the training size, so a random resized crop
would enlarge parts of a reduced image (blur); padding and cropping keeps every pixel at its scale, is what
attnkit's CIFAR recipes and published numbers use, and makes a folder of 32 x 32 PNGs train exactly as the
built-in CIFAR-10 does.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from ._dataset import channel_stats, evenly_spaced, fixed_subset
from .folder import Channels, ImageFolderData, folder_layout, imagenet_normalization, load_image_folder
from .loader import DecodedFolder

__all__ = ["STATS_IMAGES", "Normalization", "decode_folder", "measure_normalization", "prepare_folder"]

Normalization = Literal["measured", "imagenet"]  # a folder's mean/std: its own training split's, or ImageNet's
STATS_IMAGES = 1000  # the normalisation is measured on at most this many training images, spread evenly
_DECODE_BATCH = 64
_WORKER_MIN_BATCHES = 4  # fewer batches than this decode in the calling process


def decode_folder(data: ImageFolderData, size: int, workers: int = 0) -> ImageFolderData:
    """``data`` with every image decoded once into ``pixels`` (N, C, size, size) uint8: shorter side to
    ``size``, then the centre ``size`` x ``size`` (an image already ``size`` x ``size`` is kept as it is)."""
    return dataclasses.replace(data, pixels=_decode(data, range(len(data)), size, workers))


def measure_normalization(data: ImageFolderData, size: int, workers: int = 0,
                          limit: int = STATS_IMAGES) -> tuple[tuple[float, ...], tuple[float, ...], int]:
    """(mean, std, images used): per-channel statistics on the 0..1 scale of at most ``limit`` images of
    ``data`` spread evenly through it, decoded as :func:`decode_folder` does. Sums are exact (int64)."""
    index = evenly_spaced(len(data), limit)
    pixels = data.pixels[index] if data.pixels is not None else _decode(data, index.tolist(), size, workers)
    return (*channel_stats(pixels), len(index))


def prepare_folder(
    root: str, splits: Sequence[str], image_size: int, *, val_fraction: float | None = None,
    channels: Channels = "auto", normalization: Normalization = "measured", memory_budget_mb: float = 1024,
    workers: int = 0, limits: Mapping[str, int | None] | None = None, recorded: Mapping[str, Any] | None = None,
) -> list[ImageFolderData]:
    """The ``splits`` of the folder ``root``, ready for loaders (see the module docstring for the decisions).

    Args:
        root: the image folder (:func:`~attnkit.data.folder.load_image_folder`).
        splits: ``"train"`` and/or ``"test"``.
        image_size: the side S of the images the model sees.
        val_fraction, channels: as for :func:`~attnkit.data.folder.load_image_folder`.
        normalization: ``"measured"`` or ``"imagenet"``.
        memory_budget_mb: decode into memory when the listed splits take at most this many MiB at S x S (0: never).
        workers: decoding processes (0: in this process).
        limits: ``{split: N}``: a fixed subset of N images of a split (:func:`~attnkit.data.fixed_subset`).
        recorded: decisions taken before, used as they are: the ``folder`` record of a run that read this folder
            (``channels``, ``val_fraction``, ``in_memory``, ``normalization``) with its ``mean``/``std``, so that an
            evaluation reads the images as training did; or only ``channels``, ``mean``, ``std`` of a model trained
            on other images; ``classes``: the model's, which the class folders are labelled by (matched by name).
    """
    limits, recorded = dict(limits or {}), dict(recorded or {})
    channels = recorded.get("channels", channels)
    if folder_layout(root) == "one tree":  # a one-tree run's split; a folder with its own val/ is split by it
        val_fraction = recorded.get("val_fraction", val_fraction)
    listed: dict[str, ImageFolderData] = {}
    for split in splits:  # the first split listed decides "auto" channels (the training split, when listed)
        listed[split] = load_image_folder(root, split, val_fraction=val_fraction, channels=channels,
                                          classes=recorded.get("classes") or None)
        channels = listed[split].channels
    if "mean" in recorded:
        mean, std, how = tuple(recorded["mean"]), tuple(recorded["std"]), recorded.get("normalization", "recorded")
    elif normalization == "imagenet":
        (mean, std), how = imagenet_normalization(channels), "imagenet"
    else:
        train = listed.get("train") or load_image_folder(root, "train", val_fraction=val_fraction, channels=channels)
        mean, std, used = measure_normalization(train, image_size, workers)
        how = f"measured on {used} of {len(train)} training images"
    chosen = {split: fixed_subset(data, limits.get(split)) for split, data in listed.items()}
    decoded_bytes = sum(len(data) for data in chosen.values()) * channels * image_size * image_size
    in_memory = recorded.get("in_memory")
    if in_memory is None:
        in_memory = decoded_bytes <= memory_budget_mb * 2**20
    details = {**next(iter(listed.values())).details, "channels": channels, "normalization": how,
               "in_memory": bool(in_memory)}
    ready = []
    for data in chosen.values():
        data = dataclasses.replace(data, mean=mean, std=std, details=dict(details, images=len(data)))
        ready.append(decode_folder(data, image_size, workers) if in_memory else data)
    return ready


def _decode(data: ImageFolderData, index: Sequence[int], size: int, workers: int) -> torch.Tensor:
    """(len(index), C, size, size) uint8: the images at ``index`` through DataLoader workers."""
    dataset = DecodedFolder(data, size, augment=False, flip=False, seed=0, crop_fraction=1.0)
    keys = [(int(i), 0, position) for position, i in enumerate(index)]
    batches = [keys[start:start + _DECODE_BATCH] for start in range(0, len(keys), _DECODE_BATCH)]
    # Starting a worker costs more than decoding a few batches of small images; never more workers than cores.
    workers = 0 if len(batches) < _WORKER_MIN_BATCHES else min(workers, os.cpu_count() or 1)
    pixels = torch.empty(len(keys), size, size, data.channels, dtype=torch.uint8)  # (N, S, S, C)
    done = 0
    for images, _ in torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=workers):
        pixels[done:done + len(images)] = images
        done += len(images)
    return pixels.permute(0, 3, 1, 2).contiguous()  # (N, C, S, S)
