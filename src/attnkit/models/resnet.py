"""ImageNet ResNet-18/34 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016).

Post-activation basic blocks (:class:`~attnkit.models._blocks.BasicBlock`): a 7x7/2 conv-BN-ReLU stem and a
3x3/2 max-pool, then four groups of 64/128/256/512 channels at strides 1, 2, 2, 2; the shortcut is a 1x1 conv + BN
only where the shape changes. Module names follow torchvision, so its state dicts load unchanged. Attention
points: the four group outputs after their ReLU (56, 28, 14 and 7 pixels for 224 input), as the
attention-transfer paper uses them for ResNet-34 -> ResNet-18.

Learnable parameters for 1000 classes: ResNet-18 11,689,512; ResNet-34 21,797,672.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ._blocks import basic_group, init_weights
from ._features import FeatureInfo, GapLinearModel
from ._registry import register_model

__all__ = ["ResNet"]


class ResNet(GapLinearModel):
    """ResNet with basic blocks for 224x224 inputs (any input >= 32x32 works through global average pooling).

    Args:
        blocks_per_group: number of basic blocks in each of the four groups ((2, 2, 2, 2) is ResNet-18).
        num_classes: outputs of the classifier.
        in_chans: input channels.
    """

    widths = (64, 128, 256, 512)

    def __init__(
        self, blocks_per_group: Sequence[int] = (2, 2, 2, 2), num_classes: int = 1000, in_chans: int = 3
    ) -> None:
        super().__init__()
        if len(blocks_per_group) != 4 or min(blocks_per_group) < 1:
            raise ValueError(f"blocks_per_group must be 4 counts >= 1, e.g. (2, 2, 2, 2), got {blocks_per_group!r}")
        self.num_classes, self.num_features = num_classes, self.widths[-1]
        self.default_input_size = (in_chans, 224, 224)

        self.conv1 = nn.Conv2d(in_chans, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        w1, w2, w3, w4 = self.widths
        self.layer1 = basic_group(64, w1, blocks_per_group[0], 1)
        self.layer2 = basic_group(w1, w2, blocks_per_group[1], 2)
        self.layer3 = basic_group(w2, w3, blocks_per_group[2], 2)
        self.layer4 = basic_group(w3, w4, blocks_per_group[3], 2)
        self.fc = nn.Linear(self.widths[-1], num_classes)
        self.feature_info = [FeatureInfo(f"layer{i}", w, 2 ** (i + 1)) for i, w in enumerate(self.widths, start=1)]
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)
        x = self.layer2(self.layer1(x))  # (B, 128, H/8, W/8)
        return self.layer4(self.layer3(x))  # (B, 512, H/32, W/32), already post-ReLU


def _create_resnet(blocks_per_group: Sequence[int], **kwargs) -> ResNet:
    return ResNet(blocks_per_group=blocks_per_group, **kwargs)


@register_model
def resnet18(**kwargs) -> ResNet:
    """ResNet-18 (11.7M parameters for 1000 classes): the attention-transfer paper's ImageNet student."""
    return _create_resnet((2, 2, 2, 2), **kwargs)


@register_model
def resnet34(**kwargs) -> ResNet:
    """ResNet-34 (21.8M parameters for 1000 classes): the attention-transfer paper's ImageNet teacher."""
    return _create_resnet((3, 4, 6, 3), **kwargs)
