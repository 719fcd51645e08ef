"""Building blocks shared by several model families, each written once.

* :class:`BasicBlock`: post-activation residual block of He et al. (CVPR 2016), used by the CIFAR ResNets of the
  distillation benchmark (``resnet_cifar.py``) and the ImageNet ResNet-18/34 (``resnet.py``).
* :class:`PreActBottleneck`: pre-activation bottleneck unit of He et al. ("Identity Mappings", ECCV 2016), the
  residual unit of the Residual Attention Network (``residual_attention.py``).
* :func:`conv_stack`: conv-BN-ReLU layers, the blocks of VGG (``vgg.py``), Learn to Pay Attention (``ltpa.py``)
  and the mlpconv blocks of NIN (``nin.py``).
* :func:`init_weights`: the initialisation every family uses (and the attention-transfer code's, for WRN).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import Tensor, nn

__all__ = ["INIT_SCHEMES", "BasicBlock", "InitScheme", "PreActBottleneck", "basic_group", "conv_stack", "init_weights"]

InitScheme = Literal["torchvision", "official"]


class BasicBlock(nn.Module):
    """conv3x3(stride)-BN-ReLU-conv3x3-BN, plus the identity or conv1x1(stride)-BN where the shape changes; ReLU.

    Submodule names follow torchvision and RepDistiller (``conv1``, ``bn1``, ``conv2``, ``bn2``, ``downsample``),
    so their state dicts map one to one. The output is post-ReLU, as the distillation papers capture it.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        needs_projection = in_channels != out_channels or stride != 1
        self.downsample = (
            nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )
            if needs_projection
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))  # (B, C_out, H/s, W/s)
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


def basic_group(in_channels: int, out_channels: int, count: int, stride: int) -> nn.Sequential:
    """``count`` :class:`BasicBlock` s; the first one changes the width and applies the stride."""
    return nn.Sequential(*(
        BasicBlock(in_channels if i == 0 else out_channels, out_channels, stride if i == 0 else 1) for i in range(count)
    ))


class PreActBottleneck(nn.Module):
    """BN-ReLU-conv1x1 (C_in -> w) -> BN-ReLU-conv3x3(stride) (w -> w) -> BN-ReLU-conv1x1 (w -> 4w = C_out).

    The shortcut is the identity, or a 1x1 conv (stride) on the *activated* input only where the shape changes
    (as in the pre-activation ResNet and the Residual Attention Network's units). No conv bias: every conv is
    followed by a BatchNorm.
    """

    expansion = 4

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        if out_channels % self.expansion:
            raise ValueError(f"bottleneck output channels must be a multiple of 4 (4 x width), got {out_channels}")
        width = out_channels // self.expansion
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        needs_projection = in_channels != out_channels or stride != 1
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False) if needs_projection else None

    def forward(self, x: Tensor) -> Tensor:
        o = self.relu(self.bn1(x))  # (B, C_in, H, W), shared by the residual branch and the projection
        y = self.conv1(o)  # (B, w, H, W)
        y = self.conv2(self.relu(self.bn2(y)))  # (B, w, H/s, W/s)
        y = self.conv3(self.relu(self.bn3(y)))  # (B, 4w, H/s, W/s)
        return y + (x if self.shortcut is None else self.shortcut(o))


def conv_stack(
    in_channels: int, widths: Sequence[int], kernel_sizes: int | Sequence[int] = 3, bias: bool = False
) -> nn.Sequential:
    """conv('same' padding)-BN-ReLU layers of the given output widths, one ``nn.Sequential`` each.

    Path ``"i.0"`` is the i-th conv, ``"i.2"`` its ReLU. ``kernel_sizes`` is one size for all layers or one per layer.
    """
    kernels = [kernel_sizes] * len(widths) if isinstance(kernel_sizes, int) else list(kernel_sizes)
    if len(kernels) != len(widths):
        raise ValueError(f"got {len(kernels)} kernel sizes for {len(widths)} layers; give one size or one per layer")
    channels = [in_channels, *widths]
    return nn.Sequential(*(
        nn.Sequential(
            nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=bias), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
        )
        for c_in, c_out, k in zip(channels, channels[1:], kernels)
    ))


INIT_SCHEMES = ("torchvision", "official")


def init_weights(model: nn.Module, scheme: InitScheme = "torchvision") -> None:
    """Initialise every conv, linear and batch-norm layer of ``model`` by one of :data:`INIT_SCHEMES`.

    * ``"torchvision"`` (every family's default, as torchvision's ResNets): He-normal conv weights with
      fan-out, std sqrt(2 / (C_out k^2)); linear weights keep PyTorch's default (uniform, bound 1/sqrt(fan_in));
      zero conv/linear biases; batch norm keeps PyTorch's scale 1 and shift 0.
    * ``"official"``: the attention-transfer code's (``utils.conv_params``, ``linear_params``, ``bnparams``):
      ``kaiming_normal_`` with its defaults - fan-in, gain sqrt(2), std sqrt(2 / (C_in k^2)) - for conv *and*
      linear weights, zero biases, batch-norm scale uniform in [0, 1) (``torch.rand``) and shift 0.
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"init must be one of {INIT_SCHEMES}, got {scheme!r}")
    official = scheme == "official"
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if official:
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif official and isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.0, 1.0)
            nn.init.zeros_(m.bias)
