"""RunDir reads back what a run wrote; a run on a folder of PNGs trains and evaluates; resume refuses changes."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from attnkit.data import ImageTensors, load_dataset
from attnkit.engine import ConfigError, RunConfig, RunDir, RunInfo, load_model, load_run_info, resume_config, train
from attnkit.engine.data_setup import data_info, take
from attnkit.engine.evaluation import evaluate_run


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """One epoch of a tiny WRN on ROOT/{train,val}/{a,b,c}/*.png (10 + 2 images a class, several sizes)."""
    root = tmp_path_factory.mktemp("pngs")
    rng = np.random.default_rng(0)
    for split, count in (("train", 10), ("val", 2)):
        for label, name in enumerate("abc"):
            (root / split / name).mkdir(parents=True)
            for k in range(count):
                size = (int(rng.integers(14, 30)), int(rng.integers(14, 30)))
                pixels = rng.integers(0, 80, (*size[::-1], 3), dtype=np.uint8)
                pixels[..., label] += 150  # the class is the dominant colour
                Image.fromarray(pixels).save(root / split / name / f"{k}.png")
    config = RunConfig()
    config.out, config.device, config.progress, config.tensorboard = str(root.parent / "run"), "cpu", False, False
    config.model.name, config.model.kwargs = "wrn", {"depth": 10, "width": 0.5}
    config.data.name, config.data.root, config.data.image_size, config.data.workers = "folder", str(root), 16, 0
    config.data.batch_size, config.data.eval_batch_size, config.data.train_limit = 8, 8, 24
    config.optim.epochs = 1
    summary = train(config)
    return RunDir(config.out), root, summary


def test_training_on_an_image_folder(folder_run):
    run, root, summary = folder_run
    info = run.info()
    assert isinstance(info, RunInfo)
    assert (info.dataset, info.classes, info.in_chans, info.input_size) == ("folder", ["a", "b", "c"], 3, [3, 16, 16])
    assert info.model == "wrn" and info.model_kwargs == {"depth": 10, "width": 0.5} and info.channels_last_source
    assert summary["last"]["count"] == 6 and [r["epoch"] for r in run.metrics()] == [1]
    subset = take(load_dataset("folder", "train", root=root), 12)  # data.train_limit on a folder
    assert len(subset) == 12 and subset.classes == ["a", "b", "c"]
    result = evaluate_run(run.path, device="cpu")  # `attnkit eval` of a folder run
    assert result["count"] == 6 and result["data"] == "folder"


def test_run_directory_reads_back_its_run(folder_run):
    run, _, summary = folder_run
    assert run.holds_run() and run.summary() == json.loads(run.file(RunDir.SUMMARY).read_text()) == summary
    assert run.config().data.name == "folder" and run.config().out == str(run.path)
    assert run.weights() == run.path / "model.safetensors" and run.weights("best") == run.path / "best.safetensors"
    assert run.weights("last") == run.path / run.checkpoint_pointer()["weights"]
    model = run.load_model("final", "cpu")
    assert not model.training and model.num_classes == 3
    assert load_run_info(run.path) == run.info().to_dict()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), load_model(run.path).state_dict().values()))
    with pytest.raises(ValueError, match="weights must be final, best or last"):
        run.weights("newest")


def test_a_copied_run_reads_and_resumes_where_it_now_is(folder_run, tmp_path):
    copy = RunDir(shutil.copytree(folder_run[0].path, tmp_path / "copy"))
    assert copy.config().out == str(copy.path)  # config.yaml still names the original directory
    assert resume_config(copy.path).out == str(copy.path)
    values = copy.config_values()
    values["data"]["workers"], values["progress"] = 2, True  # resume-neutral settings may change
    assert resume_config(copy.path, values).data.workers == 2
    values["optim"]["lr"] = 0.5
    with pytest.raises(ConfigError, match=f"differs .* at optim.lr; continue the run as it was with: attnkit resume {copy.path}"):
        resume_config(copy.path, values)
    with pytest.raises(ConfigError, match="nothing to resume"):
        resume_config(tmp_path / "nowhere")


def test_data_info_of_any_data_set(folder_run):
    grey = ImageTensors(torch.zeros(4, 1, 28, 20, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]), ["x", "y"],
                        mean=(0.5,), std=(0.2,), name="toy")
    assert data_info(grey, "toy")["input_size"] == [1, 28, 20] and data_info(grey, "toy")["in_chans"] == 1
    folder = load_dataset("folder", "test", root=folder_run[1])
    assert data_info(folder, "folder", image_size=32)["input_size"] == [3, 32, 32]
    with pytest.raises(ValueError, match="differ in size; give the image_size"):
        data_info(folder, "folder")


def test_run_info_keeps_keys_it_does_not_know():
    info = RunInfo.from_dict({"dataset": "x", "num_classes": 2, "future_key": [1, 2]})
    assert info.num_classes == 2 and info.to_dict()["future_key"] == [1, 2]
