"""Images as a model sees them: the one normalisation of attnkit's loaders, image files read with Pillow, and
evenly spaced samples of a data set (what ``attnkit maps`` and the report show).

* :class:`Normalizer`: uint8 (N, C, H, W) pixels -> float32 (x / 255 - mean) / std, the loaders' evaluation
  path (:class:`attnkit.data.DeviceLoader` and :class:`attnkit.data.FolderLoader` normalise every batch with it).
* :func:`read_images`: files or directories -> :class:`LoadedImages` at a model's input size; a directory of class
  sub-folders (``val/cat/...``) gives each image its sub-folder's name, a label where it names one of the classes.
* :func:`dataset_images`: ``count`` evenly spaced images of a data set's split, with labels and boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from ._dataset import evenly_spaced
from .folder import IMAGE_EXTENSIONS, center_crop_image, is_image_file, list_image_files
from .pixels import decode_image

__all__ = [
    "LoadedImages",
    "Normalizer",
    "dataset_images",
    "evenly_spaced",
    "image_files",
    "labelled_image_files",
    "read_images",
]

class Normalizer:
    """uint8 pixels -> float32 ``(x / 255 - mean) / std``, per channel (mean and std on the 0..1 scale).

    Computed as ``x * scale - shift`` with scale and shift rounded once from float64, on ``device``.

    >>> Normalizer([0.5], [0.25])(torch.tensor([[[[0, 255]]]], dtype=torch.uint8)).tolist()
    [[[[-2.0, 2.0]]]]
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: str | torch.device = "cpu") -> None:
        mean_t, std_t = torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64)
        self.scale = (1.0 / (255.0 * std_t)).float().view(1, -1, 1, 1).to(device)  # (1, C, 1, 1)
        self.shift = (mean_t / std_t).float().view(1, -1, 1, 1).to(device)

    def __call__(self, pixels: Tensor, channels_last: bool = False) -> Tensor:
        """(b, C, H, W) uint8 -> normalised float32 (``float()`` keeps the memory format, so reorder while 1 byte)."""
        pixels = pixels.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        return pixels.float().mul_(self.scale).sub_(self.shift)


@dataclass
class LoadedImages:
    """Normalised images with what is known about them."""

    images: Tensor  # (N, C, H, W) float32, normalised with mean/std
    mean: list[float]  # per-channel normalisation, 0..1 scale
    std: list[float]
    labels: Tensor | None = None  # (N,) int64 true classes, when known
    boxes: Tensor | None = None  # (N, 4) int64 object boxes x0, y0, x1, y1 (exclusive ends), when known
    classes: list[str] | None = None  # class names
    names: list[str] = field(default_factory=list)  # one name per image (file name or "test[i]")


def image_files(paths: Sequence[str | Path]) -> list[Path]:
    """Expand directories (their image files, then their class sub-folders') and check that every file exists."""
    return [file for file, _ in labelled_image_files(paths)]


def labelled_image_files(paths: Sequence[str | Path]) -> list[tuple[Path, str | None]]:
    """(file, the name of its class sub-folder or None) for files and directories.

    A directory gives its image files (sorted by name) and the images under each of its sub-folders, listed as an
    image folder's class folders are (:func:`attnkit.data.folder.list_image_files`: ``val/`` of ``val/cat/1.png``,
    ``val/dog/...``; hidden files skipped).
    """
    files: list[tuple[Path, str | None]] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = [(p, None) for p in sorted(path.iterdir()) if p.is_file() and is_image_file(p)]
            for folder in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
                found += [(p, folder.name) for p in list_image_files(folder)]
            if not found:
                raise FileNotFoundError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in directory {path} "
                                        "or in its sub-folders")
            files += found
        elif path.is_file():
            files.append((path, None))
        else:
            raise FileNotFoundError(f"no such image file or directory: {path}")
    return files


def read_images(
    paths: Sequence[str | Path], size: tuple[int, int, int], mean: Sequence[float], std: Sequence[float],
    classes: Sequence[str] | None = None, crop_fraction: float = 1.0,
) -> LoadedImages:
    """Read image files with Pillow as the model expects them: (N, C, H, W) float32, normalised.

    ``size`` is (C, H, W), the run's input size: images are decoded to grey (C = 1) or RGB (C = 3) by
    :func:`attnkit.data.decode_image` (16-bit scaled by its depth, alpha dropped) and transformed as a run's
    evaluation reads image folders (:func:`attnkit.data.folder.center_crop_image`: the shorter side to
    ``H / crop_fraction``, then the centre H x H; ``crop_fraction`` 1 for folders decoded into memory -- an image
    already H x H is kept as it is --, 0.875 for streamed ones); for H != W, cropped about the centre to the aspect
    ratio and resized (bicubic). Then scaled to [0, 1] and normalised with the training data's ``mean`` / ``std``
    (:class:`Normalizer`). Images in class sub-folders (:func:`labelled_image_files`) get ``labels`` when every
    sub-folder is named after one of ``classes``.
    """
    channels, height, width = size
    if channels not in (1, 3):
        raise ValueError(f"can read images for models with 1 or 3 input channels, not {channels}")
    listed = labelled_image_files(paths)
    arrays = []
    for file, _ in listed:
        image = decode_image(file, channels)
        if height == width:  # the evaluation transform of the run's images
            image = center_crop_image(image, height, crop_fraction)
        else:
            image = ImageOps.fit(image, (width, height), method=Image.Resampling.BICUBIC)
        arrays.append(np.asarray(image, dtype=np.uint8).reshape(height, width, channels))
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (N, H, W, C) -> (N, C, H, W)
    folders = [folder for _, folder in listed]
    labels = None
    if classes is not None and all(folder in classes for folder in folders):
        labels = torch.tensor([list(classes).index(folder) for folder in folders], dtype=torch.int64)
    names = [f"{folder}/{file.name}" if folder else file.name for file, folder in listed]
    return LoadedImages(Normalizer(mean, std)(pixels), list(mean), list(std), labels=labels,
                        classes=list(classes) if labels is not None else None, names=names)


def dataset_images(
    name: str, count: int, root: str | Path | None = None, split: str = "test", download: bool = False
) -> LoadedImages:
    """``count`` images of a data set's ``split`` (:func:`attnkit.data.load_dataset`), evenly spaced through it,
    normalised with the data set's own mean/std as its evaluation loader does, with labels, class names and
    object boxes (cluttered-mnist has boxes).

    Evenly spaced rather than the first ``count``: some splits are sorted by class (mnist5k and cluttered-mnist
    are), and their first images would all show one digit.
    """
    from ._dataset import ImageTensors, load_dataset

    data = load_dataset(name, split=split, root=root, download=download)
    if not isinstance(data, ImageTensors):
        raise ValueError(f"data set {name!r} streams its images from files; pass the files with --images instead")
    index = evenly_spaced(len(data), count)
    return LoadedImages(
        Normalizer(data.mean, data.std)(data.images[index]), list(data.mean), list(data.std),
        labels=data.labels[index], boxes=None if data.boxes is None else data.boxes[index],
        classes=list(data.classes), names=[f"{split}[{i}]" for i in index.tolist()],
    )
