import pytest

from attnkit.engine import ConfigError, RunConfig, apply_overrides, config_from_dict, config_to_dict, load_recipe
from attnkit.engine.terms import plan_terms


def test_round_trip_and_defaults():
    config = config_from_dict({"model": {"name": "wrn_16_2"}, "optim": {"lr": 0.05}})
    assert config.model.name == "wrn_16_2" and config.optim.lr == 0.05 and config.data.name == "mnist5k"
    assert config_from_dict(config_to_dict(config)) == config


def test_overrides_parse_yaml_values_and_numbers_without_dot():
    values = apply_overrides({"optim": {"lr": 0.1}}, ["optim.lr=0.05", "optim.milestones=[10, 20]",
                                                      "optim.weight_decay=1e-4", "distill.layers=['layer1:layer1']",
                                                      "optim.grad_clip=null"])
    config = config_from_dict(values)
    assert config.optim.lr == 0.05 and config.optim.milestones == [10, 20]
    assert config.optim.weight_decay == pytest.approx(1e-4)  # YAML reads 1e-4 as a string; we parse it
    assert config.distill.layers == ["layer1:layer1"] and config.optim.grad_clip is None


@pytest.mark.parametrize(
    "values, key, message",
    [
        ({"optim": {"lrr": 0.1}}, "optim.lrr", "did you mean lr"),
        ({"optim": {"lr": -0.1}}, "optim.lr", "must be > 0"),
        ({"optim": {"lr": "fast"}}, "optim.lr", "must be a number"),
        ({"data": {"batch_size": 1.5}}, "data.batch_size", "must be an integer"),
        ({"distill": {"at_beta": -1}}, "distill.at_beta", "must be >= 0"),
        ({"distill": {"kd_alpha": 2}}, "distill.kd_alpha", r"must be in \[0, 1\]"),
        ({"distill": {"at_mode": "both"}}, "distill.at_mode", "must be code or paper"),
        ({"distill": {"layers": ["layer1"]}}, "distill.layers[0]", "student_path:teacher_path"),
        ({"distill": {"layers": ["layer1:layer1", "layer1:layer2"]}}, "distill.layers", "more than one pair"),
        ({"distill": {"flip_beta": 1.0}, "compile": True}, "compile", "double-backprop"),
        ({"optim": {"milestones": [20, 10]}}, "optim.milestones", "increasing"),
        ({"precision": "fp8"}, "precision", "must be auto"),
        ({"modle": {}}, "modle", "did you mean model"),
        ({"data": {"augment": "yes"}}, "data.augment", "true or false"),
        ({"distill": {"at_beta": float("inf")}}, "distill.at_beta", "must be a finite number"),
        ({"distill": {"kd_temperature": "inf"}}, "distill.kd_temperature", "must be a finite number"),
        ({"optim": {"milestones": [float("nan")]}}, "optim.milestones[0]", "must be a finite number"),
        ({"data": {"pad_mode": "zero"}}, "data.pad_mode", "must be reflect, symmetric or zeros, got 'zero'; did you mean zeros"),
        ({"optim": {"name": "adamw2"}}, "optim.name", "must be sgd, adam or adamw"),
        ({"distill": {"at_reduction": "avg"}}, "distill.at_reduction", "must be mean, sum or max"),
        ({"channels_last": "yes"}, "channels_last", "must be auto, true or false"),
    ],
)
def test_invalid_values_name_their_key(values, key, message):
    with pytest.raises(ConfigError, match=message) as info:
        config_from_dict(values)
    assert info.value.key == key and str(info.value).startswith(f"{key}: ")


def test_overrides_leave_the_recipe_untouched():
    recipe = {"model": {"name": "wrn", "kwargs": {"width": 1}}}
    changed = apply_overrides(recipe, ["model.kwargs.width=2"])
    assert changed["model"]["kwargs"]["width"] == 2 and recipe["model"]["kwargs"]["width"] == 1


def test_override_syntax_error():
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["optim.lr"])


def test_recipe_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model: {name: wrn_40_1}\noptim:\n  epochs: 3\n")
    assert config_from_dict(load_recipe(path)).optim.epochs == 3
    with pytest.raises(ConfigError, match="no recipe file"):
        load_recipe(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_recipe(tmp_path / "bad.yaml")


def test_needs_teacher_and_double_backprop_flags():
    assert not plan_terms(RunConfig().distill).needs_teacher
    plan = plan_terms(config_from_dict({"distill": {"kd_alpha": 0.9, "flip_beta": 0.5}}).distill)
    assert plan.needs_teacher and plan.double_backprop


def test_recipe_inherits_from_a_base(tmp_path):
    (tmp_path / "schedules").mkdir()
    (tmp_path / "schedules" / "cifar.yaml").write_text(
        "data: {name: cifar10, batch_size: 128}\noptim: {lr: 0.1, epochs: 200, milestones: [60, 120, 160]}\n")
    (tmp_path / "student.yaml").write_text("base: schedules/cifar.yaml\nmodel: {name: wrn_16_1}\noptim: {epochs: 10}\n")
    config = config_from_dict(load_recipe(tmp_path / "student.yaml"))
    assert (config.data.name, config.optim.lr, config.optim.epochs, config.model.name) == ("cifar10", 0.1, 10, "wrn_16_1")
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_recipe(tmp_path / "loop.yaml")


def test_overrides_reach_nan_and_inf_checks():
    for item, key in (("distill.at_beta=.inf", "distill.at_beta"), ("optim.milestones=[.nan]", "optim.milestones[0]")):
        with pytest.raises(ConfigError, match="finite") as info:
            config_from_dict(apply_overrides({}, [item]))
        assert info.value.key == key


def test_literal_fields_take_exactly_their_vocabulary():
    from attnkit.data.loader import PAD_MODES
    from attnkit.functional.attention import REDUCTIONS

    for mode in PAD_MODES:
        assert config_from_dict({"data": {"pad_mode": mode}}).data.pad_mode == mode
    for reduction in REDUCTIONS:
        assert config_from_dict({"distill": {"at_reduction": reduction}}).distill.at_reduction == reduction
    assert config_from_dict({"channels_last": True}).channels_last is True
    with pytest.raises(ConfigError, match="channels_last: must be auto, true or false, got 1"):
        config_from_dict({"channels_last": 1})  # 1 is not true


def test_loss_weight_schedules_from_recipes_and_overrides():
    from attnkit.engine.optim import WeightSchedule

    values = apply_overrides({"distill": {"at_beta": 1000, "at_schedule": {"kind": "step", "milestones": [60, 120]}}},
                             ["distill.at_schedule.gamma=0.2", "distill.dkd_schedule=linear"])
    config = config_from_dict(values)
    assert config.distill.at_schedule == WeightSchedule("step", [60, 120], 0.2)
    assert config.distill.dkd_schedule == WeightSchedule("linear") and config.distill.kd_schedule.is_constant
    assert config_from_dict(config_to_dict(config)) == config
    for values, key, message in [
        ({"distill": {"at_schedule": {"kind": "exp"}}}, "distill.at_schedule.kind", "must be constant, step, cosine or linear"),
        ({"distill": {"sp_schedule": {"kind": "step"}}}, "distill.sp_schedule.milestones", "at least one milestone"),
        ({"distill": {"kd_schedule": {"warmup": 5}}}, "distill.kd_schedule.warmup", "did you mean warmup_epochs"),
        ({"distill": {"cam_schedule": {"gamma": 0}}}, "distill.cam_schedule.gamma", "must be > 0"),
        ({"distill": {"hint_layers": []}}, "distill.hint_layers", "at least one"),
        ({"distill": {"cam_method": "gradcam++"}}, "distill.cam_method", "must be gradcam or hirescam"),
        ({"distill": {"dkd_beta": -8}}, "distill.dkd_beta", "must be >= 0"),
    ]:
        with pytest.raises(ConfigError, match=message) as info:
            config_from_dict(values)
        assert info.value.key == key


def test_kd_weight_beyond_one_needs_an_explicit_ce_weight():
    with pytest.raises(ConfigError, match="set distill.ce_weight"):
        config_from_dict({"distill": {"kd_alpha": 9}})
    assert config_from_dict({"distill": {"kd_alpha": 9, "ce_weight": 0.1}}).distill.ce_weight == 0.1


def test_a_schedule_that_would_make_the_ce_weight_negative_is_refused():
    """kd_alpha 0.9 raised by gamma 1.2 at epoch 2 would weigh CE by 1 - 1.08 < 0 from then on."""
    values = {"optim": {"epochs": 4}, "distill": {"kd_alpha": 0.9,
                                                    "kd_schedule": {"kind": "step", "milestones": [2], "gamma": 1.2}}}
    with pytest.raises(ConfigError, match="raises kd_alpha=0.9 to 1.08 within 4 epochs") as info:
        config_from_dict(values)
    assert info.value.key == "distill.kd_schedule"
    values["optim"]["epochs"] = 2  # the milestone is never reached
    assert config_from_dict(values).distill.kd_schedule.max_factor(2) == 1.0
    values["distill"]["ce_weight"] = 0.1  # CE weighed on its own: the mixture no longer applies
    values["optim"]["epochs"] = 4
    assert config_from_dict(values).distill.ce_weight == 0.1
    values["distill"] = {"kd_alpha": 0.5, "kd_schedule": {"kind": "step", "milestones": [1, 2], "gamma": 1.4}}
    assert config_from_dict(values).distill.kd_schedule.max_factor(4) == pytest.approx(1.96)  # 0.98 <= 1
