"""``attnkit report RUN_DIR...``: one self-contained HTML page about finished runs.

The page holds the results table (Table 1 layout, mean and spread over seeds), every run's accuracy, training
curves, the attention maps of the teacher and of one student per method side by side (computed with
:mod:`attnkit.explain` on the runs' own test images), how well those maps find the object where the data has
boxes (pointing game, energy inside the box) and a model-randomisation sanity check, and each run's config and
library versions. Pictures are embedded (base64 PNG), so ``index.html`` can be mailed or archived alone; the PNG
files are also written beside it.
"""

from __future__ import annotations

import base64
import html
import platform
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402

from .results import TABLE1_METHODS, RunRecord, load_runs, results_table  # noqa: E402

__all__ = ["plot_curves", "representative_runs", "sorted_runs", "write_report"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.92rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
figure { margin: 1rem 0; } figcaption { color: #555; font-size: 0.9rem; }
pre { background: #f7f7f7; padding: 0.6rem; overflow-x: auto; font-size: 0.8rem; }
.note { color: #555; font-size: 0.9rem; }
"""


def run_label(run: RunRecord, teachers: set[str]) -> str:
    """How a run is named on the page: "teacher (model)" or "<method> seed <s>"."""
    if run.key in teachers:
        return f"teacher ({run.model})"
    return f"{run.method} seed {run.seed}"


def _order(run: RunRecord, teachers: set[str]) -> tuple[int, str, int]:
    """Teachers first, then the methods in the column order of Table 1, then by seed."""
    if run.key in teachers:
        return (-1, run.model, run.seed)
    rank = TABLE1_METHODS.index(run.method) if run.method in TABLE1_METHODS else len(TABLE1_METHODS)
    return (rank, run.method, run.seed)


def sorted_runs(runs: Sequence[RunRecord]) -> list[RunRecord]:
    teachers = {r.teacher for r in runs if r.teacher}
    return sorted(runs, key=lambda r: _order(r, teachers))


def representative_runs(runs: Sequence[RunRecord]) -> dict[str, RunRecord]:
    """The runs whose maps are compared: each teacher, then the lowest-seed run of every method, in Table 1 order."""
    teachers = {r.teacher for r in runs if r.teacher}
    chosen: dict[str, RunRecord] = {}
    for run in sorted_runs(runs):
        label = "teacher" if run.key in teachers else run.method
        if label == "teacher" and len(teachers) > 1:
            label = f"teacher {run.model}"
        chosen.setdefault(label, run)
    return chosen


def plot_curves(runs: Sequence[RunRecord], path: Path) -> Path:
    """Training loss and test top-1 per epoch, one line per run (colour = method, style = seed)."""
    teachers = {r.teacher for r in runs if r.teacher}
    labels = sorted({"teacher" if r.key in teachers else r.method for r in runs})
    colours = {label: plt.get_cmap("tab10")(i % 10) for i, label in enumerate(labels)}
    figure, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    for run in runs:
        label = "teacher" if run.key in teachers else run.method
        epochs = [m["epoch"] for m in run.metrics]
        style = ["-", "--", ":", "-."][run.seed % 4]
        loss_ax.plot(epochs, [m["train"]["loss"] for m in run.metrics], style, color=colours[label], label=run_label(run, teachers))
        tested = [m for m in run.metrics if "test" in m]
        acc_ax.plot([m["epoch"] for m in tested], [m["test"]["top1"] for m in tested], style, color=colours[label],
                    marker="o", markersize=3, label=run_label(run, teachers))
    loss_ax.set(title="training loss (all terms)", xlabel="epoch", ylabel="loss", yscale="log")
    acc_ax.set(title="test top-1 accuracy", xlabel="epoch", ylabel="%", ylim=(0, 100))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
    acc_ax.legend(fontsize=7, loc="lower right", ncol=2)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def _img(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], css_id: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    ident = f' id="{css_id}"' if css_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _results_section(runs: Sequence[RunRecord]) -> str:
    parts = []
    for row in results_table(runs):
        header = ["student network", "teacher network", *row["cells"]]
        cells = [row["student"], row["teacher"]] + [f"{c['mean']:.2f} ± {c['spread']:.2f} ({c['n']})" for c in row["cells"].values()]
        parts.append(_table(header, [cells], "results"))
    if not parts:
        return '<p class="note">No distillation runs among these runs, so no Table 1; see the runs below.</p>'
    return ("<p>Test error % of the last epoch, mean ± sample standard deviation over seeds (number of seeds), "
            "in the layout of Table 1 of Zagoruyko &amp; Komodakis (2017).</p>" + "".join(parts))


def _runs_section(runs: Sequence[RunRecord]) -> str:
    teachers = {r.teacher for r in runs if r.teacher}
    rows = []
    for run in runs:
        best = run.summary.get("best", {})
        rows.append([run_label(run, teachers), run.model, run.path.name, _pct(run.last_top1), _pct(best.get("top1")),
                     best.get("epoch", ""), f"{run.summary.get('train_time_s', 0):.0f}",
                     f"{run.summary.get('train_images_per_s') or 0:.0f}", f"{run.summary.get('precision')}"])
    return _table(["run", "model", "directory", "last top-1 %", "best top-1 %", "best epoch", "train s", "img/s", "precision"],
                  rows, "runs")


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _maps_section(runs: Sequence[RunRecord], out_dir: Path, methods: Sequence[str], images: int, device: str,
                  root: str | Path | None = None) -> str:
    from .maps import explain_runs

    chosen = representative_runs(runs)
    dataset = next(iter(chosen.values())).info.get("dataset")
    try:
        report = explain_runs([r.path for r in chosen.values()], out_dir / "maps", methods, data=dataset, count=images,
                              labels=list(chosen), device=device, max_rows=6, root=root)
    except (FileNotFoundError, ValueError, KeyError) as err:
        return f'<p class="note">No attention maps: {html.escape(str(err.args[0] if err.args else err))}</p>'
    figures = "".join(_img(path, f"{m} maps, models side by side") for m, path in report.comparisons.items())
    if not figures:  # a single run: its own figure of every method
        figures = "".join(_img(kinds["methods"], f"{label}: the maps of every method")
                          for label, kinds in report.figures.items() if "methods" in kinds)
    rows = []
    for label, by_method in report.metrics.items():
        for method, scores in by_method.items():
            rows.append([label, method, _score(scores.get("pointing_game")), _score(scores.get("energy_in_box")),
                         _score(scores.get("randomization_spearman")), scores.get("images", "")])
    table = _table(["model", "method", "pointing game ↑", "energy in box ↑", "randomisation ρ ↓", "images"], rows, "map-metrics")
    return (f"<p>The teacher and the lowest-seed student of each method on {images} test images of {html.escape(str(dataset))} "
            "(maps for the true class; the box is the object's ground truth where the data set has one).</p>"
            + figures + "<h3>How well the maps find the object</h3>"
            "<p>Pointing game: share of images whose map maximum lies inside the box. Energy in box: mean share of "
            "the map's positive mass inside the box. Randomisation ρ: Spearman correlation between the maps of the "
            "trained model and of the same model with re-initialised weights (Adebayo et al. 2018): a map that does "
            "not change explains nothing, so lower is better.</p>" + table)


def _score(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _config_section(runs: Sequence[RunRecord]) -> str:
    teachers = {r.teacher for r in runs if r.teacher}
    parts = []
    for run in runs:
        text = yaml.safe_dump(run.config, sort_keys=False)
        versions = ", ".join(f"{k} {v}" for k, v in run.info.get("versions", {}).items())
        parts.append(f"<details><summary>{html.escape(run_label(run, teachers))}: {html.escape(str(run.path))}</summary>"
                     f"<p class=\"note\">versions: {html.escape(versions)}</p><pre>{html.escape(text)}</pre></details>")
    return "".join(parts)


def write_report(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    methods: Sequence[str] = ("activation", "gradcam"),
    images: int = 200,
    maps: bool = True,
    device: str = "cpu",
    title: str = "attnkit experiment report",
    root: str | Path | None = None,
) -> Path:
    """Write ``out_dir/index.html`` (and its PNGs) about the finished runs in ``run_dirs``; returns the page's path.

    Args:
        run_dirs: run directories (teachers and students).
        out_dir: where the page goes (created).
        methods: attention-map methods compared (``attnkit.explain.METHODS``).
        images: test images the map metrics are computed on (6 of them are shown).
        maps: compute the attention maps and their metrics (needs the runs' data set on this machine).
        device: where the maps are computed.
        title: the page's title.
        root: the data directory of the maps' images, when it is no longer where the runs recorded it (a moved
            image folder: the runs' ``data.root``).
    """
    runs = sorted_runs(load_runs(run_dirs))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = plot_curves(runs, out_dir / "curves.png")
    info = runs[0].info
    sections = [
        ("Results", _results_section(runs)),
        ("Runs", _runs_section(runs)),
        ("Training curves", _img(curves, "training loss and test accuracy per epoch")),
    ]
    if maps:
        sections.append(("Where the models look", _maps_section(runs, out_dir, methods, images, device, root)))
    sections.append(("Configuration and versions", _config_section(runs)))
    body = "".join(f"<h2>{html.escape(name)}</h2>{content}" for name, content in sections)
    page = (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p class=\"note\">{len(runs)} runs on {html.escape(str(info.get('dataset', '?')))}; written "
            f"{datetime.now():%Y-%m-%d %H:%M} on {html.escape(platform.node() or 'this machine')} "
            f"({html.escape(platform.processor() or platform.machine())}).</p>{body}</body></html>")
    path = out_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
