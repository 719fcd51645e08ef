"""Readers of the official formats on damaged input, and the data set registry's errors."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

import official_formats as fmt
from attnkit.data import ImageTensors, list_datasets, load_dataset
from attnkit.data.cifar import read_cifar_binary
from attnkit.data.idx import read_idx
from attnkit.data.svhn import read_svhn_mat


def test_list_datasets_names_every_format():
    assert list_datasets() == ["cifar10", "cifar100", "cluttered-mnist", "fashion-mnist", "folder", "mnist", "mnist5k", "svhn"]


def test_unknown_name_and_split_errors():
    with pytest.raises(KeyError, match="did you mean cifar10"):
        load_dataset("cifar-10")
    with pytest.raises(ValueError, match="split must be one of train, test"):
        load_dataset("mnist5k", "val")


def test_cifar_reader_rejects_partial_records(tmp_path):
    path = tmp_path / "batch.bin"
    path.write_bytes(fmt.cifar_records([[1], [2]])[:-1])
    with pytest.raises(ValueError, match="not a whole number of 3073-byte CIFAR records"):
        read_cifar_binary(path, label_bytes=1)


def test_cifar_reader_label_byte_position(tmp_path):
    path = tmp_path / "train.bin"
    path.write_bytes(fmt.cifar_records([[5, 77], [19, 3]]))
    images, labels = read_cifar_binary(path, label_bytes=2)
    assert labels.tolist() == [77, 3]  # the fine label is the second byte
    np.testing.assert_array_equal(images, fmt.images(2))


def test_idx_reader_exact_values_and_errors(tmp_path):
    labels = np.array([7, 0, 255], np.uint8)
    path = tmp_path / "labels-idx1-ubyte.gz"
    path.write_bytes(fmt.idx_gz(labels))
    np.testing.assert_array_equal(read_idx(path), labels)

    path.write_bytes(gzip.compress(struct.pack(">BBBBI", 0, 0, 0x08, 1, 4) + bytes([1, 2, 3])))
    with pytest.raises(ValueError, match=r"header says shape \(4,\) but the file holds 3 data bytes"):
        read_idx(path)
    path.write_bytes(gzip.compress(b"\x1f\x8b\x08\x00rest"))
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(path)
    path.write_bytes(b"plainly not gzip")
    with pytest.raises(ValueError, match="cannot read"):
        read_idx(path)


def test_idx_reader_big_endian_wider_types(tmp_path):
    values = np.array([[1, -2], [300, 70000]], dtype=">i4")
    path = tmp_path / "ints.idx"
    path.write_bytes(struct.pack(">BBBBII", 0, 0, 0x0C, 2, 2, 2) + values.tobytes())
    np.testing.assert_array_equal(read_idx(path), [[1, -2], [300, 70000]])


def test_svhn_reader_rejects_wrong_variables(tmp_path):
    path = tmp_path / "bad.mat"
    path.write_bytes(fmt.svhn_mat(np.zeros((32, 32, 3, 2), np.uint8), np.ones((3, 1), np.uint8)))
    with pytest.raises(ValueError, match=r"X must be \(H, W, 3, N\) with N = len\(y\) = 3"):
        read_svhn_mat(path)


def test_image_tensors_validates_its_fields():
    images = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    labels = torch.tensor([0, 1])
    with pytest.raises(TypeError, match="uint8"):
        ImageTensors(images.float(), labels, ["a", "b"], (0.5,), (0.5,), "toy")
    with pytest.raises(ValueError, match="one value per channel"):
        ImageTensors(images, labels, ["a", "b"], (0.5, 0.5), (0.5, 0.5), "toy")
    with pytest.raises(ValueError, match="labels must lie in 0..0"):
        ImageTensors(images, labels, ["a"], (0.5,), (0.5,), "toy")
    with pytest.raises(TypeError, match="boxes"):
        ImageTensors(images, labels, ["a", "b"], (0.5,), (0.5,), "toy", boxes=torch.zeros(2, 3, dtype=torch.int64))
