"""Image folders made ready for a run: the held-out split, channels from the data, measured normalisation, and
decoding into memory (a folder of 32x32 PNGs trains exactly as the same images held in memory)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from attnkit.data import (DeviceLoader, FolderLoader, ImageTensors, load_dataset, load_image_folder, make_loader,
                          prepare_folder)


def _tree(root, counts: dict[str, int], size=(6, 5), mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(count):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).convert(mode).save(root / name / f"{name}{k:02d}.png")
    return root


def _names(data) -> list[str]:
    return [path.name for path, _ in data.samples]


def test_one_tree_is_split_per_class_the_same_way_every_time(tmp_path):
    root = _tree(tmp_path / "tree", {"a": 20, "b": 9, "c": 1})
    train, test = (load_dataset("folder", split, root=root) for split in ("train", "test"))
    assert train.root == test.root == root and train.details == {"layout": "one tree", "directory": str(root),
                                                                  "val_fraction": 0.1}
    # Each file by the SHA-256 of CLASS/NAME read as a fraction (a04 0.118, a19 0.118, a03 0.153, a14 0.158, a15
    # 0.193 the lowest of a; b06 0.318 of b): none is below 0.1, so each class holds out its lowest-placed file.
    position = {f"{c}{k:02d}.png": int(hashlib.sha256(f"{c}/{c}{k:02d}.png".encode()).hexdigest(), 16) / 2**256
                for c, n in (("a", 20), ("b", 9)) for k in range(n)}
    assert sorted(name for name, p in position.items() if p < 0.2) == ["a03.png", "a04.png", "a14.png", "a15.png",
                                                                        "a19.png"]
    assert sorted(_names(test)) == ["a04.png", "b06.png"]  # c, a single image: trained on, never tested
    assert sorted(_names(train) + _names(test)) == sorted(p.name for p in root.rglob("*.png"))
    assert _names(load_image_folder(root, "test")) == _names(test)  # fixed: no seed anywhere
    fifth = load_image_folder(root, "test", val_fraction=0.2)
    assert sorted(_names(fifth)) == ["a03.png", "a04.png", "a14.png", "a15.png", "a19.png", "b06.png"]
    _tree(root, {"a": 40, "b": 30}, seed=1)  # new pixels for the old names; adds a20..a39, b09..b29
    grown = sorted(_names(load_image_folder(root, "test", val_fraction=0.2)))
    old_files = {f"a{k:02d}.png" for k in range(20)} | {f"b{k:02d}.png" for k in range(9)}
    # a's files stay where they were; b06 held out only for want of another goes back: b16, b17, b21, b22, b29 are
    assert [n for n in grown if n in old_files] == ["a03.png", "a04.png", "a14.png", "a15.png", "a19.png"]
    assert [n for n in grown if n.startswith("b")] == ["b16.png", "b17.png", "b21.png", "b22.png", "b29.png"]
    moved = tmp_path / "moved"
    root.rename(moved)
    assert sorted(_names(load_image_folder(moved, "test", val_fraction=0.2))) == grown  # relative paths decide


def test_split_folders_and_their_errors(tmp_path):
    root = tmp_path / "imgs"
    _tree(root / "train", {"a": 3, "b": 3})
    only_train = load_image_folder(root, "test")  # train/ without val/: train/ is one tree
    assert only_train.root == root / "train" and len(only_train) == 2
    _tree(root / "val", {"a": 1, "b": 1})
    assert load_image_folder(root, "test").root == root / "val" and load_image_folder(root).details["layout"] == "split folders"
    with pytest.raises(ValueError, match="has its own val/ split; val_fraction applies to one tree only"):
        load_image_folder(root, val_fraction=0.2)
    with pytest.raises(FileNotFoundError, match="holds no images: with val_fraction 0.1 every class is too small"):
        load_image_folder(_tree(tmp_path / "tiny", {"a": 1}), "test")
    with pytest.raises(ValueError, match="data set 'mnist5k' takes no option channels"):
        load_dataset("mnist5k", channels=3)


def test_channels_come_from_the_data(tmp_path):
    grey = _tree(tmp_path / "grey", {"a": 3, "b": 3}, mode="L")
    Image.fromarray(np.full((5, 6), 40000, np.uint16)).save(grey / "a" / "deep.png")  # 16-bit grey is grey too
    assert load_image_folder(grey).channels == 1 and load_image_folder(grey).mean == (0.449,)
    assert load_image_folder(grey, channels=3).channels == 3  # asked for RGB
    mixed = _tree(tmp_path / "mixed", {"a": 3, "b": 3}, mode="L")
    _tree(mixed, {"b": 4}, mode="RGBA")  # b03 is colour
    assert load_image_folder(mixed).channels == 3
    loader = make_loader(load_image_folder(grey, channels=1), 2, train=False, image_size=4, num_workers=0)
    assert next(loader.epoch_batches(0))[0].shape == (2, 1, 4, 4)


def test_measured_normalisation_and_memory_decoding(tmp_path):
    root = _tree(tmp_path / "t", {"a": 4, "b": 4}, size=(8, 8))
    train, test = prepare_folder(str(root), ("train", "test"), 8, workers=0)
    pixels = np.stack([np.asarray(Image.open(p)) for p, _ in load_image_folder(root).samples]) / 255.0  # (N, 8, 8, 3)
    np.testing.assert_allclose(train.mean, pixels.mean((0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(train.std, pixels.std((0, 1, 2)), rtol=1e-12)
    assert test.mean == train.mean and train.details["normalization"] == "measured on 6 of 6 training images"
    assert train.pixels is not None and train.details["in_memory"] and train.input_size == (3, 8, 8)
    # 8x8 images at size 8 are kept as they are: the decoded pixels are the files' pixels
    np.testing.assert_array_equal(train.pixels.permute(0, 2, 3, 1).numpy(), (pixels * 255).round().astype(np.uint8))
    assert isinstance(make_loader(train, 2, train=True, pad=1), DeviceLoader)
    streamed, _ = prepare_folder(str(root), ("train", "test"), 8, memory_budget_mb=0, normalization="imagenet")
    assert streamed.pixels is None and streamed.mean == (0.485, 0.456, 0.406) and not streamed.details["in_memory"]
    assert isinstance(make_loader(streamed, 2, train=True, image_size=8, num_workers=0), FolderLoader)
    limited, = prepare_folder(str(root), ("train",), 8, limits={"train": 3})
    assert len(limited) == 3 and limited.mean == train.mean  # measured before the limit: subsets share it
    again, = prepare_folder(str(root), ("test",), 8, memory_budget_mb=0, recorded={**train.details, "mean": [0.5] * 3,
                                                                                 "std": [0.25] * 3})
    assert again.pixels is not None and again.mean == (0.5,) * 3  # a run's record decides, not the budget


def test_a_folder_of_cifar_sized_pngs_trains_as_the_same_images_in_memory(tmp_path):
    root = _tree(tmp_path / "c", {"a": 5, "b": 5}, size=(32, 32))
    train, _ = prepare_folder(str(root), ("train", "test"), 32)
    files = [np.asarray(Image.open(p)).transpose(2, 0, 1) for p, _ in train.samples]
    labels = torch.tensor([label for _, label in train.samples])
    tensors = ImageTensors(torch.from_numpy(np.stack(files)), labels, train.classes, train.mean, train.std, "folder")
    ours = list(make_loader(train, 4, train=True, seed=3, pad=4).epoch_batches(1))
    reference = list(DeviceLoader(tensors, 4, train=True, seed=3, pad=4).epoch_batches(1))
    assert len(ours) == 2
    for (x, y), (x_ref, y_ref) in zip(ours, reference, strict=True):
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref)

