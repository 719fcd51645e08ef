"""Models from outside the registry: package.module:callable, torchvision:NAME (a look-alike package in a
subprocess; the real one where installed), timm:NAME; their attention points are traced."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from attnkit.features import resolution_groups
from attnkit.models import create_model

FAKES = Path(__file__).parents[1] / "fakes"  # tests/fakes/torchvision: a torchvision.models look-alike

NETS = '''
from torch import nn

def tiny_net(num_classes, in_chans=3, width=4):
    return nn.Sequential(nn.Conv2d(in_chans, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes))

def rgb_only(num_classes):
    return nn.Linear(3, num_classes)

def no_classes():
    return nn.Identity()

def not_a_model(num_classes):
    return "model"

class Builder:
    @staticmethod
    def build(num_classes, **kwargs):
        return tiny_net(num_classes, **kwargs)
'''


@pytest.fixture
def mypkg(tmp_path, monkeypatch):
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "nets.py").write_text(NETS)
    (tmp_path / "broken.py").write_text("raise RuntimeError('half-written module')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("mypkg", "mypkg.nets", "broken"):
        sys.modules.pop(name, None)


def test_a_callable_of_your_own_package(mypkg):
    model = create_model("mypkg.nets:tiny_net", num_classes=5, in_chans=1, width=6)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 5) and model[0].out_channels == 6
    assert create_model("mypkg.nets:Builder.build", num_classes=3)(torch.zeros(1, 3, 8, 8)).shape == (1, 3)
    groups = resolution_groups(model, torch.zeros(1, 1, 8, 8))  # no feature_info: traced, one point per resolution
    assert [(g.path, g.shape) for g in groups] == [("1", (6, 8, 8)), ("4", (12, 4, 4))]


@pytest.mark.parametrize("spec, kwargs, message", [
    ("mypkg.nope:tiny_net", {}, r"cannot import module 'mypkg.nope' named by model spec .*ModuleNotFoundError"),
    ("broken:net", {}, r"cannot import module 'broken' .*RuntimeError: half-written module\); fix the module"),
    ("mypkg.nets:tiny_nett", {}, r"module 'mypkg.nets' has no attribute 'tiny_nett' .*did you mean tiny_net\?"),
    ("mypkg.nets:rgb_only", {"in_chans": 1}, r"takes no in_chans argument, and the images have 1 channel.*data.channels=3"),
    ("mypkg.nets:no_classes", {}, r"takes no num_classes argument; wrap it"),
    ("mypkg.nets:not_a_model", {}, r"returned a str, not a torch.nn.Module"),
    ("mypkg.nets:tiny_net", {"depth": 3}, r"mypkg.nets:tiny_net\(num_classes=2, depth=3\) failed: .*check model.kwargs"),
    (":tiny_net", {}, r"must be package.module:callable, torchvision:NAME or timm:NAME"),
])
def test_spec_errors_name_the_module_or_attribute(mypkg, spec, kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_model(spec, num_classes=2, **kwargs)


def test_missing_libraries_say_how_to_install_them():
    if importlib.util.find_spec("timm") is None:
        with pytest.raises(ValueError, match=r"timm:resnet18 needs timm, which cannot be imported here .*pip install timm"):
            create_model("timm:resnet18", num_classes=2)
    if importlib.util.find_spec("torchvision") is None:
        with pytest.raises(ValueError, match=r"needs torchvision, .*pip install torchvision"):
            create_model("torchvision:resnet18", num_classes=2)


def test_torchvision_look_alike_builds_and_its_points_are_traced():
    code = textwrap.dedent("""
        import torch
        from attnkit.features import resolution_groups
        from attnkit.models import create_model
        model = create_model("torchvision:resnet18", num_classes=7)
        assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 7)
        print([(g.path, g.shape) for g in resolution_groups(model, torch.zeros(1, 3, 64, 64))])
        try:
            create_model("torchvision:resnet18", num_classes=7, in_chans=1)
        except ValueError as err:
            print(err)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(FAKES), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    points, refusal = done.stdout.splitlines()
    # stem (before the max-pool), then each stage at the resolution where the next one downsamples
    assert points == ("[('relu', (8, 32, 32)), ('layer1', (8, 16, 16)), ('layer2', (16, 8, 8)), "
                      "('layer3', (32, 4, 4)), ('layer4', (64, 2, 2))]")
    assert "takes no in_chans argument" in refusal


def test_real_torchvision_where_installed():
    pytest.importorskip("torchvision")
    model = create_model("torchvision:resnet18", num_classes=3)
    assert isinstance(model, nn.Module) and model(torch.zeros(1, 3, 64, 64)).shape == (1, 3)
    assert [g.path for g in resolution_groups(model, torch.zeros(1, 3, 64, 64))][-4:] == [
        "layer1", "layer2", "layer3", "layer4"]


FAULTY = '''
from torch import nn

def raises(num_classes, in_chans=3):
    raise RuntimeError("weights file missing")

def fixed_size(num_classes, in_chans=3):  # a flatten sized for 8 x 8 images
    return nn.Sequential(nn.Conv2d(in_chans, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, num_classes))
'''


def test_faults_of_a_users_model_are_one_line_naming_it(tmp_path):
    """From the command line (fresh processes): an import error inside the user's module, a constructor that
    raises, a forward that fails on the data's image size -- each one line naming the spec and the cause, exit 2."""
    from helpers import run_cli

    (tmp_path / "faulty.py").write_text(FAULTY)
    (tmp_path / "half.py").write_text("import torch\nVALUE = 1 / 0\n")
    common = ["data.name=mnist5k", "data.train_limit=16", "data.test_limit=8", "optim.epochs=1", "progress=false",
              "tensorboard=false"]
    cases = [("half:net", ["cannot import module 'half'", "ZeroDivisionError: division by zero", "fix the module"]),
             ("faulty:raises", ["faulty:raises(num_classes=10, in_chans=1)", "raised RuntimeError: weights file missing"]),
             ("faulty:fixed_size", ["model.name", "faulty:fixed_size fails on one image of this data, shape (1, 1, 28",
                                    "RuntimeError: mat1 and mat2", "data.image_size"])]
    for spec, words in cases:
        done = run_cli("train", *common, f"model.name={spec}", f"out={tmp_path / spec.replace(':', '_')}", cwd=tmp_path)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert all(word in done.stderr for word in words), done.stderr
