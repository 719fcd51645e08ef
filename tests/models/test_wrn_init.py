"""WRN initialisation: attnkit's default and the attention-transfer code's ("official"), chosen by ``init``."""

import math

import pytest
import torch
from torch import nn

from attnkit.engine import RunConfig, build_run
from attnkit.models import create_model
from helpers import TensorBatches, blob_data


def convs(model):
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def fan(weight, mode):
    out_channels, in_channels, kh, kw = weight.shape
    return (in_channels if mode == "fan_in" else out_channels) * kh * kw


def pooled_std_ratio(model, mode):
    """std of all conv weights, each divided by sqrt(2 / fan): ~1 under He-normal init with that fan."""
    scaled = [m.weight.detach().flatten() / math.sqrt(2 / fan(m.weight, mode)) for m in convs(model)]
    return torch.cat(scaled).std().item()


def model_bn_weights_are_one(model):
    return all(bool((m.weight == 1).all()) for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_official_init_matches_the_attention_transfer_code():
    torch.manual_seed(0)
    model = create_model("wrn_16_2", num_classes=10, init="official")
    # conv_params: kaiming_normal_ defaults = fan-in, gain sqrt(2); mean 0.
    assert pooled_std_ratio(model, "fan_in") == pytest.approx(1.0, abs=0.03)
    stem = model.conv1.weight  # 3 -> 16 channels: fan-in 27, fan-out 144 tell the two schemes apart
    assert stem.std().item() == pytest.approx(math.sqrt(2 / 27), rel=0.15)
    # linear_params: kaiming_normal_ weight (fan-in 128), zero bias.
    assert model.fc.weight.std().item() == pytest.approx(math.sqrt(2 / 128), rel=0.1)
    assert torch.count_nonzero(model.fc.bias) == 0
    # bnparams: weight torch.rand (uniform in [0, 1)), bias 0.
    bn_weights = torch.cat([m.weight.detach() for m in model.modules() if isinstance(m, nn.BatchNorm2d)])
    assert bool((bn_weights >= 0).all() and (bn_weights < 1).all())
    assert bn_weights.mean().item() == pytest.approx(0.5, abs=0.05)
    assert bn_weights.std().item() == pytest.approx(12 ** -0.5, abs=0.03)  # uniform: 1/sqrt(12)
    assert all(torch.count_nonzero(m.bias) == 0 for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_default_init_is_unchanged_fan_out_he_normal_and_unit_batch_norm():
    torch.manual_seed(0)
    default = create_model("wrn_16_2", num_classes=10)
    torch.manual_seed(0)
    explicit = create_model("wrn_16_2", num_classes=10, init="torchvision")
    assert all(torch.equal(a, b) for a, b in zip(default.state_dict().values(), explicit.state_dict().values()))
    assert pooled_std_ratio(default, "fan_out") == pytest.approx(1.0, abs=0.03)
    assert default.conv1.weight.std().item() == pytest.approx(math.sqrt(2 / 144), rel=0.15)
    assert model_bn_weights_are_one(default)
    # PyTorch's default linear init: uniform with bound 1/sqrt(fan_in), std 1/sqrt(3 * fan_in).
    assert default.fc.weight.std().item() == pytest.approx(1 / math.sqrt(3 * 128), rel=0.1)


def test_unknown_init_is_refused():
    with pytest.raises(ValueError, match=r"init must be one of \('torchvision', 'official'\), got 'kaiming'"):
        create_model("wrn_16_1", init="kaiming")


def test_init_reaches_the_model_through_the_run_configs_model_kwargs(tmp_path):
    config = RunConfig()
    config.out, config.progress, config.tensorboard, config.channels_last = str(tmp_path / "run"), False, False, False
    config.model.name, config.model.kwargs = "wrn", {"depth": 10, "width": 0.5, "init": "official"}
    images, labels = blob_data(32, size=16)
    loader = TensorBatches(images, labels, batch_size=16, shuffle=False)
    run = build_run(config, train_loader=loader, test_loader=loader)
    assert not model_bn_weights_are_one(run.model)
    assert all(bool((m.weight < 1).all()) for m in run.model.modules() if isinstance(m, nn.BatchNorm2d))
    assert run.info.model_kwargs["init"] == "official"  # recorded with the run, so a reload rebuilds it
