"""Tiny files in the exact official layouts (CIFAR binary tarballs, gzipped IDX, SVHN .mat), built by hand.

Every pixel value is a known function of (sample, channel, row, column), different per channel, so a
reader that swaps channels, rows or columns fails the tests.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import tarfile

import numpy as np
import scipy.io


def pixel(n, c, y, x):
    """The value every test image has at sample n, channel c, row y, column x (ints or NumPy arrays)."""
    return (7 * n + 67 * c + 5 * y + 3 * x + 11) % 256


def images(n: int, channels: int = 3, size: int = 32, first: int = 0) -> np.ndarray:
    """(n, C, size, size) uint8 with ``pixel(first + i, c, y, x)``."""
    i, c, y, x = np.meshgrid(np.arange(first, first + n), np.arange(channels), np.arange(size), np.arange(size), indexing="ij")
    return pixel(i, c, y, x).astype(np.uint8)


def cifar_records(label_bytes: list[list[int]], first: int = 0) -> bytes:
    """Records: the label bytes, then the 1,024 red, 1,024 green and 1,024 blue values, each row-major."""
    out = bytearray()
    for k, labels in enumerate(label_bytes):
        out += bytes(labels)
        for c in range(3):  # channel planes in order R, G, B
            out += bytes(pixel(first + k, c, y, x) for y in range(32) for x in range(32))
    return bytes(out)


def tar_gz(files: dict[str, bytes]) -> bytes:
    """A gzipped tar holding ``files`` (name -> content), with their folders first, as the official archives."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for folder in sorted({name.rsplit("/", 1)[0] for name in files if "/" in name}):
            info = tarfile.TarInfo(folder)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cifar10_archive() -> tuple[bytes, dict]:
    """``cifar-10-binary.tar.gz`` with 2 records per training batch and 3 test records; returns (bytes, truth)."""
    files, train_labels, first = {}, [], 0
    for b in range(1, 6):
        labels = [(first + k) % 10 for k in range(2)]
        files[f"cifar-10-batches-bin/data_batch_{b}.bin"] = cifar_records([[label] for label in labels], first)
        train_labels += labels
        first += 2
    test_labels = [9, 0, 4]
    files["cifar-10-batches-bin/test_batch.bin"] = cifar_records([[label] for label in test_labels], 100)
    files["cifar-10-batches-bin/batches.meta.txt"] = ("\n".join(CIFAR10_NAMES) + "\n\n").encode()
    files["cifar-10-batches-bin/readme.html"] = b"<html></html>"
    truth = {"train_labels": train_labels, "train_first": 0, "test_labels": test_labels, "test_first": 100}
    return tar_gz(files), truth


def cifar100_archive() -> tuple[bytes, dict]:
    """``cifar-100-binary.tar.gz``: records of (coarse, fine) labels; returns (bytes, truth)."""
    train = [(3, 97), (19, 0), (0, 42), (7, 99)]  # (coarse, fine)
    test = [(11, 5), (2, 63)]
    fine_names = [f"fine{i:02d}" for i in range(100)]
    files = {
        "cifar-100-binary/train.bin": cifar_records([list(t) for t in train], 0),
        "cifar-100-binary/test.bin": cifar_records([list(t) for t in test], 50),
        "cifar-100-binary/fine_label_names.txt": "\n".join(fine_names).encode(),
        "cifar-100-binary/coarse_label_names.txt": "\n".join(f"coarse{i}" for i in range(20)).encode(),
    }
    truth = {"train_labels": [f for _, f in train], "train_first": 0, "test_labels": [f for _, f in test],
             "test_first": 50, "fine_names": fine_names}
    return tar_gz(files), truth


def idx_gz(array: np.ndarray) -> bytes:
    """Gzipped IDX of a uint8 array: 0, 0, type 0x08, ndim, big-endian int32 dimensions, the bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def svhn_mat(x: np.ndarray, y: np.ndarray) -> bytes:
    """An SVHN-style MATLAB v5 file with X (32, 32, 3, N) uint8 and y (N, 1), as ``scipy.io.savemat`` writes it."""
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"X": x, "y": y})
    return buffer.getvalue()


def svhn_arrays(n: int) -> tuple[np.ndarray, np.ndarray]:
    """X[row, col, channel, sample] = pixel(sample, channel, row, col); labels 1..10 (10 = digit 0)."""
    x = images(n).transpose(2, 3, 1, 0).copy()  # (N, C, H, W) -> (H, W, C, N)
    y = (np.arange(n, dtype=np.uint8) % 10 + 1).reshape(n, 1)
    return x, y


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
