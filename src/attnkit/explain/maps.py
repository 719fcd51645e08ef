"""Run attention-map methods on one or several models and write their figures and metrics (``attnkit maps``).

:func:`explain_models` is the whole job: bind each named method to each model, compute the maps once, draw

* ``methods.png``: images x methods, per model;
* ``<method>_layers.png``: images x layers, for the layered methods (activation maps at every
  ``feature_info`` point, the model's own attention at every level / module);
* ``compare_<method>.png``: images x models, when several models are given (teacher / student / student
  with AT side by side, the attention-transfer paper's Fig. 1 idea);

and write ``metrics.json`` (per model and method: pointing game and energy in the box where boxes are known,
and the model-randomisation correlation). With one model the figures go to ``out_dir`` itself, with several
to ``out_dir/<model label>/`` (compare figures in ``out_dir``). Figures show ``max_rows`` of the images, evenly
spaced through them; the metrics use them all.

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
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor, nn

from ..features import eval_mode
from . import create_method
from ._base import AttentionMethod, Target, check_images, resolve_target
from .activation import ActivationMap
from .metrics import evaluate
from .model_attention import ModelAttention
from .render import map_grid, save_figure

__all__ = [
    "IMAGE_SUFFIXES",
    "LoadedImages",
    "MapsReport",
    "dataset_images",
    "evenly_spaced",
    "explain_models",
    "explain_runs",
    "format_metrics",
    "image_files",
    "load_run_models",
    "read_images",
]

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


def evenly_spaced(total: int, count: int) -> Tensor:
    """``min(count, total)`` sorted indices spread evenly over ``range(total)``, first and last included.

    >>> evenly_spaced(10, 4).tolist()
    [0, 3, 6, 9]
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive int, got {count!r}")
    return torch.linspace(0, total - 1, min(count, total)).round().long().unique()


def _normalised(pixels: Tensor, mean: Sequence[float], std: Sequence[float], name: str) -> Tensor:
    """(N, C, H, W) uint8 -> float32 (x / 255 - mean) / std, through the data loader's own evaluation path."""
    from ..data import DeviceLoader, ImageTensors

    count = pixels.shape[0]
    data = ImageTensors(pixels, torch.zeros(count, dtype=torch.long), ["?"], tuple(mean), tuple(std), name)
    images, _ = next(DeviceLoader(data, batch_size=count, train=False).epoch_batches(0))
    return images


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
        try:
            image = Image.open(file)
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"cannot read {file} as an image ({err}); pass image files or directories of them") from None
        with image:
            image = image.convert("L" if channels == 1 else "RGB")
            image = ImageOps.fit(image, (width, height), method=Image.Resampling.BICUBIC)
            arrays.append(np.asarray(image, dtype=np.uint8).reshape(height, width, channels))
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (N, H, W, C) -> (N, C, H, W)
    return LoadedImages(_normalised(pixels, mean, std, "images"), list(mean), list(std), names=[f.name for f in files])


def dataset_images(
    name: str, count: int, root: str | Path | None = None, split: str = "test", download: bool = False
) -> LoadedImages:
    """``count`` images of a data set's ``split`` (``attnkit.data.load_dataset``), evenly spaced through it,
    normalised with the data set's own mean/std as its evaluation loader does, with labels, class names and
    object boxes (cluttered-mnist has boxes).

    Evenly spaced rather than the first ``count``: some splits are sorted by class (mnist5k and cluttered-mnist
    are), and their first images would all show one digit.
    """
    from ..data import ImageTensors, load_dataset

    data = load_dataset(name, split=split, root=root, download=download)
    if not isinstance(data, ImageTensors):
        raise ValueError(f"data set {name!r} streams its images from files; pass the files with --images instead")
    index = evenly_spaced(len(data), count)
    return LoadedImages(
        _normalised(data.images[index], data.mean, data.std, data.name), list(data.mean), list(data.std),
        labels=data.labels[index], boxes=None if data.boxes is None else data.boxes[index],
        classes=list(data.classes), names=[f"{split}[{i}]" for i in index.tolist()],
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
        method_options: {method name: constructor keyword arguments}, e.g. {"activation": {"p": 4}}.
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

    figures: list[Path] = []
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    maps: dict[str, dict[str, Tensor]] = {}  # method -> model label -> (N, H, W)
    for label, model_methods in bound.items():
        model_maps = {name: method.attribute(images, target, batch_size=batch_size) for name, method in model_methods.items()}
        for name, method_maps in model_maps.items():
            maps.setdefault(name, {})[label] = method_maps
        folder = out_dir if len(models) == 1 else out_dir / _file_label(label)
        figures += _model_figures(label, model_methods, model_maps, shown, folder)
        metrics[label] = evaluate(model_methods, images, boxes, target, sanity=sanity, maps=model_maps, batch_size=batch_size)
    if len(models) > 1:
        figures += _comparison_figures(maps, shown, out_dir)

    payload = {
        "images": int(images.shape[0]),
        "target": _describe_target(target),
        "methods": list(methods),
        "metrics": _json_safe(metrics),
        "skipped": {label: reasons for label, reasons in skipped.items() if reasons},
        "figures": [str(path.relative_to(out_dir)) for path in figures],
        **(details or {}),
    }
    metrics_path = out_dir / "metrics.json"
    metrics_path.write_text(json.dumps(payload, indent=2) + "\n")
    return MapsReport(figures, metrics, {k: v for k, v in skipped.items() if v}, metrics_path)


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
        rows = evenly_spaced(images.shape[0], max_rows)
        shown = images[rows]
        return cls(rows, shown, None if labels is None else labels[rows.to(labels.device)], classes,
                   {label: _predictions(model, shown) for label, model in models.items()},
                   dict(mean=mean, std=std, boxes=None if boxes is None else boxes[rows.to(boxes.device)]))

    def figure(self, columns: dict[str, Tensor], title: str, models: Sequence[str]):
        row_text = _row_labels(self.labels, self.classes, {label: self.predictions[label] for label in models})
        return map_grid(self.images, columns, title=title, row_labels=row_text, **self.grid)


def _model_figures(label: str, methods: Mapping[str, AttentionMethod], maps: Mapping[str, Tensor], shown: _Shown,
                   folder: Path) -> list[Path]:
    """One model: its maps by method, and by layer (or attention level) for the layered methods."""
    figures = []
    if maps:
        columns = {name: m[shown.rows] for name, m in maps.items()}
        figures.append(save_figure(shown.figure(columns, f"{label}: attention maps", [label]), folder / "methods.png"))
    for name, method in methods.items():
        if isinstance(method, (ActivationMap, ModelAttention)):
            # Raw maps, titled with their resolution; the figure resizes them (resize_map) like attribute does.
            layers = method.attribute_layers(shown.images, upsample=False)
            if len(layers) > 1:
                columns = {f"{layer} ({m.shape[1]}x{m.shape[2]})": m for layer, m in layers.items()}
                what = "own attention by level" if name == "model" else f"{name} maps by layer"
                figures.append(save_figure(shown.figure(columns, f"{label}: {what}", [label]), folder / f"{name}_layers.png"))
    return figures


def _comparison_figures(maps: Mapping[str, Mapping[str, Tensor]], shown: _Shown, out_dir: Path) -> list[Path]:
    """Per method, the models side by side (the paper's Fig. 1 idea)."""
    figures = []
    for name, by_model in maps.items():
        if len(by_model) > 1:
            columns = {label: m[shown.rows] for label, m in by_model.items()}
            figure = shown.figure(columns, f"{name}: models side by side", list(by_model))
            figures.append(save_figure(figure, out_dir / f"compare_{_file_label(name)}.png"))
    return figures


def load_run_models(
    paths: Sequence[str | Path], weights: str = "final", device: str | torch.device = "cpu",
    labels: Sequence[str] | None = None,
) -> tuple[dict[str, nn.Module], dict]:
    """Load the models of run directories (or attnkit ``.safetensors`` files) with ``attnkit.engine.load_model``.

    Returns ({label: model in eval mode}, the first run's information: data set, classes, input size, mean, std).
    Labels default to the directory (or file) names. Runs compared side by side must share their input size and
    normalisation, since they are shown the same images.
    """
    from ..engine import load_model, load_run_info

    if not paths:
        raise ValueError("no run given; pass at least one run directory")
    labels = list(labels) if labels else [Path(p).stem if Path(p).is_file() else Path(p).name for p in paths]
    if len(labels) != len(paths):
        raise ValueError(f"got {len(labels)} labels for {len(paths)} runs; give one label per run")
    if len(set(labels)) != len(labels):
        raise ValueError(f"run labels must differ, got {labels}; name them with --labels")
    infos = [load_run_info(p, weights) for p in paths]
    first = infos[0]
    for path, info in zip(paths[1:], infos[1:]):
        for key in ("input_size", "mean", "std"):
            if info.get(key) != first.get(key):
                raise ValueError(
                    f"{path} was trained with {key} {info.get(key)} but {paths[0]} with {first.get(key)}; "
                    "runs compared side by side must see the same images"
                )
    models = {label: load_model(path, device, weights) for label, path in zip(labels, paths)}
    return models, first


def explain_runs(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    methods: Sequence[str],
    *,
    images: Sequence[str | Path] | None = None,
    data: str | None = None,
    count: int = 8,
    root: str | Path | None = None,
    labels: Sequence[str] | None = None,
    weights: str = "final",
    device: str = "cpu",
    target: str | int | None = None,
    sanity: bool = True,
    max_rows: int = 8,
    batch_size: int | None = None,
) -> MapsReport:
    """``attnkit maps``: maps of one run (or several side by side) on image files or a data set's test images.

    Args:
        paths: run directories (or attnkit ``.safetensors`` files); several = a side-by-side comparison.
        out_dir: where the figures and ``metrics.json`` go.
        methods: method names (``attnkit.explain.METHODS``).
        images: image files or directories, read with :func:`read_images` at the run's training input size
            (``run.json``'s ``input_size``, else the model's ``default_input_size``) and normalised with the run's
            mean/std.
        data: instead of ``images``, a data set name: ``count`` test images (:func:`dataset_images`), with their
            labels and boxes (cluttered-mnist), normalised with the data set's mean/std.
        root: data directory for ``data``.
        labels: one label per run (default: the directory names).
        weights: ``final``, ``best`` or ``last``.
        device: ``auto``, ``cpu``, ``cuda``...
        target: ``"label"`` (the true class; needs ``data``), ``"predicted"``, or a class index;
            None = ``"label"`` when labels are known, else ``"predicted"``.
        sanity, max_rows, batch_size: as in :func:`explain_models`.
    """
    from ..engine.runtime import resolve_device

    if (images is None) == (data is None):
        given = "both" if images is not None else "neither"
        raise ValueError(f"give image files (images=...) or a data set name (data=...): got {given}")
    dev = resolve_device(device)
    models, info = load_run_models(paths, weights, dev, labels)
    first = next(iter(models.values()))
    if images is not None:
        size = tuple(info.get("input_size") or first.default_input_size)
        loaded = read_images(images, size, info["mean"], info["std"])
    else:
        loaded = dataset_images(data, count, root)
    channels = getattr(first, "default_input_size", (loaded.images.shape[1],))[0]
    if loaded.images.shape[1] != channels:
        raise ValueError(f"the images have {loaded.images.shape[1]} channels but the model takes {channels}")
    if target is None:
        target = "label" if loaded.labels is not None else "predicted"
    if target == "label":
        if loaded.labels is None:
            raise ValueError("target 'label' needs labelled images: use data=NAME, or target='predicted'")
        chosen: Target = loaded.labels.to(dev)
    elif target == "predicted":
        chosen = None
    elif isinstance(target, int) and not isinstance(target, bool):
        chosen = target
    else:
        raise ValueError(f"target must be 'label', 'predicted' or a class index, got {target!r}")
    details = {
        "target": target,
        "runs": {label: str(path) for label, path in zip(models, paths)},
        "weights": weights,
        "source": {"data": data} if data is not None else {"images": loaded.names},
    }
    return explain_models(
        models, loaded.images.to(dev), methods, out_dir, mean=loaded.mean, std=loaded.std, target=chosen,
        labels=loaded.labels, classes=loaded.classes or info.get("classes"), boxes=loaded.boxes, sanity=sanity,
        max_rows=max_rows, batch_size=batch_size, details=details,
    )


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
