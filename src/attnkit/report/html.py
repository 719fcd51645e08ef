"""``attnkit report RUN_DIR...``: one self-contained HTML page about finished runs.

The page holds the results table (Table 1 layout: test error %, mean and spread over seeds), every run's error,
training curves (:mod:`.figures`), the attention maps of the teacher and of one student per method side by side
(computed with :mod:`attnkit.explain` on the runs' own test images), the maps' metrics (pointing game and energy
inside the box where the data has boxes, faithfulness, a model-randomisation sanity check) and each run's
config and library versions. Pictures are embedded (base64 PNG), so ``index.html`` can be mailed or archived
alone; the PNG files are also written beside it.
"""

from __future__ import annotations

import base64
import html
import platform
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from ..explain.maps import METRIC_COLUMNS
from ..validation import check_int
from .figures import CURVES_CAPTION, plot_curves
from .results import (
    RunRecord,
    format_cell,
    load_runs,
    method_rank,
    results_table,
    run_group,
    teacher_keys,
    usual_seeds,
)

__all__ = ["MAX_ROWS", "plot_curves", "representative_runs", "sorted_runs", "write_report"]

MAX_ROWS = 6  # images shown in each map figure (the metrics use more)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.92rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: right; white-space: nowrap; }
th { white-space: normal; word-break: keep-all; overflow-wrap: normal; }  /* headers wrap between words only */
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
th.over { text-align: center; font-weight: normal; font-style: italic; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
figure { margin: 1rem 0; } figcaption { color: #555; font-size: 0.9rem; }
pre { background: #f7f7f7; padding: 0.6rem; overflow-x: auto; font-size: 0.8rem; }
summary { overflow-wrap: anywhere; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.2rem 1rem; font-size: 0.92rem; }
dt { font-weight: 600; white-space: nowrap; } dd { margin: 0; }
.note { color: #555; font-size: 0.9rem; }
"""

# The map metrics the page explains, by their key in attnkit.explain.metrics.evaluate: (column name, meaning);
# METRIC_COLUMNS gives their order and whether higher (+) or lower (-) is better.
_METRICS = {
    "pointing_game": ("pointing game", "share of images whose map maximum lies inside the object's box"),
    "energy_in_box": ("energy in box", "mean share of the map's positive mass inside the box"),
    "deletion": ("deletion AUC", "area under the class probability while the pixels the map ranks first are "
                 "deleted (Petsiuk et al. 2018): a faithful map makes it fall fast"),
    "insertion": ("insertion AUC", "area under the class probability while those pixels are put back into a "
                  "blurred image: a faithful map makes it rise fast"),
    "average_drop": ("average drop", "relative drop of the class probability when the image is seen through the "
                     "map (Chattopadhay et al. 2018; a fraction, the paper reports it x 100)"),
    "increase_in_confidence": ("increase in confidence", "share of images whose class probability rises when seen "
                               "through the map"),
    "road_morf": ("ROAD MoRF", "mean class probability with the 10..90% most relevant pixels imputed away "
                  "(Rong et al. 2022)"),
    "road_lerf": ("ROAD LeRF", "the same with the least relevant pixels imputed away"),
    "randomization_spearman": ("randomisation ρ", "Spearman correlation between the maps of the trained model "
                               "and of the same model with re-initialised weights (Adebayo et al. 2018): a map "
                               "that does not change explains nothing"),
}
_FAITHFUL = ("deletion", "insertion", "average_drop", "increase_in_confidence", "road_morf", "road_lerf")


def run_label(run: RunRecord, teachers: set[str]) -> str:
    """How a run is named on the page: "teacher (model)" or "<method> seed <s>"."""
    if run.key in teachers:
        return f"teacher ({run.model})"
    return f"{run.method} seed {run.seed}"


def _order(run: RunRecord, teachers: set[str]) -> tuple[Any, ...]:
    """Teachers first, then the methods in the column order of the results table, then by seed."""
    if run.key in teachers:
        return (-1, run.model, run.seed)
    return (*method_rank(run.method), run.seed)


def sorted_runs(runs: Sequence[RunRecord]) -> list[RunRecord]:
    teachers = teacher_keys(runs)
    return sorted(runs, key=lambda r: _order(r, teachers))


def representative_runs(runs: Sequence[RunRecord]) -> dict[str, RunRecord]:
    """The runs whose maps are compared: each teacher, then the lowest-seed run of every method, in table order."""
    teachers = teacher_keys(runs)
    chosen: dict[str, RunRecord] = {}
    for run in sorted_runs(runs):
        label = run_group(run, teachers)
        if label == "teacher" and len(teachers) > 1:
            label = f"teacher {run.model}"
        chosen.setdefault(label, run)
    return chosen


def _img(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], css_id: str = "",
           over: tuple[int, int, str] | None = None) -> str:
    """A table in a horizontally scrolling box (cells do not wrap, headers only between words); ``over`` =
    (first column, columns, title): a header above those columns, e.g. their unit."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    if over:
        first, span, title = over
        rest = len(header) - first - span
        head = ((f'<th colspan="{first}"></th>' if first else "")
                + f'<th class="over" colspan="{span}">{html.escape(title)}</th>'
                + (f'<th colspan="{rest}"></th>' if rest else "") + f"</tr><tr>{head}")
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    ident = f' id="{css_id}"' if css_id else ""
    return f'<div class="scroll"><table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _results_section(runs: Sequence[RunRecord]) -> str:
    parts, counts = [], set()
    for row in results_table(runs):
        usual = usual_seeds(row["cells"].values())
        counts.add(usual)
        cells = [row["student"], row["teacher"]] + [format_cell(c, seeds=c["n"] != usual) for c in row["cells"].values()]
        over = "test error % (last epoch)" + (f", mean ± std over {usual} seeds" if usual > 1 else "")
        parts.append(_table(["student network", "teacher network", *row["cells"]], [cells], "results",
                            over=(2, len(row["cells"]), over)))
    if not parts:
        return '<p class="note">No distillation runs among these runs, so no Table 1; see the runs below.</p>'
    spread = (" Several seeds: mean ± sample standard deviation (the number of seeds above the methods; a cell over "
              "another number says so); one seed: its value." if counts - {1} else "")
    return ("<p>Test error % of the last epoch (lower is better), in the layout of Table 1 of Zagoruyko &amp; "
            f"Komodakis (2017).{spread}</p>" + "".join(parts))


def _runs_section(runs: Sequence[RunRecord]) -> str:
    teachers = teacher_keys(runs)
    rows = []
    for run in runs:
        best = run.summary.get("best", {})
        rows.append([run_label(run, teachers), run.model, run.path.name, _error(run.last_top1), _error(best.get("top1")),
                     best.get("epoch", ""), f"{run.summary.get('train_time_s', 0):.0f}",
                     f"{run.summary.get('train_images_per_s') or 0:.0f}", f"{run.summary.get('precision')}"])
    header = ["run", "model", "directory", "last epoch", "best", "best epoch", "train s", "img/s", "precision"]
    return _table(header, rows, "runs", over=(3, 2, "test error %")) if rows else ""


def _error(top1: float | None) -> str:
    """Test error % from top-1 accuracy %, the unit of every table on the page."""
    return "" if top1 is None else f"{100.0 - top1:.2f}"


def _maps_section(runs: Sequence[RunRecord], out_dir: Path, methods: Sequence[str], images: int,
                  faithful_images: int, device: str, root: str | Path | None = None) -> str:
    from .maps import explain_runs

    chosen = representative_runs(runs)
    dataset = next(iter(chosen.values())).info.get("dataset")
    paths, labels = [r.path for r in chosen.values()], list(chosen)
    try:
        report = explain_runs(paths, out_dir / "maps", methods, data=dataset, count=images, labels=labels,
                              device=device, max_rows=MAX_ROWS, root=root, faithful=faithful_images > 0,
                              faithful_count=faithful_images)
    except (FileNotFoundError, ValueError, KeyError) as err:
        return f'<p class="note">No attention maps: {html.escape(str(err.args[0] if err.args else err))}</p>'
    figures = "".join(_img(path, f"{m} maps, models side by side") for m, path in report.comparisons.items())
    if not figures:  # a single run: its own figure of every method
        figures = "".join(_img(kinds["methods"], f"{label}: the maps of every method")
                          for label, kinds in report.figures.items() if "methods" in kinds)
    scores = report.metrics
    computed, faithful_count = _count(scores, "images"), _count(scores, "faithful_images")
    return (_maps_intro(dataset, images, computed, scores) + figures
            + "<h3>Map metrics</h3>" + _metrics_text(scores, computed, faithful_count) + _metrics_table(scores))


def _count(metrics: Mapping[str, Mapping[str, Mapping[str, Any]]], key: str) -> int:
    """How many images the metrics were computed on (``images``; ``faithful_images``: the faithfulness metrics)."""
    return max((int(s.get(key, 0)) for by_method in metrics.values() for s in by_method.values()), default=0)


def _maps_intro(dataset: Any, asked: int, computed: int, metrics: Mapping[str, Any]) -> str:
    boxed = any("pointing_game" in s for by_method in metrics.values() for s in by_method.values())
    where = f"{computed} test images of {html.escape(str(dataset))}, evenly spaced through its test split"
    if computed < asked:
        where = f"all {computed} test images of {html.escape(str(dataset))} ({asked} were asked for)"
    shown = min(MAX_ROWS, computed)
    box = "; the outlined box is the object's ground truth" if boxed else ""
    return (f"<p>The maps of the teacher and of the lowest-seed student of each method, for the true class, were "
            f"computed on {where}; each figure shows {shown} of them (rows: the true label and each model's "
            f"prediction{box}).</p>")


def _metrics_text(scores: Mapping[str, Mapping[str, Mapping[str, Any]]], computed: int, faithful_count: int) -> str:
    present = _present(scores)
    keys = [key for key, _ in present]
    other = [_METRICS[key][0] for key in keys if key not in _FAITHFUL]
    counts = [f"{', '.join(other)} on the {computed} images above"] if other else []
    if any(key in _FAITHFUL for key in keys):
        counts.append(f"the faithfulness metrics on {faithful_count} of these images, evenly spaced (they cost about 60 "
                      "forward passes per image, method and model)")
    if "pointing_game" not in keys:
        counts.append("no pointing game or energy in the box: the data set has no object boxes")
    items = "".join(f"<dt>{html.escape(_title(k, t))}</dt><dd>{html.escape(_METRICS[k][1])}.</dd>" for k, t in present)
    return f"<p>Computed: {html.escape('; '.join(counts))}. ↑ higher is better, ↓ lower is better.</p><dl>{items}</dl>"


def _present(scores: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[tuple[str, str]]:
    """(key, METRIC_COLUMNS title) of the metrics some model has, in METRIC_COLUMNS order."""
    return [(key, title) for key, title in METRIC_COLUMNS if key in _METRICS
            and any(key in s for by_method in scores.values() for s in by_method.values())]


def _title(key: str, columns_title: str) -> str:
    return f"{_METRICS[key][0]}\u00a0{'↑' if columns_title.endswith('+') else '↓'}"  # the arrow stays on its line


def _metrics_table(scores: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    present = _present(scores)
    rows = [[label, method, *(_score(s.get(key)) for key, _ in present)]
            for label, by_method in scores.items() for method, s in by_method.items()]
    return _table(["model", "method", *(_title(k, t) for k, t in present)], rows, "map-metrics")


def _score(value: float | None) -> str:
    return "" if value is None or value != value else f"{value:.3f}"  # NaN: undefined (e.g. constant maps)


def _config_section(runs: Sequence[RunRecord]) -> str:
    teachers = teacher_keys(runs)
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
    faithful_images: int = 16,
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
        images: test images the map metrics are computed on (at most the test split; ``MAX_ROWS`` are shown).
        faithful_images: how many of those images the faithfulness metrics are computed on (0: none); fewer
            because they cost about 60 forward passes and 18 sparse solves per image, method and model.
        maps: compute the attention maps and their metrics (needs the runs' data set on this machine).
        device: where the maps are computed.
        title: the page's title.
        root: the data directory of the maps' images, when it is no longer where the runs recorded it (a moved
            image folder: the runs' ``data.root``).
    """
    check_int("images", images, minimum=1)
    check_int("faithful_images", faithful_images, minimum=0)
    runs = sorted_runs(load_runs(run_dirs))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = plot_curves(runs, out_dir / "curves.png")
    info = runs[0].info
    sections = [
        ("Results", _results_section(runs)),
        ("Runs", _runs_section(runs)),
        ("Training curves", _img(curves, CURVES_CAPTION)),
    ]
    if maps:
        sections.append(("Where the models look", _maps_section(runs, out_dir, methods, images, faithful_images,
                                                                device, root)))
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
