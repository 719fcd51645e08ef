"""Wide Residual Networks for CIFAR (Zagoruyko & Komodakis, BMVC 2016), as in the attention-transfer code.

Pre-activation basic blocks (BN-ReLU-conv3x3, twice), depth 6n + 4 (n blocks per group), group widths
16k / 32k / 64k after a 3 -> 16 stem conv, no conv bias, no dropout by default; a 1x1 shortcut conv on the
*activated* input only where the shape changes. Attention points: the raw outputs of the three groups (the
residual sums before the next BN-ReLU), as the attention-transfer paper uses them.

Learnable parameters for 10 classes: WRN-16-1 175,066; WRN-16-2 691,674; WRN-40-1 563,930; WRN-40-2 2,243,546.

Initialisation: ``init="torchvision"`` (default, as every attnkit family) or ``init="official"``, the
attention-transfer code's scheme (``create_model("wrn_16_1", init="official")``, or ``model.kwargs.init`` in a
run config).
"""

from __future__ import annotations

from torch import Tensor, nn

from ._blocks import InitScheme, init_weights
from ._features import FeatureInfo, GapLinearModel
from ._registry import register_model

__all__ = ["PreActBasicBlock", "WideResNet"]


class PreActBasicBlock(nn.Module):
    """BN-ReLU-conv3x3(stride) -> BN-ReLU-(dropout)-conv3x3, plus the identity or a 1x1 conv shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        needs_projection = in_channels != out_channels or stride != 1
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False) if needs_projection else None

    def forward(self, x: Tensor) -> Tensor:
        o = self.relu1(self.bn1(x))  # (B, C_in, H, W), shared by the residual branch and the projection
        y = self.conv2(self.dropout(self.relu2(self.bn2(self.conv1(o)))))  # (B, C_out, H/s, W/s)
        return y + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(GapLinearModel):
    """WRN-depth-width for 32x32 inputs (works at any input size >= 8 through global average pooling).

    Args:
        depth: 6n + 4 (16, 22, 28, 40, ...).
        width: widening factor k (group widths floor(16k), floor(32k), floor(64k)).
        num_classes: outputs of the classifier.
        in_chans: input channels (3 for RGB, 1 for MNIST).
        dropout: dropout between the two convs of each block (0 in the attention-transfer experiments).
        init: ``"torchvision"`` (default: He-normal fan-out convs, PyTorch's default linear weights, batch-norm
            scale 1) or ``"official"``, the attention-transfer code's (He-normal fan-in conv and linear weights,
            batch-norm scale uniform in [0, 1), zero biases); see :func:`attnkit.models._blocks.init_weights`.
    """

    def __init__(
        self,
        depth: int = 16,
        width: float = 1,
        num_classes: int = 10,
        in_chans: int = 3,
        dropout: float = 0.0,
        init: InitScheme = "torchvision",
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth}")
        if not width > 0:
            raise ValueError(f"WRN width must be > 0, got {width}")
        blocks_per_group = (depth - 4) // 6
        widths = [int(16 * width), int(32 * width), int(64 * width)]
        self.num_classes, self.num_features = num_classes, widths[2]
        self.default_input_size = (in_chans, 32, 32)

        self.conv1 = nn.Conv2d(in_chans, 16, 3, padding=1, bias=False)
        self.layer1 = self._group(16, widths[0], blocks_per_group, 1, dropout)
        self.layer2 = self._group(widths[0], widths[1], blocks_per_group, 2, dropout)
        self.layer3 = self._group(widths[1], widths[2], blocks_per_group, 2, dropout)
        self.bn = nn.BatchNorm2d(widths[2])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(widths[2], num_classes)
        self.feature_info = [
            FeatureInfo("layer1", widths[0], 1),
            FeatureInfo("layer2", widths[1], 2),
            FeatureInfo("layer3", widths[2], 4),
        ]
        init_weights(self, init)

    @staticmethod
    def _group(in_channels: int, out_channels: int, count: int, stride: int, dropout: float) -> nn.Sequential:
        return nn.Sequential(*(
            PreActBasicBlock(in_channels if i == 0 else out_channels, out_channels, stride if i == 0 else 1, dropout)
            for i in range(count)
        ))

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.conv1(x)  # (B, 16, H, W)
        x = self.layer3(self.layer2(self.layer1(x)))  # (B, 64k, H/4, W/4)
        return self.relu(self.bn(x))


def _create_wrn(depth: int, width: float, **kwargs) -> WideResNet:
    return WideResNet(depth=depth, width=width, **kwargs)


@register_model
def wrn(depth: int = 16, width: float = 1, **kwargs) -> WideResNet:
    """Any WRN: ``create_model("wrn", depth=28, width=10)``."""
    return _create_wrn(depth, width, **kwargs)


@register_model
def wrn_16_1(**kwargs) -> WideResNet:
    """WRN-16-1, 0.18M parameters: the attention-transfer paper's CIFAR student."""
    return _create_wrn(16, 1, **kwargs)


@register_model
def wrn_16_2(**kwargs) -> WideResNet:
    """WRN-16-2, 0.69M parameters: teacher of WRN-16-1, student of WRN-40-2."""
    return _create_wrn(16, 2, **kwargs)


@register_model
def wrn_40_1(**kwargs) -> WideResNet:
    """WRN-40-1, 0.56M parameters: deeper teacher of WRN-16-1."""
    return _create_wrn(40, 1, **kwargs)


@register_model
def wrn_40_2(**kwargs) -> WideResNet:
    """WRN-40-2, 2.2M parameters: teacher of WRN-16-2."""
    return _create_wrn(40, 2, **kwargs)
