"""Parameter counts: the papers' figures where they exist, and the exact counts measured for every model."""

import pytest
import torch

from attnkit.models import count_parameters, create_model, list_models


def parameters(name: str, num_classes: int) -> int:
    with torch.device("meta"):  # counting needs shapes only: no memory, no initialisation
        return count_parameters(create_model(name, num_classes=num_classes))


@pytest.mark.parametrize(
    "name, num_classes, expected",
    [
        # Exact figures of the reference implementations (docs/papers.md, section 1.7; torchvision for ResNet-18/34).
        ("wrn_16_1", 10, 175_066),
        ("wrn_16_2", 10, 691_674),
        ("wrn_40_1", 10, 563_930),
        ("wrn_40_2", 10, 2_243_546),
        ("resnet18", 1000, 11_689_512),
        ("resnet34", 1000, 21_797_672),
    ],
)
def test_published_exact_counts(name, num_classes, expected):
    assert parameters(name, num_classes) == expected


@pytest.mark.parametrize("name, paper", [("attention56", 31.9e6), ("attention92", 51.3e6)])
def test_residual_attention_imagenet_within_3_percent_of_the_paper(name, paper):
    assert abs(parameters(name, 1000) / paper - 1) < 0.03


@pytest.mark.parametrize(
    "name, num_classes, low, high",
    [
        ("nin_thin", 10, 0.2e6, 0.25e6),  # "0.2M" in the attention-transfer paper's Table 1
        ("nin_wide", 10, 0.95e6, 1.05e6),  # "1M"
        # CIFAR-100 counts usually quoted for the distillation benchmark's models.
        ("resnet20", 100, 0.27e6, 0.29e6),
        ("resnet56", 100, 0.85e6, 0.87e6),
        ("resnet110", 100, 1.72e6, 1.74e6),
        ("resnet8x4", 100, 1.22e6, 1.24e6),
        ("resnet32x4", 100, 7.42e6, 7.44e6),
    ],
)
def test_counts_near_the_quoted_figures(name, num_classes, low, high):
    assert low <= parameters(name, num_classes) <= high


# Measured with count_parameters (CIFAR models for 10 classes, ImageNet models for 1000); a change here is a
# change of architecture and must be deliberate. Models not listed fail the completeness check below.
MEASURED = {
    "wrn": 175_066,
    "wrn_16_1": 175_066,
    "wrn_16_2": 691_674,
    "wrn_40_1": 563_930,
    "wrn_40_2": 2_243_546,
    "nin_thin": 246_890,
    "nin_wide": 968_394,
    "resnet20": 272_474,
    "resnet32": 466_906,
    "resnet56": 855_770,
    "resnet110": 1_730_714,
    "resnet8x4": 1_210_410,
    "resnet32x4": 7_410_730,
    "vgg8": 3_918_858,
    "vgg13": 9_416_010,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "attention56": 31_810_728,
    "attention92": 52_466_344,
    "attention56_cifar": 1_148_826,
    "attention92_cifar": 2_451_226,
    "attention128_cifar": 3_262_106,
    "attention164_cifar": 4_072_986,
    "ltpa_vgg_att2": 19_718_730,
    "ltpa_vgg_att3": 19_855_434,
}


@pytest.mark.parametrize("name", list_models())
def test_measured_counts(name):
    assert name in MEASURED, f"new model {name!r}: measure its parameter count and add it to MEASURED"
    with torch.device("meta"):
        imagenet = create_model(name).default_input_size[1] == 224
    assert parameters(name, 1000 if imagenet else 10) == MEASURED[name]
