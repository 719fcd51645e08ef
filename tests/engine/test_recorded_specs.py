"""A model spec read from a file (weights metadata, run.json, config.yaml) is code to import and call: attnkit
builds it only when the user names it, so a received run or weights file cannot make it run code of its choosing.
Each command runs in a fresh process next to a module that leaves a mark if it is ever imported."""

from __future__ import annotations

import shutil

import pytest
import yaml

from attnkit.engine import RunDir, load_model
from attnkit.engine.checkpoint import save_weights
from attnkit.models import create_model
from helpers import run_cli

EVIL = '''
from pathlib import Path
Path(__file__).with_name("imported").write_text("imported")

def boom(num_classes, **kwargs):
    Path(__file__).with_name("called").write_text("called")
    from attnkit.models import create_model
    return create_model("wrn", num_classes=num_classes, depth=10, width=0.5, **kwargs)
'''


@pytest.fixture
def evil(tmp_path):
    """tmp_path/evil.py, and a weights file whose metadata names evil:boom (a real wrn's weights)."""
    (tmp_path / "evil.py").write_text(EVIL)
    model = create_model("wrn", num_classes=3, depth=10, width=0.5)
    info = {"model": "evil:boom", "dataset": "cluttered-mnist", "num_classes": 3, "in_chans": 3,
            "input_size": [3, 24, 24], "mean": [0.5] * 3, "std": [0.25] * 3, "classes": ["a", "b", "c"]}
    save_weights(model, tmp_path / "weights.safetensors", info)
    return tmp_path


def _refused(done, *expected: str) -> None:
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    for text in expected:
        assert text in done.stderr, done.stderr


def test_eval_and_maps_refuse_a_recorded_spec_unless_named(evil, tmp_path):
    _refused(run_cli("eval", evil / "weights.safetensors", "--device", "cpu", cwd=evil),
             "'evil:boom'", "ATTNKIT_MODELS=evil:boom")
    _refused(run_cli("maps", "--checkpoint", evil / "weights.safetensors", "--data", "mnist5k", "--method", "gradcam",
                     "--out", tmp_path / "maps", cwd=evil), "ATTNKIT_MODELS=evil:boom")
    assert not (evil / "imported").exists() and not (evil / "called").exists()
    with pytest.raises(ValueError, match=r"model_name='evil:boom'"):
        load_model(evil / "weights.safetensors")


def test_a_teacher_recording_a_spec_needs_distill_teacher_model(evil, image_folder, tmp_path):
    common = ["data.name=folder", f"data.root={image_folder}", "data.image_size=24", "data.workers=0",
              "optim.epochs=1", "progress=false", "tensorboard=false", "model.name=wrn",
              "model.kwargs={depth: 10, width: 0.5}", f"distill.teacher={evil / 'weights.safetensors'}",
              "distill.at_beta=1000", "data.train_limit=6", "data.test_limit=3"]
    _refused(run_cli("distill", *common, f"out={tmp_path / 'a'}", cwd=evil),
             "distill.teacher", "add distill.teacher_model=evil:boom")
    assert not (evil / "imported").exists()
    named = run_cli("distill", *common, "distill.teacher_model=evil:boom", f"out={tmp_path / 'b'}", cwd=evil)
    assert (evil / "called").exists() and "would import" not in named.stderr  # named: built (its images differ)


def test_resume_of_a_config_naming_a_spec_needs_it_named_again(evil, folder_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(folder_run, run, ignore=shutil.ignore_patterns("run.lock"))
    config = yaml.safe_load((run / RunDir.CONFIG).read_text())
    config["model"]["name"] = "evil:boom"
    (run / RunDir.CONFIG).write_text(yaml.safe_dump(config))
    _refused(run_cli("resume", run, cwd=evil), "model.name", "add model.name=evil:boom to the resume command")
    _refused(run_cli("train", "--resume", f"out={run}", cwd=evil), "model.name=evil:boom")
    assert not (evil / "imported").exists()
