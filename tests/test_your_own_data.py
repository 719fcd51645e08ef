"""Your own images and models, end to end from the command line (each command a fresh process): a folder of
generated PNGs of mixed modes trains, evaluates, distils (from a run and from a PyTorch state dict), is explained
and reported; models named by spec (a torchvision look-alike) are rebuilt by eval and resume; the Python API
takes any nn.Module pair."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from attnkit.data import load_dataset
from attnkit.engine import RunConfig, RunDir, load_model, save_weights, train
from attnkit.engine.data_setup import data_info
from attnkit.engine.evaluation import evaluate_run
from attnkit.models import create_model
from helpers import run_cli, toy_cnn, write_image_folder

FAKES = Path(__file__).parent / "fakes"  # a torchvision.models look-alike (torchvision cannot be imported here)
SMALL = ["data.name=folder", "data.image_size=24", "data.batch_size=8", "data.workers=0", "optim.epochs=1",
         "progress=false", "tensorboard=false"]


def test_a_folder_run_records_how_it_read_the_images(folder_run, image_folder):
    info, config = RunDir(folder_run).info(), RunDir(folder_run).config()
    assert (info.dataset, info.classes, info.in_chans, info.input_size) == ("folder", ["east", "north", "south"], 3,
                                                                           [3, 24, 24])
    assert config.data.root == str(image_folder) and info.folder["layout"] == "split folders"
    assert info.folder["in_memory"] and info.folder["channels"] == 3  # mixed modes: some images are colour
    # measured on the whole training split, before train_limit: runs on subsets of one folder share it
    assert info.folder["normalization"] == "measured on 36 of 36 training images" and info.folder["images"] == 30
    assert len(RunDir(folder_run).metrics()) == 2 and RunDir(folder_run).summary()["last"]["count"] == 9


def test_eval_of_a_folder_run(folder_run):
    done = run_cli("eval", folder_run, "--device", "cpu")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["data"] == "folder" and result["count"] == 12  # the whole val/ split, 4 a class
    assert result == {**evaluate_run(folder_run, device="cpu"), "run": str(folder_run)}


def test_maps_of_a_folder_run_on_its_class_folders_and_its_test_split(folder_run, image_folder, tmp_path):
    done = run_cli("maps", "--checkpoint", folder_run, "--images", image_folder / "val", "--target", "label",
                   "--method", "gradcam,activation", "--no-sanity", "--no-faithfulness", "--out", tmp_path / "files")
    assert done.returncode == 0, done.stderr
    saved = json.loads((tmp_path / "files" / "metrics.json").read_text())
    assert saved["target"] == "label" and len(saved["source"]["images"]) == 12  # every class folder walked
    assert saved["source"]["images"][:2] == ["east/east_0.png", "east/east_1.png"]
    assert set(saved["metrics"]["teacher"]) == {"gradcam", "activation"}
    done = run_cli("maps", "--checkpoint", folder_run, "--data", "folder", "--num-images", "6", "--method", "gradcam",
                   "--no-sanity", "--no-faithfulness", "--out", tmp_path / "split")
    assert done.returncode == 0, done.stderr
    saved = json.loads((tmp_path / "split" / "metrics.json").read_text())
    assert saved["target"] == "label" and saved["images"] == 6 and saved["source"] == {"data": "folder"}


def test_report_of_a_folder_run_shows_its_maps(folder_run, tmp_path):
    done = run_cli("report", folder_run, "--out", tmp_path / "report", "--images", "6")
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "report" / "index.html").read_text()
    assert "No attention maps" not in page and ": the maps of every method" in page
    assert page.count("data:image/png;base64,") >= 2  # the curves and the maps


def test_a_teacher_file_without_its_architecture_is_one_line(folder_run, tmp_path):
    teacher = load_model(folder_run)
    torch.save({"epoch": 2, "state_dict": {f"module.{k}": v for k, v in teacher.state_dict().items()}},
               tmp_path / "teacher.pth")
    refused = run_cli("distill", *SMALL, f"data.root={RunDir(folder_run).config().data.root}",
                      f"distill.teacher={tmp_path / 'teacher.pth'}", "distill.at_beta=1000", f"out={tmp_path / 's'}")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "distill.teacher" in refused.stderr and "distill.teacher_model=NAME" in refused.stderr


def test_a_spec_model_on_a_grey_tree_is_rebuilt_by_eval_resume_and_as_a_teacher(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "grey", {"": 6}, sizes=(16, 24))  # one tree: 10% of each class held out
    for path in root.rglob("*.png"):  # every image grey: a 1-channel run, unless asked for RGB
        Image.open(path).convert("L").save(path)
    refused = run_cli("train", *SMALL, f"data.root={root}", "model.name=torchvision:resnet18", f"out={tmp_path / 'x'}",
                      pythonpath=(FAKES,))
    assert refused.returncode == 2 and "takes no in_chans argument" in refused.stderr and "data.channels=3" in refused.stderr
    out = tmp_path / "tv"
    trained = run_cli("train", *SMALL, f"data.root={root}", "data.channels=3", "model.name=torchvision:resnet18",
                      "data.image_size=32", "data.memory_budget_mb=0", f"out={out}", pythonpath=(FAKES,))
    assert trained.returncode == 0, trained.stderr
    info = RunDir(out).info()
    assert (info.model, info.in_chans, info.folder["layout"], info.folder["val_fraction"], info.folder["in_memory"]) == (
        "torchvision:resnet18", 3, "one tree", 0.1, False)  # streamed: the budget is 0
    monkeypatch.setenv("ATTNKIT_MODELS", "torchvision:resnet18")  # a recorded spec is built only when named
    evaluated = run_cli("eval", out, "--device", "cpu", pythonpath=(FAKES,))
    assert evaluated.returncode == 0 and json.loads(evaluated.stdout)["count"] == 4  # by path hash, 1 or 2 a class
    # eval reads the images as training's evaluation did (the record: streamed, 0.875 centre crop, normalisation)
    assert json.loads(evaluated.stdout)["loss"] == RunDir(out).summary()["last"]["loss"]
    monkeypatch.delenv("ATTNKIT_MODELS")
    resumed = run_cli("resume", out, "model.name=torchvision:resnet18", pythonpath=(FAKES,))
    assert resumed.returncode == 0, resumed.stderr
    # The run as a teacher: rebuilt from its spec; layers of models without feature_info paired by module path.
    monkeypatch.syspath_prepend(str(FAKES))
    config = RunDir(out).config()
    config.out, config.distill.teacher, config.distill.at_beta = str(tmp_path / "student"), str(out), 1000.0
    config.distill.layers, config.distill.teacher_model = ["1:layer1", "4:layer2"], "torchvision:resnet18"
    summary = train(config, model=toy_cnn((4, 8), num_classes=3))
    assert summary["teacher"] == str(out) and summary["last"]["count"] == 4
    assert RunDir(tmp_path / "student").metrics()[0]["train"]["at"] > 0
    for name in ("torchvision", "torchvision.models"):
        sys.modules.pop(name, None)
    monkeypatch.setenv("ATTNKIT_MODELS", "torchvision:resnet18")
    lost = run_cli("eval", out, "--device", "cpu")  # without the package on the path: one line naming the module
    assert lost.returncode == 2 and "torchvision" in lost.stderr and len(lost.stderr.strip().splitlines()) == 1


def test_python_api_takes_any_module_pair(tmp_path):
    root = write_image_folder(tmp_path / "imgs", {"train": 6, "val": 2}, sizes=(16, 20))
    for path in root.rglob("*.png"):  # grey images: a 1-channel run
        Image.open(path).convert("L").save(path)
    config = RunConfig(out=str(tmp_path / "run"), progress=False, tensorboard=False)
    config.data.name, config.data.root, config.data.image_size, config.data.workers = "folder", str(root), 16, 0
    config.data.batch_size, config.optim.epochs = 6, 1
    config.distill.at_beta, config.distill.kd_alpha = 1000.0, 0.5
    student = toy_cnn((4, 8), in_chans=1, num_classes=3)
    teacher = toy_cnn((8, 16), convs_per_stage=2, in_chans=1, num_classes=3).eval()
    before = [p.clone() for p in teacher.parameters()]
    summary = train(config, model=student, teacher=teacher)
    assert summary["model"] == summary["teacher"] == "passed in (torch.nn.modules.container.Sequential)" and summary["last"]["count"] == 6
    assert RunDir(config.out).info().in_chans == 1 and RunDir(config.out).info().model is None
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))  # the teacher stays frozen
    assert RunDir(config.out).config().model.name == "passed in (torch.nn.modules.container.Sequential)"
    evaluated = run_cli("eval", config.out, "--device", "cpu")  # nothing to rebuild it by: says what works
    assert evaluated.returncode == 2 and len(evaluated.stderr.strip().splitlines()) == 1
    assert "torch.nn.modules.container.Sequential passed in from Python" in evaluated.stderr
    assert "load_model(path, model_name='package.module:callable')" in evaluated.stderr
    resumed = run_cli("resume", config.out)
    assert resumed.returncode == 2 and "train(config, resume=True, model=...)" in resumed.stderr


def test_a_png_export_of_a_data_set_evaluates_as_the_data_set(tmp_path):
    """A model trained on mnist5k, evaluated on its test split written out as grey PNGs in class folders, gives the
    same numbers: the folder is read with the model's channels and normalisation, decoded into memory unchanged."""
    test = load_dataset("mnist5k", "test")
    for split, count in (("train", 1), ("val", None)):
        for i, (image, label) in enumerate(zip(test.images[:count], test.labels[:count])):
            folder = tmp_path / "digits" / split / test.classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[0].numpy()).save(folder / f"{i:04d}.png")
    info = {"model": "wrn", "model_kwargs": {"depth": 10, "width": 0.5}, **data_info(test, "mnist5k")}
    save_weights(create_model("wrn", num_classes=10, in_chans=1, depth=10, width=0.5), tmp_path / "run" / "model.safetensors", info)
    own = evaluate_run(tmp_path / "run", device="cpu")
    exported = evaluate_run(tmp_path / "run", data="folder", root=str(tmp_path / "digits"), device="cpu")
    assert exported["count"] == own["count"] == 1000 and exported["top1"] == own["top1"]
    assert exported["loss"] == pytest.approx(own["loss"], rel=1e-6)
