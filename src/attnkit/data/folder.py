"""Your own images in ImageFolder layout (``ROOT/CLASS/IMAGE``), decoded with Pillow while streaming.

Class names are the sorted sub-folder names; images are the files under each (recursively, sorted) whose
extension Pillow commonly reads. Links to directories are followed (a class folder may be, or hold, a link to
images elsewhere), but each real directory is listed once, under the first class (in sorted order) that
reaches it, and never the root or what lies above it: a link loop ends, and no file is listed twice. If ``ROOT`` has a ``train`` sub-folder it is taken to hold split folders:
``ROOT/train`` for ``split="train"`` and ``ROOT/test`` (or ``ROOT/val``, as in ImageNet) for ``"test"``;
otherwise ``ROOT`` itself is the class directory for either split.

The transforms are the standard ImageNet ones, written with Pillow and NumPy (torchvision is not available):

* training: random resized crop (Szegedy et al. 2015) -- a box with area a uniform fraction in ``scale``
  = (0.08, 1) of the image and aspect ratio log-uniform in ``ratio`` = (3/4, 4/3), ten tries, else the
  largest centred box within the ratio range -- resized to ``size`` x ``size`` (bilinear, antialiased), then
  a horizontal flip with probability 1/2;
* evaluation: resize the shorter side to ``int(size / 0.875)`` (256 for 224), then the centre ``size`` x ``size``.

Normalisation defaults to the ImageNet statistics (mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)),
the usual choice for natural photographs; pass your own to :func:`load_image_folder`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

from ._dataset import register_dataset

__all__ = [
    "IMAGE_EXTENSIONS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageFolderData",
    "center_crop_image",
    "load_image",
    "load_image_folder",
    "random_resized_crop_box",
    "random_resized_crop_image",
]

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_CROP_FRACTION = 0.875  # evaluation resizes the shorter side to size / 0.875, then takes the centre


@dataclass
class ImageFolderData:
    """A list of image files with class labels; images are decoded only when a loader reads them."""

    root: Path  # the class directory the samples were listed from
    samples: list[tuple[Path, int]]  # (image file, class index), sorted by class then path
    classes: list[str]  # sorted class sub-folder names
    mean: tuple[float, ...] = IMAGENET_MEAN  # per-channel (RGB) mean on the 0..1 scale
    std: tuple[float, ...] = IMAGENET_STD
    name: str = "folder"

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        return 3  # every image is decoded to RGB (load_image)

    @property
    def input_size(self) -> None:
        """Files differ in size: the loader's ``image_size`` decides what the model sees."""
        return None

    def subset(self, index: Tensor) -> ImageFolderData:
        """The files at ``index``."""
        return dataclasses.replace(self, samples=[self.samples[i] for i in index.tolist()])


def load_image_folder(
    root: str | os.PathLike,
    split: str = "train",
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> ImageFolderData:
    """List the images of ``root`` (see the module docstring for the layouts accepted)."""
    directory = _split_directory(Path(root).expanduser(), split)
    classes = sorted(entry.name for entry in os.scandir(directory) if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise FileNotFoundError(f"{directory} has no class sub-folders; expected {directory}/CLASS_NAME/IMAGE files")
    samples = []
    # Directories already listed: the root and every class folder, then whatever the walks reach.
    visited = {(st.st_dev, st.st_ino) for st in (os.stat(directory / name) for name in ("", *classes))}
    root = os.path.realpath(directory)
    for label, name in enumerate(classes):
        files = _image_files(directory / name, visited, root)
        if not files:
            raise FileNotFoundError(
                f"class folder {directory / name} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                "add some or remove the folder"
            )
        samples += [(f, label) for f in files]
    return ImageFolderData(directory, samples, classes, tuple(mean), tuple(std))


def _image_files(folder: Path, visited: set[tuple[int, int]], root: str) -> list[Path]:
    """The files under ``folder`` with an image extension, sorted.

    Links to directories are followed, but never into a directory already listed (``visited``: (device, inode)
    of every directory seen so far, shared by all classes) nor into ``root`` or one of its ancestors (real
    paths): a link loop (``CLASS/loop -> ..``) ends, and no file is listed twice.
    """
    files: list[Path] = []
    pending = [folder]
    while pending:
        directory = pending.pop()
        with os.scandir(directory) as listing:  # an unreadable folder is an error naming it
            entries = sorted(listing, key=lambda entry: entry.name)  # the first link (by name) to a directory wins
        for entry in entries:
            if not entry.is_dir():  # files, and links to files (broken links included: decoding names them)
                if entry.name.lower().endswith(IMAGE_EXTENSIONS):
                    files.append(Path(entry.path))
                continue
            status = os.stat(entry.path)
            identity = (status.st_dev, status.st_ino)
            if identity in visited:
                continue
            if entry.is_symlink():
                real = os.path.realpath(entry.path)
                if os.path.commonpath([root, real]) == real:  # root itself or above it: everything again
                    continue
            visited.add(identity)
            pending.append(Path(entry.path))
    return sorted(files)


def _split_directory(root: Path, split: str) -> Path:
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist; pass root= a directory of class sub-folders")
    if not (root / "train").is_dir():
        return root
    for name in (("train",) if split == "train" else ("test", "val")):
        if (root / name).is_dir():
            return root / name
    raise FileNotFoundError(f"{root} has a train/ folder but no test/ or val/ folder for split {split!r}")


@register_dataset("folder")
def folder(split: str, root, download: bool, mirror: str | None) -> ImageFolderData:
    if root is None:
        raise ValueError("data set 'folder' needs root= the directory of your images (ROOT/CLASS/IMAGE files)")
    if download:
        raise ValueError("data set 'folder' reads your own images and cannot download; drop download=True")
    return load_image_folder(root, split)


def load_image(path: Path) -> Image.Image:
    """Decode ``path`` as an RGB image (errors name the file)."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except Exception as err:  # Pillow's decoders raise many types on broken or hostile files; all mean "bad file"
        raise ValueError(f"cannot decode image {path}: {err}") from err


def random_resized_crop_box(
    width: int,
    height: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """(left, top, crop width, crop height) of a random resized crop of a ``width`` x ``height`` image."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    # Fallback: the whole image, narrowed to the nearest allowed aspect ratio, centred.
    w, h = width, height
    if width / height < ratio[0]:
        h = round(width / ratio[0])
    elif width / height > ratio[1]:
        w = round(height * ratio[1])
    return (width - w) // 2, (height - h) // 2, w, h


def random_resized_crop_image(
    image: Image.Image,
    size: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = True,
) -> Image.Image:
    """Training transform: random resized crop to ``size`` x ``size``, then a horizontal flip with p = 1/2."""
    left, top, w, h = random_resized_crop_box(image.width, image.height, rng, scale, ratio)
    image = image.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))
    if flip and rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image


def center_crop_image(image: Image.Image, size: int, crop_fraction: float = EVAL_CROP_FRACTION) -> Image.Image:
    """Evaluation transform: shorter side to ``int(size / crop_fraction)``, then the centre ``size`` x ``size``."""
    short = int(size / crop_fraction)
    scale = short / min(image.width, image.height)
    resized = (max(size, round(image.width * scale)), max(size, round(image.height * scale)))
    image = image.resize(resized, Image.Resampling.BILINEAR)
    left = int(round((image.width - size) / 2.0))
    top = int(round((image.height - size) / 2.0))
    return image.crop((left, top, left + size, top + size))
