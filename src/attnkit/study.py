"""``attnkit study``: every distillation method of :data:`attnkit.engine.methods.METHODS`, several seeds, one
table of the students' test errors beside the quality of their attention maps and their agreement with the
teacher's.

On the embedded cluttered-mnist (each digit somewhere on a 48x48 canvas among clutter, its box known), the study
trains one teacher and, per method and seed, the same small student (the demo's runner: spawned single-thread
processes, ``workers`` at a time, :func:`attnkit.demo.run_jobs`). Each run's process, once trained, computes the
maps of its model on ``images`` fixed test images (evenly spaced through the test split, so every digit class
is there) and scores them; the main process then compares every student's maps with the teacher's and
aggregates over the seeds. Definitions (each per model; "maps" are computed once per model and method, in eval
mode, batched, for the true class, and reused by every column):

* **test error**: 100 - top-1 accuracy (%) of the last epoch on the whole test split (1,000 images).
* **activation map**: :class:`attnkit.explain.ActivationMap` with its defaults, the map attention transfer
  matches: mean over channels of A^2 at the model's deepest attention point (``feature_info[-1]``, the
  12x12 output of a WRN's last group at 48x48 input), L2-normalised; it does not depend on the class.
* **Grad-CAM**: :class:`attnkit.explain.GradCAM` with its defaults (the output of ``forward_features``, 12x12),
  for the true class.
* **pointing**: pointing game (:func:`attnkit.explain.metrics.pointing_game`), the share of images whose map
  maximum (every tied maximum) lies inside the digit's box; **energy**: mean share of the map's positive mass
  inside the box (:func:`~attnkit.explain.metrics.energy_in_box`). Both on the map resized to 48x48 (bilinear,
  as ``attribute(upsample=True)``). Higher is better.
* **deletion**: deletion AUC (:func:`attnkit.explain.metrics.deletion`, RISE: 20 steps, the most relevant
  pixels first replaced by 0, the data set's mean colour) of the softmax probability of the true class, mean
  over the images, for both maps. Lower is better for one model; across models it also follows confidence (a
  student near chance keeps p near 0.1 whatever its map), so read it beside the test error.
* **agreement**: mean over the images of the Spearman rank correlation
  (:func:`attnkit.explain.metrics.spearman`) between the student's and the teacher's map of the same method,
  at the maps' own resolution (if the two differ, both are resized with :func:`attnkit.functional.resize_map`
  to the larger); images where either map is constant (no ranking, e.g. an all-zero Grad-CAM) are left out.
  1 = the same ranking of positions; the teacher's own row is 1 by definition.

Per method, every column is the mean over the seeds and the sample standard deviation (``mean ± std``; a single
run shows its value alone). ``study.json`` holds every run's numbers, the aggregates, the settings, the wall
time and the machine; ``study.md`` the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import __version__
from ._files import json_safe
from .demo import (
    TrainingPlan,
    add_plan_arguments,
    describe_plan,
    new_root,
    plan_from_arguments,
    plan_jobs,
    run_jobs,
    train_job,
)
from .engine.methods import METHODS
from .report.results import format_cell, summarize

__all__ = ["COLUMNS", "MAP_METHODS", "StudyConfig", "add_study_arguments", "map_agreement",
           "map_scores", "markdown_table", "run_study", "study_from_arguments"]

MAP_METHODS = ("activation", "gradcam")  # explain's names; the columns' prefixes "act." and "Grad-CAM"

# (key, title, digits) of the table, in order; the keys are those of every run's record in study.json.
COLUMNS = (
    ("test_error", "test error %", 2),
    ("activation_pointing", "act. pointing", 3), ("activation_energy", "act. energy", 3),
    ("activation_deletion", "act. deletion", 3),
    ("gradcam_pointing", "Grad-CAM pointing", 3), ("gradcam_energy", "Grad-CAM energy", 3),
    ("gradcam_deletion", "Grad-CAM deletion", 3),
    ("activation_agreement", "act. agreement", 3), ("gradcam_agreement", "Grad-CAM agreement", 3),
)


@dataclass
class StudyConfig(TrainingPlan):
    """The demo's plan with the study's defaults: every method of the table, three seeds, shorter runs."""

    teacher_epochs: int = 6  # the demo's teacher
    student_epochs: int = 3  # 36 students of ~15-60 s each at the demo's 5 epochs would not fit in 15 minutes
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    images: int = 100  # test images the map metrics are computed on


def add_study_arguments(parser: argparse.ArgumentParser) -> None:
    """``attnkit study``'s arguments: the demo's, with the study's defaults, and the map and data sizes."""
    defaults = StudyConfig()
    add_plan_arguments(parser, "study", defaults, "table")
    parser.add_argument("--images", type=int, default=defaults.images,
                        help=f"test images the map metrics are computed on (default: {defaults.images})")
    parser.add_argument("--train-limit", type=int, default=0, metavar="N",
                        help="train every run on a fixed subset of N of the 4,000 training images, for quick checks "
                             "(default: 0 = all)")


def study_from_arguments(args: argparse.Namespace) -> StudyConfig:
    """The :class:`StudyConfig` of ``attnkit study``'s arguments."""
    return plan_from_arguments(StudyConfig(images=args.images, train_limit=args.train_limit or None), args)


def map_scores(model: torch.nn.Module, images: Tensor, labels: Tensor, boxes: Tensor,
               batch_size: int = 100) -> tuple[dict[str, float], dict[str, Tensor]]:
    """One model's localisation and deletion scores for both map methods, and its raw maps.

    Args:
        model: the trained model (put in eval mode by the methods for each call).
        images: (N, C, H, W) normalised test images; labels: (N,) true classes (the maps' target);
            boxes: (N, 4) the digits' boxes x0, y0, x1, y1.
        batch_size: images per map computation.

    Returns:
        ({"<method>_pointing" | "_energy" | "_deletion": mean over the images}, {method: (N, h, w) raw maps}).
    """
    from .explain import create_method
    from .explain.metrics import deletion, energy_in_box, pointing_game
    from .functional import resize_map

    scores: dict[str, float] = {}
    raw: dict[str, Tensor] = {}
    for name in MAP_METHODS:
        raw[name] = create_method(name, model).attribute(images, labels, upsample=False, batch_size=batch_size)
        maps = resize_map(raw[name], tuple(images.shape[-2:]))  # (N, H, W), as upsample=True gives them
        scores[f"{name}_pointing"] = float(pointing_game(maps, boxes).double().mean())
        scores[f"{name}_energy"] = float(energy_in_box(maps, boxes).double().mean())
        scores[f"{name}_deletion"] = float(deletion(model, images, maps, labels, batch_size=256).double().mean())
    return scores, raw


def map_agreement(student: Tensor, teacher: Tensor) -> float:
    """Mean over the images of the Spearman correlation of two (N, h, w) batches of maps, resized to the larger
    resolution when they differ; images with a constant map are left out (NaN when none is left).

    >>> maps = torch.rand(4, 6, 6)
    >>> map_agreement(maps, maps), map_agreement(maps, -maps)
    (1.0, -1.0)
    """
    from .explain.metrics import spearman
    from .functional import resize_map

    if student.shape[-2:] != teacher.shape[-2:]:
        size = max(tuple(student.shape[-2:]), tuple(teacher.shape[-2:]), key=lambda s: s[0] * s[1])
        student, teacher = resize_map(student, size), resize_map(teacher, size)
    rho = spearman(student, teacher)
    finite = rho[~torch.isnan(rho)]
    return round(float(finite.mean()), 12) if finite.numel() else math.nan


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The aggregated rows ({"method", "runs", "cells": {key: summarize(...)}}) as a Markdown table."""
    header = ["method", "runs", *(title for _, title, _ in COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "| --- | ---: | " + " | ".join("---:" for _ in COLUMNS) + " |"]
    for row in rows:
        cells = [format_cell(row["cells"][key], digits, seeds=row["cells"][key]["n"] != row["runs"])  # an undefined score left out
                 for key, _, digits in COLUMNS]
        lines.append("| " + " | ".join([row["method"], str(row["runs"]), *cells]) + " |")
    return "\n".join(lines)


def _measure_job(config: dict[str, Any], images: int) -> dict[str, Any]:
    """In a worker: train the run, then score its maps; the raw maps come back as arrays (plain pickles)."""
    cpu = time.process_time()  # this process's CPU time: comparable across machines and loads, unlike wall time
    summary = train_job(config)
    started, train_cpu = time.perf_counter(), time.process_time() - cpu
    scores, raw = map_scores(*_load(config, images))
    summary["study"] = {"scores": scores, "maps": {k: v.numpy() for k, v in raw.items()}, "train_cpu_s": train_cpu,
                        "maps_time_s": time.perf_counter() - started, "maps_cpu_s": time.process_time() - cpu - train_cpu}
    return summary


def _load(config: dict[str, Any], count: int) -> tuple[torch.nn.Module, Tensor, Tensor, Tensor]:
    """The run's trained model and ``count`` test images of its data set, evenly spaced, with labels and boxes."""
    from .data import dataset_images
    from .engine import load_model

    data = config["data"]
    loaded = dataset_images(data["name"], count, data.get("root"))
    if loaded.boxes is None:
        raise ValueError(f"data set {data['name']!r} has no object boxes to score maps against; use cluttered-mnist")
    return load_model(config["out"], "cpu", "final"), loaded.images, loaded.labels, loaded.boxes


def _machine() -> dict[str, Any]:
    from .bench import hardware

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {**hardware(), "cores": cores, "platform": platform.platform(), "attnkit": __version__}


def _load_average() -> list[float] | None:
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


def run_study(study: StudyConfig | None = None) -> Path:
    """Run the study; returns its directory (the runs, study.json, study.md)."""
    study = study or StudyConfig()
    if study.images < 1:
        raise ValueError(f"--images {study.images}: give at least 1 test image for the map metrics")
    from .data import dataset_images

    loaded = dataset_images(study.data, study.images)
    if loaded.boxes is None:
        raise ValueError(f"data set {study.data!r} has no object boxes to score maps against; use cluttered-mnist")
    if loaded.images.shape[0] < study.images:  # the whole test split is fewer images than asked for
        print(f"attnkit study: {study.data} has {loaded.images.shape[0]} test images; the map metrics use all of them")
        study = replace(study, images=loaded.images.shape[0])
    jobs = plan_jobs(study, root := new_root(study.out, "study"), teacher=True)  # its maps: the agreement
    started, load_before = time.perf_counter(), _load_average()
    print(f"{describe_plan(study, jobs, 'study')}; map metrics on {study.images} test images")
    results = run_jobs(jobs, study.workers, "study", _measure_job, (study.images,))
    teacher_maps = {k: torch.from_numpy(v) for k, v in results["teacher"]["study"]["maps"].items()}
    records = []
    for job in jobs:
        result = results[job.name]
        record = {"name": job.name, "method": job.method, "seed": job.config["seed"], "out": str(job.out),
                  "test_error": 100.0 - result["last"]["top1"], **result["study"]["scores"],
                  **{key: result["study"][key] for key in ("train_cpu_s", "maps_time_s", "maps_cpu_s")},
                  "train_time_s": result["train_time_s"]}
        for name, maps in result["study"]["maps"].items():
            record[f"{name}_agreement"] = map_agreement(torch.from_numpy(maps), teacher_maps[name])
        records.append(record)
    order = [*study.methods, "teacher"]
    rows = [{"method": method, "runs": sum(r["method"] == method for r in records),
             "cells": {key: summarize([r[key] for r in records if r["method"] == method]) for key, _, _ in COLUMNS}}
            for method in order]
    wall, machine = time.perf_counter() - started, _machine()
    table = markdown_table(rows)
    caption = (f"{study.data}: {study.student} {study.student_kwargs} students ({study.student_epochs} epochs), "
               f"{study.teacher} teacher ({study.teacher_epochs} epochs), "
               f"{'all' if study.train_limit is None else study.train_limit} training images; mean ± std over seeds "
               f"{study.seeds}; map metrics on {study.images} test images; {wall:.0f} s on {machine['cores']} cores")
    (root / "study.md").write_text(f"{caption}\n\n{table}\n")
    payload = {"config": {**asdict(study), "out": str(root)}, "columns": [{"key": k, "title": t} for k, t, _ in COLUMNS],
               "rows": rows, "runs": records, "wall_time_s": wall, "machine": machine,
               "load_average": {"start": load_before, "end": _load_average()}}
    (root / "study.json").write_text(json.dumps(json_safe(payload), indent=2) + "\n")
    print(f"\n{caption}\n\n{table}\n\nwrote {root / 'study.md'} and {root / 'study.json'}; done in {wall:.0f} s")
    return root
