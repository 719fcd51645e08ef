"""SVHN, cropped digits (Netzer et al. 2011), from the official MATLAB files ``train_32x32.mat`` / ``test_32x32.mat``.

Source: http://ufldl.stanford.edu/housenumbers/ (URLs and MD5s as in torchvision/datasets/svhn.py). Each file
holds ``X`` (32, 32, 3, N) uint8, indexed (row, column, channel, sample), and ``y`` (N, 1) with the digit 0
stored as 10; we return (N, 3, 32, 32) images and labels 0..9. Read with ``scipy.io.loadmat`` (MATLAB v5
data, no code execution). The ``extra`` split (531k images) is not offered. Normalisation: mean
(0.4377, 0.4438, 0.4728), std (0.1980, 0.2010, 0.1970), the training split's statistics as commonly used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ._dataset import ImageTensors, data_root, register_dataset
from ._download import Resource, fetch

__all__ = ["SVHN_FILES", "read_svhn_mat"]

_OFFICIAL = "http://ufldl.stanford.edu/housenumbers/"

# Tests replace entries (monkeypatch) to point at files they build; the checksums are the official ones.
SVHN_FILES: dict[str, Resource] = {
    "train": Resource("train_32x32.mat", _OFFICIAL, md5="e26dedcc434d2e4c54c9b2d4a06d8373"),
    "test": Resource("test_32x32.mat", _OFFICIAL, md5="eb5a983be6a315427106f1b164d9cef3"),
}
MEAN = (0.4377, 0.4438, 0.4728)
STD = (0.1980, 0.2010, 0.1970)


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``X`` and ``y`` of an SVHN .mat file -> images (N, 3, 32, 32) uint8 and labels (N,) int64 in 0..9."""
    import scipy.io  # only SVHN needs scipy (installed with mlxtend)

    try:
        mat = scipy.io.loadmat(path, variable_names=("X", "y"))
    except (ValueError, OSError, TypeError) as err:
        raise ValueError(f"{path}: not a readable MATLAB file ({err}); delete it and load again") from err
    if "X" not in mat or "y" not in mat:
        raise ValueError(f"{path}: expected variables X and y, found {sorted(k for k in mat if not k.startswith('__'))}")
    x, y = mat["X"], mat["y"].reshape(-1)
    if x.ndim != 4 or x.shape[2] != 3 or x.shape[3] != len(y):
        raise ValueError(f"{path}: X must be (H, W, 3, N) with N = len(y) = {len(y)}, got {x.shape}")
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1), dtype=np.uint8)  # (H, W, C, N) -> (N, C, H, W)
    labels = y.astype(np.int64) % 10  # the digit 0 is stored as label 10
    return images, labels


@register_dataset("svhn")
def svhn(split: str, root, download: bool, mirror: str | None) -> ImageTensors:
    path = fetch("svhn", SVHN_FILES[split], data_root(root), download, mirror)
    images, labels = read_svhn_mat(path)
    return ImageTensors(torch.from_numpy(images), torch.from_numpy(labels), [str(d) for d in range(10)], MEAN, STD, "svhn")
