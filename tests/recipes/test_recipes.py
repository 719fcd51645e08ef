"""The packaged recipes: each is a valid config whose header cites its figure and names its teacher's recipe;
recipes resolve by path or by name (also as a ``base:``), and ``attnkit recipes`` lists them."""

import os
import subprocess
import sys

import pytest
import yaml

from attnkit.cli import main
from attnkit.engine import ConfigError, config_from_dict
from attnkit.engine.methods import term_labels
from attnkit.engine.terms import plan_terms
from attnkit.models import is_model
from attnkit.recipes import apply_overrides, find_recipe, list_recipes, load_recipe, recipe_names

RECIPES = list_recipes()
BY_NAME = {info.name: info for info in RECIPES}
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TINY_RUN = ["data.name=mnist5k", "data.download=false", "data.train_limit=128", "data.test_limit=64",
            "data.batch_size=32", "model.name=wrn", "model.kwargs={depth: 10, width: 0.5}", "optim.epochs=1",
            "progress=false", "tensorboard=false", "channels_last=false"]


def test_there_are_recipes_for_the_papers():
    for expected in ("cifar10/wrn_16_1_from_wrn_16_2_at", "cifar10/wrn_16_1_from_wrn_40_1_at_kd",
                     "cifar10/wrn_16_2_from_wrn_40_2_fact", "cifar100/resnet8x4_from_resnet32x4_kd",
                     "imagenet/resnet18_from_resnet34_at", "attention/attention92_cifar10",
                     "attention/ltpa_vgg_att3_cifar100"):
        assert expected in BY_NAME
    assert not any(name.startswith("schedules/") for name in BY_NAME)  # shared bases, not experiments
    assert "schedules/cifar10_at" in recipe_names(schedules=True)


@pytest.mark.parametrize("info", RECIPES, ids=lambda info: info.name)
def test_recipe_is_valid_and_cites_its_figure(info):
    config = config_from_dict(load_recipe(info.name))
    assert is_model(config.model.name) and (info.model, info.data) == (config.model.name, config.data.name)
    assert info.title and info.paper and info.source  # what it trains, the figure it reproduces, where from
    assert info.paper == "not reported" or "%" in info.paper
    if plan_terms(config.distill).needs_teacher:
        # The header names the recipe that trains the teacher, and that recipe writes the run the recipe reads.
        teacher = config_from_dict(load_recipe(info.teacher))
        assert config.distill.teacher == teacher.out
        assert config.distill.teacher_model == teacher.model.name  # a wrong checkpoint is refused, not used
    else:
        assert info.teacher is None and term_labels(info.distill) == ()


def test_header_fields_read_by_hand():
    info = BY_NAME["cifar100/resnet8x4_from_resnet32x4_kd"]
    assert (info.model, info.data, term_labels(info.distill), info.teacher) == ("resnet8x4", "cifar100", ("KD",), "cifar100/resnet32x4")
    assert (info.paper, info.source) == ("top-1 73.33%", "Tian et al. 2020, CRD benchmark, Table 1")
    # "(R)" marks before the source do not end the figure or the source.
    att2 = BY_NAME["attention/ltpa_vgg_att2_cifar10"]
    assert (att2.paper, att2.source) == ("test error 5.23% (R)", "Jetley et al. 2018, Table 1")
    assert term_labels(BY_NAME["cifar10/wrn_16_1_from_wrn_16_2_at_kd"].distill) == ("AT+KD",)


def test_list_recipes_takes_a_shell_pattern():
    assert [i.name for i in list_recipes("cifar10/*_at_kd")] == [
        "cifar10/wrn_16_1_from_wrn_16_2_at_kd", "cifar10/wrn_16_1_from_wrn_40_1_at_kd",
        "cifar10/wrn_16_2_from_wrn_40_2_at_kd"]
    assert list_recipes("nothing*") == []


def test_a_recipe_resolves_by_name_with_or_without_suffix_and_by_path():
    by_name = load_recipe("cifar10/wrn_16_2")
    assert load_recipe("cifar10/wrn_16_2.yaml") == by_name == load_recipe(find_recipe("cifar10/wrn_16_2"))
    # The schedule comes in through `base: schedules/cifar10_at`.
    assert by_name["optim"]["milestones"] == [60, 120, 160]
    assert by_name["model"] == {"name": "wrn_16_2", "kwargs": {"init": "official"}}
    assert load_recipe(str(find_recipe("cifar10/wrn_16_2"))) == by_name  # the installed file, by path


def test_an_existing_path_wins_over_a_packaged_name(tmp_path, monkeypatch):
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "wrn_16_2.yaml").write_text("model: {name: wrn_40_1}\n")
    monkeypatch.chdir(tmp_path)
    assert load_recipe("cifar10/wrn_16_2.yaml") == {"model": {"name": "wrn_40_1"}}
    assert load_recipe("cifar10/wrn_16_2")["model"]["name"] == "wrn_16_2"  # no such file: the packaged one


def test_an_unknown_name_names_the_closest_recipes():
    with pytest.raises(ConfigError, match=r"^recipe: no recipe file 'cifar10/wrn_16_3' .*did you mean cifar10/wrn_16_2"):
        load_recipe("cifar10/wrn_16_3")
    with pytest.raises(ConfigError, match="no packaged recipe"):
        load_recipe("../secrets")  # names never leave the package


def test_a_recipe_of_yours_may_start_from_a_packaged_one_by_name(tmp_path):
    (tmp_path / "mine.yaml").write_text("base: cifar10/wrn_16_1_from_wrn_16_2_at\noptim: {epochs: 30}\n")
    config = config_from_dict(load_recipe(tmp_path / "mine.yaml"))
    assert (config.optim.epochs, config.optim.lr, config.distill.at_beta) == (30, 0.1, 1000.0)
    assert config.distill.teacher == "runs/cifar10/wrn_16_2"
    # A file next to the recipe comes first, as `base:` paths always did.
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "wrn_16_1_from_wrn_16_2_at.yaml").write_text("model: {name: wrn_40_1}\n")
    assert load_recipe(tmp_path / "mine.yaml") == {"model": {"name": "wrn_40_1"}, "optim": {"epochs": 30}}
    (tmp_path / "typo.yaml").write_text("base: cifar10/wrn_16_22\n")
    with pytest.raises(ConfigError, match=r"^base: .*did you mean cifar10/wrn_16_2.*\(named in .*typo.yaml\)"):
        load_recipe(tmp_path / "typo.yaml")


def test_train_by_name_takes_the_recipe_and_the_overrides(tmp_path):
    out = tmp_path / "run"
    main(["train", "cifar10/wrn_16_1", *TINY_RUN, f"out={out}"])
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["optim"]["milestones"] == [60, 120, 160] and saved["optim"]["gamma"] == 0.2  # from the schedule
    assert saved["model"]["name"] == "wrn" and saved["data"]["name"] == "mnist5k"  # from the command line
    assert (out / "model.safetensors").is_file()


def test_cli_lists_recipes_and_refuses_unknown_names_from_a_fresh_process():
    listed = subprocess.run([sys.executable, "-m", "attnkit", "recipes", "cifar10/wrn_16_1_from_wrn_16_2_*"],
                            env=ENV, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split()[:5] == ["recipe", "model", "data", "terms", "paper"]
    assert [row.split()[0] for row in rows] == [f"cifar10/wrn_16_1_from_wrn_16_2_{m}" for m in ("at", "at_kd", "fact", "kd")]
    assert rows[1].split()[1:4] == ["wrn_16_1", "cifar10", "AT+KD"]
    assert "test error 7.51% (R) (Zagoruyko & Komodakis 2017, Table 1)" in rows[1]

    wrong = subprocess.run([sys.executable, "-m", "attnkit", "distill", "cifar10/wrn_16_1_from_wrn_16_2_at_kdd"],
                           env=ENV, capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and len(wrong.stderr.splitlines()) == 1
    assert "did you mean cifar10/wrn_16_1_from_wrn_16_2_at_kd" in wrong.stderr


def test_cli_version_comes_from_the_package(capsys):
    from attnkit import __version__

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out == f"attnkit {__version__}\n"


def test_broken_yaml_is_one_line_naming_the_file_or_key(tmp_path):
    (tmp_path / "broken.yaml").write_text("model: {name: wrn_16_1\noptim: {lr: 0.1}\n")
    with pytest.raises(ConfigError, match=r"^recipe: .*broken.yaml is not valid YAML: .* at line \d+") as err:
        load_recipe(tmp_path / "broken.yaml")
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"^optim.milestones: '\[60, 120' is not a valid YAML value"):
        apply_overrides({}, ["optim.milestones=[60, 120"])
