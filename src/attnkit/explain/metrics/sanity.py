"""Model-randomisation sanity check (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018).

Re-initialise the model's weights and compare each image's map before and after by Spearman rank correlation.
A map that stays the same (correlation near 1) does not depend on what the model learned, so it explains
nothing. Two procedures: ``cascade=False`` re-initialises every weight at once; ``cascade=True``
re-initialises the model's top-level parameterised children cumulatively from the output down (classifier
first, then the last stage, ...), giving one correlation per step. docs/papers.md, section 5.7.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import numpy as np
import scipy.stats
import torch
from torch import Tensor, nn

from ...features import eval_mode, resolve_module
from .._base import AttentionMethod, Target, check_images, resolve_target

__all__ = ["randomization_check", "randomize_weights", "spearman"]


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
