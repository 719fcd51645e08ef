"""Your own folders off the happy path, from the command line (each command a fresh process): val/ classes matched
to train/'s by name, resume and report on a moved folder, the one-tree split, edited folders refused in one line."""

from __future__ import annotations

import json
import shutil

from attnkit.data import load_dataset
from attnkit.engine import RunDir
from helpers import run_cli, write_image_folder


def _one_line(done, *expected: str) -> None:
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    for text in expected:
        assert text in done.stderr, done.stderr


def test_val_classes_are_matched_to_train_classes_by_name(folder_run, image_folder, tmp_path):
    root = tmp_path / "imgs"
    shutil.copytree(image_folder, root)
    shutil.rmtree(root / "val" / "east")  # val/ lacks the first class: north and south keep their labels 1 and 2
    test = load_dataset("folder", "test", root=root)
    assert test.classes == ["east", "north", "south"]
    assert sorted({(path.parent.name, label) for path, label in test.samples}) == [("north", 1), ("south", 2)]
    done = run_cli("eval", folder_run, "--root", root, "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["count"] == 8
    (root / "val" / "west").mkdir()  # a class train/ never had
    shutil.copy(next((root / "val" / "north").iterdir()), root / "val" / "west")
    _one_line(run_cli("eval", folder_run, "--root", root, "--device", "cpu"), "west", "train")
    _one_line(run_cli("train", "data.name=folder", f"data.root={root}", f"out={tmp_path / 'run'}"), "data.root", "west")
