"""Tiny models with weights set by hand, and small stand-ins for the trainable-attention models."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SquareMeanNet(nn.Module):
    """A = conv1x1(x) with channel weights (1, 2): A_0 = x, A_1 = 2x; logits = W mean_ij(A^2), W by hand.

    Its head is not GAP + linear (d logit / dA varies with position), so Grad-CAM and HiResCAM differ.
    """

    head_is_gap_linear = False

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, 2.0]).view(2, 1, 1, 1))
            self.fc.weight.copy_(torch.tensor([[1.0, 0.5], [2.0, -1.0]]))

    def forward_features(self, x: Tensor) -> Tensor:
        return self.conv(x)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.fc(features.pow(2).mean(dim=(2, 3)))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc


class GapLinearNet(nn.Module):
    """A = conv1x1(x) with channel weights (1, -1): A_0 = x, A_1 = -x; logits = W GAP(A) + b, W by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.fc.weight.copy_(torch.tensor([[1.0, 0.5], [2.0, -1.0]]))
            self.fc.bias.copy_(torch.tensor([0.3, -0.2]))

    def forward_features(self, x: Tensor) -> Tensor:
        return self.conv(x)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.fc(F.adaptive_avg_pool2d(features, 1).flatten(1))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc


class LTPAStandIn(nn.Module):
    """forward_with_attention -> {"level1": (B, 8, 8), "level2": (B, 4, 4)} softmax maps, as LTPA returns."""

    head_is_gap_linear = False

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.score1, self.score2 = nn.Conv2d(4, 1, 1), nn.Conv2d(4, 1, 1)
        self.fc = nn.Linear(8, num_classes)

    def _levels(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        l1 = torch.relu(self.conv1(x))  # (B, 4, 8, 8)
        l2 = torch.relu(self.conv2(l1))  # (B, 4, 4, 4)
        feats, maps = [], []
        for local, score in ((l1, self.score1), (l2, self.score2)):
            a = torch.softmax(score(local).flatten(1), dim=1).view(local.shape[0], *local.shape[2:])  # (B, h, w)
            maps.append(a)
            feats.append((local * a[:, None]).sum(dim=(2, 3)))  # attention-weighted sum, (B, 4)
        return feats, maps

    def forward_with_attention(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        feats, maps = self._levels(x)
        return self.fc(torch.cat(feats, dim=1)), {"level1": maps[0], "level2": maps[1]}

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_attention(x)[0]


class ResidualAttentionStandIn(nn.Module):
    """forward_with_attention -> {"stage1.0": (B, 4, 8, 8), "stage2.0": (B, 4, 4, 4)} sigmoid soft masks."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.mask1 = nn.Conv2d(4, 4, 1)
        self.conv2 = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.mask2 = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4, num_classes)

    def forward_with_attention(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        t1 = torch.relu(self.conv1(x))
        m1 = torch.sigmoid(self.mask1(t1))  # (B, 4, 8, 8) in [0, 1]
        t2 = torch.relu(self.conv2((1 + m1) * t1))
        m2 = torch.sigmoid(self.mask2(t2))
        logits = self.fc(((1 + m2) * t2).mean(dim=(2, 3)))
        return logits, {"stage1.0": m1, "stage2.0": m2}

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_attention(x)[0]


class LinearHeadNet(nn.Module):
    """conv 3x3 stride 2 (2 -> 3 channels) -> ReLU ("act") -> flatten -> linear (27 -> 4), on 6x6 images.

    The logits are linear in the layer's output A (3, 3, 3), so dS_c/dA = fc.weight[c].view(3, 3, 3) exactly and
    varies with the position: the CAM variants all differ, and their references can read the gradient from the
    weights. Channel 2's bias is -100: that channel is 0 on every image (a dead channel).
    """

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(7)
        self.conv = nn.Conv2d(2, 3, 3, stride=2, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(27, 4)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(3, 2, 3, 3, generator=gen))
            self.conv.bias.copy_(torch.tensor([0.5, -0.2, -100.0]))
            self.fc.weight.copy_(torch.randn(4, 27, generator=gen))
            self.fc.bias.copy_(torch.randn(4, generator=gen))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.act(self.conv(x)).flatten(1))


class ConcatSkipNet(LinearHeadNet):
    """LinearHeadNet whose head also reads the input pooled to the layer's size, concatenated on the channels:
    the layers after "act" need the input's batch, so Ablation-CAM cannot reuse the prefix."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(27 + 18, 4)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(4, 45, generator=torch.Generator().manual_seed(8)))

    def forward(self, x: Tensor) -> Tensor:
        a = self.act(self.conv(x))  # (B, 3, 3, 3)
        return self.fc(torch.cat([a, F.avg_pool2d(x, 2)], dim=1).flatten(1))


class SmoothNet(nn.Module):
    """conv -> softplus ("act", positive and smooth) -> conv -> softplus -> GAP -> linear, for float64 gradcheck."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.act = nn.Conv2d(1, 2, 3, padding=1), nn.Softplus()
        self.conv2, self.act2 = nn.Conv2d(2, 3, 3, padding=1), nn.Softplus()
        self.fc = nn.Linear(3, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.act2(self.conv2(self.act(self.conv1(x)))).pow(2).mean(dim=(2, 3)))
