"""Your own folders off the happy path, from the command line (each command a fresh process): val/ classes matched
to train/'s by name, resume and report on a moved folder, the one-tree split, edited folders refused in one line."""

from __future__ import annotations

import json
import shutil

from attnkit.data import load_dataset
from attnkit.engine import RunDir
from helpers import run_cli


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
    _one_line(run_cli("eval", folder_run, "--root", root, "--device", "cpu"), "west", "model's classes")
    _one_line(run_cli("train", "data.name=folder", f"data.root={root}", f"out={tmp_path / 'run'}"), "data.root", "west")


def test_resume_reads_the_folder_as_recorded_and_refuses_changed_classes(folder_run, image_folder, tmp_path):
    from PIL import Image

    from attnkit.engine import load_run_info

    run, root = tmp_path / "run", tmp_path / "imgs"
    shutil.copytree(folder_run, run, ignore=shutil.ignore_patterns("run.lock"))
    shutil.copytree(image_folder, root)
    recorded = RunDir(run).info()
    Image.new("RGB", (30, 30), "white").save(root / "train" / "east" / "white.png")  # measured again: another mean
    resumed = run_cli("resume", run, f"data.root={root}")
    assert resumed.returncode == 0, resumed.stderr
    again = load_run_info(run / "model.safetensors")
    assert (again["mean"], again["std"]) == (recorded.mean, recorded.std)
    assert {**again["folder"], "directory": None} == {**recorded.folder, "directory": None}  # it moved
    shutil.rmtree(root / "val")  # now one tree: split differently
    _one_line(run_cli("resume", run, f"data.root={root}"), "folder.layout", "split folders")
    shutil.copytree(image_folder / "val", root / "val")
    shutil.move(root / "train" / "south", root / "train" / "west")
    shutil.move(root / "val" / "south", root / "val" / "west")
    _one_line(run_cli("resume", run, f"data.root={root}"), "run.json, key classes", "east, north, west")
    _one_line(run_cli("eval", run, "--root", root, "--device", "cpu"), "west", "not among the model's classes")


TINY = ["data.name=folder", "data.image_size=24", "data.batch_size=8", "data.workers=0", "optim.epochs=1",
        "model.name=wrn", "model.kwargs={depth: 10, width: 0.5}", "data.train_limit=12", "data.test_limit=6",
        "progress=false", "tensorboard=false"]


def test_relative_paths_are_recorded_absolute_and_moved_data_and_teachers_are_found(folder_run, image_folder, tmp_path):
    shutil.copytree(image_folder, tmp_path / "imgs")
    trained = run_cli("train", *TINY, "data.root=imgs", "out=runs/t", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert RunDir(tmp_path / "runs" / "t").config().data.root == str(tmp_path / "imgs")
    shutil.copy(tmp_path / "runs" / "t" / "model.safetensors", tmp_path / "t.safetensors")
    distilled = run_cli("distill", *TINY, "data.root=imgs", "distill.teacher=t.safetensors", "distill.at_beta=1000",
                        "out=runs/s", cwd=tmp_path)
    assert distilled.returncode == 0, distilled.stderr
    assert RunDir(tmp_path / "runs" / "s").config().distill.teacher == str(tmp_path / "t.safetensors")
    (tmp_path / "imgs").rename(tmp_path / "moved")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "t.safetensors").rename(tmp_path / "elsewhere" / "t.safetensors")
    lost = run_cli("report", "runs/t", "--out", "report", "--images", "4", cwd=tmp_path)
    assert lost.returncode == 0 and "No attention maps" in (tmp_path / "report" / "index.html").read_text()
    found = run_cli("report", "runs/t", "--out", "report2", "--images", "4", "--root", "moved", cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert "No attention maps" not in (tmp_path / "report2" / "index.html").read_text()
    # the same teacher, moved: resumes; another teacher file (same classes and images): refused by its content
    resumed = run_cli("resume", "runs/s", "data.root=moved", "distill.teacher=elsewhere/t.safetensors", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    _one_line(run_cli("resume", "runs/s", "data.root=moved", f"distill.teacher={folder_run}", cwd=tmp_path),
              "distill.teacher", "teacher_sha256")


def test_a_teacher_saved_as_pth_tar_distils(folder_run, image_folder, tmp_path):
    import torch

    from attnkit.engine import load_model

    torch.save({"epoch": 2, "state_dict": load_model(folder_run).state_dict()}, tmp_path / "teacher.pth.tar")
    done = run_cli("distill", *TINY, f"data.root={image_folder}", f"distill.teacher={tmp_path / 'teacher.pth.tar'}",
                   "distill.teacher_model=wrn", "distill.teacher_kwargs={depth: 10, width: 0.5}", "distill.kd_alpha=0.9",
                   f"out={tmp_path / 's'}")
    assert done.returncode == 0, done.stderr
    assert RunDir(tmp_path / "s").summary()["teacher"] == str(tmp_path / "teacher.pth.tar")


def test_maps_images_are_read_as_the_runs_evaluation_reads_them_and_hidden_files_are_skipped(folder_run, image_folder,
                                                                                                tmp_path):
    import torch

    from attnkit.data import read_images
    from attnkit.report.maps import folder_test_images

    info = RunDir(folder_run).info().to_dict()
    split = folder_test_images(folder_run, info, 12)  # all of val/, as `attnkit eval` scores it
    files = read_images([image_folder / "val"], tuple(info["input_size"]), info["mean"], info["std"], info["classes"])
    assert files.names == split.names and torch.equal(files.images, split.images)
    assert torch.equal(files.labels, split.labels)
    root = tmp_path / "imgs"
    shutil.copytree(image_folder, root)
    for split_name in ("train", "val"):  # what macOS leaves on a shared drive: not images, never listed
        (root / split_name / "east" / "._east_0.png").write_bytes(b"\x00\x05\x16\x07 resource fork")
        (root / split_name / "north" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
        (root / split_name / ".hidden").mkdir()
    assert len(load_dataset("folder", "train", root=root)) == 36
    done = run_cli("eval", folder_run, "--root", root, "--device", "cpu")
    assert done.returncode == 0 and json.loads(done.stdout)["count"] == 12, done.stderr
    maps = run_cli("maps", "--checkpoint", folder_run, "--images", root / "val", "--method", "activation",
                   "--no-sanity", "--no-faithfulness", "--out", tmp_path / "maps")
    assert maps.returncode == 0, maps.stderr
    assert len(json.loads((tmp_path / "maps" / "metrics.json").read_text())["source"]["images"]) == 12
