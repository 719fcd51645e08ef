"""`attnkit config`: the resolved config as a YAML recipe with every key's meaning, from a fresh process."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import yaml

from attnkit.engine import RunConfig, config_from_dict, config_to_dict, load_recipe
from attnkit.engine.config_doc import field_comments
from attnkit.recipes import apply_overrides


def _config_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "attnkit", "config", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_every_config_field_has_its_comment():
    for section in (RunConfig, *(type(v) for v in vars(RunConfig()).values() if dataclasses.is_dataclass(v))):
        missing = [f.name for f in dataclasses.fields(section) if f.name not in field_comments(section)]
        assert not missing, f"{section.__name__} fields without a comment: {missing}"


def test_config_of_a_recipe_with_overrides_is_that_recipe_commented():
    done = _config_command("cifar10/wrn_16_2", "optim.lr=0.05", "data.name=folder", "data.root=imgs")
    assert done.returncode == 0, done.stderr
    printed = yaml.safe_load(done.stdout)
    expected = config_from_dict(apply_overrides(load_recipe("cifar10/wrn_16_2"),
                                                ["optim.lr=0.05", "data.name=folder", "data.root=imgs"]))
    assert config_from_dict(printed) == expected and printed == config_to_dict(expected)
    lines = done.stdout.splitlines()
    assert lines[0] == "# attnkit config cifar10/wrn_16_2 optim.lr=0.05 data.name=folder data.root=imgs"
    assert any(line.startswith("  lr: 0.05") and line.endswith("# peak learning rate") for line in lines)
    assert any(line.startswith("  val_fraction: null") and "share of each class held out" in line for line in lines)


def test_config_alone_prints_the_defaults_and_a_bad_key_is_one_line():
    done = _config_command()
    assert done.returncode == 0 and config_from_dict(yaml.safe_load(done.stdout)) == RunConfig()
    assert "# attnkit config the defaults" in done.stdout
    bad = _config_command("optim.lrr=3")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert bad.stderr.startswith("attnkit config: error:") and "optim.lrr: unknown key; did you mean lr?" in bad.stderr
