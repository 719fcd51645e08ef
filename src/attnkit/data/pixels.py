"""Image files to 8-bit grey or RGB pixels, whatever their mode: the one decoder of the folder loaders and of
``attnkit maps --images``.

* 8-bit modes (``L``, ``RGB``, ``P`` palettes, ``CMYK``, ``YCbCr``, ...) convert with Pillow.
* More than 8 bits (``I;16`` 16-bit grey PNG/TIFF, ``I`` 32-bit integer): scaled by the image's bit depth,
  ``v * 255 / (2**bits - 1)`` rounded, so the full range maps to 0..255 and nothing is clipped (Pillow's own
  ``convert("L")`` clips every value above 255). ``I`` is taken as 16 bits for PNG (its largest depth) and as
  the file's BitsPerSample for TIFF (32 when absent). Floating-point (``F``) images are refused: they have no
  bit depth to scale by.
* Alpha is dropped, not composited (``RGBA`` -> ``RGB``, ``LA`` -> ``L``, as torchvision's ImageFolder reads
  them via Pillow's ``convert("RGB")``), so a model sees what a torchvision-trained teacher saw.
* An image is *grey* when its mode holds one value per pixel (``1``, ``L``, ``LA``, ``I``, ``I;16``...);
  palette images count as colour. Grey images read as RGB repeat their one channel; colour images read as
  grey take Pillow's luma (ITU-R 601: 0.299 R + 0.587 G + 0.114 B).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ._dataset import evenly_spaced

__all__ = ["GREY_MODES", "decode_image", "grey_folder", "image_is_grey", "to_8bit"]

GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N"})
_HIGH_DEPTH = ("I", "I;16", "I;16L", "I;16B", "I;16N")
_TIFF_BITS_PER_SAMPLE = 258


def decode_image(path: str | os.PathLike, channels: int) -> Image.Image:
    """The image at ``path`` as 8-bit ``L`` (``channels=1``) or ``RGB`` (``channels=3``); errors name the file."""
    if channels not in (1, 3):
        raise ValueError(f"images are read with 1 or 3 channels, not {channels!r}")
    try:
        with Image.open(path) as image:
            return to_8bit(image).convert("L" if channels == 1 else "RGB")
    except Exception as err:  # Pillow's decoders raise many types on broken or hostile files; all mean "bad file"
        raise ValueError(f"cannot decode image {path}: {err}") from None


def to_8bit(image: Image.Image) -> Image.Image:
    """``image`` with more than 8 bits per value scaled to ``L`` by its bit depth; 8-bit modes as they are."""
    if image.mode == "F":
        raise ValueError("floating-point (mode F) images have no bit depth to scale by; save them as 8 or 16-bit")
    if image.mode not in _HIGH_DEPTH:
        return image
    values = np.asarray(image).astype(np.int64)  # I;16B is big-endian uint16, I is int32: one dtype for both
    if values.size and values.min() < 0:
        raise ValueError(f"mode {image.mode} image with negative values; save it as unsigned 8 or 16-bit")
    top = (1 << _bit_depth(image)) - 1
    if values.size and values.max() > top:
        raise ValueError(f"values up to {values.max()} exceed the {_bit_depth(image)}-bit range of its mode")
    scaled = (values * 255 + top // 2) // top  # round(v * 255 / top), in integers
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


def _bit_depth(image: Image.Image) -> int:
    if image.mode.startswith("I;16"):
        return 16
    if image.format == "PNG":  # Pillow opens 16-bit grey PNGs as I in some versions; PNG has no deeper values
        return 16
    bits = getattr(image, "tag_v2", {}).get(_TIFF_BITS_PER_SAMPLE)  # TIFF
    bits = bits[0] if isinstance(bits, Sequence) else bits
    return int(bits) if bits else 32


def image_is_grey(path: str | os.PathLike) -> bool:
    """Whether the file holds a grey image (read from its header only; see the module docstring)."""
    try:
        with Image.open(path) as image:
            return image.mode in GREY_MODES
    except Exception as err:
        raise ValueError(f"cannot decode image {path}: {err}") from None


def grey_folder(paths: Sequence[Path], limit: int = 1000) -> bool:
    """Whether the images at ``paths`` are all grey, judged on at most ``limit`` of them spread evenly."""
    return bool(paths) and all(image_is_grey(paths[i]) for i in evenly_spaced(len(paths), limit).tolist())
