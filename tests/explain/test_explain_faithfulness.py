"""Faithfulness metrics: exact values on hand-sized cases, and on a model whose decision is known an oracle map
beats a random one, which beats an adversarial one, for every metric."""

import math

import pytest
import torch
from torch import nn

from attnkit.explain import AttentionMethod, GradCAM
from attnkit.explain.metrics import (
    FAITHFULNESS_KEYS,
    average_drop,
    deletion,
    evaluate,
    faithfulness,
    increase_in_confidence,
    insertion,
    noisy_linear_imputation,
    perturbation_curves,
    road,
)
from helpers import assert_close


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


class SumNet(nn.Module):
    """logits = [sum of the pixels, 0]: p(class 0) = sigmoid(sum x)."""

    def forward(self, x):
        total = x.flatten(1).sum(1)
        return torch.stack([total, torch.zeros_like(total)], dim=1)


X = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
MAP = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 2)  # pixel 4 most relevant, then 3, 2, 1


def test_deletion_and_insertion_curves_by_hand():
    # Deletion with zeros: remove 4, then 3, 2, 1 -> sums 10, 6, 3, 1, 0.
    curve = perturbation_curves(SumNet(), X, MAP, 0, steps=4)
    assert_close(curve, torch.tensor([[sigmoid(s) for s in (10, 6, 3, 1, 0)]]), rtol=1e-6)
    expected_auc = (sum(sigmoid(s) for s in (10, 6, 3, 1, 0)) - (sigmoid(10) + sigmoid(0)) / 2) / 4
    assert_close(deletion(SumNet(), X, MAP, 0, steps=4), torch.tensor([expected_auc]), rtol=1e-6)
    # Two steps of 4 pixels: 2 pixels per step -> sums 10, 3, 0.
    assert_close(perturbation_curves(SumNet(), X, MAP, 0, steps=2), torch.tensor([[sigmoid(10), sigmoid(3), 0.5]]))
    # Insertion from zeros: insert 4, then 3, 2, 1 -> sums 0, 4, 7, 9, 10; from the image's mean (2.5 per pixel):
    # 10, then each inserted pixel replaces a 2.5.
    assert_close(perturbation_curves(SumNet(), X, MAP, 0, insert=True, steps=4, baseline="zeros"),
                 torch.tensor([[sigmoid(s) for s in (0, 4, 7, 9, 10)]]), rtol=1e-6)
    assert_close(insertion(SumNet(), X, MAP, 0, steps=1, baseline="mean"), torch.tensor([sigmoid(10)]), rtol=1e-6)


def test_average_drop_and_increase_in_confidence_by_hand():
    # The map scaled to [0, 1] is (0, 1/3, 2/3, 1): E sums to 0 + 2/3 + 2 + 4 = 20/3 < 10: a drop, no increase.
    drop = (sigmoid(10) - sigmoid(20 / 3)) / sigmoid(10)
    assert_close(average_drop(SumNet(), X, MAP, 0), torch.tensor([drop]), rtol=1e-4, atol=1e-7)  # p near 1: float32
    assert increase_in_confidence(SumNet(), X, MAP, 0).tolist() == [0.0]
    # Class 1's p = 1 - sigmoid(sum) rises when the sum falls: increase 1, drop 0.
    assert increase_in_confidence(SumNet(), X, MAP, 1).tolist() == [1.0]
    assert average_drop(SumNet(), X, MAP, 1).tolist() == [0.0]


def test_noisy_linear_imputation_solves_the_neighbour_equations():
    # One hole at (1, 1): (1/6 * 2 + 1/6 * 3 + 1/12 * 1) / (1/6 + 1/6 + 1/12) = 11/12 / 5/12 = 2.2.
    hole = torch.tensor([[[False, False], [False, True]]])
    assert_close(noisy_linear_imputation(X, hole, noise=0.0), torch.tensor([[[[1.0, 2.0], [3.0, 2.2]]]]), rtol=1e-6)
    # Two holes side by side in a 1x3 row a, ?, ? : v1 = (a + v2) / 2, v2 = v1 -> both a.
    row = torch.tensor([[[[5.0, 0.0, 0.0]]]])
    assert_close(noisy_linear_imputation(row, torch.tensor([[[False, True, True]]]), noise=0.0), torch.full((1, 1, 1, 3), 5.0))
    # Noise: added to the filled pixels only, reproducible per image.
    gens = [torch.Generator().manual_seed(1)]
    noisy = noisy_linear_imputation(X, hole, noise=0.5, generators=gens)
    assert noisy[0, 0, 1, 1] != 2.2 and torch.equal(noisy[0, 0, 0], X[0, 0, 0])
    with pytest.raises(ValueError, match="removes every pixel"):
        noisy_linear_imputation(X, torch.ones(1, 2, 2, dtype=torch.bool))


def test_road_by_hand():
    # MoRF at 25%: pixel 4 imputed as 2.2 -> sum 8.2; LeRF at 25%: pixel 1 imputed from 2, 3 (1/6 each) and
    # 4 (1/12): (2/6 + 3/6 + 4/12) / (5/12) = 2.8 -> sum 11.8.
    assert_close(road(SumNet(), X, MAP, 0, percentiles=[25], noise=0.0), torch.tensor([sigmoid(8.2)]), rtol=1e-6)
    assert_close(road(SumNet(), X, MAP, 0, most_relevant_first=False, percentiles=[25], noise=0.0),
                 torch.tensor([sigmoid(11.8)]), rtol=1e-6)


class RegionNet(nn.Module):
    """p(class 0) rises with the brightness of region R (top-left 4x4) and falls with that of D (bottom-right
    2x2): logit_0 = 4 mean_R(x) - 4 mean_D(x) - 1, logit_1 = 0."""

    def forward(self, x):
        score = 4 * x[:, 0, :4, :4].mean((1, 2)) - 4 * x[:, 0, 6:, 6:].mean((1, 2)) - 1
        return torch.stack([score, torch.zeros_like(score)], dim=1)


def _region_images(count: int = 12) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(count, 1, 8, 8, generator=gen) * 0.2  # dark background
    images[:, :, :4, :4] += 0.5 + torch.rand(count, 1, 1, 1, generator=gen) + 0.1 * torch.rand(count, 1, 4, 4, generator=gen)
    images[:, :, 6:, 6:] += torch.rand(count, 1, 1, 1, generator=gen) * 1.2  # the distractor, as bright at times
    return images


def test_oracle_beats_random_beats_adversarial_on_every_metric():
    images = _region_images()
    oracle = torch.zeros(12, 8, 8)
    oracle[:, :4, :4], oracle[:, 6:, 6:] = 1.0, -1.0  # evidence for, evidence against
    oracle += 0.01 * images[:, 0]  # ranks within a region by brightness (no ties)
    maps = {"oracle": oracle, "random": torch.rand(12, 8, 8, generator=torch.Generator().manual_seed(1)), "adversarial": -oracle}
    scores = {name: {k: float(v.mean()) for k, v in faithfulness(RegionNet(), images, m, 0, steps=16).items()}
              for name, m in maps.items()}
    higher_is_better = {"insertion", "increase_in_confidence", "road_lerf"}
    for key in FAITHFULNESS_KEYS:
        ordered = [scores[name][key] for name in ("oracle", "random", "adversarial")]
        if key in higher_is_better:
            ordered = [-v for v in ordered]
        assert ordered[0] < ordered[1] < ordered[2], (key, ordered)


def test_one_stream_equals_the_single_metrics_and_does_not_depend_on_the_batch_size():
    images, maps = _region_images(5), torch.rand(5, 4, 4)  # maps at a quarter of the resolution: resized
    combined = faithfulness(RegionNet(), images, maps, 0, steps=8, percentiles=[20, 60], batch_size=7)
    assert_close(combined["deletion"], deletion(RegionNet(), images, maps, 0, steps=8, batch_size=1000))
    assert_close(combined["insertion"], insertion(RegionNet(), images, maps, 0, steps=8, batch_size=3))
    assert_close(combined["average_drop"], average_drop(RegionNet(), images, maps, 0))
    assert_close(combined["road_morf"], road(RegionNet(), images, maps, 0, percentiles=[20, 60], batch_size=4))
    assert_close(combined["road_lerf"], road(RegionNet(), images, maps, 0, most_relevant_first=False, percentiles=[20, 60]))
    # None = each image's predicted class; a target function scores its own value (here: the class-0 logit).
    predicted = RegionNet()(images).argmax(1)
    assert_close(deletion(RegionNet(), images, maps, steps=4), deletion(RegionNet(), images, maps, predicted, steps=4))
    logit = deletion(RegionNet(), images, maps, lambda logits: logits[:, 0], steps=4)
    assert logit.shape == (5,) and not torch.allclose(logit, deletion(RegionNet(), images, maps, 0, steps=4))


def test_faithfulness_input_errors():
    with pytest.raises(ValueError, match="steps must be a positive int"):
        deletion(SumNet(), X, MAP, 0, steps=0)
    with pytest.raises(ValueError, match="percentiles must be"):
        road(SumNet(), X, MAP, 0, percentiles=[100])
    with pytest.raises(ValueError, match="baseline must be"):
        insertion(SumNet(), X, MAP, 0, baseline="grey")
    with pytest.raises(ValueError, match="2 maps for 1 images"):
        average_drop(SumNet(), X, MAP.repeat(2, 1, 1), 0)


def test_evaluate_reports_faithfulness_unless_turned_off():
    images = _region_images(4)

    class Oracle(AttentionMethod):
        uses_target = False

        def _attribute(self, x, target):
            return x[:, 0]

    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), RegionNetHead())
    summary = evaluate({"oracle": Oracle(RegionNet()), "gradcam": GradCAM(model, layer="1")}, images, target=0, sanity=False)
    assert set(summary["oracle"]) == {"images", *FAITHFULNESS_KEYS} and set(summary["gradcam"]) == set(summary["oracle"])
    assert evaluate({"oracle": Oracle(RegionNet())}, images, faithful=False, sanity=False) == {"oracle": {"images": 4}}


class RegionNetHead(nn.Module):
    def forward(self, features):
        return RegionNet()(features[:, :1])


def test_blur_baseline_is_rises_kernel_with_zero_padding():
    # RISE's insertion substrate: conv2d (zero padding 5) with gkern(11, 5), i.e. scipy's gaussian_filter (reflect
    # mode, so the folded-back tails make it no truncated Gaussian) of an 11 x 11 delta, built here in 2-D.
    import numpy as np
    import scipy.ndimage
    import torch.nn.functional as F

    from attnkit.explain.metrics.faithfulness import baseline_images

    delta = np.zeros((11, 11))
    delta[5, 5] = 1.0
    kernel = torch.from_numpy(scipy.ndimage.gaussian_filter(delta, 5)).float()
    images = torch.randn(2, 3, 9, 12, generator=torch.Generator().manual_seed(0))
    expected = F.conv2d(images, torch.diag_embed(torch.ones(3))[:, :, None, None] * kernel, padding=5)  # per channel
    assert_close(baseline_images(images, "blur"), expected, rtol=1e-5, atol=1e-6)


def test_target_functions_act_row_by_row_and_their_results_are_checked():
    images = _region_images(4)
    maps = images[:, 0]
    by_row = lambda logits: logits[:, 0] - logits[:, 1]  # noqa: E731 (row i from row i alone: any number of rows)
    curves = perturbation_curves(RegionNet(), images, maps, by_row, steps=4, batch_size=3)
    assert curves.shape == (4, 5)
    labels = torch.zeros(4, dtype=torch.long)
    per_image = lambda logits: logits.gather(1, labels[:, None]).squeeze(1)  # noqa: E731 (4 rows only: wrong)
    with pytest.raises(ValueError, match=r"target function failed on \(3, 2\) logits .*score any number of rows"):
        deletion(RegionNet(), images, maps, per_image, steps=4, batch_size=3)
    with pytest.raises(ValueError, match=r"one score per row of its \(4, K\) logits, \(4,\), got \(4, 2\)"):
        deletion(RegionNet(), images, maps, lambda logits: logits, steps=4, batch_size=3)


def test_average_drop_is_nan_with_a_warning_where_the_score_is_not_positive():
    # A target function's score may be negative (a logit difference): max(0, p(x) - p(E)) / p(x) is then
    # meaningless (once 1e36 for p(x) = -2, divided by the smallest float); it is NaN, the others stay numbers.
    images = X.repeat(2, 1, 1, 1) * torch.tensor([1.0, -1.0]).view(2, 1, 1, 1)  # sums 10 and -10
    score = lambda logits: logits[:, 0] - logits[:, 1]  # noqa: E731 (= the pixel sum: 10 and -10)
    with pytest.warns(UserWarning, match="average_drop is undefined for 1 of 2 images"):
        drop = average_drop(SumNet(), images, MAP.repeat(2, 1, 1), score)
    assert_close(drop[0], torch.tensor((10 - 20 / 3) / 10), rtol=1e-5) and math.isnan(drop[1])
    with pytest.warns(UserWarning, match="undefined"):
        every = faithfulness(SumNet(), images, MAP.repeat(2, 1, 1), score, steps=2, percentiles=(25, 50))
    assert math.isnan(every["average_drop"][1]) and every["increase_in_confidence"].tolist() == [0.0, 1.0]
    assert all(torch.isfinite(values).all() for key, values in every.items() if key != "average_drop")
