"""Input attributions through captum: Integrated Gradients, SmoothGrad and Guided Backpropagation.

Each returns captum's (B, C, H, W) attribution reduced over the colour channels to a (B, H, W) map at the
input resolution. Notation: x the image, S(x) the score explained (target-class logit or target function).

* Integrated Gradients (Sundararajan et al., ICML 2017): (x - x') ⊙ integral_0^1 dS/dx(x' + a (x - x')) da,
  baseline x' = 0 (the data set's mean colour, images being normalised), the integral by captum's Gauss-Legendre
  rule with ``steps`` points; the channels are summed, keeping the sign, so the map sums to about
  S(x) - S(x') (completeness).                         -> ``captum.attr.IntegratedGradients``
* SmoothGrad (Smilkov et al. 2017): the gradient averaged over ``samples`` noisy copies x + N(0, stdev^2),
  then max_c |.| as :class:`attnkit.explain.Saliency` (so a tiny ``stdev`` gives the saliency map). Noise is
  drawn from a generator seeded with ``seed``: the same call gives the same map.
                                                       -> ``captum.attr.NoiseTunnel(Saliency)``, ``nt_type="smoothgrad"``
* Guided Backpropagation (Springenberg et al., ICLR-W 2015): the input gradient with every ``nn.ReLU`` module
  passing back only positive gradients; max_c |.| (as saliency). ReLUs called as functions (``F.relu``) are
  not changed (captum's limitation).                   -> ``captum.attr.GuidedBackprop``

Papers and formulas: docs/papers.md, section 5.5.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from ..validation import check_int
from ._base import AttentionMethod
from ._captum import captum_attr, captum_forward

__all__ = ["GuidedBackprop", "IntegratedGradients", "SmoothGrad"]


def _positive_int(name: str, value: int) -> int:
    return check_int(name, value, minimum=1)


def _graded(images: Tensor) -> Tensor:
    """A private copy that requires grad (captum differentiates with respect to it; no warning)."""
    return images.clone().requires_grad_(True)


class IntegratedGradients(AttentionMethod):
    """Integrated Gradients summed over channels (signed), (B, H, W), through ``captum.attr.IntegratedGradients``.

    Args:
        model: any classifier.
        steps: points of the path integral (captum's ``n_steps``, default 50).
        baseline: value of the baseline image x' (0 = the data set's mean colour for normalised images).
        internal_batch_size: path points per forward pass (None = all ``steps`` x images at once).

    >>> from attnkit.models import create_model
    >>> IntegratedGradients(create_model("wrn", depth=10, width=1), steps=8).attribute(torch.randn(2, 3, 16, 16)).shape
    torch.Size([2, 16, 16])
    """

    name = "integrated_gradients"
    scores_own_forward = True

    def __init__(self, model: nn.Module, steps: int = 50, baseline: float = 0.0, internal_batch_size: int | None = None) -> None:
        super().__init__(model)
        self.steps = _positive_int("steps", steps)
        self.baseline = float(baseline)
        self.internal_batch_size = None if internal_batch_size is None else _positive_int("internal_batch_size", internal_batch_size)

    def _attribute(self, images: Tensor, target) -> Tensor:
        forward, classes = captum_forward(self.model, images, target)
        attributions = captum_attr().IntegratedGradients(forward).attribute(
            _graded(images), baselines=self.baseline, target=classes, n_steps=self.steps,
            internal_batch_size=self.internal_batch_size,
        )  # (B, C, H, W)
        return attributions.detach().sum(dim=1)


class SmoothGrad(AttentionMethod):
    """SmoothGrad: max_c |mean_n dS/dx(x + noise_n)|, (B, H, W), through captum's ``NoiseTunnel(Saliency)``.

    Args:
        model: any classifier.
        samples: noisy copies per image (captum's ``nt_samples``, default 25).
        stdev: standard deviation of the Gaussian noise, in the images' normalised units (captum's ``stdevs``;
            default 0.5, about 12% of the value range of images normalised to unit variance: the paper
            recommends 10-20% of the range).
        seed: seed of the noise (None: torch's global generator).
        samples_batch_size: noisy copies per forward pass (captum's ``nt_samples_batch_size``; None = all).
    """

    name = "smoothgrad"
    scores_own_forward = True

    def __init__(
        self, model: nn.Module, samples: int = 25, stdev: float = 0.5, seed: int | None = 0,
        samples_batch_size: int | None = None,
    ) -> None:
        super().__init__(model)
        self.samples = _positive_int("samples", samples)
        if not (isinstance(stdev, (int, float)) and not isinstance(stdev, bool) and stdev >= 0):
            raise ValueError(f"stdev must be a number >= 0, got {stdev!r}")
        self.stdev, self.seed = float(stdev), seed
        self.samples_batch_size = None if samples_batch_size is None else _positive_int("samples_batch_size", samples_batch_size)

    def _attribute(self, images: Tensor, target) -> Tensor:
        forward, classes = captum_forward(self.model, images, target)
        attr = captum_attr()
        tunnel = attr.NoiseTunnel(attr.Saliency(forward))
        devices = [images.device.index or 0] if images.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, enabled=self.seed is not None):
            if self.seed is not None:
                torch.manual_seed(self.seed)
            grads = tunnel.attribute(
                _graded(images), nt_type="smoothgrad", nt_samples=self.samples, stdevs=self.stdev, target=classes,
                abs=False, nt_samples_batch_size=self.samples_batch_size,
            )  # (B, C, H, W): the mean signed gradient
        return grads.detach().abs().amax(dim=1)


class GuidedBackprop(AttentionMethod):
    """Guided Backpropagation: max_c |guided dS/dx_c|, (B, H, W), through ``captum.attr.GuidedBackprop``.

    Args:
        model: a classifier whose ReLUs are ``nn.ReLU`` modules (they are the ones guided).
    """

    name = "guided_backprop"
    scores_own_forward = True

    def _attribute(self, images: Tensor, target) -> Tensor:
        forward, classes = captum_forward(self.model, images, target)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations")  # by design
            grads = captum_attr().GuidedBackprop(forward).attribute(_graded(images), target=classes)
        return grads.detach().abs().amax(dim=1)
