"""The report's training curves: each run's training loss and test error per epoch.

Colour tells the method (the teacher has its own), line style the seed; two legends, outside the axes, say so.
The error axis is in the unit of the report's tables (test error %, as Table 1 of Zagoruyko & Komodakis 2017).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

from .results import RunRecord, method_rank, run_group, teacher_keys  # noqa: E402

__all__ = ["CURVES_CAPTION", "curves_figure", "plot_curves"]

# Line styles of the seeds, in the order of the seeds present; more seeds than styles reuse them with markers.
_STYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))
_MARKERS = ("o", "s", "^", "D", "v", "P")

# The page's figure width is 1100 px: 11 x 4.2 inches at 100 dpi is drawn at its own size, text at 10-11 pt.
_SIZE, _DPI = (11.0, 4.2), 100

CURVES_CAPTION = ("Colour: method; line style: seed (legends on the right). Training loss is each run's whole "
                  "objective, the cross-entropy plus its transfer terms (AT, KD, ...), so its level differs between "
                  "methods; where it spans more than a factor of 10 it is drawn on a log scale (the axis says so). "
                  "Test error % is the unit of the tables above.")


def curves_figure(runs: Sequence[RunRecord]) -> Figure:
    """Training loss (log scale where it spans more than a factor of 10) and test error % per epoch, one line per
    run (colour = method, style = seed), with a legend of each outside the axes."""
    teachers = teacher_keys(runs)
    groups = sorted({run_group(r, teachers) for r in runs}, key=method_rank)
    colours = {group: plt.get_cmap("tab10")(i % 10) for i, group in enumerate(groups)}
    seeds = sorted({r.seed for r in runs})
    style = {seed: (_STYLES[i % len(_STYLES)], _MARKERS[i % len(_MARKERS)]) for i, seed in enumerate(seeds)}
    figure, (loss_ax, error_ax) = plt.subplots(1, 2, figsize=_SIZE, dpi=_DPI, layout="constrained")
    for run in runs:
        line, marker = style[run.seed]
        group = run_group(run, teachers)
        common = dict(color=colours[group], linestyle=line, marker=marker, markersize=4, linewidth=1.6,
                      zorder=3 if group == "teacher" else 2)  # the reference stays visible over the students
        epochs = [m["epoch"] for m in run.metrics]
        loss_ax.plot(epochs, [m["train"]["loss"] for m in run.metrics], **common)
        tested = [m for m in run.metrics if "test" in m]
        error_ax.plot([m["epoch"] for m in tested], [100.0 - m["test"]["top1"] for m in tested], **common)
    losses = [m["train"]["loss"] for r in runs for m in r.metrics if m["train"]["loss"] > 0]
    if losses and max(losses) > 10 * min(losses):  # methods' objectives differ by orders of magnitude: log scale
        loss_ax.set(yscale="log", ylabel="training loss (log scale)")
        loss_ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
        loss_ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))  # 0.2, 0.5, 1, 2 rather than 2 x 10^-1
        loss_ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        loss_ax.set(ylabel="training loss")
    loss_ax.set(title="training loss", xlabel="epoch")
    error_ax.set(title="test error", xlabel="epoch", ylabel="test error %")  # own range: differences of 0.5% show
    for ax in (loss_ax, error_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    method_handles = [Line2D([], [], color=colours[g], linewidth=3, label=g) for g in groups]
    seed_handles = [Line2D([], [], color="0.25", linestyle=style[s][0], marker=style[s][1], markersize=4,
                           label=f"seed {s}") for s in seeds]
    figure.legend(handles=method_handles, title="method (colour)", loc="outside right upper", fontsize=10)
    figure.legend(handles=seed_handles, title="seed (line style)", loc="outside right lower", fontsize=10)
    return figure


def plot_curves(runs: Sequence[RunRecord], path: Path) -> Path:
    """Draw :func:`curves_figure` into ``path`` (PNG); returns the path."""
    figure = curves_figure(runs)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
