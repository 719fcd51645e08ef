"""The demo end to end (tiny settings), the results table, and the HTML report checked in headless Chromium."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from attnkit.demo import DemoConfig, run_demo
from attnkit.report import RunRecord, format_results_table, results_table

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
    assert re.search(r"wrn\(depth=10, width=0\.5\)\s+wrn_16_1\s+\d+\.\d\d \+- \d+\.\d\d \(2\)\s+\d+\.\d\d \+- \d+\.\d\d \(2\)\s+\d+\.\d\d \+- 0\.00 \(1\)", table)
    page = (demo_dir / "report" / "index.html").read_text()
    assert page.count("data:image/png;base64,") >= 3  # curves and two side-by-side map figures, embedded
    assert 'id="results"' in page and 'id="map-metrics"' in page and "pointing game" in page


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
    (row,) = results_table(runs)
    assert (row["student"], row["teacher"]) == ("wrn_16_1", "wrn_16_2")
    assert list(row["cells"]) == ["student", "AT", "AT+KD", "teacher"]  # Table 1's column order
    assert row["cells"]["student"]["mean"] == pytest.approx(9.0) and row["cells"]["student"]["spread"] == pytest.approx(2 ** 0.5)
    assert row["cells"]["AT"]["values"] == pytest.approx([7.0, 8.0]) and row["cells"]["teacher"]["n"] == 1
    assert "9.00 +- 1.41 (2)" in format_results_table([row])


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="headless Chromium not installed (Debian package `chromium`; .ci/run installs it)")
def test_report_in_headless_chromium(demo_dir, tmp_path):
    url = (demo_dir / "report" / "index.html").resolve().as_uri()
    common = ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert '<table id="results">' in dom and '<table id="runs">' in dom and '<table id="map-metrics">' in dom
    assert len(re.findall(r'<img src="data:image/png;base64,', dom)) >= 3
    shot = tmp_path / "report.png"
    subprocess.run([*common, "--window-size=1200,3000", f"--screenshot={shot}", url], capture_output=True, timeout=120)
    with Image.open(shot) as image:
        assert image.size == (1200, 3000)
        # Not a blank page: the rendered report has dark text and coloured figures on white.
        colours = image.convert("RGB").resize((120, 300)).getcolors(maxcolors=120 * 300)
        assert len(colours) > 50
