import pytest
from torch import nn

from attnkit.models import _registry, create_model, is_model, list_models, register_model


def test_list_models_is_sorted_and_filters_by_pattern():
    names = list_models()
    assert names == sorted(names)
    assert list_models("wrn_16_*") == ["wrn_16_1", "wrn_16_2"]
    assert list_models("attention*_cifar") == [
        "attention128_cifar", "attention164_cifar", "attention56_cifar", "attention92_cifar",
    ]
    assert list_models("no_such_*") == []


def test_every_model_of_the_zoo_is_registered():
    expected = {
        "wrn", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2", "nin_thin", "nin_wide",
        "resnet20", "resnet32", "resnet56", "resnet110", "resnet8x4", "resnet32x4", "vgg8", "vgg13",
        "resnet18", "resnet34", "attention56", "attention92",
        "attention56_cifar", "attention92_cifar", "attention128_cifar", "attention164_cifar",
        "ltpa_vgg_att2", "ltpa_vgg_att3",
    }
    assert expected <= set(list_models())
    assert all(is_model(name) for name in expected) and not is_model("wrn_16_3")


def test_registering_a_name_twice_is_an_error():
    def wrn_16_1(**kwargs) -> nn.Module:  # the same name as the registered WRN-16-1
        return nn.Identity()

    with pytest.raises(ValueError, match="'wrn_16_1' is already registered by attnkit.models.wrn.wrn_16_1"):
        register_model(wrn_16_1)
    assert create_model("wrn_16_1").__class__.__name__ == "WideResNet"  # the original entry is untouched


def test_register_then_create(monkeypatch):
    monkeypatch.setattr(_registry, "_ENTRYPOINTS", dict(_registry._ENTRYPOINTS))  # leave the real registry alone

    @register_model
    def tiny_linear(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
        return nn.Linear(in_chans, num_classes)

    model = create_model("tiny_linear", num_classes=4, in_chans=2)
    assert (model.in_features, model.out_features) == (2, 4)
    assert "tiny_linear" in list_models("tiny_*")


def test_unknown_name_lists_close_names():
    with pytest.raises(KeyError, match=r"unknown model 'wrn_16_3'; did you mean .*wrn_16_1"):
        create_model("wrn_16_3")
    with pytest.raises(KeyError, match=r"did you mean .*attention92_cifar"):
        create_model("attention92_cifr")
    with pytest.raises(KeyError, match="see `attnkit models`, or name your own as package.module:callable"):
        create_model("zzzzzzzz")


@pytest.mark.parametrize("num_classes", [0, -3, 2.5, True, "10"])
def test_bad_num_classes(num_classes):
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        create_model("wrn_16_1", num_classes=num_classes)
