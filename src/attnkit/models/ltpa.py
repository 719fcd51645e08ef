"""Learn to Pay Attention (Jetley, Lord, Lee & Torr, ICLR 2018): VGG with trainable attention over local features.

Backbone: VGG-16-BN with the first two max-pools removed (3x3 conv(bias)-BN-ReLU layers, numbered 1-15)::

    layers 1-2   64   H    x W          layers 8-10  512  H/2 x W/2  -> l2 (layer 10)
    layers 3-4   128  H    x W          layers 11-13 512  H/4 x W/4  -> l3 (layer 13)
    layers 5-7   256  H    x W  -> l1   layers 14-15 512, each followed by a 2x2 max-pool -> H/32 x W/32
    (2x2 max-pools after layers 7, 10 and 13)               layer 16: g = FC(512 -> 512)

For 32x32 input: l1 = 32x32x256, l2 = 16x16x512, l3 = 8x8x512, g = 512-d (the layer-16 FC sees a 1x1 map; for
larger inputs it sees the global average of the map). ``att3`` attends to l1, l2, l3; ``att2`` to l2 and l3.
Where the widths differ, l is projected to g's 512 channels by a 1x1 conv (l1; the paper projects g down instead,
the known PyTorch port projects l up -- the choice only moves where the extra parameters sit).

Per attended level, with l_i the local feature vector at position i:
  compatibility ``"pc"``: c_i = <u, l_i + g> (a 1x1 conv C -> 1, no bias); ``"dp"``: c_i = <l_i, g>;
  normalisation ``"softmax"``: a = softmax over the H*W positions, g_a = sum_i a_i l_i;
  ``"sigmoid"``: a_i = sigmoid(c_i), g_a = mean_i a_i l_i.
Head ``"concat"``: one linear layer on [g_a1, g_a2, (g_a3)] (the paper's best); ``"indep"``: one linear layer
per level, their logits averaged.

With ``"pc"`` and ``"softmax"`` the term <u, g> is the same at every position and cancels in the softmax, so g
has no effect at all on the output (the paper's appendix observed that g seems redundant for pc); layers 14-16
then receive zero gradients. They matter for ``"dp"`` and for ``"sigmoid"``.

Contract: ``forward_features`` returns the deepest local feature map l3 (the natural Grad-CAM layer);
the head reads every attended level, so ``forward_head`` takes the list of local feature maps
``[l1, l2, l3]`` and ``head_is_gap_linear`` is False. ``forward_with_attention(x)`` returns the attention
weights ``{"level1": (B, H1, W1), ...}`` of the attended levels, from high to low resolution.

Learnable parameters for 10 classes: att2 19,718,730; att3 19,855,434 (3.79 / 3.92 GMACs at 32x32: the first
seven layers run at full resolution).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._blocks import conv_stack, init_weights
from ._features import FeatureInfo
from ._registry import register_model

__all__ = ["LinearAttention", "LTPAVGG"]

COMPATIBILITIES = ("pc", "dp")
NORMALIZATIONS = ("softmax", "sigmoid")
HEADS = ("concat", "indep")
GLOBAL_CHANNELS = 512  # width of g and of every attended (projected) local feature


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


class LinearAttention(nn.Module):
    """One attention level: compatibility scores c, attention weights a, attended descriptor g_a.

    Args:
        channels: C of the local features and of g.
        compatibility: ``"pc"`` (c_i = <u, l_i + g>) or ``"dp"`` (c_i = <l_i, g>).
        normalization: ``"softmax"`` over positions (g_a = sum a_i l_i) or ``"sigmoid"`` (g_a = mean a_i l_i).
    """

    def __init__(self, channels: int, compatibility: str = "pc", normalization: str = "softmax") -> None:
        super().__init__()
        _check_choice("compatibility", compatibility, COMPATIBILITIES)
        _check_choice("normalization", normalization, NORMALIZATIONS)
        self.compatibility, self.normalization = compatibility, normalization
        self.u = nn.Conv2d(channels, 1, 1, bias=False) if compatibility == "pc" else None

    def forward(self, local: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, H, W) local features and (B, C) global feature -> weights a (B, H, W) and g_a (B, C)."""
        g_map = g[:, :, None, None]  # (B, C) -> (B, C, 1, 1), broadcast over positions
        if self.u is not None:
            scores = self.u(local + g_map).squeeze(1)  # (B, C, H, W) -> (B, H, W)
        else:
            scores = (local * g_map).sum(1)  # (B, C, H, W) -> (B, H, W)
        if self.normalization == "softmax":
            weights = F.softmax(scores.flatten(1), dim=1).view_as(scores)  # sums to 1 over H*W per sample
            attended = (weights.unsqueeze(1) * local).sum((2, 3))  # (B, C)
        else:
            weights = torch.sigmoid(scores)
            attended = (weights.unsqueeze(1) * local).mean((2, 3))  # (B, C)
        return weights, attended


def _projector(channels: int) -> nn.Module:
    """1x1 conv to g's width where the widths differ (l1: 256 -> 512), else the identity."""
    if channels == GLOBAL_CHANNELS:
        return nn.Identity()
    return nn.Conv2d(channels, GLOBAL_CHANNELS, 1, bias=False)


class LTPAVGG(nn.Module):
    """VGG-16-BN with attention at layers 7, 10, 13 (``levels=3``) or 10, 13 (``levels=2``), for 32x32 inputs.

    Inputs must be at least 32x32 (five 2x2 max-pools). See the module docstring for the layout.

    Args:
        levels: 3 (att3: layers 7, 10, 13) or 2 (att2: layers 10, 13).
        compatibility: ``"pc"`` (parametrised, default) or ``"dp"`` (dot product).
        normalization: ``"softmax"`` (default) or ``"sigmoid"``.
        head: ``"concat"`` (default) or ``"indep"``.
        num_classes: outputs of the classifier.
        in_chans: input channels.
    """

    head_is_gap_linear = False  # the head reads attention-weighted features of several layers; no CAM

    def __init__(
        self,
        levels: int = 3,
        compatibility: str = "pc",
        normalization: str = "softmax",
        head: str = "concat",
        num_classes: int = 10,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if levels not in (2, 3):
            raise ValueError(f"levels must be 2 (att2: layers 10, 13) or 3 (att3: layers 7, 10, 13), got {levels!r}")
        _check_choice("head", head, HEADS)
        self.num_classes, self.num_features = num_classes, GLOBAL_CHANNELS
        self.default_input_size = (in_chans, 32, 32)
        self.head_type = head

        self.block1 = conv_stack(in_chans, (64, 64), 3, bias=True)  # layers 1-2; its max-pool removed
        self.block2 = conv_stack(64, (128, 128), 3, bias=True)  # layers 3-4; its max-pool removed
        self.block3 = conv_stack(128, (256, 256, 256), 3, bias=True)  # layers 5-7 -> l1
        self.block4 = conv_stack(256, (512, 512, 512), 3, bias=True)  # layers 8-10 -> l2
        self.block5 = conv_stack(512, (512, 512, 512), 3, bias=True)  # layers 11-13 -> l3
        self.pool = nn.MaxPool2d(2)
        layer14, layer15 = conv_stack(512, (512, 512), 3, bias=True)
        self.block6 = nn.Sequential(layer14, nn.MaxPool2d(2), layer15, nn.MaxPool2d(2))  # -> (B, 512, H/32, W/32)
        self.global_fc = nn.Linear(512, GLOBAL_CHANNELS)  # layer 16: g

        all_infos = [FeatureInfo("block3", 256, 1), FeatureInfo("block4", 512, 2), FeatureInfo("block5", 512, 4)]
        self.feature_info = all_infos[3 - levels :]
        self.projectors = nn.ModuleList(_projector(info.channels) for info in self.feature_info)
        self.attention = nn.ModuleList(
            LinearAttention(GLOBAL_CHANNELS, compatibility, normalization) for _ in self.feature_info
        )
        if head == "concat":
            self.fc: nn.Module = nn.Linear(GLOBAL_CHANNELS * levels, num_classes)
        else:
            self.fc = nn.ModuleList(nn.Linear(GLOBAL_CHANNELS, num_classes) for _ in range(levels))
        init_weights(self)

    def local_features(self, x: Tensor) -> list[Tensor]:
        """The outputs of layers 7, 10 and 13: [(B, 256, H, W), (B, 512, H/2, W/2), (B, 512, H/4, W/4)]."""
        l1 = self.block3(self.block2(self.block1(x)))
        l2 = self.block4(self.pool(l1))
        l3 = self.block5(self.pool(l2))
        return [l1, l2, l3]

    def forward_features(self, x: Tensor) -> Tensor:
        return self.local_features(x)[-1]  # l3, (B, 512, H/4, W/4)

    def forward_head(self, local_features: Sequence[Tensor]) -> Tensor:
        """Logits from the list ``[l1, l2, l3]`` that :meth:`local_features` returns."""
        return self._attend(local_features)[0]

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.local_features(x))

    def forward_with_attention(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and the attention weights of every level, ``{"level1": (B, H1, W1), ...}``."""
        return self._attend(self.local_features(x))

    def get_classifier(self) -> nn.Module:
        """The final linear layer (``"concat"``) or the per-level linear layers (``"indep"``)."""
        return self.fc

    def _attend(self, local_features: Sequence[Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        x = self.block6(self.pool(local_features[-1]))  # (B, 512, H/32, W/32)
        g = self.global_fc(F.adaptive_avg_pool2d(x, 1).flatten(1))  # (B, 512)
        attended_levels = local_features[len(local_features) - len(self.attention) :]
        weights, descriptors = {}, []
        for index, (local, project, attend) in enumerate(zip(attended_levels, self.projectors, self.attention), 1):
            weights[f"level{index}"], attended = attend(project(local), g)  # (B, H, W), (B, 512)
            descriptors.append(attended)
        if self.head_type == "concat":
            logits = self.fc(torch.cat(descriptors, dim=1))  # (B, 512 * levels) -> (B, num_classes)
        else:
            logits = torch.stack([fc(d) for fc, d in zip(self.fc, descriptors)]).mean(0)  # average of level logits
        return logits, weights


def _create_ltpa(levels: int, **kwargs) -> LTPAVGG:
    return LTPAVGG(levels=levels, **kwargs)


@register_model
def ltpa_vgg_att2(**kwargs) -> LTPAVGG:
    """LTPA VGG att2: attention at layers 10 and 13 (``compatibility``, ``normalization``, ``head`` options)."""
    return _create_ltpa(2, **kwargs)


@register_model
def ltpa_vgg_att3(**kwargs) -> LTPAVGG:
    """LTPA VGG att3: attention at layers 7, 10 and 13 (``compatibility``, ``normalization``, ``head`` options)."""
    return _create_ltpa(3, **kwargs)
