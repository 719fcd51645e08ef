"""Faithfulness: does the model's confidence follow the map when the pixels it ranks are changed?

Every metric takes the model, normalised images x (B, C, H, W), their maps (B, h, w; resized to H x W with
:func:`attnkit.functional.resize_map` when they are not at the images' resolution) and the target, and reads
p = the softmax probability of the target class (None: each image's predicted class), or a target function's
value. Pixels are ranked by the map, most relevant first (ties by position); changing a pixel changes all its
channels. Per image values come back as (B,) tensors; :func:`faithfulness` computes them all at once.

* **Deletion / Insertion** (Petsiuk, Das & Saenko, "RISE", BMVC 2018): after step k of ``steps``, the first
  floor(k N / steps) of the N pixels are replaced by the baseline (deletion) or, starting from the baseline,
  put back (insertion); the score is the area under p_0 .. p_steps over the changed fraction in [0, 1]
  (trapezoid rule). Deletion: lower is better; insertion: higher. Baselines: ``"zeros"`` (0, the data set's
  mean colour for normalised images; RISE's deletion default), ``"blur"`` (RISE's insertion default: each
  channel convolved, with zero padding, with RISE's 11 x 11 kernel, ``scipy.ndimage.gaussian_filter`` of a
  centred delta with sigma 5 -- a Gaussian whose tails are folded back into the window by the filter's reflect
  mode, not a truncated one), ``"mean"`` (each image's channel means) or a tensor.
* **Average Drop / Increase in Confidence** (Chattopadhay et al., "Grad-CAM++", WACV 2018): the explanation
  image E = b + m ⊙ (x - b), m = the map scaled to [0, 1] per image (minimum -> 0), b the baseline (zeros);
  Average Drop = max(0, p(x) - p(E)) / p(x) (lower is better), Increase in Confidence = 1 where p(E) > p(x)
  (higher is better). The paper reports their means x 100. Average Drop is a relative drop of a probability:
  with a target function whose score p(x) is 0 or negative it is undefined, and those images get NaN (with a
  warning) rather than a number divided by ~0; Increase in Confidence compares any scores.
* **ROAD** (Rong et al., ICML 2022): at each percentile q of ``percentiles`` the q% most relevant (MoRF) or
  least relevant (LeRF) pixels are removed and filled by noisy linear imputation
  (:func:`attnkit.explain.metrics.road.noisy_linear_imputation`); the score is the mean of p over the
  percentiles. MoRF: lower is better; LeRF: higher. (The paper plots accuracy over a data set; per image, the
  probability is its smooth counterpart. pytorch-grad-cam reports p minus the unperturbed p.)

Speed: all perturbed copies of all images and steps go through the model in batches of ``batch_size`` (one
stream for all metrics in :func:`faithfulness`; the unperturbed images run once and give both the classes and
p(x), which are also the curves' end points), without gradients, in eval mode. A target function is called on
(n, K) logits of perturbed copies, n the number of copies in a batch, and must score each row on its own
(:mod:`attnkit.explain`); its result is checked to hold one score per row.

Formulas, papers and the choices made here: docs/papers.md, section 5.6.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...features import eval_mode
from ...functional import resize_map
from ...validation import check_int
from .._base import Target, _per_image_targets, bind_target, check_images, check_logits, function_scores
from .._cam_base import scale_per_image
from .localisation import check_maps
from .road import noisy_linear_imputation

__all__ = [
    "ROAD_PERCENTILES",
    "auc",
    "average_drop",
    "deletion",
    "faithfulness",
    "increase_in_confidence",
    "insertion",
    "perturbation_curves",
    "road",
]

Baseline = str | Tensor
ROAD_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)  # the paper's removal percentages
_BLUR_SIZE, _BLUR_SIGMA = 11, 5.0  # RISE's insertion substrate: gkern(11, 5) of its evaluation code


def blur_kernel(size: int = _BLUR_SIZE, sigma: float = _BLUR_SIGMA) -> Tensor:
    """RISE's blur kernel as a (size,) vector k, the 2-D kernel being outer(k, k): ``gaussian_filter`` of a centred
    delta (mode ``"reflect"``, so the tails beyond the window fold back in and k sums to 1). The filter is
    separable and the delta is the outer product of two 1-D deltas, so the 1-D filter of a 1-D delta gives k."""
    delta = np.zeros(size)
    delta[size // 2] = 1.0
    return torch.from_numpy(scipy.ndimage.gaussian_filter1d(delta, sigma, mode="reflect"))


def auc(curves: Tensor) -> Tensor:
    """(B, S + 1) curves at equally spaced points of [0, 1] -> (B,) areas (trapezoid rule)."""
    steps = curves.shape[1] - 1
    return (curves.sum(dim=1) - (curves[:, 0] + curves[:, -1]) / 2) / steps


def baseline_images(images: Tensor, baseline: Baseline) -> Tensor:
    """The baseline of each image: ``"zeros"``, ``"blur"``, ``"mean"`` or a tensor broadcast to the images."""
    if isinstance(baseline, Tensor):
        return baseline.to(images.dtype).to(images.device).expand_as(images)
    if baseline == "zeros":
        return torch.zeros_like(images)
    if baseline == "mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    if baseline == "blur":
        kernel = blur_kernel().to(images.dtype).to(images.device).view(1, 1, 1, -1)
        kernel = kernel.repeat(images.shape[1], 1, 1, 1)  # (C, 1, 1, k): rows, then columns (separable)
        rows = F.conv2d(images, kernel, padding=(0, _BLUR_SIZE // 2), groups=images.shape[1])
        return F.conv2d(rows, kernel.transpose(2, 3), padding=(_BLUR_SIZE // 2, 0), groups=images.shape[1])
    raise ValueError(f"baseline must be 'zeros', 'blur', 'mean' or a tensor, got {baseline!r}")


@dataclass
class _Copies:
    """``count`` perturbed copies, built on demand: ``make(rows)`` -> (n, C, H, W), ``image(rows)`` -> (n,)."""

    count: int
    make: Callable[[Tensor], Tensor]
    image: Callable[[Tensor], Tensor]


class _Setting:
    """The images, their maps at the images' size and pixel ranks, classes and p(x): what every metric needs."""

    def __init__(self, model: nn.Module, images: Tensor, maps: Tensor, target: Target, batch_size: int) -> None:
        self.model, self.images = model, check_images(images)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        check_maps(maps)
        if maps.shape[0] != self.images.shape[0]:
            raise ValueError(f"got {maps.shape[0]} maps for {self.images.shape[0]} images; give one map per image")
        size = (self.images.shape[2], self.images.shape[3])
        self.maps = resize_map(maps.detach().to(self.images.device).float(), size)  # (B, H, W)
        order = self.maps.flatten(1).argsort(dim=1, descending=True, stable=True)  # most relevant first
        self.rank = order.argsort(dim=1).view_as(self.maps)  # (B, H, W): 0 = the most relevant pixel
        self.pixels = size[0] * size[1]
        target = _per_image_targets(target, self.images.shape[0])
        logits = torch.cat([self._forward(chunk) for chunk in self.images.split(batch_size)])
        self.target = bind_target(target, logits)  # (B,) classes, or a function
        self.scores = self._scores(logits, torch.arange(self.images.shape[0], device=logits.device))  # (B,) p(x)

    def _forward(self, x: Tensor) -> Tensor:
        return check_logits(self.model(x)).float()

    def _scores(self, logits: Tensor, images: Tensor) -> Tensor:
        """(n, K) logits of copies of the images ``images`` (n,) -> their (n,) p."""
        if isinstance(self.target, Tensor):
            return logits.softmax(dim=1).gather(1, self.target[images][:, None]).squeeze(1)
        return function_scores(self.target, logits).float()  # checked: one score per row

    def run(self, groups: Sequence[_Copies]) -> list[Tensor]:
        """The scores of every copy of every group, through the model in batches of ``batch_size``."""
        total = sum(group.count for group in groups)
        scores = torch.empty(total, device=self.images.device)
        starts = [sum(g.count for g in groups[:i]) for i in range(len(groups))]
        for begin in range(0, total, self.batch_size):
            end = min(total, begin + self.batch_size)
            pieces, sources = [], []
            for group, start in zip(groups, starts):
                low, high = max(begin, start), min(end, start + group.count)
                if low < high:
                    rows = torch.arange(low - start, high - start, device=self.images.device)
                    pieces.append(group.make(rows))
                    sources.append(group.image(rows))
            scores[begin:end] = self._scores(self._forward(torch.cat(pieces)), torch.cat(sources))
        return list(scores.split([group.count for group in groups]))

    def steps_copies(self, steps: int, ks: Tensor, baseline: Tensor, insert: bool) -> _Copies:
        """Deletion (or insertion) copies of every image at the steps ``ks``: row r = image r // len(ks)."""
        per = ks.numel()

        def make(rows: Tensor) -> Tensor:
            image, k = rows // per, ks[rows % per]
            changed = (self.rank[image] < (k * self.pixels // steps)[:, None, None])[:, None]  # (n, 1, H, W)
            shown, hidden = self.images[image], baseline[image]
            return torch.where(changed, shown, hidden) if insert else torch.where(changed, hidden, shown)

        return _Copies(self.images.shape[0] * per, make, lambda rows: rows // per)

    def explanation_copies(self, baseline: Tensor) -> _Copies:
        unit = scale_per_image(self.maps)[:, None]  # (B, 1, H, W) in [0, 1]

        def make(rows: Tensor) -> Tensor:
            return baseline[rows] + unit[rows] * (self.images[rows] - baseline[rows])

        return _Copies(self.images.shape[0], make, lambda rows: rows)

    def road_copies(self, percentiles: Sequence[float], most_relevant: bool, noise: float, seed: int) -> _Copies:
        counts = torch.tensor([round(q / 100 * self.pixels) for q in percentiles], device=self.images.device)
        per, salt = counts.numel(), 0 if most_relevant else 1

        def make(rows: Tensor) -> Tensor:
            image, removed = rows // per, counts[rows % per][:, None, None]
            holes = self.rank[image] < removed if most_relevant else self.rank[image] >= self.pixels - removed
            seeds = [((seed * 2 + salt) * 1_000_003 + int(r)) for r in rows]  # a copy's noise: its own stream
            return noisy_linear_imputation(self.images[image], holes, noise, [torch.Generator().manual_seed(s) for s in seeds])

        return _Copies(self.images.shape[0] * per, make, lambda rows: rows // per)


def _check_steps(steps: int) -> int:
    return check_int("steps", steps, minimum=1)


def _check_percentiles(percentiles: Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(q) for q in percentiles)
    if not values or not all(0 < q < 100 for q in values):
        raise ValueError(f"percentiles must be one or more numbers in (0, 100), got {percentiles!r}")
    return values


def perturbation_curves(
    model: nn.Module, images: Tensor, maps: Tensor, target: Target = None, *, insert: bool = False, steps: int = 20,
    baseline: Baseline = "zeros", batch_size: int = 256,
) -> Tensor:
    """(B, steps + 1) p after each deletion step (``insert=False``; p_0 = p(x)) or insertion step (p_steps = p(x))."""
    steps = _check_steps(steps)
    with eval_mode(model), torch.no_grad():
        setting = _Setting(model, images, maps, target, batch_size)
        base = baseline_images(setting.images, baseline)
        ks = torch.arange(0, steps, device=setting.images.device) + (0 if insert else 1)
        (scores,) = setting.run([setting.steps_copies(steps, ks, base, insert)])
    scores = scores.view(-1, steps)
    ends = setting.scores[:, None]
    return torch.cat([scores, ends], dim=1) if insert else torch.cat([ends, scores], dim=1)


def deletion(model: nn.Module, images: Tensor, maps: Tensor, target: Target = None, *, steps: int = 20,
             baseline: Baseline = "zeros", batch_size: int = 256) -> Tensor:
    """(B,) area under the deletion curve (lower is better; module docstring)."""
    return auc(perturbation_curves(model, images, maps, target, steps=steps, baseline=baseline, batch_size=batch_size))


def insertion(model: nn.Module, images: Tensor, maps: Tensor, target: Target = None, *, steps: int = 20,
              baseline: Baseline = "blur", batch_size: int = 256) -> Tensor:
    """(B,) area under the insertion curve (higher is better; module docstring)."""
    return auc(perturbation_curves(model, images, maps, target, insert=True, steps=steps, baseline=baseline,
                                   batch_size=batch_size))


def _confidence(model, images, maps, target, baseline, batch_size) -> tuple[Tensor, Tensor]:
    with eval_mode(model), torch.no_grad():
        setting = _Setting(model, images, maps, target, batch_size)
        (explained,) = setting.run([setting.explanation_copies(baseline_images(setting.images, baseline))])
    return setting.scores, explained


def _drop(original: Tensor, explained: Tensor) -> Tensor:
    """max(0, p(x) - p(E)) / p(x); NaN, with a warning, where p(x) <= 0 (a target function's score)."""
    defined = original > 0
    if not bool(defined.all()):
        warnings.warn(
            f"average_drop is undefined for {int((~defined).sum())} of {original.numel()} images whose score p(x) "
            "is not positive (a target function's value rather than a probability); they are NaN", stacklevel=3,
        )
    drop = (original - explained).clamp_min(0) / torch.where(defined, original, torch.ones_like(original))
    return torch.where(defined, drop, torch.full_like(drop, float("nan")))


def average_drop(model: nn.Module, images: Tensor, maps: Tensor, target: Target = None, *,
                 baseline: Baseline = "zeros", batch_size: int = 256) -> Tensor:
    """(B,) max(0, p(x) - p(E)) / p(x), E the image seen through the map (lower is better; NaN where p(x) <= 0;
    module docstring)."""
    return _drop(*_confidence(model, images, maps, target, baseline, batch_size))


def increase_in_confidence(model: nn.Module, images: Tensor, maps: Tensor, target: Target = None, *,
                           baseline: Baseline = "zeros", batch_size: int = 256) -> Tensor:
    """(B,) 1.0 where p(E) > p(x), else 0.0 (higher is better; module docstring)."""
    original, explained = _confidence(model, images, maps, target, baseline, batch_size)
    return (explained > original).float()


def road(model: nn.Module, images: Tensor, maps: Tensor, target: Target = None, *, most_relevant_first: bool = True,
         percentiles: Sequence[float] = ROAD_PERCENTILES, noise: float = 0.01, seed: int = 0,
         batch_size: int = 256) -> Tensor:
    """(B,) mean p over the percentiles after ROAD removal, MoRF (default; lower is better) or LeRF (higher)."""
    percentiles = _check_percentiles(percentiles)
    with eval_mode(model), torch.no_grad():
        setting = _Setting(model, images, maps, target, batch_size)
        (scores,) = setting.run([setting.road_copies(percentiles, most_relevant_first, noise, seed)])
    return scores.view(-1, len(percentiles)).mean(dim=1)


def faithfulness(
    model: nn.Module, images: Tensor, maps: Tensor, target: Target = None, *, steps: int = 20,
    deletion_baseline: Baseline = "zeros", insertion_baseline: Baseline = "blur", percentiles: Sequence[float] = ROAD_PERCENTILES,
    noise: float = 0.01, seed: int = 0, batch_size: int = 256,
) -> dict[str, Tensor]:
    """Every faithfulness metric of the maps, from one stream of perturbed copies: {name: (B,)}.

    Names: ``deletion``, ``insertion``, ``average_drop``, ``increase_in_confidence``, ``road_morf``,
    ``road_lerf``; arguments as the single metrics (``average_drop`` uses the deletion baseline). Per image
    2 steps + 1 + 2 len(percentiles) copies run through the model, in batches of ``batch_size``.
    """
    steps, percentiles = _check_steps(steps), _check_percentiles(percentiles)
    with eval_mode(model), torch.no_grad():
        setting = _Setting(model, images, maps, target, batch_size)
        removed, kept = baseline_images(setting.images, deletion_baseline), baseline_images(setting.images, insertion_baseline)
        device = setting.images.device
        groups = [
            setting.steps_copies(steps, torch.arange(1, steps + 1, device=device), removed, insert=False),
            setting.steps_copies(steps, torch.arange(0, steps, device=device), kept, insert=True),
            setting.explanation_copies(removed),
            setting.road_copies(percentiles, True, noise, seed),
            setting.road_copies(percentiles, False, noise, seed),
        ]
        deleted, inserted, explained, morf, lerf = setting.run(groups)
    original = setting.scores
    return {
        "deletion": auc(torch.cat([original[:, None], deleted.view(-1, steps)], dim=1)),
        "insertion": auc(torch.cat([inserted.view(-1, steps), original[:, None]], dim=1)),
        "average_drop": _drop(original, explained),
        "increase_in_confidence": (explained > original).float(),
        "road_morf": morf.view(-1, len(percentiles)).mean(dim=1),
        "road_lerf": lerf.view(-1, len(percentiles)).mean(dim=1),
    }
