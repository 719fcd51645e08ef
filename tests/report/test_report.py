"""The demo end to end (tiny settings), the results table, the curves, and the HTML report (also for an image
folder's run, without boxes) checked as text and in headless Chromium."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from attnkit.demo import DemoConfig, run_demo
from attnkit.report import RunRecord, format_results_table, method_label, results_table, write_report
from attnkit.report.figures import curves_figure

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo"
    run_demo(DemoConfig(out=str(out), teacher_epochs=2, student_epochs=1, seeds=[0, 1], methods=["student", "AT"],
                        train_limit=512, report_images=24))
    return out


def test_demo_trains_every_run_and_writes_table_and_report(demo_dir, capsys):
    for run in ("teacher", "student-seed0", "student-seed1", "at-seed0", "at-seed1"):
        assert (demo_dir / run / "model.safetensors").is_file(), run
        assert "epoch 1/" in (demo_dir / run / "train.log").read_text()
    table = (demo_dir / "results.txt").read_text()
    # Two seeds: mean +- std, the count stated once; the single teacher: its value alone.
    assert re.search(r"wrn\(depth=10, width=0\.5\)\s+wrn_16_1\s+\d+\.\d\d \+- \d+\.\d\d\s+"
                     r"\d+\.\d\d \+- \d+\.\d\d\s+\d+\.\d\d\s*$", table, re.M), table
    assert "(1)" not in table and "seeds)" not in table and "test error % of the last epoch, mean +- std over 2 seeds" in table
    page = (demo_dir / "report" / "index.html").read_text()
    assert page.count("data:image/png;base64,") >= 3  # curves and two side-by-side map figures, embedded
    assert 'id="results"' in page and 'id="map-metrics"' in page
    assert "± 0.00" not in page and "(1)" not in page and "seeds)</td>" not in page
    assert "test error % (last epoch), mean ± std over 2 seeds" in page
    # One unit: test error % in the results and runs tables, and in the curves (no accuracy column).
    assert "test error % (last epoch)" in page and "top-1" not in page and "accuracy" not in page


def test_demo_report_map_metrics_and_image_counts(demo_dir):
    page = (demo_dir / "report" / "index.html").read_text()
    metrics = json.loads((demo_dir / "report" / "maps" / "metrics.json").read_text())
    scores = metrics["metrics"]["teacher"]["gradcam"]
    assert metrics["images"] == scores["images"] == 24 and scores["faithful_images"] == 16
    # The text states what was computed and what is shown (6 rows a figure), as computed.
    assert "computed on 24 test images of cluttered-mnist" in page and "each figure shows 6 of them" in page
    assert "faithfulness metrics on 16 of these images" in page
    header = re.search(r'<table id="map-metrics"><thead>(.*?)</thead>', page).group(1)
    columns = re.findall(r"<th>(.*?)</th>", header)
    assert columns == ["model", "method", "pointing game\u00a0↑", "energy in box\u00a0↑", "deletion AUC\u00a0↓",
                       "insertion AUC\u00a0↑", "average drop\u00a0↓", "increase in confidence\u00a0↑", "ROAD MoRF\u00a0↓",
                       "ROAD LeRF\u00a0↑", "randomisation ρ\u00a0↓"]
    rows = re.findall(r"<tr><td>(teacher|student|AT)</td><td>(activation|gradcam)</td>((?:<td>[^<]*</td>)+)</tr>", page)
    assert len(rows) == 6  # teacher, student, AT x 2 methods
    for _, _, cells in rows:
        values = re.findall(r"<td>([^<]*)</td>", cells)
        assert len(values) == 9 and all(re.fullmatch(r"-?\d\.\d{3}", v) for v in values[:8]), values


def test_report_without_boxes_names_no_box_metrics(folder_run, tmp_path):
    """An image folder has no boxes: no pointing game or energy column, and the counts say what was computed."""
    page = write_report([folder_run], tmp_path / "report", images=50, faithful_images=4).read_text()
    header = re.search(r'<table id="map-metrics"><thead>(.*?)</thead>', page).group(1)
    assert "pointing game" not in header and "energy in box" not in header
    assert "deletion AUC" in header and "insertion AUC" in header and "randomisation" in header
    assert "<dt>pointing game" not in page and "no object boxes" in page and "outlined box" not in page
    # The folder's test split has 12 images, fewer than the 50 asked for; 6 are shown, faithfulness on 4.
    assert "all 12 test images of folder (50 were asked for)" in page and "shows 6 of them" in page
    assert "faithfulness metrics on 4 of these images" in page
    assert "No distillation runs" in page and "best epoch" in page and "top-1" not in page


def test_demo_refuses_to_overwrite(demo_dir):
    with pytest.raises(FileExistsError, match="not empty"):
        run_demo(DemoConfig(out=str(demo_dir)))


def _record(path, model, method_distill, seed, top1, teacher=None):
    return RunRecord(Path(path), {"model": {"name": model}, "seed": seed, "distill": method_distill},
                     {"last": {"top1": top1}, "best": {"top1": top1}, "teacher": teacher})


def test_results_table_means_and_spreads():
    runs = [
        _record("t", "wrn_16_2", {}, 0, 94.0),
        _record("s0", "wrn_16_1", {}, 0, 90.0), _record("s1", "wrn_16_1", {}, 1, 92.0),
        _record("a0", "wrn_16_1", {"at_beta": 1000}, 0, 93.0, teacher="t"),
        _record("a1", "wrn_16_1", {"at_beta": 1000}, 1, 92.0, teacher="./t/"),  # same run, written another way
        _record("k0", "wrn_16_1", {"at_beta": 1000, "kd_alpha": 0.9}, 0, 93.5, teacher="t"),
    ]
    runs += [_record("d0", "wrn_16_1", {"dkd_alpha": 1.0, "dkd_beta": 8.0}, 0, 93.0, teacher="t"),
             _record("p0", "wrn_16_1", {"sp_beta": 3000.0}, 0, 92.5, teacher="t"),
             _record("k1", "wrn_16_1", {"kd_alpha": 0.9}, 0, 91.0, teacher="t")]
    (row,) = results_table(runs)
    assert (row["student"], row["teacher"]) == ("wrn_16_1", "wrn_16_2")
    # Table 1's column order for the paper's methods, then the method table's order, the teacher last.
    assert list(row["cells"]) == ["student", "AT", "KD", "AT+KD", "SP", "DKD", "teacher"]
    assert row["cells"]["student"]["mean"] == pytest.approx(9.0) and row["cells"]["student"]["std"] == pytest.approx(2 ** 0.5)
    assert row["cells"]["AT"]["values"] == pytest.approx([7.0, 8.0]) and row["cells"]["teacher"]["n"] == 1
    text = format_results_table([row])
    assert "9.00 +- 1.41" in text and "seeds)" not in text and "(1)" not in text and "+- 0.00" not in text
    assert text.splitlines()[-1].split()[-1] == "6.00"  # the single teacher: its value alone


def test_method_labels_are_the_method_tables():
    assert method_label({}) == "student" and method_label({"at_beta": 0.0, "teacher": "t"}) == "student"
    assert method_label({"at_beta": 1000.0, "kd_alpha": 0.9}) == "AT+KD"
    assert method_label({"kd_alpha": 9.0, "kd_standardize": True}) == "LS-KD"
    assert [method_label({key: 1.0}) for key in ("grad_at_beta", "fact_beta", "cam_beta", "hint_beta", "nst_beta")] \
        == ["grad-AT", "F-ActT", "CAM-T", "FitNets", "NST"]


def _curve_run(path, method_distill, seed, top1s, teacher="t"):
    metrics = [{"epoch": e + 1, "train": {"loss": 2.0 / (e + 1)}, "test": {"top1": t}} for e, t in enumerate(top1s)]
    record = _record(path, "wrn_16_1", method_distill, seed, top1s[-1], teacher)
    record.metrics = metrics
    return record


def test_curves_legends_outside_integer_epochs_error_unit():
    runs = [_curve_run("t", {}, 0, [50.0, 70.0, 80.0], teacher=None)]
    runs += [_curve_run(f"{m}{s}", d, s, [40.0 + s, 60.0, 75.0]) for m, d in (("s", {}), ("a", {"at_beta": 1000.0}))
             for s in (0, 1)]
    figure = curves_figure(runs)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    axes = figure.axes
    assert len(figure.legends) == 2 and [lg.get_title().get_text() for lg in figure.legends] == \
        ["method (colour)", "seed (line style)"]
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["student", "AT", "teacher"]
    assert [t.get_text() for t in figure.legends[1].get_texts()] == ["seed 0", "seed 1"]
    for legend in figure.legends:  # outside every axes
        box = legend.get_window_extent(renderer)
        assert not any(box.overlaps(ax.get_window_extent(renderer)) for ax in axes)
    for ax in axes:
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    loss_ax, error_ax = axes
    assert loss_ax.get_ylabel() == "training loss" and error_ax.get_ylabel() == "test error %"
    lines = error_ax.get_lines()
    assert list(lines[0].get_ydata()) == pytest.approx([50.0, 30.0, 20.0])  # 100 - top-1
    # Colour = method, style = seed: AT seed 0 and 1 share a colour, differ in style; seed 0 runs share a style.
    student0, student1, at0, at1 = lines[1:]
    assert at0.get_color() == at1.get_color() != student0.get_color()
    assert at0.get_linestyle() != at1.get_linestyle() and at0.get_linestyle() == student0.get_linestyle()
    assert figure.get_size_inches()[0] * figure.dpi <= 1100  # drawn at its own size in the 1100 px page


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="headless Chromium not installed (Debian package `chromium`; .ci/run installs it)")
def test_report_in_headless_chromium(demo_dir, tmp_path):
    url = (demo_dir / "report" / "index.html").resolve().as_uri()
    common = ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert '<table id="results">' in dom and '<table id="runs">' in dom and '<table id="map-metrics">' in dom
    assert dom.count('<div class="scroll"><table') == 3  # wide tables scroll rather than wrap names
    assert len(re.findall(r'<img src="data:image/png;base64,', dom)) >= 3
    shot = tmp_path / "report.png"
    subprocess.run([*common, "--window-size=1200,3000", f"--screenshot={shot}", url], capture_output=True, timeout=120)
    with Image.open(shot) as image:
        assert image.size == (1200, 3000)
        # Not a blank page: the rendered report has dark text and coloured figures on white.
        colours = image.convert("RGB").resize((120, 300)).getcolors(maxcolors=120 * 300)
        assert len(colours) > 50


def test_the_usual_seed_count_is_stated_once_and_another_count_in_its_cell():
    from attnkit.report.results import summarize

    row = {"student": "s", "teacher": "t", "metric": "error",
           "cells": {"student": summarize([9.0, 11.0]), "AT": summarize([7.0, 8.0]), "KD": summarize([6.0, 7.0, 8.0]),
                     "teacher": summarize([5.0])}}
    text = format_results_table([row])
    assert "mean +- std over 2 seeds" in text.splitlines()[0]
    assert "10.00 +- 1.41  " in text and "7.00 +- 1.00 (3 seeds)" in text and text.rstrip().endswith("5.00")


def test_every_string_from_a_run_is_escaped_in_the_page(demo_dir, tmp_path):
    """Run directories, model names and config values come from files anyone may send: none reaches the page as
    markup."""
    import shutil

    import yaml

    hostile = '<img src=x onerror="alert(1)">'
    run = tmp_path / hostile
    shutil.copytree(demo_dir / "student-seed0", run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"]["kwargs"]["note"] = "</pre><script>alert(2)</script>"
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    page = write_report([run], tmp_path / "report", maps=False, title="<b>report</b>").read_text()
    assert "<script>" not in page and "<img src=x" not in page and "<b>report</b>" not in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page and "&lt;/pre&gt;&lt;script&gt;" in page
