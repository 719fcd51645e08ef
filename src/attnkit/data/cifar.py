"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009) from the official *binary* archives (no pickle anywhere).

Source, layouts and MD5s: https://www.cs.toronto.edu/~kriz/cifar.html ("binary version").

* ``cifar-10-binary.tar.gz`` -> ``cifar-10-batches-bin/data_batch_1.bin`` .. ``data_batch_5.bin`` (train),
  ``test_batch.bin``, ``batches.meta.txt`` (class names). Record = 1 label byte + 3,072 pixel bytes.
* ``cifar-100-binary.tar.gz`` -> ``cifar-100-binary/train.bin``, ``test.bin``, ``fine_label_names.txt``,
  ``coarse_label_names.txt``. Record = 1 coarse-label byte + 1 fine-label byte + 3,072 pixel bytes; we use the
  fine (100-class) label.

Pixels of a record: the 1,024 red values, then green, then blue, each 32x32 row-major, i.e. already
(C, H, W). Normalisation: CIFAR-10 mean (125.3, 123.0, 113.9)/255, std (63.0, 62.1, 66.7)/255 as in the
attention-transfer code (szagoruyko/attention-transfer, cifar.py); CIFAR-100 mean (0.5071, 0.4867, 0.4408),
std (0.2675, 0.2565, 0.2761), the training-set statistics of the CRD distillation benchmark
(HobbitLong/RepDistiller, dataset/cifar100.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ._dataset import ImageTensors, data_root, register_dataset
from ._download import Resource, fetch, safe_extract_tar

__all__ = ["ARCHIVES", "CifarArchive", "read_cifar_binary"]

_OFFICIAL = "https://www.cs.toronto.edu/~kriz/"
_PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class CifarArchive:
    resource: Resource  # the .tar.gz and its MD5
    folder: str  # top-level folder inside the archive
    train_files: tuple[str, ...]  # record files of the training split, in order
    test_files: tuple[str, ...]
    names_file: str  # class names, one per line
    label_bytes: int  # bytes before the pixels of each record; the class label is the last of them
    mean: tuple[float, ...]
    std: tuple[float, ...]


# Tests replace entries (monkeypatch) to point at archives they build; the checksums are the official ones.
ARCHIVES: dict[str, CifarArchive] = {
    "cifar10": CifarArchive(
        Resource("cifar-10-binary.tar.gz", _OFFICIAL, md5="c32a1d4ab5d03f1284b67883e8d87530"),
        folder="cifar-10-batches-bin",
        train_files=tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
        test_files=("test_batch.bin",),
        names_file="batches.meta.txt",
        label_bytes=1,
        mean=(125.3 / 255, 123.0 / 255, 113.9 / 255),
        std=(63.0 / 255, 62.1 / 255, 66.7 / 255),
    ),
    "cifar100": CifarArchive(
        Resource("cifar-100-binary.tar.gz", _OFFICIAL, md5="03b5dce01913d631647c71ecec9e9cb8"),
        folder="cifar-100-binary",
        train_files=("train.bin",),
        test_files=("test.bin",),
        names_file="fine_label_names.txt",
        label_bytes=2,
        mean=(0.5071, 0.4867, 0.4408),
        std=(0.2675, 0.2565, 0.2761),
    ),
}


def read_cifar_binary(path: Path, label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Records of one binary file -> images (N, 3, 32, 32) uint8 and labels (N,) int64 (the last label byte)."""
    raw = np.fromfile(path, dtype=np.uint8)
    record = label_bytes + _PIXELS
    if raw.size == 0 or raw.size % record:
        raise ValueError(
            f"{path}: {raw.size} bytes is not a whole number of {record}-byte CIFAR records; the file is damaged, "
            "delete its folder and load again"
        )
    records = raw.reshape(-1, record)  # (N, label_bytes + 3072)
    labels = records[:, label_bytes - 1].astype(np.int64)
    images = records[:, label_bytes:].reshape(-1, 3, 32, 32)  # red plane, green plane, blue plane
    return images, labels


def _extracted_folder(name: str, root: Path, download: bool, mirror: str | None) -> Path:
    """``root/NAME/FOLDER`` with every expected file, extracting (and downloading) the archive if needed."""
    spec = ARCHIVES[name]
    folder = root / name / spec.folder
    expected = [*spec.train_files, *spec.test_files, spec.names_file]
    if not all((folder / f).is_file() for f in expected):
        archive = fetch(name, spec.resource, root, download, mirror)
        safe_extract_tar(archive, root / name)
        missing = [f for f in expected if not (folder / f).is_file()]
        if missing:
            raise ValueError(f"{archive} lacks {', '.join(missing)} under {spec.folder}/; it is not the official archive")
    return folder


def _load_cifar(name: str, split: str, root, download: bool, mirror: str | None) -> ImageTensors:
    spec = ARCHIVES[name]
    folder = _extracted_folder(name, data_root(root), download, mirror)
    parts = [read_cifar_binary(folder / f, spec.label_bytes) for f in (spec.train_files if split == "train" else spec.test_files)]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    classes = [line.strip() for line in (folder / spec.names_file).read_text().splitlines() if line.strip()]
    return ImageTensors(torch.from_numpy(images), torch.from_numpy(labels), classes, spec.mean, spec.std, name)


@register_dataset("cifar10")
def cifar10(split: str, root, download: bool, mirror: str | None) -> ImageTensors:
    return _load_cifar("cifar10", split, root, download, mirror)


@register_dataset("cifar100")
def cifar100(split: str, root, download: bool, mirror: str | None) -> ImageTensors:
    return _load_cifar("cifar100", split, root, download, mirror)
