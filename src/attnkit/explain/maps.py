"""Run attention-map methods on in-memory models and write their figures and metrics.

:func:`explain_models` is the whole job: bind each named method to each model, compute the maps once, draw

* ``methods.png``: images x methods, per model;
* ``<method>_layers.png``: images x layers, for the layered methods (activation maps at every
  ``feature_info`` point, the model's own attention at every level / module);
* ``compare_<method>.png``: images x models, when several models are given (teacher / student / student
  with AT side by side, the attention-transfer paper's Fig. 1 idea);

and write ``metrics.json`` (per model and method: pointing game and energy in the box where boxes are known,
the faithfulness metrics and the model-randomisation correlation, :func:`attnkit.explain.metrics.evaluate`).
With one model the figures go to ``out_dir`` itself, with several to ``out_dir/<model label>/`` (compare
figures in ``out_dir``); :class:`MapsReport` holds every path, keyed by model label and figure kind, so that
readers never rebuild file names. Figures show ``max_rows`` of the images, evenly spaced through them; the
metrics use them all. Reading images and saved runs is the caller's job (:mod:`attnkit.data.images`,
:mod:`attnkit.report.maps`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .._files import json_safe
from ..features import eval_mode
from ..validation import check_int
from . import create_method
from ._base import AttentionMethod, Target, check_images, resolve_target
from .activation import ActivationMap
from .metrics import evaluate
from .model_attention import ModelAttention
from .render import map_grid, save_figure

__all__ = ["METRIC_COLUMNS", "MapsReport", "explain_models", "format_metrics"]


def _spread(total: int, count: int) -> Tensor:
    """``min(count, total)`` sorted indices spread evenly over ``range(total)`` (as attnkit.data.evenly_spaced,
    which this package does not import)."""
    return torch.linspace(0, total - 1, min(count, total)).round().long().unique()


@dataclass
class MapsReport:
    """What :func:`explain_models` wrote and measured."""

    figures: dict[str, dict[str, Path]]  # model label -> {"methods": path, "<method>_layers": path, ...}
    comparisons: dict[str, Path]  # method -> its maps of every model side by side (with several models)
    metrics: dict[str, dict[str, dict[str, float]]]  # model label -> method -> scores (see metrics.evaluate)
    skipped: dict[str, dict[str, str]]  # model label -> method -> why it does not apply to that model
    metrics_path: Path

    def paths(self) -> list[Path]:
        """Every PNG written: each model's figures, then the comparisons."""
        return [path for kinds in self.figures.values() for path in kinds.values()] + list(self.comparisons.values())


def _file_label(label: str) -> str:
    """A model label as a folder name: "student+AT" -> "student_AT"."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "model"


def _method_file(name: str) -> str:
    """A method name in file names: "gradcam++" -> "gradcampp" (never the same as "gradcam")."""
    return _file_label(name.replace("+", "p"))


def _bind(models: Mapping[str, nn.Module], methods: Sequence[str], options: Mapping[str, dict]):
    bound: dict[str, dict[str, AttentionMethod]] = {}
    skipped: dict[str, dict[str, str]] = {}
    for label, model in models.items():
        bound[label], skipped[label] = {}, {}
        for name in methods:
            try:
                bound[label][name] = create_method(name, model, **options.get(name, {}))
            except (TypeError, ValueError) as err:  # the method does not apply to this model (e.g. CAM on LTPA)
                skipped[label][name] = str(err)
    return bound, skipped


def _row_labels(
    labels: Tensor | None, classes: Sequence[str] | None, predictions: Mapping[str, list[int]]
) -> list[str]:
    """One text per image: its true label (when known), then each model's prediction."""
    def name(index: int) -> str:
        return classes[index] if classes is not None and index < len(classes) else str(index)

    count = len(next(iter(predictions.values())))
    rows = [f"label {name(int(v))}" for v in labels] if labels is not None else [""] * count
    for model_label, predicted in predictions.items():
        prefix = "pred" if len(predictions) == 1 else model_label
        rows = [f"{row}\n{prefix}: {name(p)}".strip() for row, p in zip(rows, predicted)]
    return rows


def _predictions(model: nn.Module, images: Tensor) -> list[int]:
    with eval_mode(model):
        return resolve_target(model, images, None).tolist()


def explain_models(
    models: Mapping[str, nn.Module],
    images: Tensor,
    methods: Sequence[str],
    out_dir: str | Path,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    target: Target = None,
    labels: Tensor | None = None,
    classes: Sequence[str] | None = None,
    boxes: Tensor | None = None,
    sanity: bool = True,
    faithful: bool = True,
    method_options: Mapping[str, dict] | None = None,
    max_rows: int = 8,
    batch_size: int | None = None,
    details: Mapping[str, object] | None = None,
) -> MapsReport:
    """Compute every method's maps for every model, draw the figures and write ``metrics.json``.

    Args:
        models: {label: model}, e.g. {"teacher": t, "student": s, "student+AT": s_at}; all see ``images``.
        images: (N, C, H, W) normalised images.
        methods: registry names (``attnkit.explain.METHODS``); a method that does not apply to a model (CAM on
            LTPA, ``model`` on a WRN) is skipped for it and reported in ``skipped``.
        out_dir: where the PNGs and ``metrics.json`` go (created).
        mean, std: the images' normalisation (for display).
        target: classes to explain: None (each model's own prediction), an int, or one per image (e.g. labels).
        labels, classes: true labels and class names, written beside each row.
        boxes: (N, 4) object boxes: outlined in the figures and scored (pointing game, energy in the box).
        sanity: also run the model-randomisation check (one more map computation per method and model).
        faithful: also score the maps' faithfulness (deletion, insertion, average drop, increase in confidence,
            ROAD; about 60 forward passes per image, batched).
        method_options: {method name: constructor keyword arguments}, e.g. {"activation": {"p": 4}} (checked
            and built from CAM-wide options by :func:`attnkit.explain.options.method_options`); written into
            ``metrics.json``.
        max_rows: images shown per figure (evenly spaced through ``images``).
        batch_size: chunk size for the map computations.
        details: more entries for ``metrics.json`` (where the models and images came from).
    """
    images = check_images(images)
    if not models:
        raise ValueError("no models given; pass {label: model}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bound, skipped = _bind(models, methods, method_options or {})
    shown = _Shown.pick(models, images, boxes, labels, classes, mean, std, max_rows)

    figures: dict[str, dict[str, Path]] = {}
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    maps: dict[str, dict[str, Tensor]] = {}  # method -> model label -> (N, H, W)
    for label, model_methods in bound.items():
        model_maps = {name: method.attribute(images, target, batch_size=batch_size) for name, method in model_methods.items()}
        for name, method_maps in model_maps.items():
            maps.setdefault(name, {})[label] = method_maps
        folder = out_dir if len(models) == 1 else out_dir / _file_label(label)
        figures[label] = _model_figures(label, model_methods, model_maps, shown, folder)
        metrics[label] = evaluate(model_methods, images, boxes, target, sanity=sanity, faithful=faithful,
                                  maps=model_maps, batch_size=batch_size)
    comparisons = _comparison_figures(maps, shown, out_dir) if len(models) > 1 else {}

    report = MapsReport(figures, comparisons, metrics, {k: v for k, v in skipped.items() if v}, out_dir / "metrics.json")
    payload = {
        "images": int(images.shape[0]),
        "target": _describe_target(target),
        "methods": list(methods),
        "method_options": {name: dict(values) for name, values in (method_options or {}).items()},
        "metrics": json_safe(metrics),
        "skipped": report.skipped,
        "figures": [str(path.relative_to(out_dir)) for path in report.paths()],
        **(details or {}),
    }
    report.metrics_path.write_text(json.dumps(payload, indent=2) + "\n")
    return report


@dataclass
class _Shown:
    """The few images a figure shows (evenly spaced through the batch), with what is written beside them."""

    rows: Tensor  # (r,) indices into the batch
    images: Tensor  # (r, C, H, W)
    labels: Tensor | None
    classes: Sequence[str] | None
    predictions: dict[str, list[int]]  # model label -> predicted class per shown image
    grid: dict  # map_grid keyword arguments: mean, std, boxes

    @classmethod
    def pick(cls, models, images, boxes, labels, classes, mean, std, max_rows: int) -> _Shown:
        check_int("max_rows", max_rows, minimum=1)
        rows = _spread(images.shape[0], max_rows)
        shown = images[rows]
        return cls(rows, shown, None if labels is None else labels[rows.to(labels.device)], classes,
                   {label: _predictions(model, shown) for label, model in models.items()},
                   dict(mean=mean, std=std, boxes=None if boxes is None else boxes[rows.to(boxes.device)]))

    def figure(self, columns: dict[str, Tensor], title: str, models: Sequence[str]):
        row_text = _row_labels(self.labels, self.classes, {label: self.predictions[label] for label in models})
        return map_grid(self.images, columns, title=title, row_labels=row_text, **self.grid)


def _model_figures(label: str, methods: Mapping[str, AttentionMethod], maps: Mapping[str, Tensor], shown: _Shown,
                   folder: Path) -> dict[str, Path]:
    """One model: its maps by method ("methods"), and by layer or attention level ("<method>_layers")."""
    figures = {}
    if maps:
        columns = {name: m[shown.rows] for name, m in maps.items()}
        figures["methods"] = save_figure(shown.figure(columns, f"{label}: attention maps", [label]), folder / "methods.png")
    for name, method in methods.items():
        if isinstance(method, (ActivationMap, ModelAttention)):
            # Raw maps, titled with their resolution; the figure resizes them (resize_map) like attribute does.
            layers = method.attribute_layers(shown.images, upsample=False)
            if len(layers) > 1:
                columns = {f"{layer} ({m.shape[1]}x{m.shape[2]})": m for layer, m in layers.items()}
                what = "own attention by level" if name == "model" else f"{name} maps by layer"
                kind = f"{_method_file(name)}_layers"
                figures[kind] = save_figure(shown.figure(columns, f"{label}: {what}", [label]), folder / f"{kind}.png")
    return figures


def _comparison_figures(maps: Mapping[str, Mapping[str, Tensor]], shown: _Shown, out_dir: Path) -> dict[str, Path]:
    """Per method, the models side by side (the paper's Fig. 1 idea)."""
    figures = {}
    for name, by_model in maps.items():
        if len(by_model) > 1:
            columns = {label: m[shown.rows] for label, m in by_model.items()}
            figure = shown.figure(columns, f"{name}: models side by side", list(by_model))
            figures[name] = save_figure(figure, out_dir / f"compare_{_method_file(name)}.png")
    return figures


def _describe_target(target: Target) -> str | int | list[int]:
    if target is None:
        return "predicted"
    if isinstance(target, int):
        return target
    if callable(target) and not isinstance(target, Tensor):
        return f"function {getattr(target, '__name__', type(target).__name__)}"
    return torch.as_tensor(target).reshape(-1).tolist()


# (key in the scores, column title); the arrows say which way is better.
METRIC_COLUMNS = (
    ("pointing_game", "pointing+"), ("energy_in_box", "energy+"), ("deletion", "deletion-"),
    ("insertion", "insertion+"), ("average_drop", "avg.drop-"), ("increase_in_confidence", "incr.conf+"),
    ("road_morf", "road.morf-"), ("road_lerf", "road.lerf+"), ("randomization_spearman", "rand.corr-"),
)


def format_metrics(metrics: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """A plain-text table of :attr:`MapsReport.metrics`: one line per model and method, one column per metric
    that any of them has (+: higher is better, -: lower is better).

    >>> print(format_metrics({"student": {"gradcam": {"images": 8, "pointing_game": 0.75, "deletion": 0.2},
    ...                                   "activation": {"images": 8, "deletion": 0.31}}}))
    model    method      pointing+  deletion-
    student  gradcam         0.750      0.200
    student  activation          -      0.310
    """
    present = [(key, title) for key, title in METRIC_COLUMNS
               if any(key in scores for by_method in metrics.values() for scores in by_method.values())]
    header = ("model", "method", *(title for _, title in present))
    lines = [header]
    for label, by_method in metrics.items():
        for name, scores in by_method.items():
            values = [scores.get(key) for key, _ in present]
            lines.append((label, name, *("-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}" for v in values)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))).rstrip()
        for line in lines
    )
