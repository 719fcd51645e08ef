"""CIFAR ResNets of the distillation benchmark (Tian et al., "Contrastive Representation Distillation", ICLR 2020;
code: HobbitLong/RepDistiller), themselves the CIFAR ResNets of He et al. (CVPR 2016).

Post-activation basic blocks (:class:`~attnkit.models._blocks.BasicBlock`), depth 6n + 2 (n blocks per group):
a 3x3 stem conv-BN-ReLU to ``widths[0]`` channels, then three groups of ``widths[1:]`` channels at strides 1, 2, 2;
the shortcut is a 1x1 conv + BN only where the shape changes. ``resnet20/32/56/110`` use widths 16/16/32/64;
``resnet8x4`` and ``resnet32x4`` four times as wide (stem 32, groups 64/128/256).
Attention points: the three group outputs (post-ReLU), as the benchmark's attention-transfer loss uses them.

Learnable parameters for 100 classes: resnet20 278,324; resnet32 472,756; resnet56 861,620; resnet110 1,736,564;
resnet8x4 1,233,540; resnet32x4 7,433,860.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ._blocks import basic_group, init_weights
from ._features import FeatureInfo, GapLinearModel
from ._registry import register_model

__all__ = ["CifarResNet"]


class CifarResNet(GapLinearModel):
    """ResNet-depth for 32x32 inputs (any input >= 4x4 works through global average pooling).

    Args:
        depth: 6n + 2 (8, 20, 32, 56, 110, ...).
        widths: (stem, group1, group2, group3) channels.
        num_classes: outputs of the classifier.
        in_chans: input channels.
    """

    def __init__(
        self, depth: int = 20, widths: Sequence[int] = (16, 16, 32, 64), num_classes: int = 10, in_chans: int = 3
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1 (8, 20, 32, 56, 110, ...), got {depth}")
        if len(widths) != 4:
            raise ValueError(f"widths must give 4 channel counts (stem, group1, group2, group3), got {tuple(widths)}")
        blocks_per_group = (depth - 2) // 6
        stem, *groups = widths
        self.num_classes, self.num_features = num_classes, groups[2]
        self.default_input_size = (in_chans, 32, 32)

        self.conv1 = nn.Conv2d(in_chans, stem, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = basic_group(stem, groups[0], blocks_per_group, 1)
        self.layer2 = basic_group(groups[0], groups[1], blocks_per_group, 2)
        self.layer3 = basic_group(groups[1], groups[2], blocks_per_group, 2)
        self.fc = nn.Linear(groups[2], num_classes)
        self.feature_info = [
            FeatureInfo("layer1", groups[0], 1),
            FeatureInfo("layer2", groups[1], 2),
            FeatureInfo("layer3", groups[2], 4),
        ]
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # (B, stem, H, W)
        return self.layer3(self.layer2(self.layer1(x)))  # (B, C3, H/4, W/4), already post-ReLU


def _create_resnet_cifar(depth: int, widths: Sequence[int] = (16, 16, 32, 64), **kwargs) -> CifarResNet:
    return CifarResNet(depth=depth, widths=widths, **kwargs)


@register_model
def resnet20(**kwargs) -> CifarResNet:
    """ResNet-20 (0.27M parameters for 10 classes): student of resnet56 in the benchmark."""
    return _create_resnet_cifar(20, **kwargs)


@register_model
def resnet32(**kwargs) -> CifarResNet:
    """ResNet-32 (0.47M): student of resnet110 in the benchmark."""
    return _create_resnet_cifar(32, **kwargs)


@register_model
def resnet56(**kwargs) -> CifarResNet:
    """ResNet-56 (0.86M): teacher of resnet20."""
    return _create_resnet_cifar(56, **kwargs)


@register_model
def resnet110(**kwargs) -> CifarResNet:
    """ResNet-110 (1.7M): teacher of resnet20 and resnet32."""
    return _create_resnet_cifar(110, **kwargs)


@register_model
def resnet8x4(**kwargs) -> CifarResNet:
    """ResNet-8x4 (1.2M): one block per group, 4x the width; student of resnet32x4."""
    return _create_resnet_cifar(8, (32, 64, 128, 256), **kwargs)


@register_model
def resnet32x4(**kwargs) -> CifarResNet:
    """ResNet-32x4 (7.4M): the benchmark's strongest CIFAR-100 teacher."""
    return _create_resnet_cifar(32, (32, 64, 128, 256), **kwargs)
