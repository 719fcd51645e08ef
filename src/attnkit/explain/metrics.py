"""How good is an attention map? Localisation against object boxes, and a model-randomisation sanity check.

* Pointing game (Zhang et al. 2016): a hit when the map's maximum lies inside the object's box. Where several
  positions tie for the maximum, all of them must lie inside (a flat map earns nothing).
* Energy in the box: the share of the map's positive mass inside the box (negative values are evidence
  against the class and do not count); a map with no positive mass scores 0.
* Model-randomisation check (Adebayo et al., "Sanity Checks for Saliency Maps", 2018): re-initialise the
  model's weights and compare each image's map before and after by Spearman rank correlation. A map that
  stays the same (correlation near 1) does not depend on what the model learned, so it explains nothing.
  Two procedures: ``cascade=False`` re-initialises every weight at once; ``cascade=True`` re-initialises
  the model's top-level parameterised children cumulatively from the output down (classifier first, then the
  last stage, ...), giving one correlation per step.

Boxes are (B, 4) int64 ``x0, y0, x1, y1`` in pixels with exclusive ends (the data API's format, e.g.
``load_dataset("cluttered-mnist").boxes``); maps must be at the images' resolution (``upsample=True``).

>>> maps = torch.zeros(2, 4, 4); maps[0, 1, 1] = 1.0; maps[1, 3, 3] = 1.0
>>> boxes = torch.tensor([[0, 0, 2, 2], [0, 0, 2, 2]])
>>> pointing_game(maps, boxes).tolist(), energy_in_box(maps, boxes).tolist()
([True, False], [1.0, 0.0])
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping

import numpy as np
import scipy.stats
import torch
from torch import Tensor, nn

from ..features import eval_mode, resolve_module
from ._base import AttentionMethod, Target, check_images, resolve_target

__all__ = [
    "box_masks",
    "energy_in_box",
    "evaluate",
    "pointing_game",
    "randomization_check",
    "randomize_weights",
    "spearman",
]


def _check_maps(maps: Tensor) -> None:
    if not isinstance(maps, Tensor) or maps.dim() != 3:
        shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise ValueError(f"maps must be a (B, H, W) tensor, got {shape}")
    if not bool(torch.isfinite(maps).all()):
        raise ValueError("maps contain NaN or inf; a map must be finite to be scored")


def box_masks(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, 4) boxes x0, y0, x1, y1 (exclusive ends) -> (B, H, W) bool masks, True inside the box.

    Boxes reaching past the image are clipped to it.
    """
    if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
        shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"boxes must be a (B, 4) tensor of x0, y0, x1, y1 (exclusive ends), got {shape}")
    if boxes.is_floating_point() or boxes.dtype == torch.bool:
        raise TypeError(f"boxes must hold integer pixel coordinates, got dtype {boxes.dtype}")
    x0, y0, x1, y1 = boxes.long().unbind(1)  # each (B,)
    if bool(((x1 <= x0) | (y1 <= y0)).any()):
        raise ValueError("every box needs x0 < x1 and y0 < y1 (x0, y0, x1, y1 with exclusive ends)")
    height, width = size
    ys = torch.arange(height, device=boxes.device)[None, :, None]  # (1, H, 1)
    xs = torch.arange(width, device=boxes.device)[None, None, :]  # (1, 1, W)
    inside_y = (ys >= y0[:, None, None]) & (ys < y1[:, None, None])  # (B, H, 1)
    inside_x = (xs >= x0[:, None, None]) & (xs < x1[:, None, None])  # (B, 1, W)
    return inside_y & inside_x  # (B, H, W)


def _masks_for(maps: Tensor, boxes: Tensor) -> Tensor:
    _check_maps(maps)
    if boxes.shape[:1] != maps.shape[:1]:
        raise ValueError(f"got {boxes.shape[0]} boxes for {maps.shape[0]} maps; give one box per map")
    return box_masks(boxes.to(maps.device), (maps.shape[1], maps.shape[2]))


def pointing_game(maps: Tensor, boxes: Tensor) -> Tensor:
    """(B, H, W) maps, (B, 4) boxes -> (B,) bool: is the map's maximum inside the box (every tied maximum)."""
    inside = _masks_for(maps, boxes)
    is_max = maps == maps.flatten(1).amax(dim=1)[:, None, None]  # (B, H, W)
    return ~(is_max & ~inside).flatten(1).any(dim=1)


def energy_in_box(maps: Tensor, boxes: Tensor) -> Tensor:
    """(B, H, W) maps, (B, 4) boxes -> (B,) share of each map's positive mass inside its box, in [0, 1]."""
    inside = _masks_for(maps, boxes)
    positive = maps.clamp_min(0).flatten(1).double()  # (B, H*W)
    total = positive.sum(dim=1)
    in_box = (positive * inside.flatten(1)).sum(dim=1)
    return torch.where(total > 0, in_box / total.clamp_min(torch.finfo(torch.float64).tiny), 0.0).to(maps.dtype)


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample Spearman rank correlation of two (B, ...) batches of maps -> (B,) float64.

    Tied values get their average rank; a constant map has no ranking, so its correlation is NaN.
    """
    if a.shape != b.shape or a.dim() < 2:
        raise ValueError(f"need two batches of maps of one shape (B, ...), got {tuple(a.shape)} and {tuple(b.shape)}")
    ranks_a = scipy.stats.rankdata(a.detach().flatten(1).double().cpu().numpy(), axis=1)  # (B, N)
    ranks_b = scipy.stats.rankdata(b.detach().flatten(1).double().cpu().numpy(), axis=1)
    ranks_a -= ranks_a.mean(axis=1, keepdims=True)
    ranks_b -= ranks_b.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ranks_a * ranks_b).sum(1) / np.sqrt((ranks_a**2).sum(1) * (ranks_b**2).sum(1))
    return torch.from_numpy(rho)


# Added to the seed so that randomising never redraws the very weights a model got at its creation after
# torch.manual_seed(seed) (seed 0 is what most runs use): that "random" model would equal the initial one.
_SEED_OFFSET = 0x5EED_0A77


def randomize_weights(model: nn.Module, paths: Iterable[str] | None = None, seed: int = 0) -> nn.Module:
    """A copy of ``model`` whose modules at ``paths`` (None = the whole model) are re-initialised.

    Every submodule with ``reset_parameters`` (conv, linear, norm layers: weights drawn again, BatchNorm
    statistics reset) is reset; parameters of modules without one are shuffled (same values, random places).
    ``model`` itself is not changed, and the global random state is left as it was.
    """
    copy_ = copy.deepcopy(model)
    roots = [copy_] if paths is None else [resolve_module(copy_, path) for path in paths]
    devices = sorted({p.device.index or 0 for p in copy_.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(_SEED_OFFSET + seed)
        for root in roots:
            for module in root.modules():
                if callable(getattr(module, "reset_parameters", None)):
                    module.reset_parameters()
                else:
                    for param in module.parameters(recurse=False):
                        param.copy_(param.flatten()[torch.randperm(param.numel(), device=param.device)].view_as(param))
    return copy_


def _cascade_steps(model: nn.Module) -> list[str]:
    """Top-level children that hold parameters, from the output down (reverse registration order)."""
    steps = [name for name, child in model.named_children() if any(True for _ in child.parameters())]
    if not steps:
        raise ValueError(f"{type(model).__name__} has no parameterised children to randomise in cascade")
    return steps[::-1]


def randomization_check(
    method: AttentionMethod,
    images: Tensor,
    target: Target = None,
    *,
    cascade: bool = False,
    seed: int = 0,
    maps: Tensor | None = None,
    batch_size: int | None = None,
) -> dict[str, Tensor]:
    """Spearman correlation of each image's map before and after re-initialising the model's weights.

    Args:
        method: the method, bound to the trained model (which is not changed: a copy is randomised).
        images: (B, C, H, W) normalised images.
        target: classes to explain; None = the *trained* model's predictions, kept for the randomised models.
        cascade: False: one step, every weight re-initialised ({"all": (B,)}). True: cumulative steps from the
            output down, {"fc": (B,), "bn": (B,), ...}, each keyed by the child randomised last (at step
            "bn", "fc" and "bn" are both random).
        seed: seed of the re-initialisation.
        maps: the trained model's maps of ``images`` if already computed (saves one call).
        batch_size: passed to ``attribute``.

    Returns:
        {step: (B,) float64 correlations}, in order; a value near 1 means the map ignores the weights.
    """
    images = check_images(images)
    model = method.model
    with eval_mode(model):
        classes = resolve_target(model, images, target) if method.uses_target else None
    if maps is None:
        maps = method.attribute(images, classes, batch_size=batch_size)
    steps = _cascade_steps(model) if cascade else [None]
    results: dict[str, Tensor] = {}
    for i in range(len(steps)):
        randomised = randomize_weights(model, None if steps[i] is None else steps[: i + 1], seed=seed)
        after = method.with_model(randomised).attribute(images, classes, batch_size=batch_size)
        results["all" if steps[i] is None else steps[i]] = spearman(maps, after)
    return results


def _mean(values: Tensor) -> float:
    """Mean ignoring NaN (constant maps have no rank correlation); NaN when nothing is left."""
    finite = values[~torch.isnan(values)]
    return float(finite.double().mean()) if finite.numel() else math.nan


def evaluate(
    methods: Mapping[str, AttentionMethod],
    images: Tensor,
    boxes: Tensor | None = None,
    target: Target = None,
    *,
    sanity: bool = True,
    seed: int = 0,
    maps: Mapping[str, Tensor] | None = None,
    batch_size: int | None = None,
) -> dict[str, dict[str, float]]:
    """Score several methods on the same images: {method name: summary}.

    Each summary holds ``images`` (count), and where ``boxes`` are given ``pointing_game`` (share of hits)
    and ``energy_in_box`` (mean share); with ``sanity`` also ``randomization_spearman``, the mean correlation
    of the maps before and after re-initialising every weight at once (lower is better; NaN-valued images,
    whose maps were constant, are left out of the mean). ``maps`` may hold maps already computed for some
    methods ({name: (B, H, W)}, with the same ``target``), which are then not computed again.
    """
    images = check_images(images)
    summary: dict[str, dict[str, float]] = {}
    for name, method in methods.items():
        with eval_mode(method.model):
            classes = resolve_target(method.model, images, target) if method.uses_target else None
        given = None if maps is None else maps.get(name)
        method_maps = method.attribute(images, classes, batch_size=batch_size) if given is None else given  # (B, H, W)
        scores: dict[str, float] = {"images": int(images.shape[0])}
        if boxes is not None:
            scores["pointing_game"] = float(pointing_game(method_maps, boxes).double().mean())
            scores["energy_in_box"] = float(energy_in_box(method_maps, boxes).double().mean())
        if sanity:
            check = randomization_check(method, images, classes, seed=seed, maps=method_maps, batch_size=batch_size)
            scores["randomization_spearman"] = _mean(check["all"])
        summary[name] = scores
    return summary
