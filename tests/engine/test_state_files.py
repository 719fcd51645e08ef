"""Weights saved by other tools: PyTorch state dicts (nested, prefixed) and safetensors without metadata load into
the architecture named for them; pickled objects are refused without running them."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from attnkit.engine import load_model, load_run_info
from attnkit.engine.rundir import read_weights_file
from attnkit.models import create_model


class Payload:
    """An object whose unpickling would run code: weights_only must refuse it."""

    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('ran')",))


@pytest.mark.parametrize("wrap", [
    lambda s: s,
    lambda s: {"epoch": 9, "optimizer": {"lr": 0.1}, "state_dict": {f"module.{k}": v for k, v in s.items()}},
    lambda s: {"model": {f"_orig_mod.{k}": v for k, v in s.items()}, "args": ["--lr", "0.1"]},
    lambda s: {"model_state_dict": {f"module._orig_mod.{k}": v for k, v in s.items()}},
])
def test_pytorch_state_dicts_of_every_common_shape_load(tmp_path, wrap):
    model = create_model("wrn", num_classes=4, in_chans=1, depth=10, width=0.5)
    torch.save(wrap(model.state_dict()), tmp_path / "teacher.pth")
    loaded = load_model(tmp_path / "teacher.pth", model_name="wrn", num_classes=4, in_chans=1,
                        model_kwargs={"depth": 10, "width": 0.5})
    assert not loaded.training
    for (key, a), (key_b, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert key == key_b and torch.equal(a, b)
    assert load_run_info(tmp_path / "teacher.pth") == {}


def test_safetensors_without_metadata_and_the_errors(tmp_path, monkeypatch):
    model = create_model("wrn", num_classes=4, depth=10, width=0.5)
    save_file({f"module.{k}": v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "plain.safetensors")
    state, info = read_weights_file(tmp_path / "plain.safetensors")
    assert info == {} and state.keys() == model.state_dict().keys()
    with pytest.raises(ValueError, match="carries no attnkit metadata; name its architecture"):
        load_model(tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="does not record how many classes"):
        load_model(tmp_path / "plain.safetensors", model_name="wrn", model_kwargs={"depth": 10, "width": 0.5})
    with pytest.raises(ValueError, match="do not fit WideResNet"):  # the wrong size of network
        load_model(tmp_path / "plain.safetensors", model_name="wrn", num_classes=4, model_kwargs={"depth": 16})
    monkeypatch.chdir(tmp_path)
    torch.save({"state_dict": model.state_dict(), "extra": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match=r"evil.pth holds pickled Python objects besides tensors, which attnkit never "
                                         r"loads; save model.state_dict\(\)"):
        load_model(tmp_path / "evil.pth", model_name="wrn", num_classes=4)
    assert not (tmp_path / "PWNED").exists()
    torch.save({"epoch": 3, "note": "no weights"}, tmp_path / "empty.pt")
    with pytest.raises(ValueError, match="holds no state dict of tensors"):
        load_model(tmp_path / "empty.pt", model_name="wrn", num_classes=4)
    (tmp_path / "cut.pth").write_bytes((tmp_path / "evil.pth").read_bytes()[:100])
    with pytest.raises(ValueError, match="cut.pth is not a readable PyTorch weights file"):
        load_model(tmp_path / "cut.pth", model_name="wrn", num_classes=4)


@pytest.mark.parametrize("name, legacy", [("teacher.pth.tar", False), ("teacher", False), ("model.weights", True)])
def test_pytorch_files_are_recognised_by_content_whatever_their_name(tmp_path, name, legacy):
    state = {"fc.weight": torch.arange(6.0).reshape(2, 3)}
    torch.save({"epoch": 1, "state_dict": state}, tmp_path / name, _use_new_zipfile_serialization=not legacy)
    loaded, info = read_weights_file(tmp_path / name)
    assert info == {} and torch.equal(loaded["fc.weight"], state["fc.weight"])
