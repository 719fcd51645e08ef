"""Image folders with links: loops end, a directory reached twice is listed once, bad files name themselves."""

from __future__ import annotations

import os

import pytest
import torch
from PIL import Image

from attnkit.data import FolderLoader, load_dataset


def _folder(root):
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (6, 6), (60 * i, 0, 0)).save(root / label / f"{i}.png")
    return root


def _listed(root) -> list[tuple[str, int]]:
    """Every image of the one-tree folder ``root`` with its label: both splits (a tenth of each class is held out)."""
    samples = [s for split in ("train", "test") for s in load_dataset("folder", split, root=root).samples]
    return sorted((p.relative_to(root).as_posix(), label) for p, label in samples)


def test_a_symlink_loop_in_a_class_folder_neither_hangs_nor_repeats(tmp_path):
    root = _folder(tmp_path / "images")
    os.symlink("..", root / "a" / "loop")  # a/loop -> a's parent: a, b, a/loop/a, a/loop/a/loop/... without end
    os.symlink(".", root / "b" / "self")  # b/self -> b
    assert _listed(root) == [
        ("a/0.png", 0), ("a/1.png", 0), ("b/0.png", 1), ("b/1.png", 1)
    ]


def test_links_to_image_directories_elsewhere_are_followed_once(tmp_path):
    elsewhere = tmp_path / "photos"
    elsewhere.mkdir()
    for i in range(3):
        Image.new("RGB", (6, 6)).save(elsewhere / f"{i}.jpg")
    root = _folder(tmp_path / "images")
    os.symlink(elsewhere, root / "a" / "more")
    os.symlink(elsewhere, root / "a" / "same_again")  # the same real directory through a second link
    os.symlink(elsewhere, root / "b" / "also")  # and from another class: listed under the first class only
    os.symlink(tmp_path, root / "b" / "up")  # above the root: never walked
    samples = _listed(root)
    assert [s for s in samples if s[0].endswith(".jpg")] == [("a/more/0.jpg", 0), ("a/more/1.jpg", 0), ("a/more/2.jpg", 0)]
    assert len(samples) == 7


@pytest.mark.parametrize("workers", [0, 1])
def test_a_bad_file_is_one_line_naming_it_with_or_without_workers(tmp_path, workers):
    root = _folder(tmp_path / "images")
    (root / "b" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    loader = FolderLoader(load_dataset("folder", root=root), batch_size=5, train=False, image_size=4,
                          num_workers=workers)
    with pytest.raises(ValueError) as error:
        for _ in loader.epoch_batches(0):
            pass
    message = str(error.value)
    assert message.startswith(f"cannot decode image {root / 'b' / '2.png'}: ") and "\n" not in message
    assert torch.get_num_threads() >= 1
