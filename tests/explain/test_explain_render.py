import json

import numpy as np
import pytest
import torch
from PIL import Image

from attnkit.explain.metrics import FAITHFULNESS_KEYS
from attnkit.explain.render import GridLayout, denormalize, figure_size, map_grid, save_figure, scale_to_unit
from attnkit.explain.maps import explain_models, format_metrics
from attnkit.models import create_model
from explain_toys import LTPAStandIn

MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.5]


def test_denormalize_inverts_the_normalisation_and_clips():
    pixels = torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1)
    normalised = (pixels - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    np.testing.assert_allclose(denormalize(normalised, MEAN, STD), [[[[0.0, 0.5, 1.0]]]], atol=1e-7)
    assert denormalize(torch.full((2, 1, 3, 4), 10.0), [0.5], [0.5]).shape == (2, 3, 4)  # grey: no channel axis
    assert denormalize(torch.full((1, 1, 1, 1), 10.0), [0.5], [0.5]).max() == 1.0
    with pytest.raises(ValueError, match="one value per channel"):
        denormalize(torch.zeros(1, 3, 2, 2), [0.5], [0.5])


def test_scale_to_unit_maps_min_to_0_and_the_percentile_to_1():
    np.testing.assert_allclose(scale_to_unit(torch.tensor([[2.0, 4.0], [3.0, 2.0]]), percentile=100), [[0.0, 1.0], [0.5, 0.0]])
    # 0..99 and one outlier 1000: the 99th percentile of the 101 values is 99, so 1000 saturates at 1.
    values = torch.cat([torch.arange(100.0), torch.tensor([1000.0])]).view(1, 101)
    scaled = scale_to_unit(values, percentile=99)
    np.testing.assert_allclose(scaled[0, [0, 50, 99, 100]], [0.0, 50 / 99, 1.0, 1.0], rtol=1e-12)
    assert scale_to_unit(torch.full((2, 2), 7.0)).max() == 0.0
    np.testing.assert_allclose(scale_to_unit(torch.tensor([[0.0] * 200 + [5.0]])).max(), 1.0)  # sparse: min-max


def test_grid_png_is_written_at_the_documented_size(tmp_path):
    images = torch.randn(3, 3, 20, 12)  # not square: panels must not stretch it
    columns = {"gradcam": torch.rand(3, 20, 12), "layer3 (5x3)": torch.rand(3, 5, 3)}  # raw maps are resized
    figure = map_grid(images, columns, mean=MEAN, std=STD, row_labels=["a", "b", "c"], boxes=torch.tensor([[1, 2, 8, 9]] * 3), title="t", dpi=50)
    path = save_figure(figure, tmp_path / "sub" / "grid.png")
    layout = GridLayout()
    width = layout.left + layout.label_width + 3 * layout.panel + 2 * layout.gap + layout.colorbar
    height = layout.bottom + 3 * layout.panel + 2 * layout.gap + layout.top + layout.title_height
    assert figure_size(3, 3, row_labels=True, title=True) == pytest.approx((width, height))
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == (round(width * 50), round(height * 50))
        pixels = np.asarray(png.convert("RGB"))
    assert pixels.std() > 10  # not blank
    # Panels are squares in inches; drawn, each shrinks to the image's aspect ratio 12:20 (no stretching), and
    # every layer (image, map) has the image's own pixel size.
    panels = [ax for ax in figure.axes if ax.get_images()]
    assert len(panels) == 9
    for ax in panels:
        square, drawn = ax.get_position(original=True), ax.get_position()
        assert square.width * figure.get_figwidth() == pytest.approx(square.height * figure.get_figheight())
        aspect = (drawn.width * figure.get_figwidth()) / (drawn.height * figure.get_figheight())
        assert aspect == pytest.approx(12 / 20)
        assert all(image.get_array().shape[:2] == (20, 12) for image in ax.get_images())


def test_grid_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="column 'x' must hold \\(B, H, W\\) maps for the 2 images"):
        map_grid(torch.randn(2, 3, 8, 8), {"x": torch.rand(3, 8, 8)}, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="1 row labels for 2 images"):
        map_grid(torch.randn(2, 3, 8, 8), {"x": torch.rand(2, 8, 8)}, mean=MEAN, std=STD, row_labels=["a"])


def test_explain_models_writes_figures_and_metrics(tmp_path):
    teacher = create_model("wrn", depth=10, width=2, num_classes=4).eval()
    student = create_model("wrn", depth=10, width=1, num_classes=4).eval()
    images, labels = torch.randn(3, 3, 16, 16), torch.tensor([0, 1, 2])
    boxes = torch.tensor([[0, 0, 8, 8], [4, 4, 12, 12], [8, 8, 16, 16]])
    report = explain_models(
        {"teacher": teacher, "student+AT": student}, images, ["gradcam", "gradcam++", "activation", "model"], tmp_path,
        mean=MEAN, std=STD, labels=labels, classes=["a", "b", "c", "d"], boxes=boxes, target=labels, max_rows=2,
    )
    # Paths keyed by model label and kind (readers never rebuild file names); "gradcam++" files as "gradcampp".
    assert {label: {kind: str(p.relative_to(tmp_path)) for kind, p in kinds.items()} for label, kinds in report.figures.items()} == {
        "teacher": {"methods": "teacher/methods.png", "activation_layers": "teacher/activation_layers.png"},
        "student+AT": {"methods": "student_AT/methods.png", "activation_layers": "student_AT/activation_layers.png"},
    }
    assert {m: p.name for m, p in report.comparisons.items()} == {
        "gradcam": "compare_gradcam.png", "gradcam++": "compare_gradcampp.png", "activation": "compare_activation.png",
    }
    assert all(path.is_file() for path in report.paths()) and len(report.paths()) == 7
    with Image.open(tmp_path / "compare_gradcam.png") as png:  # rows: 2 images; columns: image, 2 models
        width, height = figure_size(2, 3, row_labels=True, title=True)
        assert png.size == (round(width * 100), round(height * 100))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["images"] == 3 and saved["target"] == [0, 1, 2]
    assert set(saved["metrics"]) == {"teacher", "student+AT"}
    scores = saved["metrics"]["student+AT"]["gradcam"]
    assert set(scores) == {"images", "pointing_game", "energy_in_box", "randomization_spearman", *FAITHFULNESS_KEYS}
    assert 0 <= scores["energy_in_box"] <= 1 and scores["pointing_game"] in (0, 1 / 3, 2 / 3, 1)
    assert "no forward_with_attention" in saved["skipped"]["teacher"]["model"]
    table = format_metrics(report.metrics)
    assert "student+AT  gradcam++" in table and "road.lerf+" in table


def test_explain_one_model_writes_into_out_dir_and_model_attention_by_level(tmp_path):
    report = explain_models({"ltpa": LTPAStandIn().eval()}, torch.randn(2, 3, 8, 8), ["model", "cam"], tmp_path,
                            mean=MEAN, std=STD, sanity=False, faithful=False)
    assert report.figures == {"ltpa": {"methods": tmp_path / "methods.png", "model_layers": tmp_path / "model_layers.png"}}
    assert report.comparisons == {}
    assert "head_is_gap_linear = False" in report.skipped["ltpa"]["cam"]
    assert report.metrics == {"ltpa": {"model": {"images": 2}}}
