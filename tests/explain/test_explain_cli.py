"""`attnkit maps` end to end, on run directories written by the engine's own save function."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from PIL import Image

from attnkit.cli import main
from attnkit.data import load_dataset
from attnkit.engine import save_weights
from attnkit.engine.data_setup import data_info
from attnkit.explain.metrics import FAITHFULNESS_KEYS
from attnkit.explain.render import figure_size
from attnkit.models import create_model
from helpers import run_cli

TINY = {"depth": 10, "width": 0.5}


def _save_run(directory, dataset: str, seed: int) -> None:
    data = load_dataset(dataset, "test")
    info = {"model": "wrn", "model_kwargs": TINY, **data_info(data, dataset)}
    torch.manual_seed(seed)
    model = create_model("wrn", num_classes=info["num_classes"], in_chans=info["in_chans"], **TINY)
    save_weights(model, directory / "model.safetensors", info)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    _save_run(root / "teacher", "mnist5k", seed=0)
    _save_run(root / "student", "mnist5k", seed=1)
    return root


def _png_size(path):
    with Image.open(path) as png:
        return png.size


def test_maps_of_one_run_on_data_set_images(runs, tmp_path, capsys):
    out = tmp_path / "maps"
    main(["maps", "--checkpoint", str(runs / "teacher"), "--data", "mnist5k", "--num-images", "3",
          "--method", "gradcam,activation,model", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "skipped model for teacher: WideResNet has no forward_with_attention" in printed
    assert "teacher  gradcam" in printed and "wrote 2 figures" in printed
    width, height = figure_size(3, 3, row_labels=True, title=True)  # 3 images; image, gradcam, activation
    assert _png_size(out / "methods.png") == (round(width * 100), round(height * 100))
    assert _png_size(out / "activation_layers.png")[1] == round(height * 100)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["target"] == "label" and saved["source"] == {"data": "mnist5k"} and saved["images"] == 3
    assert saved["runs"] == {"teacher": str(runs / "teacher")}
    assert set(saved["metrics"]["teacher"]) == {"gradcam", "activation"}
    assert "randomization_spearman" in saved["metrics"]["teacher"]["gradcam"]
    assert "pointing_game" not in saved["metrics"]["teacher"]["gradcam"]  # mnist5k has no boxes


def test_maps_compare_runs_on_image_files(runs, tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    for i, colour in enumerate([(250, 20, 20), (10, 200, 90)]):
        Image.new("RGB", (40, 30), colour).save(folder / f"p{i}.png")  # read as grey, cropped and resized to 28x28
    out = tmp_path / "compare"
    main(["maps", "--compare", str(runs / "teacher"), str(runs / "student"), "--labels", "teacher", "student+AT",
          "--images", str(folder), "--method", "cam,saliency", "--out", str(out), "--no-sanity", "--no-faithfulness"])
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["target"] == "predicted" and saved["source"] == {"images": ["p0.png", "p1.png"]}
    assert saved["metrics"]["student+AT"] == {"cam": {"images": 2}, "saliency": {"images": 2}}
    width, height = figure_size(2, 3, row_labels=True, title=True)  # image, teacher, student+AT
    for name in ("compare_cam.png", "compare_saliency.png"):
        assert _png_size(out / name) == (round(width * 100), round(height * 100))
    assert (out / "teacher" / "methods.png").is_file() and (out / "student_AT" / "methods.png").is_file()


def test_maps_scores_boxes_of_cluttered_mnist(tmp_path):
    _save_run(tmp_path / "run", "cluttered-mnist", seed=0)
    out = tmp_path / "maps"
    main(["maps", "--checkpoint", str(tmp_path / "run"), "--data", "cluttered-mnist", "--num-images", "2",
          "--method", "gradcam", "--out", str(out), "--no-sanity", "--no-faithfulness", "--target", "3"])
    scores = json.loads((out / "metrics.json").read_text())["metrics"]["run"]["gradcam"]
    assert set(scores) == {"images", "pointing_game", "energy_in_box"} and 0 <= scores["energy_in_box"] <= 1


def test_maps_with_every_new_method_and_faithfulness_from_a_fresh_process(runs, tmp_path):
    out = tmp_path / "new"
    methods = "gradcam++,xgradcam,layercam,eigencam,scorecam,ablationcam,integrated_gradients,smoothgrad,guided_backprop"
    done = subprocess.run(
        [sys.executable, "-m", "attnkit", "maps", "--checkpoint", str(runs / "teacher"), "--data", "mnist5k",
         "--num-images", "2", "--method", methods, "--out", str(out), "--no-sanity"],
        capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"},  # no spinning threads
    )
    assert re.search(r"teacher  gradcam\+\+ +\d", done.stdout) and "road.morf-" in done.stdout
    assert "wrote 1 figures" in done.stdout  # methods.png: none of these methods has layers of its own
    saved = json.loads((out / "metrics.json").read_text())
    assert list(saved["metrics"]["teacher"]) == methods.split(",")
    for scores in saved["metrics"]["teacher"].values():
        assert set(scores) == {"images", *FAITHFULNESS_KEYS}
        assert all(0 <= scores[key] <= 1 for key in FAITHFULNESS_KEYS)


def test_maps_reaches_method_options_from_a_fresh_process(runs, tmp_path):
    # --layer, --aug-smooth (the CAM family) and --option METHOD.KEY=VALUE reach the methods: the metrics written
    # are those of the maps computed here with the same options, and differ from the default maps'.
    from attnkit.data import dataset_images
    from attnkit.engine import load_model
    from attnkit.explain import GradCAM
    from attnkit.explain.metrics import faithfulness

    out = tmp_path / "options"
    done = run_cli("maps", "--checkpoint", runs / "teacher", "--data", "mnist5k", "--num-images", "2", "--method",
                   "gradcam,scorecam,integrated_gradients", "--layer", "layer2,relu", "--aug-smooth", "--option",
                   "gradcam.relu=false", "--option", "scorecam.channel_batch_size=8", "--option",
                   "integrated_gradients.steps=4", "--no-sanity", "--out", out)
    assert done.returncode == 0, done.stderr
    saved = json.loads((out / "metrics.json").read_text())
    fused = {"layer": ["layer2", "relu"], "aug_smooth": True}
    assert saved["method_options"] == {"gradcam": {**fused, "relu": False}, "scorecam": {**fused, "channel_batch_size": 8},
                                       "integrated_gradients": {"steps": 4}}
    model, loaded = load_model(runs / "teacher"), dataset_images("mnist5k", 2)
    labels = loaded.labels
    for options, equal in (({**fused, "relu": False}, True), ({}, False)):
        maps = GradCAM(model, **options).attribute(loaded.images, labels)
        expected = {key: float(v.double().mean()) for key, v in faithfulness(model, loaded.images, maps, labels).items()}
        same = all(abs(saved["metrics"]["teacher"]["gradcam"][key] - value) < 1e-5 for key, value in expected.items())
        assert same == equal


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--data", "mnist5k", "--method", "gradcm"], "unknown attention-map method 'gradcm'; did you mean gradcam"),
        (["--data", "mnist5k", "--method", "scorecam", "--option", "scorecam.batch_size=8"],
         "scorecam has no option 'batch_size'; its options: layer, channel_batch_size, relu, aug_smooth, eigen_smooth"),
        (["--data", "mnist5k", "--method", "saliency", "--layer", "layer2"], "layer apply to the CAM methods"),
        (["--data", "mnist5k", "--method", "gradcam", "--option", "steps=3"], "--option steps=3: give METHOD.KEY=VALUE"),
        (["--data", "mnist5k", "--method", "gradcam", "--option", "occlusion.window=4"],
         "options given for occlusion, which is not among the methods chosen"),
        (["--data", "mnist5k", "--method", "gradcam", "--layer", "layer7"], "no module at path 'layer7'"),
        (["--data", "nosuch"], "unknown data set 'nosuch'"),
        (["--images", "missing.png"], "no such image file or directory: missing.png"),
        (["--images", "{folder}", "--target", "label"], "target 'label' needs labelled images"),
        (["--images", "{folder}/notes.txt"], "cannot identify image file"),
    ],
)
def test_maps_errors_are_one_clear_line(runs, tmp_path, capsys, arguments, message):
    Image.new("L", (8, 8)).save(tmp_path / "one.png")
    (tmp_path / "notes.txt").write_text("not an image")
    arguments = [a.format(folder=tmp_path) for a in arguments]
    with pytest.raises(SystemExit) as exit_info:
        main(["maps", "--checkpoint", str(runs / "teacher"), "--out", str(tmp_path / "o"), *arguments])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("attnkit maps: error:") and re.search(message, err)


def test_maps_rejects_a_bad_target_and_missing_runs(runs, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["maps", "--checkpoint", str(runs / "teacher"), "--data", "mnist5k", "--out", str(tmp_path), "--target", "dog"])
    assert "must be label, predicted or a class index, got 'dog'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["maps", "--checkpoint", str(tmp_path / "none"), "--data", "mnist5k", "--out", str(tmp_path)])
    assert "no run directory or weights file" in capsys.readouterr().err
