"""Run attention-map methods on one or several models and write their figures and metrics (``attnkit maps``).

:func:`explain_models` is the whole job: bind each named method to each model, compute the maps once, draw

* ``methods.png``: images x methods, per model;
* ``<method>_layers.png``: images x layers, for the layered methods (activation maps at every
  ``feature_info`` point, the model's own attention at every level / module);
* ``compare_<method>.png``: images x models, when several models are given (teacher / student / student
  with AT side by side, the attention-transfer paper's Fig. 1 idea);

and write ``metrics.json`` (per model and method: pointing game and energy in the box where boxes are known,
and the model-randomisation correlation). With one model the figures go to ``out_dir`` itself, with several
to ``out_dir/<model label>/`` (compare figures in ``out_dir``). Figures show the first ``max_rows`` images;
the metrics use them all.

Images come from :func:`read_images` (image files) or :func:`dataset_images` (a data set's test split).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor, nn

from ..features import eval_mode
from . import create_method
from ._base import AttentionMethod, Target, check_images, resolve_target
from .activation import ActivationMap
from .metrics import evaluate
from .model_attention import ModelAttention
from .render import map_grid, save_figure

__all__ = ["IMAGE_SUFFIXES", "LoadedImages", "MapsReport", "dataset_images", "explain_models", "format_metrics", "read_images"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class LoadedImages:
    """Normalised images with what is known about them."""

    images: Tensor  # (N, C, H, W) float32, normalised with mean/std
    mean: list[float]  # per-channel normalisation, 0..1 scale
    std: list[float]
    labels: Tensor | None = None  # (N,) int64 true classes, when known
    boxes: Tensor | None = None  # (N, 4) int64 object boxes x0, y0, x1, y1 (exclusive ends), when known
    classes: list[str] | None = None  # class names
    names: list[str] = field(default_factory=list)  # one name per image (file name or "test[i]")


def _normalise(pixels: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """(N, C, H, W) values in [0, 1] -> (x - mean) / std per channel."""
    mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
    if mean_t.shape[1] != pixels.shape[1] or std_t.shape[1] != pixels.shape[1]:
        raise ValueError(f"mean/std have {mean_t.shape[1]}/{std_t.shape[1]} values for {pixels.shape[1]} channels")
    return (pixels - mean_t) / std_t


def image_files(paths: Sequence[str | Path]) -> list[Path]:
    """Expand directories (their image files, sorted by name) and check that every file exists."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in directory {path}")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"no such image file or directory: {path}")
    return files


def read_images(
    paths: Sequence[str | Path], size: tuple[int, int, int], mean: Sequence[float], std: Sequence[float]
) -> LoadedImages:
    """Read image files with Pillow as the model expects them: (N, C, H, W) float32, normalised.

    ``size`` is (C, H, W), normally the model's ``default_input_size``: images are converted to grey (C = 1)
    or RGB (C = 3), cropped about their centre to the aspect ratio H:W (never stretched) and resized to H x W
    (bicubic), scaled to [0, 1] and normalised with the training data's ``mean`` / ``std``.
    """
    channels, height, width = size
    if channels not in (1, 3):
        raise ValueError(f"can read images for models with 1 or 3 input channels, not {channels}")
    files = image_files(paths)
    arrays = []
    for file in files:
        with Image.open(file) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            image = ImageOps.fit(image, (width, height), method=Image.Resampling.BICUBIC)
            arrays.append(np.asarray(image, dtype=np.float32).reshape(height, width, channels) / 255.0)
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    return LoadedImages(_normalise(pixels, mean, std), list(mean), list(std), names=[f.name for f in files])


def dataset_images(name: str, count: int, root: str | Path | None = None, split: str = "test") -> LoadedImages:
    """The first ``count`` images of a data set's ``split`` (``attnkit.data.load_dataset``), normalised with
    the data set's own mean/std, with their labels, class names and object boxes (cluttered-mnist)."""
    from ..data import load_dataset

    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive int, got {count!r}")
    data = load_dataset(name, split=split, root=root)
    if not hasattr(data, "images"):
        raise ValueError(f"data set {name!r} streams its images from files; pass them with --images instead")
    count = min(count, data.images.shape[0])
    pixels = data.images[:count].float() / 255.0  # uint8 (N, C, H, W) -> [0, 1]
    boxes = None if data.boxes is None else data.boxes[:count].long()
    return LoadedImages(
        _normalise(pixels, data.mean, data.std), list(data.mean), list(data.std),
        labels=data.labels[:count].long(), boxes=boxes, classes=list(data.classes),
        names=[f"{split}[{i}]" for i in range(count)],
    )


@dataclass
class MapsReport:
    """What :func:`explain_models` wrote and measured."""

    figures: list[Path]  # every PNG written
    metrics: dict[str, dict[str, dict[str, float]]]  # model label -> method -> scores (see metrics.evaluate)
    skipped: dict[str, dict[str, str]]  # model label -> method -> why it does not apply to that model
    metrics_path: Path


def _file_label(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "model"


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
    method_options: Mapping[str, dict] | None = None,
    max_rows: int = 8,
    batch_size: int | None = None,
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
        method_options: {method name: constructor keyword arguments}, e.g. {"activation": {"p": 4}}.
        max_rows: images shown per figure.
        batch_size: chunk size for the map computations.
    """
    images = check_images(images)
    if not models:
        raise ValueError("no models given; pass {label: model}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bound, skipped = _bind(models, methods, method_options or {})
    rows = min(max_rows, images.shape[0])
    shown = images[:rows]
    shown_boxes = None if boxes is None else boxes[:rows]
    shown_labels = None if labels is None else labels[:rows]
    predictions = {label: _predictions(model, shown) for label, model in models.items()}
    grid = dict(mean=mean, std=std, boxes=shown_boxes)

    figures: list[Path] = []
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    maps: dict[str, dict[str, Tensor]] = {}  # method -> model label -> (N, H, W)
    for label, model_methods in bound.items():
        folder = out_dir if len(models) == 1 else out_dir / _file_label(label)
        model_maps = {name: method.attribute(images, target, batch_size=batch_size) for name, method in model_methods.items()}
        for name, method_maps in model_maps.items():
            maps.setdefault(name, {})[label] = method_maps
        row_text = _row_labels(shown_labels, classes, {label: predictions[label]})
        if model_maps:
            columns = {name: m[:rows] for name, m in model_maps.items()}
            figure = map_grid(shown, columns, title=f"{label}: attention maps", row_labels=row_text, **grid)
            figures.append(save_figure(figure, folder / "methods.png"))
        for name, method in model_methods.items():
            if isinstance(method, (ActivationMap, ModelAttention)):
                # Raw maps, titled with their resolution; the figure resizes them (resize_map) like attribute does.
                layers = method.attribute_layers(shown, upsample=False)
                if len(layers) > 1:
                    columns = {f"{layer} ({m.shape[1]}x{m.shape[2]})": m for layer, m in layers.items()}
                    figure = map_grid(shown, columns, title=f"{label}: {name} maps by layer", row_labels=row_text, **grid)
                    figures.append(save_figure(figure, folder / f"{name}_layers.png"))
        metrics[label] = evaluate(model_methods, images, boxes, target, sanity=sanity, maps=model_maps, batch_size=batch_size)

    if len(models) > 1:
        for name, by_model in maps.items():
            if len(by_model) > 1:
                columns = {label: m[:rows] for label, m in by_model.items()}
                row_text = _row_labels(shown_labels, classes, {label: predictions[label] for label in by_model})
                figure = map_grid(shown, columns, title=f"{name}: models side by side", row_labels=row_text, **grid)
                figures.append(save_figure(figure, out_dir / f"compare_{_file_label(name)}.png"))

    metrics_path = out_dir / "metrics.json"
    payload = {
        "images": int(images.shape[0]),
        "target": _describe_target(target),
        "methods": list(methods),
        "metrics": _json_safe(metrics),
        "skipped": {label: reasons for label, reasons in skipped.items() if reasons},
        "figures": [str(path.relative_to(out_dir)) for path in figures],
    }
    metrics_path.write_text(json.dumps(payload, indent=2) + "\n")
    return MapsReport(figures, metrics, {k: v for k, v in skipped.items() if v}, metrics_path)


def _describe_target(target: Target) -> str | int | list[int]:
    if target is None:
        return "predicted"
    if isinstance(target, int):
        return target
    return torch.as_tensor(target).reshape(-1).tolist()


def _json_safe(value):
    """NaN (an undefined correlation) becomes null, so that the file is strict JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def format_metrics(metrics: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """A plain-text table of :attr:`MapsReport.metrics`: one line per model and method.

    >>> print(format_metrics({"student": {"gradcam": {"images": 8, "pointing_game": 0.75, "randomization_spearman": 0.1}}}))
    model    method   pointing  energy  rand.corr
    student  gradcam     0.750       -      0.100
    """
    header = ("model", "method", "pointing", "energy", "rand.corr")
    lines = [header]
    for label, by_method in metrics.items():
        for name, scores in by_method.items():
            values = [scores.get(key) for key in ("pointing_game", "energy_in_box", "randomization_spearman")]
            lines.append((label, name, *("-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}" for v in values)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))).rstrip()
        for line in lines
    )
