"""``cluttered-mnist``: each mnist5k digit at a random place on a larger canvas among fragments of other digits.

After the cluttered MNIST of Mnih et al. (2014, "Recurrent Models of Visual Attention"), which put a digit and
8x8 pieces of other digits on a 60x60 canvas. Here, per image:

1. the 28x28 digit goes to a uniformly random position on a 48x48 canvas;
2. ``num_patches`` (6) fragments of 8x8 pixels are cut from *other* digits of the same split, each centred on a
   random ink pixel of its source (so every fragment shows a piece of stroke), and placed at random positions
   that do not overlap the digit's box (fragments may overlap each other; overlaps keep the brighter pixel);
3. the ground-truth box is the tight bounding box of the digit's own ink in canvas coordinates,
   (x0, y0, x1, y1) with exclusive ends.

So inside the box the image *is* the digit, and everything outside it is clutter: attention maps can be scored
by the pointing game and the energy inside the box. Why 48x48: the ink box (at most 20x20 in MNIST) covers at
most a sixth of the canvas, so a map that ignores the digit scores low; 48 = 3 x 16 keeps the feature maps of
CIFAR-style networks whole (48 -> 24 -> 12); and the images cost 2.25x the pixels of CIFAR rather than 3.5x
for 60x60, which matters for training on a CPU. Six fragments put about as much clutter ink on the canvas as
the digit has, enough to make localisation necessary while the digit stays the only complete shape.

Deterministic: the generator is seeded with (``seed``, split). Labels are those of the mnist5k split, sample by
sample; mean and std are those of the cluttered training split.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from ._dataset import ImageTensors, channel_stats, register_dataset
from .mnist5k import mnist5k_arrays

__all__ = ["clutter_digits", "ink_box", "load_cluttered_mnist"]

CANVAS_SIZE = 48  # canvas height and width in pixels
NUM_PATCHES = 6  # clutter fragments per image
PATCH_SIZE = 8  # fragment height and width in pixels
SEED = 0  # default generator seed (combined with the split)


def ink_box(digit: np.ndarray) -> tuple[int, int, int, int]:
    """Tight box (x0, y0, x1, y1), exclusive ends, of the non-zero pixels of a (H, W) image."""
    rows, cols = np.flatnonzero(digit.any(1)), np.flatnonzero(digit.any(0))
    if rows.size == 0:
        raise ValueError("a digit without ink (all pixels 0) has no box; remove it before cluttering")
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def clutter_digits(
    digits: np.ndarray,
    rng: np.random.Generator,
    canvas_size: int = CANVAS_SIZE,
    num_patches: int = NUM_PATCHES,
    patch_size: int = PATCH_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """Place each (H, W) digit of ``digits`` (N, H, W) uint8 on a cluttered canvas.

    Returns images (N, canvas_size, canvas_size) uint8 and boxes (N, 4) int64 (x0, y0, x1, y1, exclusive).
    """
    n, h, w = digits.shape
    if n < 2 and num_patches:
        raise ValueError("clutter is cut from *other* digits, so at least 2 digits are needed")
    if not 0 < patch_size <= min(h, w) or canvas_size < max(h, w) + 2 * patch_size - 1:
        raise ValueError(
            f"need 0 < patch_size <= digit size and canvas_size >= digit size + 2 * patch_size - 1 "
            f"(so a fragment always fits beside the digit), got canvas {canvas_size}, patch {patch_size}, digits {h}x{w}"
        )
    images = np.zeros((n, canvas_size, canvas_size), dtype=np.uint8)
    boxes = np.empty((n, 4), dtype=np.int64)
    for i in range(n):
        top, left = (int(v) for v in rng.integers(0, canvas_size - np.array([h, w]) + 1))
        x0, y0, x1, y1 = ink_box(digits[i])
        box = (left + x0, top + y0, left + x1, top + y1)
        for (py, px), fragment in zip(_free_positions(rng, box, canvas_size, patch_size, num_patches),
                                      _fragments(rng, digits, i, num_patches, patch_size)):
            np.maximum(images[i, py:py + patch_size, px:px + patch_size], fragment,
                       out=images[i, py:py + patch_size, px:px + patch_size])
        images[i, top:top + h, left:left + w] = np.maximum(images[i, top:top + h, left:left + w], digits[i])
        boxes[i] = box
    return images, boxes


def _fragments(rng: np.random.Generator, digits: np.ndarray, own: int, count: int, size: int) -> list[np.ndarray]:
    """``count`` (size, size) pieces of digits other than ``own``, each centred on one of its ink pixels."""
    n, h, w = digits.shape
    pieces = []
    for _ in range(count):
        source = int(rng.integers(0, n - 1))
        source += source >= own  # uniform over the other digits
        rows, cols = np.nonzero(digits[source])
        k = int(rng.integers(0, rows.size))
        top = min(max(rows[k] - size // 2, 0), h - size)
        left = min(max(cols[k] - size // 2, 0), w - size)
        pieces.append(digits[source, top:top + size, left:left + size])
    return pieces


def _free_positions(rng: np.random.Generator, box, canvas_size: int, size: int, count: int) -> list[tuple[int, int]]:
    """``count`` random top-left corners of (size, size) squares on the canvas that do not overlap ``box``."""
    x0, y0, x1, y1 = box
    found: list[tuple[int, int]] = []
    while len(found) < count:  # rejection sampling; clutter_digits checked that free corners exist
        ys, xs = rng.integers(0, canvas_size - size + 1, size=(2, 4 * count))
        free = (xs + size <= x0) | (xs >= x1) | (ys + size <= y0) | (ys >= y1)
        found += [(int(y), int(x)) for y, x in zip(ys[free], xs[free])]
    return found[:count]


@lru_cache(maxsize=8)
def _cluttered_arrays(split: str, seed: int, canvas_size: int, num_patches: int, patch_size: int):
    digits, labels, _, _ = mnist5k_arrays(split)
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    images, boxes = clutter_digits(digits[:, 0], rng, canvas_size, num_patches, patch_size)
    arrays = images[:, None], labels, boxes  # (N, 1, S, S), (N,), (N, 4)
    for a in arrays:
        a.flags.writeable = False  # shared by every caller through the cache
    return arrays


@lru_cache(maxsize=8)
def _train_stats(*settings) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return channel_stats(_cluttered_arrays("train", *settings)[0])


def load_cluttered_mnist(
    split: str = "train",
    *,
    seed: int = SEED,
    canvas_size: int = CANVAS_SIZE,
    num_patches: int = NUM_PATCHES,
    patch_size: int = PATCH_SIZE,
) -> ImageTensors:
    """Cluttered mnist5k with non-default settings (``load_dataset("cluttered-mnist")`` uses the defaults).

    >>> data = load_cluttered_mnist("test")
    >>> data.images.shape, data.boxes.shape
    (torch.Size([1000, 1, 48, 48]), torch.Size([1000, 4]))
    """
    settings = (seed, canvas_size, num_patches, patch_size)  # the split is checked by mnist5k_arrays
    images, labels, boxes = _cluttered_arrays(split, *settings)
    mean, std = _train_stats(*settings)
    return ImageTensors(
        torch.from_numpy(images.copy()),  # private copies: callers may modify their tensors in place
        torch.from_numpy(labels.copy()),
        [str(d) for d in range(10)],
        mean,
        std,
        "cluttered-mnist",
        boxes=torch.from_numpy(boxes.copy()),
    )


@register_dataset("cluttered-mnist")
def cluttered_mnist(split: str, root=None, download: bool = False, mirror: str | None = None) -> ImageTensors:
    return load_cluttered_mnist(split)
