"""Runs read back from their directories, grouped by method, summarised in the layout of the AT paper's Table 1.

Table 1 of Zagoruyko & Komodakis (2017) has one row per student/teacher pair and, per method, the student's test
error: student alone | F-ActT | AT | KD | AT+KD | teacher. Here every cell is the mean over the seeds that were
run, with the spread (sample standard deviation) where there are several (their number stated once); methods the
paper does not have (SP, NST, DKD, ...) come before the teacher's column, in the order of
:data:`attnkit.engine.methods.METHODS`, and are named as ``attnkit recipes`` names them.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.methods import METHODS, term_labels
from ..engine.rundir import RunDir

__all__ = ["RunRecord", "TABLE1_METHODS", "format_cell", "format_results_table", "load_runs", "method_label",
           "method_rank", "results_table", "run_group", "summarize", "teacher_keys", "usual_seeds"]

# Column order of the paper's Table 1; the other methods go before the teacher (method_rank).
TABLE1_METHODS = ("student", "F-ActT", "AT", "KD", "AT+KD", "teacher")


def method_label(distill: dict[str, Any]) -> str:
    """Short name of a run's transfer method from its ``distill`` config section, as ``attnkit recipes`` and the
    method table name it (:func:`attnkit.engine.methods.term_labels`: AT, KD, AT+KD, LS-KD, ...); "student" =
    trained alone, no transfer term on.

    >>> method_label({"at_beta": 1000.0, "kd_alpha": 0.9}), method_label({"sp_beta": 3000.0}), method_label({})
    ('AT+KD', 'SP', 'student')
    """
    return "+".join(term_labels(distill)) or "student"


def method_rank(label: str) -> tuple[int, str]:
    """Sort key of a method's column: Table 1's methods in its order, then the other methods of
    :data:`~attnkit.engine.methods.METHODS` in its order, then unknown combinations by name, the teacher last."""
    paper = [m for m in TABLE1_METHODS if m != "teacher"]
    others = [m.label for m in METHODS.values() if m.terms and m.label not in paper]  # the baseline is "student"
    order = [*paper, *others]
    if label == "teacher":
        return (len(order) + 1, "")
    return (order.index(label), "") if label in order else (len(order), label)


@dataclass
class RunRecord:
    """What a finished run directory says about itself."""

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    metrics: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> str:
        """The architecture: registry name, with its builder arguments when it has any (``wrn(depth=10, width=0.5)``)."""
        model = self.config["model"]
        kwargs = model.get("kwargs") or {}
        return model["name"] + (f"({', '.join(f'{k}={v}' for k, v in kwargs.items())})" if kwargs else "")

    @property
    def key(self) -> str:
        """The run directory, resolved: how other runs' ``teacher`` entries refer to it."""
        return str(self.path.resolve())

    @property
    def seed(self) -> int:
        return self.config.get("seed", 0)

    @property
    def teacher(self) -> str | None:
        """The resolved path of the run this one distilled from (None if trained alone)."""
        teacher = self.summary.get("teacher")
        return None if teacher is None else str(Path(teacher).resolve())

    @property
    def method(self) -> str:
        return method_label(self.config.get("distill", {}))

    @property
    def last_top1(self) -> float | None:
        last = self.summary.get("last")
        return None if last is None else last["top1"]


def teacher_keys(runs: Iterable[RunRecord]) -> set[str]:
    """The resolved directories of the runs that runs among ``runs`` distilled from (:attr:`RunRecord.key`)."""
    return {r.teacher for r in runs if r.teacher}


def run_group(run: RunRecord, teachers: set[str]) -> str:
    """"teacher" for a run others distilled from (``teachers``: :func:`teacher_keys`), else its method label."""
    return "teacher" if run.key in teachers else run.method


def load_runs(paths: Iterable[str | Path]) -> list[RunRecord]:
    """Read finished runs (config.yaml, summary.json, metrics.jsonl, run.json); raise for a directory that is not one."""
    runs = []
    for path in map(Path, paths):
        run = RunDir(path)
        summary = run.summary()
        if summary is None:
            raise FileNotFoundError(f"{path} is not a finished attnkit run (no summary.json); train it first")
        info = run.info().to_dict() if run.file(RunDir.INFO).is_file() else {}
        runs.append(RunRecord(path, run.config_values(), summary, run.metrics(), info))
    return runs


def summarize(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean and sample standard deviation over seeds (``std`` None for fewer than two values); None and NaN values
    (a score undefined for that run) are left out of both and of ``n``, but kept in ``values``.

    >>> summarize([1.0, 2.0, 3.0])
    {'mean': 2.0, 'std': 1.0, 'n': 3, 'values': [1.0, 2.0, 3.0]}
    >>> summarize([0.5])
    {'mean': 0.5, 'std': None, 'n': 1, 'values': [0.5]}
    """
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return {"mean": statistics.fmean(finite) if finite else None,
            "std": statistics.stdev(finite) if len(finite) > 1 else None, "n": len(finite), "values": list(values)}


def results_table(runs: Sequence[RunRecord], metric: str = "error") -> list[dict[str, Any]]:
    """One row per (student model, teacher model) pair with a cell per method: mean, spread, n over seeds.

    ``metric`` is ``"error"`` (100 - last-epoch top-1, as the paper reports) or ``"accuracy"``. Teachers are the
    runs other runs distilled from; a run trained alone whose model is a student's counts as "student".
    """
    value = (lambda r: 100.0 - r.last_top1) if metric == "error" else (lambda r: r.last_top1)
    by_path = {r.key: r for r in runs}
    teachers = teacher_keys(runs)
    rows: dict[tuple[str, str], dict[str, list[float]]] = {}
    for run in runs:
        if run.teacher is None or run.last_top1 is None:
            continue
        teacher = by_path.get(run.teacher)
        key = (run.model, teacher.model if teacher else Path(run.teacher).name)
        rows.setdefault(key, {}).setdefault(run.method, []).append(value(run))
    for (student, teacher_model), cells in rows.items():
        for run in runs:
            if run.teacher is None and run.last_top1 is not None:
                if run.key in teachers and run.model == teacher_model:
                    cells.setdefault("teacher", []).append(value(run))
                elif run.model == student and run.key not in teachers:
                    cells.setdefault("student", []).append(value(run))
    table = []
    for (student, teacher), cells in rows.items():
        order = sorted(cells, key=method_rank)
        table.append({"student": student, "teacher": teacher, "metric": metric,
                      "cells": {m: summarize(cells[m]) for m in order}})
    return table


def format_cell(cell: dict[str, Any], digits: int = 2, plus_minus: str = "±", seeds: bool = False) -> str:
    """A cell of :func:`summarize`: ``mean ± std`` over several seeds, the value alone for a single run, ``-`` for
    none; ``seeds`` adds the number of seeds (for a cell whose count differs from its table's).

    >>> format_cell(summarize([10.0, 12.0])), format_cell(summarize([6.0])), format_cell(summarize([]), 3)
    ('11.00 ± 1.41', '6.00', '-')
    >>> format_cell(summarize([10.0, 12.0, 14.0]), 1, "+-", seeds=True)
    '12.0 +- 2.0 (3 seeds)'
    """
    if cell["mean"] is None:
        return "-"
    text = f"{cell['mean']:.{digits}f}"
    if cell["std"] is not None:
        text += f" {plus_minus} {cell['std']:.{digits}f}"
    return text + (f" ({cell['n']} seeds)" if seeds and cell["n"] > 1 else "")


def usual_seeds(cells: Iterable[dict[str, Any]]) -> int:
    """The most common number of seeds among the cells over several seeds (1 if none has several): the count a
    table states once, in its caption; :func:`format_cell` (``seeds=True``) names any other count in its cell."""
    counts = Counter(c["n"] for c in cells if c["n"] > 1)
    return counts.most_common(1)[0][0] if counts else 1


def format_results_table(table: Sequence[dict[str, Any]]) -> str:
    """The table as aligned text, in percent: ``mean +- std`` per method over the seeds the caption states, the
    value alone for one run."""
    lines = []
    for row in table:
        methods = list(row["cells"])
        usual = usual_seeds(row["cells"].values())
        header = ["student net", "teacher net", *methods]
        cells = [row["student"], row["teacher"]] + [format_cell(c, 2, "+-", seeds=c["n"] != usual)
                                                   for c in row["cells"].values()]
        widths = [max(len(a), len(b)) for a, b in zip(header, cells)]
        lines.append(f"test {row['metric']} % of the last epoch" + (f", mean +- std over {usual} seeds" if usual > 1 else ""))
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
        lines.append("  ".join("-" * w for w in widths))
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())
    return "\n".join(lines)
