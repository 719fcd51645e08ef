"""MNIST (LeCun et al. 1998) and Fashion-MNIST (Xiao et al. 2017) from their gzipped IDX files.

IDX format (http://yann.lecun.com/exdb/mnist/): two zero bytes, a type byte (0x08 = unsigned byte, ...), the
number of dimensions, then each dimension as a big-endian int32, then the values row-major and big-endian.
Images are ``*-images-idx3-ubyte.gz`` (N, 28, 28), labels ``*-labels-idx1-ubyte.gz`` (N,).

Files and MD5s as in torchvision (torchvision/datasets/mnist.py). MNIST is fetched from the mirror torchvision
falls back to (the original yann.lecun.com host is often unavailable); Fashion-MNIST from Zalando's own.
Normalisation: MNIST mean 0.1307, std 0.3081 (the training set's, as in pytorch/examples mnist/main.py);
Fashion-MNIST mean 0.2860, std 0.3530 (its training set's, as commonly used).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ._dataset import ImageTensors, data_root, register_dataset
from ._download import Resource, fetch

__all__ = ["IDX_SETS", "IdxSet", "read_idx"]

# IDX type byte -> big-endian numpy dtype
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass(frozen=True)
class IdxSet:
    images: dict[str, Resource]  # split -> gzipped image file
    labels: dict[str, Resource]  # split -> gzipped label file
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]


def _files(base: str, md5: dict[str, str]) -> tuple[dict[str, Resource], dict[str, Resource]]:
    """(images, labels): split -> resource, for the four standard file names served under ``base``."""
    def resource(filename: str) -> Resource:
        return Resource(filename, base, md5=md5[filename])

    images = {"train": resource("train-images-idx3-ubyte.gz"), "test": resource("t10k-images-idx3-ubyte.gz")}
    labels = {"train": resource("train-labels-idx1-ubyte.gz"), "test": resource("t10k-labels-idx1-ubyte.gz")}
    return images, labels


_MNIST_FILES = _files("https://ossci-datasets.s3.amazonaws.com/mnist/", {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
})
_FASHION_FILES = _files("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
})

# Tests replace entries (monkeypatch) to point at files they build; the checksums are the official ones.
IDX_SETS: dict[str, IdxSet] = {
    "mnist": IdxSet(*_MNIST_FILES, classes=tuple(str(d) for d in range(10)), mean=(0.1307,), std=(0.3081,)),
    "fashion-mnist": IdxSet(
        *_FASHION_FILES,
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        mean=(0.2860,),
        std=(0.3530,),
    ),
}


def read_idx(path: Path) -> np.ndarray:
    """The array stored in an IDX file (gzipped if the name ends in ``.gz``), in native byte order."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"{path}: cannot read ({err}); the file is damaged, delete it and load again") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    if len(raw) - header != int(np.prod(shape)) * dtype.itemsize:
        raise ValueError(f"{path}: header says shape {shape} but the file holds {len(raw) - header} data bytes")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _load_idx(name: str, split: str, root, download: bool, mirror: str | None) -> ImageTensors:
    spec = IDX_SETS[name]
    folder = data_root(root)
    images = read_idx(fetch(name, spec.images[split], folder, download, mirror))
    labels = read_idx(fetch(name, spec.labels[split], folder, download, mirror))
    if images.ndim != 3 or images.dtype != np.uint8 or labels.shape != (len(images),):
        raise ValueError(f"{name} {split}: expected uint8 images (N, H, W) and N labels, got {images.shape} and {labels.shape}")
    return ImageTensors(
        torch.from_numpy(images[:, None].copy()),  # (N, H, W) -> (N, 1, H, W)
        torch.from_numpy(labels.astype(np.int64)),
        list(spec.classes),
        spec.mean,
        spec.std,
        name,
    )


@register_dataset("mnist")
def mnist(split: str, root, download: bool, mirror: str | None) -> ImageTensors:
    return _load_idx("mnist", split, root, download, mirror)


@register_dataset("fashion-mnist")
def fashion_mnist(split: str, root, download: bool, mirror: str | None) -> ImageTensors:
    return _load_idx("fashion-mnist", split, root, download, mirror)
