"""Residual Attention Network (Wang et al., "Residual Attention Network for Image Classification", CVPR 2017).

An attention module (p = 1, t = 2, r = 1) is::

    x -> p units -> trunk T(x): t units                              -> H = (1 + M(x)) * T(x) -> p units
                 -> soft mask M(x): bottom-up top-down hourglass ----^   (M * T without attention residual)

built from pre-activation bottleneck units (:class:`~attnkit.models._blocks.PreActBottleneck`). The mask branch
max-pools (3x3/2) and applies r units per level down, 2r units at the lowest level, one residual unit on each
skip connection from a down level to its up level, r units per level up; every upsampling is bilinear to the
*exact* size of the level it returns to (odd sizes included), and the skip tensor is added once. (A popular port
also adds the size-reference input of Caffe's Interp layer to the upsampled tensor; that is a bug, not done here.)
The head is BN-ReLU-1x1 conv-BN-ReLU-1x1 conv (C -> C) and the mask activation: ``"mixed"`` sigmoid per channel and
position (the paper's best), ``"channel"`` L2 normalisation across channels at each position, ``"spatial"``
standardisation of each channel's map over the positions, then sigmoid.

ImageNet networks (224 input): 7x7/2 conv-BN-ReLU stem and 3x3/2 max-pool; a residual unit into each attention
stage (256, 512, 1024 channels at 56, 28, 14 pixels; 3, 2, 1 mask max-pools bottoming at 7x7 with 2, 1, 0 skip
connections), then a final stage of three 2048-channel units (the first with stride 2); BN-ReLU, GAP, linear.
Attention-56 has (1, 1, 1) modules per stage, Attention-92 (1, 2, 3); depth = 36m + 20 for m modules per stage on
average. CIFAR networks (32 input): a 3x3 conv stem and the same layout with the bottleneck widths of ResNet-164
(stages of 64, 128, 256 channels at 32, 16, 8 pixels; final stage of three 256-channel units at 8 pixels).

Learnable parameters: attention56 31,810,728 and attention92 52,466,344 for 1000 classes (paper: 31.9M, 51.3M;
6.27 / 10.53 GMACs measured, paper 6.3 / 10.4); for 10 classes attention56_cifar 1,148,826, attention92_cifar
2,451,226, attention128_cifar 3,262,106, attention164_cifar 4,072,986. The paper's CIFAR Attention-92 has 1.9M:
it does not give its CIFAR layout, and ours spends 0.40M on the 1x1 C x C convs of stage 3's three mask heads and
0.21M on the final stage, together more than the 0.55M difference.

Attention points (``feature_info``): the stage outputs, one per resolution -- stages 1-4 on ImageNet (56, 28, 14,
7 pixels); stages 1, 2 and the final stage on CIFAR (32, 16, 8), where the final stage runs at stage 3's resolution.
``forward_with_attention`` returns the soft mask of every attention module, ``{"stage1.0": (B, C, H, W), ...}``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..features import FeatureCapture
from ._blocks import PreActBottleneck, init_weights
from ._features import FeatureInfo, GapLinearModel
from ._registry import register_model

__all__ = ["AttentionModule", "ResidualAttentionNet", "SoftMaskBranch", "mask_activation"]

MASK_ACTIVATIONS = ("mixed", "channel", "spatial")


def mask_activation(logits: Tensor, kind: str = "mixed") -> Tensor:
    """The soft mask's activation f(x) of the paper's section 3.3, on (B, C, H, W) mask logits.

    ``"mixed"``: sigmoid of every value (in [0, 1]). ``"channel"``: each position's channel vector divided by its
    L2 norm (in [-1, 1]; removes spatial information). ``"spatial"``: each channel's map standardised over the
    positions (zero mean, unit standard deviation), then sigmoid (in [0, 1]; removes channel information).
    """
    _check_mask_activation(kind)
    if kind == "mixed":
        return torch.sigmoid(logits)
    if kind == "channel":
        return F.normalize(logits, dim=1)  # x_{i,c} / ||x_i|| over channels c
    return torch.sigmoid(F.instance_norm(logits))  # "spatial": (x_{i,c} - mean_c) / std_c over positions i


def _check_mask_activation(kind: str) -> None:
    if kind not in MASK_ACTIVATIONS:
        raise ValueError(f"unknown mask activation {kind!r}; choose one of {', '.join(MASK_ACTIVATIONS)}")


def _units(channels: int, count: int) -> nn.Sequential:
    return nn.Sequential(*(PreActBottleneck(channels, channels) for _ in range(count)))


class SoftMaskBranch(nn.Module):
    """Bottom-up top-down soft mask M(x), same shape as its input.

    Args:
        channels: C of input and mask.
        pools: number of 3x3/2 max-pools (levels below the input); ``pools - 1`` skip connections.
        r: residual units per level (2r at the lowest level).
        activation: ``"mixed"``, ``"channel"`` or ``"spatial"`` (see :func:`mask_activation`).
    """

    def __init__(self, channels: int, pools: int, r: int = 1, activation: str = "mixed") -> None:
        super().__init__()
        if pools < 1:
            raise ValueError(f"the soft mask branch needs at least one max-pool, got pools={pools}")
        _check_mask_activation(activation)  # fail now, not at the first forward
        self.activation = activation
        self.down = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(3, stride=2, padding=1), _units(channels, 2 * r if level == pools - 1 else r))
            for level in range(pools)
        )
        self.skips = nn.ModuleList(PreActBottleneck(channels, channels) for _ in range(pools - 1))
        self.up = nn.ModuleList(_units(channels, r) for _ in range(pools - 1))
        self.head = nn.Sequential(
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1, bias=False),
        )

    def hourglass(self, x: Tensor) -> Tensor:
        """The mask logits before the head: down, bottom, up with skips, upsampled to ``x``'s exact size."""
        sizes: list[torch.Size] = []
        skips: list[Tensor] = []
        for level, down in enumerate(self.down):
            sizes.append(x.shape[-2:])
            x = down(x)  # (B, C, H_l, W_l) -> (B, C, ceil(H_l / 2), ceil(W_l / 2))
            if level < len(self.skips):
                skips.append(self.skips[level](x))
        for up, skip in zip(self.up, reversed(skips)):
            x = up(_upsample(x, skip.shape[-2:]) + skip)  # back up one level, where the skip was taken
        return _upsample(x, sizes[0])  # (B, C, H, W), the input's size

    def forward(self, x: Tensor) -> Tensor:
        return mask_activation(self.head(self.hourglass(x)), self.activation)


def _upsample(x: Tensor, size: Sequence[int]) -> Tensor:
    # Bilinear with aligned corners, as Caffe's Interp layer of the paper's implementation.
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


class AttentionModule(nn.Module):
    """p units -> (trunk T: t units, soft mask M) -> (1 + M) * T, or M * T -> p units. Shape preserving.

    Args:
        channels: C of input and output.
        pools: max-pools of the soft mask branch (see :class:`SoftMaskBranch`).
        p, t, r: units before and after the split, in the trunk, per mask level.
        mask_activation: ``"mixed"``, ``"channel"`` or ``"spatial"``.
        attention_residual: True for attention residual learning H = (1 + M) * T, False for the naive M * T.
    """

    def __init__(
        self,
        channels: int,
        pools: int,
        p: int = 1,
        t: int = 2,
        r: int = 1,
        mask_activation: str = "mixed",
        attention_residual: bool = True,
    ) -> None:
        super().__init__()
        self.attention_residual = attention_residual
        self.pre = _units(channels, p)
        self.trunk = _units(channels, t)
        self.mask = SoftMaskBranch(channels, pools, r, mask_activation)
        self.post = _units(channels, p)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pre(x)
        trunk, mask = self.trunk(x), self.mask(x)  # both (B, C, H, W)
        # With M near 0, (1 + M) * T keeps the trunk's features: the "attention residual" that lets modules stack.
        return self.post((1 + mask) * trunk if self.attention_residual else mask * trunk)


def _attention_stage(
    in_channels: int, channels: int, stride: int, count: int, pools: int, **module_kwargs
) -> nn.Sequential:
    """A unit into the stage (width and resolution change; path ``.0``), then ``count`` attention modules."""
    return nn.Sequential(
        PreActBottleneck(in_channels, channels, stride),
        *(AttentionModule(channels, pools, **module_kwargs) for _ in range(count)),
    )


class ResidualAttentionNet(GapLinearModel):
    """Residual Attention Network: stem, three attention stages, a final stage of plain units, BN-ReLU, GAP, linear.

    Args:
        modules_per_stage: attention modules in each of the three attention stages ((1, 1, 1) is Attention-56).
        stage_channels: output channels of the three attention stages and the final stage (4x the bottleneck width).
        mask_pools: soft-mask max-pools of the modules in each attention stage.
        imagenet_stem: 7x7/2 conv-BN-ReLU + 3x3/2 max-pool (ImageNet), else one 3x3 conv to 16 channels (CIFAR).
        final_stride: stride of the first unit of the final stage (2 on ImageNet: 14 -> 7; 1 on CIFAR).
        num_classes: outputs of the classifier.
        in_chans: input channels.
        mask_activation: ``"mixed"`` (default), ``"channel"`` or ``"spatial"``.
        attention_residual: True: H = (1 + M) * T (ARL, default); False: H = M * T (naive attention learning).
        p, t, r: units before/after the split, in the trunk, per mask level (1, 2, 1 in the paper).
    """

    def __init__(
        self,
        modules_per_stage: Sequence[int] = (1, 1, 1),
        stage_channels: Sequence[int] = (256, 512, 1024, 2048),
        mask_pools: Sequence[int] = (3, 2, 1),
        imagenet_stem: bool = True,
        final_stride: int = 2,
        num_classes: int = 1000,
        in_chans: int = 3,
        mask_activation: str = "mixed",
        attention_residual: bool = True,
        p: int = 1,
        t: int = 2,
        r: int = 1,
    ) -> None:
        super().__init__()
        if len(modules_per_stage) != 3 or min(modules_per_stage) < 1:
            raise ValueError(f"modules_per_stage must be 3 counts >= 1, e.g. (1, 2, 3), got {modules_per_stage!r}")
        if len(stage_channels) != 4 or len(mask_pools) != 3:
            raise ValueError("stage_channels needs 4 entries (3 attention stages + final stage), mask_pools 3")
        self.num_classes, self.num_features = num_classes, stage_channels[3]
        if imagenet_stem:
            stem_channels, stem_reduction = 64, 4
            self.default_input_size = (in_chans, 224, 224)
            self.stem = nn.Sequential(
                nn.Conv2d(in_chans, 64, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(64),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        else:
            stem_channels, stem_reduction = 16, 1
            self.default_input_size = (in_chans, 32, 32)
            self.stem = nn.Conv2d(in_chans, 16, 3, padding=1, bias=False)  # pre-activation: BN-ReLU are in the units

        module_kwargs = dict(p=p, t=t, r=r, mask_activation=mask_activation, attention_residual=attention_residual)
        c1, c2, c3, c4 = stage_channels
        self.stage1 = _attention_stage(stem_channels, c1, 1, modules_per_stage[0], mask_pools[0], **module_kwargs)
        self.stage2 = _attention_stage(c1, c2, 2, modules_per_stage[1], mask_pools[1], **module_kwargs)
        self.stage3 = _attention_stage(c2, c3, 2, modules_per_stage[2], mask_pools[2], **module_kwargs)
        self.stage4 = nn.Sequential(  # three plain units, as the depth formula 36m + 20 counts them
            PreActBottleneck(c3, c4, final_stride), PreActBottleneck(c4, c4), PreActBottleneck(c4, c4)
        )
        self.norm = nn.BatchNorm2d(c4)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(c4, num_classes)
        stage_infos = [
            FeatureInfo("stage1", c1, stem_reduction),
            FeatureInfo("stage2", c2, 2 * stem_reduction),
            FeatureInfo("stage3", c3, 4 * stem_reduction),
            FeatureInfo("stage4", c4, 4 * stem_reduction * final_stride),
        ]
        # One point per resolution, the last layer at it: with final_stride 1 (CIFAR) stage 4 runs at stage 3's.
        self.feature_info = stage_infos if final_stride > 1 else stage_infos[:2] + stage_infos[3:]
        # forward_with_attention's names ("stage1.0": first attention module of stage 1) -> mask module paths.
        self.attention_paths = {
            f"stage{s}.{m}": f"stage{s}.{m + 1}.mask"
            for s, count in enumerate(modules_per_stage, start=1)
            for m in range(count)
        }
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.stem(x)  # (B, 64, H/4, W/4) ImageNet; (B, 16, H, W) CIFAR
        x = self.stage3(self.stage2(self.stage1(x)))  # (B, C3, H/16, W/16) ImageNet; (B, C3, H/4, W/4) CIFAR
        return self.relu(self.norm(self.stage4(x)))

    def forward_with_attention(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and the soft mask M(x) of every attention module: ``{"stage1.0": (B, C, H, W), ...}``.

        Values lie in [0, 1] for the "mixed" and "spatial" activations, in [-1, 1] for "channel". The masks are read with forward hooks on the mask branches (removed afterwards), so this runs exactly
        ``forward`` and the masks stay in the autograd graph.
        """
        with FeatureCapture(self, self.attention_paths.values()) as masks:
            logits = self(x)
        return logits, {name: masks[path] for name, path in self.attention_paths.items()}


def _create_imagenet(modules_per_stage: Sequence[int], **kwargs) -> ResidualAttentionNet:
    return ResidualAttentionNet(modules_per_stage=modules_per_stage, **kwargs)


def _create_cifar(modules_per_stage: Sequence[int], **kwargs) -> ResidualAttentionNet:
    return ResidualAttentionNet(
        modules_per_stage=modules_per_stage,
        stage_channels=(64, 128, 256, 256),
        imagenet_stem=False,
        final_stride=1,
        **kwargs,
    )


@register_model
def attention56(**kwargs) -> ResidualAttentionNet:
    """Attention-56 for ImageNet (31.8M parameters for 1000 classes): (1, 1, 1) attention modules per stage."""
    return _create_imagenet((1, 1, 1), **kwargs)


@register_model
def attention92(**kwargs) -> ResidualAttentionNet:
    """Attention-92 for ImageNet (52.5M parameters for 1000 classes): (1, 2, 3) attention modules per stage."""
    return _create_imagenet((1, 2, 3), **kwargs)


@register_model
def attention56_cifar(**kwargs) -> ResidualAttentionNet:
    """Attention-56 for CIFAR (1.15M parameters for 10 classes): (1, 1, 1) modules per stage."""
    return _create_cifar((1, 1, 1), **kwargs)


@register_model
def attention92_cifar(**kwargs) -> ResidualAttentionNet:
    """Attention-92 for CIFAR (2.45M parameters for 10 classes, the paper 1.9M: see above): (1, 2, 3) modules."""
    return _create_cifar((1, 2, 3), **kwargs)


@register_model
def attention128_cifar(**kwargs) -> ResidualAttentionNet:
    """Attention-128 for CIFAR (3.26M parameters for 10 classes): (2, 3, 4) modules per stage."""
    return _create_cifar((2, 3, 4), **kwargs)


@register_model
def attention164_cifar(**kwargs) -> ResidualAttentionNet:
    """Attention-164 for CIFAR (4.07M parameters for 10 classes): (3, 4, 5) modules per stage."""
    return _create_cifar((3, 4, 5), **kwargs)
