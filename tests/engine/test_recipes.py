"""Every recipe in recipes/ is a valid config for a registered model, and its teacher is another recipe's run."""

from pathlib import Path

import pytest

from attnkit.engine import config_from_dict, load_recipe
from attnkit.models import is_model

RECIPES = sorted(p for p in (Path(__file__).parents[2] / "recipes").rglob("*.yaml") if "schedules" not in p.parts)
OUTS = {config_from_dict(load_recipe(p)).out for p in RECIPES}


def test_there_are_recipes_for_the_papers():
    names = {p.stem for p in RECIPES}
    for expected in ("wrn_16_1_from_wrn_16_2_at", "wrn_16_1_from_wrn_40_1_at_kd", "wrn_16_2_from_wrn_40_2_fact",
                     "resnet8x4_from_resnet32x4_kd", "resnet18_from_resnet34_at", "attention92_cifar10",
                     "ltpa_vgg_att3_cifar100"):
        assert expected in names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipe_is_valid(path):
    config = config_from_dict(load_recipe(path))
    assert is_model(config.model.name)
    assert path.read_text().startswith("#")  # says what it reproduces and the paper's numbers
    if config.distill.needs_teacher:
        assert config.distill.teacher in OUTS, f"{path.name}: no recipe trains the teacher {config.distill.teacher}"
        teacher_recipe = next(config_from_dict(load_recipe(p)) for p in RECIPES if config_from_dict(load_recipe(p)).out == config.distill.teacher)
        assert config.distill.teacher_model == teacher_recipe.model.name  # a wrong checkpoint is refused, not used
