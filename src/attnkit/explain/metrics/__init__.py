"""How good is an attention map? Localisation, faithfulness and a sanity check, each per image, and
:func:`evaluate` to summarise several methods at once.

* :mod:`.localisation`: pointing game (Zhang et al. 2016) and energy in the box, against object boxes.
* :mod:`.faithfulness`: deletion and insertion (Petsiuk et al. 2018), average drop and increase in confidence
  (Chattopadhay et al. 2018), ROAD with MoRF / LeRF orders (Rong et al. 2022; imputation in :mod:`.road`).
* :mod:`.sanity`: the model-randomisation check (Adebayo et al. 2018).

======================  ==========  =======================================================================
key of :func:`evaluate`  better      meaning (mean over the images)
======================  ==========  =======================================================================
pointing_game           higher      share of maps whose maximum lies inside the box
energy_in_box           higher      share of the map's positive mass inside the box
deletion                lower       AUC of p while the most relevant pixels are deleted
insertion               higher      AUC of p while the most relevant pixels are inserted into a blurred image
average_drop            lower       relative drop of p when the image is seen through the map
increase_in_confidence  higher      share of images whose p rises when seen through the map
road_morf               lower       mean p with the 10..90% most relevant pixels imputed away
road_lerf               higher      mean p with the 10..90% least relevant pixels imputed away
randomization_spearman  lower       rank correlation of the maps before / after re-initialising the weights
======================  ==========  =======================================================================

p is the softmax probability of the explained class (module docstrings give every formula; the papers and
the choices made: docs/papers.md, sections 5.6 and 5.7).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from ...features import eval_mode
from .._base import AttentionMethod, Target, _is_score_function, check_images, resolve_target
from .faithfulness import (
    ROAD_PERCENTILES,
    auc,
    average_drop,
    deletion,
    faithfulness,
    increase_in_confidence,
    insertion,
    perturbation_curves,
    road,
)
from .localisation import box_masks, check_maps, energy_in_box, pointing_game
from .road import noisy_linear_imputation
from .sanity import randomization_check, randomize_weights, spearman

__all__ = [
    "FAITHFULNESS_KEYS",
    "ROAD_PERCENTILES",
    "auc",
    "average_drop",
    "box_masks",
    "check_maps",
    "deletion",
    "energy_in_box",
    "evaluate",
    "faithfulness",
    "increase_in_confidence",
    "insertion",
    "noisy_linear_imputation",
    "perturbation_curves",
    "pointing_game",
    "randomization_check",
    "randomize_weights",
    "road",
    "spearman",
]

FAITHFULNESS_KEYS = ("deletion", "insertion", "average_drop", "increase_in_confidence", "road_morf", "road_lerf")


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
    faithful: bool = True,
    seed: int = 0,
    maps: Mapping[str, Tensor] | None = None,
    batch_size: int | None = None,
) -> dict[str, dict[str, float]]:
    """Score several methods on the same images: {method name: summary}.

    Each summary holds ``images`` (count); where ``boxes`` are given ``pointing_game`` (share of hits) and
    ``energy_in_box`` (mean share); with ``faithful`` the means of every :func:`faithfulness` metric
    (``deletion``, ``insertion``, ``average_drop``, ``increase_in_confidence``, ``road_morf``, ``road_lerf``;
    they cost 2 x 20 + 1 + 18 forward passes per image, batched, and score the explained class, or the
    predicted one for class-free maps; images whose average drop is undefined, NaN, are left out of its mean);
    with ``sanity`` ``randomization_spearman``, the mean correlation of the maps before and after
    re-initialising every weight at once (lower is better; NaN-valued images, whose maps were constant, are
    left out of the mean). ``maps`` may hold maps already computed for some methods
    ({name: (B, H, W)}, with the same ``target``), which are then not computed again.
    """
    images = check_images(images)
    summary: dict[str, dict[str, float]] = {}
    for name, method in methods.items():
        if _is_score_function(target):
            classes = target
        else:
            with eval_mode(method.model):
                classes = resolve_target(method.model, images, target)  # also the class-free maps' faithfulness
        given = None if maps is None else maps.get(name)
        method_maps = method.attribute(images, classes, batch_size=batch_size) if given is None else given  # (B, H, W)
        scores: dict[str, float] = {"images": int(images.shape[0])}
        if boxes is not None:
            scores["pointing_game"] = float(pointing_game(method_maps, boxes).double().mean())
            scores["energy_in_box"] = float(energy_in_box(method_maps, boxes).double().mean())
        if faithful:
            for key, values in faithfulness(method.model, images, method_maps, classes, seed=seed).items():
                scores[key] = _mean(values)  # average_drop is NaN where a target function's score is <= 0
        if sanity:
            check = randomization_check(method, images, classes if method.uses_target else None, seed=seed,
                                        maps=method_maps, batch_size=batch_size)
            scores["randomization_spearman"] = _mean(check["all"])
        summary[name] = scores
    return summary
