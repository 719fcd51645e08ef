"""Network in Network for CIFAR (Lin, Chen & Yan, ICLR 2014), with BatchNorm as in Zagoruyko's cifar.torch, the
NIN-thin / NIN-wide pair of the attention-transfer paper (Zagoruyko & Komodakis, ICLR 2017, Table 1).

Three mlpconv blocks, each a k x k conv followed by two 1x1 convs (conv-BN-ReLU, no conv bias): 5x5, 5x5 and 3x3
kernels; a 3x3/2 max-pool after block 1 and a 3x3/2 average pool after block 2 (32 -> 16 -> 8), each followed by
dropout. ``nin_wide`` has the original widths (192-160-96, 192-192-192, 192-192); ``nin_thin`` half of them.

The original network ends in a 1x1 conv to the classes followed by global average pooling. Both are linear, so
they commute: ``GAP(conv1x1(A)) = W GAP(A) + b``, i.e. global average pooling followed by one linear layer. That
is how the head is built here (it honours the feature contract, ``forward_features`` -> GAP -> ``fc``, and CAM
applies); it drops only the BN-ReLU that cifar.torch puts after the class conv.

Attention points: the outputs of the three mlpconv blocks (32, 16 and 8 pixels for 32x32 input).

Learnable parameters for 10 classes: nin_thin 246,890; nin_wide 968,394 (the paper's "0.2M" and "1M").
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ._blocks import conv_stack, init_weights
from ._features import FeatureInfo, GapLinearModel
from ._registry import register_model

__all__ = ["NIN"]

NIN_WIDE_WIDTHS = ((192, 160, 96), (192, 192, 192), (192, 192))
KERNEL_SIZES = (5, 5, 3)  # of the first conv of each mlpconv block; the others are 1x1


class NIN(GapLinearModel):
    """NIN for 32x32 inputs (any input >= 4x4 works through global average pooling).

    Args:
        widths: channels of the convs of each of the three mlpconv blocks.
        num_classes: outputs of the classifier (the original's class conv, as GAP + linear).
        in_chans: input channels.
        dropout: dropout after each of the two pools (0.5 in the original and in cifar.torch).
    """

    def __init__(
        self,
        widths: Sequence[Sequence[int]] = NIN_WIDE_WIDTHS,
        num_classes: int = 10,
        in_chans: int = 3,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if len(widths) != 3 or not all(len(block) >= 1 for block in widths):
            raise ValueError(f"widths must give 3 mlpconv blocks of at least one conv width each, got {widths!r}")
        outputs = [block[-1] for block in widths]
        self.num_classes, self.num_features = num_classes, outputs[2]
        self.default_input_size = (in_chans, 32, 32)

        self.block1 = _mlpconv(in_chans, widths[0], KERNEL_SIZES[0])
        self.pool1 = nn.Sequential(nn.MaxPool2d(3, stride=2, ceil_mode=True), nn.Dropout(dropout))
        self.block2 = _mlpconv(outputs[0], widths[1], KERNEL_SIZES[1])
        self.pool2 = nn.Sequential(nn.AvgPool2d(3, stride=2, ceil_mode=True), nn.Dropout(dropout))
        self.block3 = _mlpconv(outputs[1], widths[2], KERNEL_SIZES[2])
        self.fc = nn.Linear(outputs[2], num_classes)
        self.feature_info = [
            FeatureInfo("block1", outputs[0], 1),
            FeatureInfo("block2", outputs[1], 2),
            FeatureInfo("block3", outputs[2], 4),
        ]
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.pool1(self.block1(x))  # (B, C1, H/2, W/2)
        x = self.pool2(self.block2(x))  # (B, C2, H/4, W/4)
        return self.block3(x)  # (B, C3, H/4, W/4), already post-ReLU


def _mlpconv(in_channels: int, widths: Sequence[int], kernel_size: int) -> nn.Sequential:
    """A k x k conv-BN-ReLU, then 1x1 conv-BN-ReLU layers: a small MLP slid over the image."""
    return conv_stack(in_channels, widths, [kernel_size] + [1] * (len(widths) - 1))


def _create_nin(widths: Sequence[Sequence[int]], **kwargs) -> NIN:
    return NIN(widths=widths, **kwargs)


@register_model
def nin_wide(**kwargs) -> NIN:
    """NIN-wide (0.97M parameters for 10 classes): the original NIN widths; teacher of nin_thin."""
    return _create_nin(NIN_WIDE_WIDTHS, **kwargs)


@register_model
def nin_thin(**kwargs) -> NIN:
    """NIN-thin (0.25M parameters for 10 classes): half the widths of nin_wide."""
    return _create_nin(tuple(tuple(w // 2 for w in block) for block in NIN_WIDE_WIDTHS), **kwargs)
