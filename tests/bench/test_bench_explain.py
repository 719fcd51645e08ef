"""The 'explain' benchmark suite: every pair it times computes the same maps on both sides (the ratio means
nothing otherwise), and it writes one row per method with the ratio's spread (no timings are asserted)."""

import json

import pytest
import torch

from attnkit.bench import explain, run_suite
from attnkit.explain import create_method
from attnkit.models import create_model
from helpers import assert_close

TINY = {"model": "wrn", "model_kwargs": {"depth": 10, "width": 0.5}, "batch": 2, "size": 16, "num_classes": 5}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = create_model("wrn", num_classes=5, depth=10, width=0.5).eval()
    gen = torch.Generator().manual_seed(0)
    return model, torch.randn(2, 3, 16, 16, generator=gen), torch.tensor([1, 4])


def test_every_timed_pair_gives_attnkits_maps_on_both_sides(tiny):
    model, images, target = tiny
    pairs = explain.captum_versions(model, images, target)
    assert set(pairs) == {"gradcam", "hirescam", "saliency", "integrated_gradients", "smoothgrad", "guided_backprop",
                          "occlusion"}
    for name, captum_maps in pairs.items():
        ours = create_method(name, model, **explain.OPTIONS.get(name, {})).attribute(images, target)
        torch.manual_seed(123)  # the global generator in some other state: captum's noise must be seeded as ours
        theirs = captum_maps()
        assert theirs.shape == ours.shape == (2, 16, 16), name
        assert_close(ours, theirs, rtol=1e-5, atol=1e-6 * float(theirs.abs().max()))


def test_suite_writes_rows_with_ratio_spreads_and_verdicts(tmp_path):
    path = tmp_path / "bench-explain.json"
    rows = run_suite("explain", json_path=str(path), repeats=3, methods=("gradcam", "scorecam", "activation"), **TINY)
    saved = json.loads(path.read_text())
    assert saved["suite"] == "explain" and saved["rows"] == rows
    assert set(saved["load_average"]) == {"before", "after"} and len(saved["load_average"]["before"]) == 3
    by_name = {row["method"]: row for row in rows}
    assert list(by_name) == ["gradcam", "scorecam", "activation"]
    gradcam, scorecam, activation = by_name["gradcam"], by_name["scorecam"], by_name["activation"]
    assert gradcam["captum_max_rel_diff"] < 1e-5 and gradcam["rounds"] >= 3
    assert gradcam["vs_captum_q1"] <= gradcam["vs_captum"] <= gradcam["vs_captum_q3"]
    assert gradcam["verdict"] in ("faster", "slower", "equal within noise")
    assert scorecam["floor_ms_per_image"] > 0 and scorecam["vs_floor_q1"] <= scorecam["vs_floor"] <= scorecam["vs_floor_q3"]
    assert scorecam["captum_ms_per_image"] is None and scorecam["verdict"] is None
    assert activation["vs_captum"] is None and activation["vs_floor"] is None
    assert {key for key, _, _ in explain.COLUMNS} <= set(gradcam)


def test_verdict_needs_the_whole_interquartile_range_on_one_side_of_1():
    assert explain.verdict(0.90, 0.98, rounds=5) == "faster"
    assert explain.verdict(1.01, 1.20, rounds=5) == "slower"
    assert explain.verdict(0.95, 1.03, rounds=5) == "equal within noise"
    assert explain.verdict(0.80, 0.85, rounds=2) == "equal within noise"  # too few rounds to tell
