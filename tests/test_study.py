"""``attnkit study``: the command from a fresh process at tiny size, its aggregation, map agreement, bad methods."""

import json
import math

import pytest
import torch
from helpers import run_cli

from attnkit.engine.methods import METHODS
from attnkit.report.results import format_cell, summarize
from attnkit.study import COLUMNS, map_agreement, markdown_table

RANGES = {"test_error": (0.0, 100.0), "agreement": (-1.0, 1.0), "deletion": (0.0, 1.0), "": (0.0, 1.0)}


def _range(key: str) -> tuple[float, float]:
    return next(bounds for suffix, bounds in RANGES.items() if key.endswith(suffix))


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "study"
    done = run_cli("study", "--out", out, "--methods", "student", "AT", "--seeds", "0", "1", "--epochs", "1", "1",
                   "--train-limit", "128", "--images", "12", timeout=240)
    assert done.returncode == 0, done.stderr
    assert "| AT | 2 |" in done.stdout  # the table on the console
    return out


def test_study_writes_one_row_per_method_and_the_teacher(study_dir):
    result = json.loads((study_dir / "study.json").read_text())
    assert [row["method"] for row in result["rows"]] == ["student", "AT", "teacher"]
    assert [row["runs"] for row in result["rows"]] == [2, 2, 1]
    assert [c["key"] for c in result["columns"]] == [key for key, _, _ in COLUMNS]
    assert len(result["runs"]) == 5 and result["config"]["images"] == 12 and result["wall_time_s"] > 0
    assert result["machine"]["cores"] >= 1
    for run in result["runs"]:
        for key, _, _ in COLUMNS:
            low, high = _range(key)
            assert math.isfinite(run[key]) and low <= run[key] <= high, (run["name"], key, run[key])
    teacher = result["runs"][0]
    assert teacher["method"] == "teacher" and teacher["activation_agreement"] == teacher["gradcam_agreement"] == 1.0
    for row in result["rows"]:
        for key, _, _ in COLUMNS:
            cell = row["cells"][key]
            assert cell["n"] == row["runs"] and (cell["std"] is None) == (row["runs"] == 1)
    table = (study_dir / "study.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| method"))
    assert header.count("|") == len(COLUMNS) + 3 and "Grad-CAM agreement" in header
    assert "| student | 2 |" in table and "| teacher | 1 |" in table and "±" not in table.split("| teacher")[1]


def test_aggregate_is_mean_and_sample_std_over_seeds_and_one_value_shows_alone():
    cell = summarize([20.0, 30.0, 40.0])
    assert (cell["mean"], cell["std"], cell["n"]) == (30.0, 10.0, 3)
    assert format_cell(cell, 2) == "30.00 ± 10.00"
    single = summarize([0.1234])
    assert single["std"] is None and format_cell(single, 3) == "0.123"  # no "± 0.000" for one run
    undefined = summarize([float("nan"), 0.5, 0.7])  # an agreement without any defined image is left out
    assert undefined["n"] == 2 and undefined["mean"] == pytest.approx(0.6)
    assert format_cell(summarize([]), 3) == "-"
    rows = [{"method": "AT", "runs": 1, "cells": {key: summarize([0.5]) for key, _, _ in COLUMNS}}]
    assert markdown_table(rows).splitlines()[2] == "| AT | 1 | 0.50 | " + " | ".join(["0.500"] * (len(COLUMNS) - 1)) + " |"


def test_map_agreement_is_one_for_a_model_and_itself_and_resizes_differing_maps():
    from attnkit.explain import create_method
    from attnkit.functional import resize_map
    from attnkit.models import create_model

    model = create_model("wrn", depth=10, width=0.5, num_classes=10, in_chans=1)
    images = torch.randn(6, 1, 24, 24)
    for name in ("activation", "gradcam"):
        maps = create_method(name, model).attribute(images, torch.arange(6), upsample=False)
        assert map_agreement(maps, maps.clone()) == 1.0
    coarse = torch.rand(3, 4, 4)
    assert map_agreement(coarse, resize_map(coarse, (8, 8))) == 1.0  # the coarse map is resized to 8 x 8 first
    assert map_agreement(resize_map(coarse, (8, 8)), coarse) == 1.0
    flat = torch.zeros(2, 4, 4)
    assert math.isnan(map_agreement(flat, torch.rand(2, 4, 4)))  # no image has a ranking


def test_unknown_method_is_a_one_line_error(tmp_path):
    done = run_cli("study", "--out", tmp_path / "s", "--methods", "student", "BOGUS", timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "BOGUS" in done.stderr and " ".join(METHODS) in done.stderr
    assert not (tmp_path / "s").exists()  # refused before anything was written
