import math

import pytest
import torch
from torch import nn

from attnkit.explain import AttentionMethod, GradCAM, Saliency
from attnkit.explain.metrics import (
    box_masks,
    energy_in_box,
    evaluate,
    pointing_game,
    randomization_check,
    randomize_weights,
    spearman,
)
from explain_toys import LTPAStandIn
from helpers import assert_close

BOXES = torch.tensor([[1, 2, 4, 5], [1, 2, 4, 5]])  # x in 1..3, y in 2..4 (exclusive ends)


def test_box_masks_use_exclusive_ends_and_clip():
    mask = box_masks(torch.tensor([[1, 2, 3, 4], [4, 4, 9, 9]]), (6, 6))
    assert mask[0].nonzero().tolist() == [[2, 1], [2, 2], [3, 1], [3, 2]]  # rows y = 2, 3; columns x = 1, 2
    assert int(mask[1].sum()) == 4  # x, y in 4..5 after clipping to the 6x6 image


def test_pointing_game_peak_inside_scores_1_outside_0():
    maps = torch.zeros(2, 6, 6)
    maps[0, 3, 2] = 5.0  # (y=3, x=2): inside
    maps[1, 3, 4] = 5.0  # x = 4 is the exclusive end: outside
    assert pointing_game(maps, BOXES).tolist() == [True, False]
    # Tied maxima must all be inside: one tie outside makes it a miss; a flat map is a miss.
    maps[0, 0, 0] = 5.0
    assert pointing_game(maps, BOXES).tolist() == [False, False]
    assert pointing_game(torch.ones(1, 6, 6), BOXES[:1]).tolist() == [False]


def test_energy_in_box_exact_on_a_hand_map():
    maps = torch.zeros(2, 6, 6)
    maps[0, 2, 1], maps[0, 4, 3] = 3.0, 1.0  # both inside
    maps[0, 0, 0] = 4.0  # outside
    maps[0, 5, 5] = -10.0  # negative: not counted
    maps[1, 0, 0] = 2.0  # all mass outside
    assert_close(energy_in_box(maps, BOXES), torch.tensor([0.5, 0.0]))
    assert_close(energy_in_box(torch.zeros(1, 6, 6), BOXES[:1]), torch.tensor([0.0]))  # no positive mass


def test_metric_input_errors():
    maps = torch.zeros(2, 6, 6)
    with pytest.raises(ValueError, match="x0 < x1"):
        pointing_game(maps, torch.tensor([[3, 0, 1, 2], [0, 0, 1, 1]]))
    with pytest.raises(ValueError, match="1 boxes for 2 maps"):
        energy_in_box(maps, BOXES[:1])
    with pytest.raises(TypeError, match="integer pixel coordinates"):
        pointing_game(maps, BOXES.float())
    with pytest.raises(ValueError, match="NaN"):
        pointing_game(torch.full((2, 6, 6), math.nan), BOXES)


def test_spearman_exact_values():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 2.0, 3.0], [2.0, 2.0, 2.0, 2.0]])
    b = torch.tensor([[10.0, 20.0, 30.0, 40.0], [4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]])
    rho = spearman(a, b)
    # Row 3: ranks (1.5, 1.5, 3, 4) vs (1, 2, 3, 4): centred (-1, -1, 0.5, 1.5) . (-1.5, -0.5, 0.5, 1.5) = 4.5,
    # norms sqrt(4.5) and sqrt(5) -> 4.5 / sqrt(22.5).
    assert_close(rho[:3], torch.tensor([1.0, -1.0, 4.5 / math.sqrt(22.5)], dtype=torch.float64))
    assert math.isnan(rho[3])  # a constant map has no ranking


class _ImageIntensity(AttentionMethod):
    """A 'method' that ignores the model: the image's mean over channels."""

    name = "intensity"
    uses_target = False

    def _attribute(self, images, target):
        return images.mean(dim=1)


def test_randomization_check_is_1_for_a_map_that_ignores_weights_and_low_for_one_that_depends_on_them():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))
    x = torch.randn(4, 3, 8, 8)
    before = [p.detach().clone() for p in model.parameters()]
    ignoring = randomization_check(_ImageIntensity(model), x)
    assert list(ignoring) == ["all"] and torch.allclose(ignoring["all"], torch.ones(4, dtype=torch.float64))
    # The saliency of a linear model is |W_t| itself: new weights, an unrelated map.
    depending = randomization_check(Saliency(model), x, target=2)
    assert depending["all"].abs().max() < 0.3
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))  # a copy was randomised


def test_cascading_randomization_goes_from_the_output_down(small_wrn):
    x = torch.randn(2, 3, 16, 16)
    steps = randomization_check(GradCAM(small_wrn, relu=False), x, cascade=True)  # no ReLU: never a flat map
    assert list(steps) == ["fc", "bn", "layer3", "layer2", "layer1", "conv1"]
    assert all(v.shape == (2,) and not v.isnan().any() for v in steps.values())
    assert steps["conv1"].mean() < 0.9  # every weight random at the last step


def test_randomize_weights_resets_a_copy_reproducibly(small_wrn):
    copy_a = randomize_weights(small_wrn, ["layer3", "fc"], seed=3)
    copy_b = randomize_weights(small_wrn, ["layer3", "fc"], seed=3)
    assert not torch.equal(copy_a.fc.weight, small_wrn.fc.weight)
    assert torch.equal(copy_a.fc.weight, copy_b.fc.weight)
    assert torch.equal(copy_a.layer1[0].conv1.weight, small_wrn.layer1[0].conv1.weight)  # not in paths: kept
    assert torch.equal(copy_a.layer3[0].bn1.running_var, torch.ones(32))  # BatchNorm statistics reset


def test_evaluate_summarises_each_method():
    model = LTPAStandIn().eval()
    x = torch.randn(3, 3, 8, 8)
    boxes = torch.tensor([[0, 0, 8, 8]] * 3)  # the whole image: every map's peak and mass are inside

    peaked = torch.zeros(3, 8, 8)
    peaked[:, 2, 3] = 1.0  # at (y=2, x=3)

    class Peaked(AttentionMethod):
        uses_target = False

        def _attribute(self, images, target):
            return peaked[: images.shape[0]]

    summary = evaluate({"peaked": Peaked(model), "gradcam": GradCAM(model, layer="conv2")}, x, boxes, faithful=False)
    assert summary["peaked"] == {"images": 3, "pointing_game": 1.0, "energy_in_box": 1.0, "randomization_spearman": 1.0}
    assert set(summary["gradcam"]) == {"images", "pointing_game", "energy_in_box", "randomization_spearman"}
    small = torch.tensor([[0, 0, 2, 2]] * 3)  # top-left 2x2 corner: the peak at x = 3 is outside
    assert evaluate({"peaked": Peaked(model)}, x, small, sanity=False, faithful=False)["peaked"] == {
        "images": 3, "pointing_game": 0.0, "energy_in_box": 0.0,
    }
