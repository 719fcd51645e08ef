"""Parameter and MAC counts of models, and the model-zoo table (``attnkit models``, README "Models").

MACs (multiply-accumulates) are counted by ``torch.utils.flop_counter.FlopCounterMode``, the counter built into
torch: it counts the FLOPs of convolutions and matrix products (2 per MAC) of one real forward pass; BatchNorm,
activations, pooling, upsampling and additions are not counted, the convention of the papers' figures.

>>> from torch import nn
>>> count_macs(nn.Conv2d(3, 4, 3, padding=1, bias=False), (3, 8, 8))  # 4 out x 3 in x 9 taps x 64 positions
6912
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..features import eval_no_grad
from ._registry import create_model, list_models

__all__ = ["ModelSummary", "count_macs", "count_parameters", "markdown_table", "summarize_models"]

# Reference test errors (%) the papers report for a model (docs/papers.md gives the tables), and the number of
# classes of that data set (the table builds the model with it). (R): recalled, not checked against the paper.
# AT: Zagoruyko & Komodakis 2017, Table 1 (CIFAR-10) and its ImageNet experiment; CRD: Tian et al. 2020,
# Table 1 (CIFAR-100, error = 100 - top-1 accuracy); RAN: Wang et al. 2017; LTPA: Jetley et al. 2018.
REFERENCE_ERRORS: dict[str, tuple[int, str]] = {
    "wrn_16_1": (10, "C-10 8.77 (AT Tab. 1)"),
    "wrn_16_2": (10, "C-10 6.31 (AT Tab. 1); C-100 26.74 (CRD Tab. 1)"),
    "wrn_40_1": (10, "C-10 6.58 (AT Tab. 1); C-100 28.02 (CRD Tab. 1)"),
    "wrn_40_2": (10, "C-10 5.23 (AT Tab. 1); C-100 24.39 (CRD Tab. 1)"),
    "nin_thin": (10, "C-10 9.38 (R) (AT Tab. 1)"),
    "nin_wide": (10, "C-10 7.28 (R) (AT Tab. 1)"),
    "resnet20": (100, "C-100 30.94 (CRD Tab. 1)"),
    "resnet32": (100, "C-100 28.86 (CRD Tab. 1)"),
    "resnet56": (100, "C-100 27.66 (CRD Tab. 1)"),
    "resnet110": (100, "C-100 25.69 (CRD Tab. 1)"),
    "resnet8x4": (100, "C-100 27.50 (CRD Tab. 1)"),
    "resnet32x4": (100, "C-100 20.58 (CRD Tab. 1)"),
    "vgg8": (100, "C-100 29.64 (CRD Tab. 1)"),
    "vgg13": (100, "C-100 25.36 (CRD Tab. 1)"),
    "resnet18": (1000, "ImageNet top-1 30.4 (AT, ImageNet)"),
    "resnet34": (1000, ""),
    "attention56": (1000, "ImageNet top-1 21.76 (RAN, ImageNet)"),
    "attention92": (1000, ""),
    "attention56_cifar": (10, "C-10 5.52 (R) (RAN, ARL vs NAL)"),
    "attention92_cifar": (10, "C-10 4.99; C-100 21.71 (RAN, CIFAR)"),
    "attention128_cifar": (10, "C-10 4.44 (R) (RAN, ARL vs NAL)"),
    "attention164_cifar": (10, "C-10 4.31 (R) (RAN, ARL vs NAL)"),
    "ltpa_vgg_att2": (10, "C-10 5.23 (R), concat-pc (LTPA)"),
    "ltpa_vgg_att3": (100, "C-100 22.97, concat-pc (LTPA)"),
}


def count_parameters(model: nn.Module) -> int:
    """Number of learnable parameters (BatchNorm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, input_size: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass of one ``(C, H, W)`` input (conv and linear layers).

    Runs the model once in eval mode without gradient on zeros; the training flags are restored afterwards.
    """
    if len(input_size) != 3:
        raise ValueError(f"input_size must be (C, H, W), got {tuple(input_size)}")
    parameter = next(model.parameters(), None)
    x = torch.zeros(1, *input_size, device=parameter.device if parameter is not None else "cpu")
    with eval_no_grad(model), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


@dataclass(frozen=True)
class ModelSummary:
    """One row of the model-zoo table."""

    name: str
    num_classes: int  # classes the model was built with: those of its reference data set (10 if none)
    parameters: int  # learnable parameters
    macs: int | None  # multiply-accumulates at the native input size; None when not measured
    input_size: tuple[int, int, int]  # native (C, H, W)
    reference: str  # the papers' reference error with its source, "" if the papers give none


def summarize_models(pattern: str | None = None, macs: bool = False) -> list[ModelSummary]:
    """Build every registered model matching ``pattern`` and count its parameters (and MACs with ``macs``)."""
    names = list_models(pattern)
    if not names:
        raise KeyError(f"no registered model matches {pattern!r}; see attnkit.models.list_models()")
    summaries = []
    for name in names:
        num_classes, reference = REFERENCE_ERRORS.get(name, (10, ""))
        model = create_model(name, num_classes=num_classes)
        input_size = tuple(model.default_input_size)
        summaries.append(ModelSummary(
            name,
            num_classes,
            count_parameters(model),
            count_macs(model, input_size) if macs else None,
            input_size,
            reference,
        ))
    return summaries


def markdown_table(summaries: Sequence[ModelSummary]) -> str:
    """The README's table: name, classes, parameters, MACs, input size, reference error."""
    lines = [
        "| model | classes | params | MACs | input | paper error % |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for s in summaries:
        macs = "" if s.macs is None else _millions(s.macs)
        size = "x".join(map(str, s.input_size))
        lines.append(f"| `{s.name}` | {s.num_classes} | {s.parameters:,} | {macs} | {size} | {s.reference} |")
    return "\n".join(lines)


def _millions(count: int) -> str:
    return f"{count / 1e9:.2f} G" if count >= 1e9 else f"{count / 1e6:.1f} M"
