"""The feature contract, checked on every registered model (a newly registered model is tested automatically)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnkit.features import extract_features, pair_layers
from attnkit.models import create_model, list_models
from attnkit.models.ltpa import LTPAVGG

NUM_CLASSES = 7


def tiny_input(model: nn.Module, batch: int = 2, in_chans: int = 3) -> torch.Tensor:
    """2 x C x 32 x 32 for CIFAR-sized models; 64 x 64 (the smallest convenient size) for ImageNet models."""
    _, height, _ = model.default_input_size
    size = 64 if height >= 224 else 32
    return torch.randn(batch, in_chans, size, size)


def without_effect(model: nn.Module) -> tuple[str, ...]:
    """Parameter prefixes that provably cannot change the output, so their gradient is exactly zero.

    LTPA with "pc" and "softmax": c_i = <u, l_i> + <u, g>; the second term is the same at every position and
    cancels in the softmax, so the layers computing g (block6, global_fc) have no effect (see ltpa.py).
    """
    if isinstance(model, LTPAVGG):
        level = model.attention[0]
        if level.compatibility == "pc" and level.normalization == "softmax":
            return ("block6.", "global_fc.")
    return ()


@pytest.fixture(scope="module", params=list_models())
def model(request) -> nn.Module:
    torch.manual_seed(0)
    return create_model(request.param, num_classes=NUM_CLASSES)


def test_attributes(model):
    assert model.num_classes == NUM_CLASSES
    c, h, w = model.default_input_size
    assert c == 3 and h == w and h in (32, 224)
    assert isinstance(model.get_classifier(), nn.Module)
    assert model.feature_info, "at least one attention point"


def test_forward_shape_finite_and_every_parameter_gets_a_gradient(model):
    model.train()
    model.zero_grad(set_to_none=True)
    x = tiny_input(model)
    logits = model(x)
    assert logits.shape == (2, NUM_CLASSES)
    assert torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.tensor([1, 4])).backward()
    skipped = without_effect(model)
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{name} has a non-finite gradient"
        if not name.startswith(skipped):
            assert parameter.grad.abs().sum() > 0, f"{name} got an all-zero gradient"
    model.zero_grad(set_to_none=True)


def test_feature_info_matches_the_features_produced(model):
    model.eval()
    x = tiny_input(model)
    paths = [info.module for info in model.feature_info]
    with torch.no_grad():
        _, features = extract_features(model, x, paths)
        last = model.forward_features(x)
    sizes = []
    for info, feature in zip(model.feature_info, features):
        _, channels, height, width = feature.shape
        assert channels == info.channels, info
        assert x.shape[2] == height * info.reduction and x.shape[3] == width * info.reduction, (info, feature.shape)
        sizes.append(height)
    # From high to low resolution, one attention point per resolution (pair_layers pairs group by group).
    assert sizes == sorted(set(sizes), reverse=True)
    assert last.shape[:2] == (2, model.num_features)


def test_forward_is_head_of_features(model):
    if not getattr(model, "head_is_gap_linear", True):
        pytest.skip("LTPA's head reads several intermediate feature maps (head_is_gap_linear = False)")
    model.eval()
    x = tiny_input(model)
    with torch.no_grad():
        features = model.forward_features(x)
        torch.testing.assert_close(model.forward_head(features), model(x))
    classifier = model.get_classifier()
    assert isinstance(classifier, nn.Linear)
    assert (classifier.in_features, classifier.out_features) == (model.num_features, NUM_CLASSES)


def test_attention_maps_have_the_documented_shape_and_range(model):
    if not hasattr(model, "forward_with_attention"):
        pytest.skip("not a trainable-attention model")
    model.eval()
    x = tiny_input(model)
    with torch.no_grad():
        logits, maps = model.forward_with_attention(x)
        torch.testing.assert_close(logits, model(x))
    assert maps
    for name, attention in maps.items():
        assert torch.isfinite(attention).all()
        if isinstance(model, LTPAVGG):  # softmax weights: (B, H, W), each sample's map sums to 1
            assert name.startswith("level") and attention.dim() == 3
            torch.testing.assert_close(attention.sum((1, 2)), torch.ones(2))
        else:  # mixed soft masks: (B, C, H, W) in [0, 1], the shape of the module's input
            assert attention.dim() == 4 and 0 <= attention.min() and attention.max() <= 1, name
    if isinstance(model, LTPAVGG):  # one map per attended level, at that level's resolution
        assert [m.shape[1] * info.reduction for m, info in zip(maps.values(), model.feature_info)] == [32] * len(maps)
    else:  # one mask per attention module ("stageS.M"), shaped like the output of its stage
        assert list(maps) == list(model.attention_paths)
        _, stage_outputs = extract_features(model, x, ["stage1", "stage2", "stage3"], detach=True)
        for name, mask in maps.items():
            stage = int(name.split(".")[0].removeprefix("stage"))
            assert mask.shape == stage_outputs[stage - 1].shape, name


@pytest.mark.parametrize(
    "name, expected",
    [  # (module, channels, reduction) of the group outputs the papers transfer attention from
        ("wrn_16_1", [("layer1", 16, 1), ("layer2", 32, 2), ("layer3", 64, 4)]),
        ("nin_wide", [("block1", 96, 1), ("block2", 192, 2), ("block3", 192, 4)]),
        ("resnet20", [("layer1", 16, 1), ("layer2", 32, 2), ("layer3", 64, 4)]),
        ("resnet8x4", [("layer1", 64, 1), ("layer2", 128, 2), ("layer3", 256, 4)]),
        ("vgg13", [("block1", 128, 2), ("block2", 256, 4), ("block4", 512, 8)]),
        ("resnet18", [("layer1", 64, 4), ("layer2", 128, 8), ("layer3", 256, 16), ("layer4", 512, 32)]),
        ("attention56", [("stage1", 256, 4), ("stage2", 512, 8), ("stage3", 1024, 16), ("stage4", 2048, 32)]),
        ("attention92_cifar", [("stage1", 64, 1), ("stage2", 128, 2), ("stage4", 256, 4)]),
        ("ltpa_vgg_att2", [("block4", 512, 2), ("block5", 512, 4)]),
    ],
)
def test_documented_attention_points(name, expected):
    with torch.device("meta"):
        model = create_model(name)
    assert [(i.module, i.channels, i.reduction) for i in model.feature_info] == expected


@pytest.mark.parametrize("name", list_models())
def test_in_chans(name):
    model = create_model(name, num_classes=3, in_chans=1).eval()
    assert model.default_input_size[0] == 1
    with torch.no_grad():
        assert model(tiny_input(model, batch=1, in_chans=1)).shape == (1, 3)


@pytest.mark.parametrize(
    "student, teacher, size, groups",
    [  # the papers' student <- teacher pairs (docs/papers.md, section 1.1): paired group by group at equal resolution
        ("wrn_16_1", "wrn_40_1", 32, 3),
        ("nin_thin", "nin_wide", 32, 3),
        ("resnet20", "resnet56", 32, 3),
        ("resnet32", "resnet110", 32, 3),
        ("resnet8x4", "resnet32x4", 32, 3),
        ("vgg8", "vgg13", 32, 3),
        ("resnet18", "resnet34", 64, 4),
        ("wrn_16_2", "attention92_cifar", 32, 3),  # across families too
    ],
)
def test_default_pairing_of_the_papers_pairs(student, teacher, size, groups):
    student_model = create_model(student)
    pairs = pair_layers(student_model, create_model(teacher), torch.zeros(1, 3, size, size))
    assert len(pairs) == groups
    assert all(p.student_shape[1:] == p.teacher_shape[1:] for p in pairs)
    assert [p.student for p in pairs] == [i.module for i in student_model.feature_info]
