import json

import pytest
import torch

from attnkit.engine import load_model, load_run_info, save_weights
from attnkit.engine.checkpoint import atomic_write
from attnkit.engine.rundir import RunDir
from attnkit.models import create_model

INFO = {"model": "wrn_16_1", "model_kwargs": {}, "num_classes": 3, "in_chans": 1, "input_size": [1, 16, 16]}


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "file.txt"
    path.write_text("old")

    def failing(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, failing)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["file.txt"]


def test_weights_carry_their_architecture(tmp_path):
    model = create_model("wrn_16_1", num_classes=3, in_chans=1)
    save_weights(model, tmp_path / "w.safetensors", INFO)
    loaded = load_model(tmp_path / "w.safetensors")
    assert not loaded.training and loaded.num_classes == 3
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    assert load_run_info(tmp_path / "w.safetensors")["input_size"] == [1, 16, 16]


def test_wrong_architecture_is_a_clear_error(tmp_path):
    save_weights(create_model("wrn_16_1", num_classes=3, in_chans=1), tmp_path / "w.safetensors", INFO)
    with pytest.raises(ValueError, match="holds a 'wrn_16_1' but 'wrn_16_2' was asked for"):
        load_model(tmp_path / "w.safetensors", model_name="wrn_16_2")
    # A file whose metadata lies about its architecture: the shapes do not fit.
    save_weights(create_model("wrn_16_2", num_classes=3, in_chans=1), tmp_path / "lie.safetensors", INFO)
    with pytest.raises(ValueError, match="do not fit WideResNet: .*of another shape"):
        load_model(tmp_path / "lie.safetensors")


def test_truncated_weights_file(tmp_path):
    save_weights(create_model("wrn_16_1", num_classes=3, in_chans=1), tmp_path / "w.safetensors", INFO)
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "w.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        load_model(tmp_path / "w.safetensors")


def test_checkpoint_pointer_and_cleanup(tmp_path):
    model = create_model("wrn_16_1", num_classes=3, in_chans=1)
    state = {"optimizer": {"x": torch.ones(2)}, "note": "a"}
    RunDir(tmp_path).save_checkpoint(model, INFO, state, epoch=1, step=5)
    RunDir(tmp_path).save_checkpoint(model, INFO, state, epoch=2, step=0)
    assert RunDir(tmp_path).checkpoint_pointer() == {"epoch": 2, "step": 0, "weights": "ckpt-0002-000000.safetensors",
                                           "state": "ckpt-0002-000000.pt"}
    assert sorted(p.name for p in tmp_path.glob("ckpt-*")) == ["ckpt-0002-000000.pt", "ckpt-0002-000000.safetensors"]
    weights, loaded = RunDir(tmp_path).load_checkpoint()
    assert loaded["epoch"] == 2 and torch.equal(loaded["optimizer"]["x"], torch.ones(2))
    # A pointer naming files of another step (a hand-edited run directory) is refused.
    pointer = json.loads((tmp_path / "checkpoint.json").read_text())
    pointer["step"] = 7
    (tmp_path / "checkpoint.json").write_text(json.dumps(pointer))
    with pytest.raises(ValueError, match="disagree"):
        RunDir(tmp_path).load_checkpoint()


def test_run_directory_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run directory or weights file"):
        load_model(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        load_model(tmp_path)
