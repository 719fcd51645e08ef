"""VGG with BatchNorm for CIFAR, as in the distillation benchmark (Tian et al., "Contrastive Representation
Distillation", ICLR 2020; code: HobbitLong/RepDistiller), after Simonyan & Zisserman (ICLR 2015).

Five blocks of 3x3 conv(bias)-BN-ReLU layers; 2x2 max-pools after blocks 0, 1 and 2 (32 -> 16 -> 8 -> 4 for
32x32 input, so blocks 3 and 4 both run at 4x4); global average pooling and one linear layer. ``vgg8`` has one
conv per block (64/128/256/512/512), ``vgg13`` two. The benchmark's code pools once more after block 3 only for
64x64 inputs; these models never do, so their feature sizes follow the input size alone.

Attention points: the outputs (post-ReLU) of blocks 1, 2 and 4, one per resolution (16, 8, 4 for 32x32 input).
The benchmark's attention-transfer loss also uses block 3 (4x4, like block 4); pass an explicit mapping to
:func:`attnkit.features.pair_layers` to add it.

Learnable parameters for 100 classes: vgg8 3,965,028; vgg13 9,462,180.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ._blocks import conv_stack, init_weights
from ._features import FeatureInfo, GapLinearModel
from ._registry import register_model

__all__ = ["VGG"]

# Channels of each conv layer in each of the five blocks.
VGG_CONFIGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
}


class VGG(GapLinearModel):
    """VGG-BN for 32x32 inputs (any input >= 8x8 works through global average pooling).

    Args:
        config: channels of each conv layer in each of the five blocks (see ``VGG_CONFIGS``).
        num_classes: outputs of the classifier.
        in_chans: input channels.
    """

    def __init__(
        self, config: Sequence[Sequence[int]] = VGG_CONFIGS["vgg8"], num_classes: int = 10, in_chans: int = 3
    ) -> None:
        super().__init__()
        if len(config) != 5 or not all(len(block) >= 1 for block in config):
            raise ValueError(f"config must give 5 blocks of at least one conv width each, got {config!r}")
        widths = [block[-1] for block in config]
        self.num_classes, self.num_features = num_classes, widths[4]
        self.default_input_size = (in_chans, 32, 32)

        # 3x3 conv-BN-ReLU layers; the benchmark's convs keep their bias.
        self.block0 = conv_stack(in_chans, config[0], 3, bias=True)
        self.pool0 = nn.MaxPool2d(2)
        self.block1 = conv_stack(widths[0], config[1], 3, bias=True)
        self.pool1 = nn.MaxPool2d(2)
        self.block2 = conv_stack(widths[1], config[2], 3, bias=True)
        self.pool2 = nn.MaxPool2d(2)
        self.block3 = conv_stack(widths[2], config[3], 3, bias=True)
        self.block4 = conv_stack(widths[3], config[4], 3, bias=True)
        self.fc = nn.Linear(widths[4], num_classes)
        self.feature_info = [
            FeatureInfo("block1", widths[1], 2),
            FeatureInfo("block2", widths[2], 4),
            FeatureInfo("block4", widths[4], 8),
        ]
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.pool0(self.block0(x))  # (B, C0, H/2, W/2)
        x = self.pool1(self.block1(x))  # (B, C1, H/4, W/4)
        x = self.pool2(self.block2(x))  # (B, C2, H/8, W/8)
        return self.block4(self.block3(x))  # (B, C4, H/8, W/8), already post-ReLU


def _create_vgg(name: str, **kwargs) -> VGG:
    return VGG(config=VGG_CONFIGS[name], **kwargs)


@register_model
def vgg8(**kwargs) -> VGG:
    """VGG-8-BN (3.9M parameters for 10 classes): student of vgg13 in the benchmark."""
    return _create_vgg("vgg8", **kwargs)


@register_model
def vgg13(**kwargs) -> VGG:
    """VGG-13-BN (9.4M parameters for 10 classes): teacher of vgg8 in the benchmark."""
    return _create_vgg("vgg13", **kwargs)
