"""Image folders: listing, the Pillow transforms, and the streaming FolderLoader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from attnkit.data import FolderLoader, ImageFolderData, load_dataset, make_loader
from attnkit.data.folder import center_crop_image, random_resized_crop_box, random_resized_crop_image


def _image(width: int, height: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture
def folder(tmp_path):
    """ROOT/train/{cat,dog}/ with 3 + 2 PNGs of different sizes, ROOT/val/{cat,dog}/ with one each."""
    sizes = {"cat": [(40, 30), (30, 50), (33, 33)], "dog": [(64, 20), (25, 25)]}
    for split, count in (("train", None), ("val", 1)):
        for name, shapes in sizes.items():
            (tmp_path / split / name).mkdir(parents=True)
            for k, (w, h) in enumerate(shapes[:count]):
                _image(w, h, seed=sum(map(ord, f"{split}{name}{k}"))).save(tmp_path / split / name / f"{k}.png")
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    return tmp_path


def test_listing_classes_splits_and_labels(folder):
    train = load_dataset("folder", "train", root=folder)
    test = load_dataset("folder", "test", root=folder)  # no test/: val/ as in ImageNet
    assert isinstance(train, ImageFolderData) and train.classes == ["cat", "dog"] and len(train) == 5
    assert [(p.parent.name, p.name, label) for p, label in train.samples] == [
        ("cat", "0.png", 0), ("cat", "1.png", 0), ("cat", "2.png", 0), ("dog", "0.png", 1), ("dog", "1.png", 1)
    ]
    assert test.root == folder / "val" and len(test) == 2
    assert load_dataset("folder", root=folder / "train").root == folder / "train"  # a plain class directory


def test_listing_errors(tmp_path):
    with pytest.raises(ValueError, match="needs root="):
        load_dataset("folder")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("folder", root=tmp_path / "nowhere")
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no images"):
        load_dataset("folder", root=tmp_path)


def test_random_resized_crop_box_respects_scale_and_ratio():
    rng = np.random.default_rng(0)
    for _ in range(200):
        left, top, w, h = random_resized_crop_box(120, 80, rng)
        assert 0 <= left and left + w <= 120 and 0 <= top and top + h <= 80
        assert 0.08 * 9600 * 0.8 <= w * h <= 9600 and 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1  # up to rounding


def test_random_resized_crop_falls_back_to_the_centre_within_the_ratio():
    # 100x10 can hold no box of >= 90% area with aspect ratio <= 4/3: the fallback is the centred 13x10 box.
    assert random_resized_crop_box(100, 10, np.random.default_rng(0), scale=(0.9, 1.0)) == (43, 0, 13, 10)


def test_full_crop_is_the_image_or_its_mirror():
    image = _image(16, 16, seed=3)
    pixels = np.asarray(image)
    seen = set()
    for seed in range(8):
        out = np.asarray(random_resized_crop_image(image, 16, np.random.default_rng(seed), scale=(1, 1), ratio=(1, 1)))
        flipped = np.array_equal(out, pixels[:, ::-1])
        assert flipped or np.array_equal(out, pixels)
        seen.add(flipped)
    assert seen == {False, True}


def test_center_crop_exact():
    image = _image(48, 32, seed=4)  # size 28: shorter side to int(28 / 0.875) = 32 (unchanged), centre 28x28
    out = np.asarray(center_crop_image(image, 28))
    np.testing.assert_array_equal(out, np.asarray(image)[2:30, 10:38])
    assert center_crop_image(_image(100, 60, seed=5), 28).size == (28, 28)


def test_folder_loader_eval_values_order_and_partial_batch(folder):
    data = load_dataset("folder", "train", root=folder)
    loader = make_loader(data, 2, train=False, image_size=16, num_workers=0)
    assert isinstance(loader, FolderLoader) and len(loader) == 3
    batches = list(loader.epoch_batches(0))
    assert [len(y) for _, y in batches] == [2, 2, 1] and torch.cat([y for _, y in batches]).tolist() == [0, 0, 0, 1, 1]
    images = batches[0][0]
    assert images.shape == (2, 3, 16, 16) and images.dtype == torch.float32
    expected = np.asarray(center_crop_image(Image.open(data.samples[0][0]).convert("RGB"), 16)) / 255.0
    mean, std = np.array(data.mean), np.array(data.std)
    np.testing.assert_allclose(images[0].permute(1, 2, 0).numpy(), (expected - mean) / std, atol=1e-5)


def test_folder_loader_train_is_deterministic_across_workers_resume_and_ranks(folder):
    data = load_dataset("folder", "train", root=folder)
    single = list(FolderLoader(data, 2, train=True, image_size=12, seed=4, num_workers=0).epoch_batches(1))
    workers = list(FolderLoader(data, 2, train=True, image_size=12, seed=4, num_workers=2).epoch_batches(1))
    resumed = list(FolderLoader(data, 2, train=True, image_size=12, seed=4, num_workers=0).epoch_batches(1, start=1))
    ranks = [list(FolderLoader(data, 2, train=True, image_size=12, seed=4, rank=r, world_size=2, num_workers=0)
                  .epoch_batches(1)) for r in (0, 1)]
    assert len(single) == 2
    for (x, y), (xw, yw), (x0, y0), (x1, y1) in zip(single, workers, *ranks, strict=True):
        assert torch.equal(x, xw) and torch.equal(y, yw)
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)
    assert torch.equal(resumed[0][0], single[1][0])
    other_epoch = list(FolderLoader(data, 2, train=True, image_size=12, seed=4, num_workers=0).epoch_batches(2))
    assert not torch.equal(torch.cat([x for x, _ in other_epoch]), torch.cat([x for x, _ in single]))


def test_folder_loader_empty_rank_share_still_takes_its_step(folder):
    data = load_dataset("folder", "test", root=folder)  # 2 images
    loaders = [FolderLoader(data, 3, train=False, image_size=8, rank=r, world_size=3, num_workers=0) for r in range(3)]
    shapes = [[tuple(x.shape) for x, _ in loader.epoch_batches(0)] for loader in loaders]
    assert shapes == [[(1, 3, 8, 8)], [(1, 3, 8, 8)], [(0, 3, 8, 8)]]


def test_undecodable_image_names_the_file(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot decode image .*broken.png"):  # channels=auto reads every header
        load_dataset("folder", root=tmp_path)
    loader = FolderLoader(load_dataset("folder", root=tmp_path, channels=3), 1, train=False, image_size=8, num_workers=0)
    with pytest.raises(ValueError, match="cannot decode image .*broken.png"):
        next(loader.epoch_batches(0))
