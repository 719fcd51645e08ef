"""Your own images in ImageFolder layout (``ROOT/CLASS/IMAGE``): listing, the held-out split, and the transforms.

Class names are the sorted sub-folder names; images are the files under each (recursively, sorted) whose
extension Pillow commonly reads (:data:`IMAGE_EXTENSIONS`); hidden files and folders (``.name``, macOS's ``._name``)
are skipped. Links to directories are followed (a class folder may be, or hold, a link to
images elsewhere), but each real directory is listed once, under the first class (in sorted order) that
reaches it, and never the root or what lies above it: a link loop ends, and no file is listed twice. Two layouts:

* **split folders**: ``ROOT/train/CLASS/...`` and ``ROOT/val/CLASS/...`` (or ``ROOT/test``): ``train`` for
  ``split="train"``, ``val`` (or ``test``) for ``"test"``. The classes are ``train/``'s; ``val/``'s folders are
  labelled by name (a class ``val/`` lacks has no test images; a class only ``val/`` has is an error naming it);
* **one tree**: ``ROOT/CLASS/...`` (or ``ROOT/train/CLASS/...`` without ``val/``): about ``val_fraction`` of each
  class (default 0.1) is held out as the test split. Each file's split is decided by a hash of its path relative
  to the tree (:func:`split_position`): it is held out when that hash, as a fraction of [0, 1), is below
  ``val_fraction``. So the split is fixed (the same for every seed, run and machine, wherever the folder is),
  per class, and adding or removing images never moves another image; the share held out per class is
  ``val_fraction`` on average, not exactly. A class of two or more images with none held out holds out its
  lowest-hashed one (and one with all held out trains on its highest-hashed one), so every such class is tested.

Every image is decoded to 8-bit grey or RGB by :func:`attnkit.data.pixels.decode_image` (16-bit scaled by its bit
depth, alpha dropped); ``channels`` says which (``"auto"``: grey when every image is, see :func:`pixels.grey_folder`).

The transforms are the standard ImageNet ones, written with Pillow and NumPy (torchvision is not available):

* training: random resized crop (Szegedy et al. 2015) -- a box with area a uniform fraction in ``scale``
  = (0.08, 1) of the image and aspect ratio log-uniform in ``ratio`` = (3/4, 4/3), ten tries, else the
  largest centred box within the ratio range -- resized to ``size`` x ``size`` (bilinear, antialiased), then
  a horizontal flip with probability 1/2;
* evaluation: resize the shorter side to ``int(size / 0.875)`` (256 for 224), then the centre ``size`` x ``size``.

Normalisation defaults to the ImageNet statistics (mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225); for grey
images their averages 0.449 and 0.226, as timm uses), the usual choice for natural photographs; pass your own to
:func:`load_image_folder`, or measure them (:func:`attnkit.data.folder_setup.measure_normalization`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ._dataset import ImageTensors, register_dataset
from .pixels import decode_image, grey_folder

__all__ = [
    "DEFAULT_VAL_FRACTION",
    "IMAGE_EXTENSIONS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Channels",
    "ImageFolderData",
    "center_crop_image",
    "folder_layout",
    "imagenet_normalization",
    "is_image_file",
    "list_image_files",
    "load_image",
    "load_image_folder",
    "random_resized_crop_box",
    "random_resized_crop_image",
    "split_position",
]

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_CROP_FRACTION = 0.875  # evaluation resizes the shorter side to size / 0.875, then takes the centre
DEFAULT_VAL_FRACTION = 0.1  # one tree: share of each class held out for evaluation
Channels = Literal["auto", 1, 3]  # how images are decoded: auto (grey if every image is) | 1 (grey) | 3 (RGB)


def imagenet_normalization(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet's mean and std, for RGB or (averaged over the channels) grey images."""
    if channels == 1:
        return (round(sum(IMAGENET_MEAN) / 3, 3),), (round(sum(IMAGENET_STD) / 3, 3),)
    return IMAGENET_MEAN, IMAGENET_STD


@dataclass
class ImageFolderData:
    """A list of image files with class labels; decoded when a loader reads them, or once into ``pixels``."""

    root: Path  # the class directory the samples were listed from
    samples: list[tuple[Path, int]]  # (image file, class index), sorted by class then path
    classes: list[str]  # sorted class sub-folder names
    mean: tuple[float, ...] = IMAGENET_MEAN  # per-channel mean on the 0..1 scale
    std: tuple[float, ...] = IMAGENET_STD
    name: str = "folder"
    channels: int = 3  # every image is decoded to this many channels: 1 (grey) or 3 (RGB)
    details: dict[str, Any] = field(default_factory=dict)  # how it was read (layout, val_fraction, ...), for the run
    pixels: Tensor | None = None  # (N, C, S, S) uint8: the images decoded once (folder_setup.decode_folder)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        return self.channels

    @property
    def input_size(self) -> tuple[int, int, int] | None:
        """(C, S, S) once decoded; before, None: files differ in size and the loader's ``image_size`` decides."""
        return None if self.pixels is None else tuple(self.pixels.shape[1:])

    def subset(self, index: Tensor) -> ImageFolderData:
        """The files (and decoded pixels) at ``index``."""
        pixels = None if self.pixels is None else self.pixels[index]
        return dataclasses.replace(self, samples=[self.samples[i] for i in index.tolist()], pixels=pixels)

    def as_tensors(self) -> ImageTensors:
        """The decoded images as an in-memory set (for :class:`~attnkit.data.DeviceLoader`)."""
        if self.pixels is None:
            raise ValueError(f"the images of {self.root} are not decoded; call folder_setup.decode_folder first")
        labels = torch.tensor([label for _, label in self.samples], dtype=torch.int64)
        return ImageTensors(self.pixels, labels, list(self.classes), self.mean, self.std, self.name)


def load_image_folder(
    root: str | os.PathLike,
    split: str = "train",
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    *,
    val_fraction: float | None = None,
    channels: Channels = "auto",
    classes: list[str] | None = None,
) -> ImageFolderData:
    """List the images of one split of ``root`` (see the module docstring for the layouts accepted).

    Args:
        root: the folder: ``train/`` and ``val/`` (or ``test/``) of class folders, or one tree of class folders.
        split: ``"train"`` or ``"test"``.
        mean, std: normalisation (0..1 scale); default ImageNet's (:func:`imagenet_normalization`).
        val_fraction: one tree: the share of each class held out as the test split (default 0.1); an error when
            the folder has its own ``val/`` or ``test/``.
        channels: 1 (grey), 3 (RGB) or ``"auto"``: 1 when every image of the split is grey (judged on at most
            1,000 spread evenly), else 3. Give the training split's choice when listing the test split.
        classes: the class names to label by (a trained model's), the folders matched to them by name; default
            the split's own class folders (``val/``: ``train/``'s).
    """
    root = Path(root).expanduser()
    directory, held_out = _layout(root, split, val_fraction)
    present = _class_folders(directory)
    if classes is not None:  # a trained model's classes: the folders are labelled by them, matched by name
        classes = list(classes)
        extra = sorted(set(present) - set(classes))
        if extra:
            raise ValueError(f"{directory} has class folder(s) {', '.join(extra)} not among the model's classes "
                             f"({', '.join(classes)}); remove them, or evaluate a model trained on them")
    elif held_out is None and split != "train":  # val/ is labelled by train/'s classes, matched by name
        classes = _class_folders(_layout(root, "train", None)[0])
        extra = sorted(set(present) - set(classes))
        if extra:
            raise ValueError(f"{directory} has class folder(s) {', '.join(extra)} that {root / 'train'} lacks; a "
                             "model trained on train/ cannot predict them: add them to train/ or remove them")
    else:
        classes = present
    samples = []
    # Directories already listed: the root and every class folder, then whatever the walks reach.
    visited = {(st.st_dev, st.st_ino) for st in (os.stat(directory / name) for name in ("", *present))}
    real_root = os.path.realpath(directory)
    for label, name in enumerate(classes):
        if name not in present:  # a class val/ has no folder for: no test images of it
            continue
        files = _image_files(directory / name, visited, real_root)
        if not files:
            raise FileNotFoundError(
                f"class folder {directory / name} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                "add some or remove the folder"
            )
        if held_out is not None:
            files = _held_out(files, directory, held_out, keep_test=split == "test")
        samples += [(f, label) for f in files]
    if not samples:
        raise FileNotFoundError(f"the {split} split of {root} holds no images: with val_fraction {held_out} every "
                                "class is too small to hold one out; add images or give the folder a val/ split")
    if channels == "auto":
        channels = 1 if grey_folder([path for path, _ in samples]) else 3
    if channels not in (1, 3):
        raise ValueError(f"channels must be auto, 1 or 3, got {channels!r}")
    default_mean, default_std = imagenet_normalization(channels)
    mean, std = tuple(mean or default_mean), tuple(std or default_std)
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean and std need {channels} value(s) for {channels}-channel images, got {mean}, {std}")
    layout = {"layout": "split folders", "directory": str(directory)} if held_out is None else \
        {"layout": "one tree", "directory": str(directory), "val_fraction": held_out}
    return ImageFolderData(directory, samples, classes, mean, std, channels=channels, details=layout)


def list_image_files(folder: str | os.PathLike) -> list[Path]:
    """The image files under ``folder`` (recursively, sorted), listed as a class folder is: hidden files and
    folders skipped, links to directories followed once, never back into ``folder`` or above it."""
    folder = Path(folder)
    status = os.stat(folder)
    return _image_files(folder, {(status.st_dev, status.st_ino)}, os.path.realpath(folder))


def is_image_file(path: Path) -> bool:
    """A file an image folder lists: an image extension (:data:`IMAGE_EXTENSIONS`), not hidden."""
    return path.name.lower().endswith(IMAGE_EXTENSIONS) and not path.name.startswith(".")


def _class_folders(directory: Path) -> list[str]:
    """The sorted class sub-folder names of ``directory`` (hidden ones skipped); an error when there are none."""
    classes = sorted(entry.name for entry in os.scandir(directory) if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise FileNotFoundError(f"{directory} has no class sub-folders; expected {directory}/CLASS_NAME/IMAGE files")
    return classes


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
            if entry.name.startswith("."):  # hidden files and folders, macOS's ._NAME resource forks among them
                continue
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


def _layout(root: Path, split: str, val_fraction: float | None) -> tuple[Path, float | None]:
    """(the class directory of ``split``, the held-out fraction when one tree is split, else None)."""
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist; give a directory of class sub-folders of images")
    if val_fraction is not None and not (isinstance(val_fraction, (int, float)) and 0 < val_fraction < 1):
        raise ValueError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")
    evaluation = _evaluation_folder(root)
    if evaluation is not None:
        if val_fraction is not None:
            raise ValueError(f"{root} has its own {evaluation.name}/ split; val_fraction applies to one tree only, drop it")
        return (root / "train" if split == "train" else evaluation), None
    tree = root / "train" if (root / "train").is_dir() else root
    return tree, DEFAULT_VAL_FRACTION if val_fraction is None else float(val_fraction)


def _evaluation_folder(root: Path) -> Path | None:
    """``root/val`` (or ``root/test``) when ``root`` has split folders (``train/`` beside it), else None."""
    evaluation = next((root / name for name in ("val", "test") if (root / name).is_dir()), None)
    return evaluation if (root / "train").is_dir() else None


def folder_layout(root: str | os.PathLike) -> str:
    """``"split folders"`` (``train/`` and ``val/`` or ``test/``) or ``"one tree"`` (split by ``val_fraction``)."""
    return "one tree" if _evaluation_folder(Path(root).expanduser()) is None else "split folders"


def _held_out(files: list[Path], directory: Path, fraction: float, keep_test: bool) -> list[Path]:
    """One class's files of the test (``keep_test``) or training split of a tree split by ``fraction``.

    Each file decides alone: it is held out when :func:`split_position` of its path relative to the tree is below
    ``fraction``, so adding or removing files never moves another one. A class of two or more files with none
    below (or all below) holds out its lowest-placed file (keeps its highest-placed one), so that every such class
    is both trained on and tested.
    """
    if len(files) < 2:
        return [] if keep_test else list(files)
    position = {f: split_position(f.relative_to(directory).as_posix()) for f in files}
    chosen = {f for f in files if position[f] < fraction}
    if not chosen:
        chosen = {min(files, key=position.__getitem__)}
    elif len(chosen) == len(files):
        chosen.discard(max(files, key=position.__getitem__))
    return [f for f in files if (f in chosen) == keep_test]


def split_position(relative_path: str) -> float:
    """Where a file falls in [0, 1) for the one-tree split: the SHA-256 of its path relative to the tree (e.g.
    ``"cat/0001.png"``) read as a fraction. The same on every machine, for every seed, wherever the folder is."""
    return int(hashlib.sha256(relative_path.encode()).hexdigest(), 16) / 2**256


@register_dataset("folder")
def folder(split: str, root, download: bool, mirror: str | None, *, val_fraction: float | None = None,
           channels: Channels = "auto") -> ImageFolderData:
    if root is None:
        raise ValueError("data set 'folder' needs root= the directory of your images (ROOT/CLASS/IMAGE files)")
    if download:
        raise ValueError("data set 'folder' reads your own images and cannot download; drop download=True")
    return load_image_folder(root, split, val_fraction=val_fraction, channels=channels)


def load_image(path: Path, channels: int = 3) -> Image.Image:
    """Decode ``path`` as an 8-bit grey (1) or RGB (3) image (see :mod:`.pixels`; errors name the file)."""
    return decode_image(path, channels)


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
