"""``attnkit maps`` on saved runs: load run directories through the engine, read their images through the data
layer, and hand both to :func:`attnkit.explain.maps.explain_models`, which computes, draws and scores the maps.

* :func:`load_run_models`: run directories (or ``.safetensors`` files) -> {label: model}, plus the run's
  data information (input size, normalisation, classes).
* :func:`explain_runs`: the whole command: models, images (files through :func:`attnkit.data.read_images`, a
  data set's test images through :func:`attnkit.data.dataset_images`, or an image-folder run's own test images
  through :func:`folder_test_images`), targets, then ``explain_models``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..data import LoadedImages, dataset_images, evenly_spaced, read_images
from ..data.folder import EVAL_CROP_FRACTION
from ..explain import Target
from ..explain.maps import MapsReport, explain_models

__all__ = ["explain_runs", "folder_test_images", "load_run_models"]


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


def folder_test_images(path: str | Path, info: dict, count: int, root: str | Path | None = None) -> LoadedImages:
    """``count`` images of an image-folder run's test split, evenly spaced, as its evaluation sees them.

    The folder is the run's ``data.root`` (config.yaml) unless ``root`` is given; it is read with the decisions
    the run recorded (channels, held-out split, normalisation, memory or streaming) and batched by the run's
    evaluation loader, so the images are exactly those ``attnkit eval`` scores.
    """
    from ..engine import RunDir
    from ..engine.data_setup import load_splits, make_split_loader
    from ..engine.runtime import Distributed

    run_dir = RunDir(path)
    if not run_dir.file(RunDir.CONFIG).is_file():
        raise ValueError(f"{path} is not a run directory with a config.yaml, so its image folder is unknown; "
                         "pass the images with --images DIR")
    config = run_dir.config()
    config.data.name, config.data.root = "folder", str(root) if root is not None else config.data.root
    config.data.test_limit, config.data.image_size = None, (info.get("input_size") or [config.data.image_size])[-1]
    (test,) = load_splits(config, Distributed(), ("test",), recorded=info)
    index = evenly_spaced(len(test), count)
    loader = make_split_loader(test.subset(index), config, torch.device("cpu"), Distributed(), train=False)
    batches = list(loader.epoch_batches(0))
    names = [f"{file.parent.name}/{file.name}" for file, _ in test.subset(index).samples]
    return LoadedImages(torch.cat([x for x, _ in batches]), list(test.mean), list(test.std),
                        labels=torch.cat([y for _, y in batches]), classes=list(test.classes), names=names)


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
    faithful: bool = False,
    faithful_count: int | None = None,
    max_rows: int = 8,
    batch_size: int | None = None,
    method_options: dict[str, dict] | None = None,
) -> MapsReport:
    """``attnkit maps``: maps of one run (or several side by side) on image files or a data set's test images.

    Args:
        paths: run directories (or attnkit ``.safetensors`` files); several = a side-by-side comparison.
        out_dir: where the figures and ``metrics.json`` go.
        methods: method names (``attnkit.explain.METHODS``).
        images: image files or directories, read with :func:`attnkit.data.read_images` at the run's training input size
            (``run.json``'s ``input_size``, else the model's ``default_input_size``) and normalised with the run's
            mean/std.
        data: instead of ``images``, a data set name: ``count`` test images (:func:`attnkit.data.dataset_images`), with their
            labels and boxes (cluttered-mnist), normalised with the data set's mean/std; ``"folder"``: the first
            run's image folder (:func:`folder_test_images`).
        root: data directory for ``data`` (for ``"folder"``: default the run's ``data.root``).
        labels: one label per run (default: the directory names).
        weights: ``final``, ``best`` or ``last``.
        device: ``auto``, ``cpu``, ``cuda``...
        target: ``"label"`` (the true class; needs ``data``), ``"predicted"``, or a class index;
            None = ``"label"`` when labels are known, else ``"predicted"``.
        sanity, max_rows, batch_size, method_options: as in :func:`attnkit.explain.maps.explain_models`.
        faithful: also the faithfulness metrics (``attnkit maps`` turns them on; off by default here because the
            HTML report runs this on hundreds of images: about 60 forward passes and 18 sparse solves per image,
            method and model).
        faithful_count: with ``faithful``, score faithfulness on only this many of the images, evenly spaced
            through them (the HTML report's choice); each model's and method's scores then hold their number,
            ``faithful_images``.
    """
    models, info, loaded, chosen, dev = _inputs(paths, images, data, count, root, labels, weights, device, target)
    details = {
        "target": target if target is not None else ("label" if loaded.labels is not None else "predicted"),
        "runs": {label: str(path) for label, path in zip(models, paths)},
        "weights": weights,
        "source": {"data": data} if data is not None else {"images": loaded.names},
    }
    report = explain_models(
        models, loaded.images.to(dev), methods, out_dir, mean=loaded.mean, std=loaded.std, target=chosen,
        labels=loaded.labels, classes=loaded.classes or info.get("classes"), boxes=loaded.boxes, sanity=sanity,
        faithful=faithful and faithful_count is None, max_rows=max_rows, batch_size=batch_size, details=details,
        method_options=method_options,
    )
    if faithful and faithful_count is not None:
        _add_faithfulness(report, models, methods, loaded, chosen, dev, faithful_count, batch_size, method_options)
    return report


def _add_faithfulness(report: MapsReport, models, methods, loaded: LoadedImages, target, device, count: int,
                      batch_size, method_options) -> None:
    """Score faithfulness (:func:`attnkit.explain.metrics.evaluate`, no sanity check) on ``count`` of the images,
    evenly spaced through them, into ``report.metrics`` (with their number, ``faithful_images``) and its file."""
    import json

    from .._files import json_safe
    from ..explain import create_method
    from ..explain.metrics import evaluate

    index = evenly_spaced(loaded.images.shape[0], count)
    images = loaded.images[index].to(device)
    subset = target[index.to(target.device)] if isinstance(target, torch.Tensor) and target.ndim > 0 else target
    for label, model in models.items():
        bound = {name: create_method(name, model, **(method_options or {}).get(name, {}))
                 for name in methods if name in report.metrics[label]}  # those that apply to this model
        for name, scores in evaluate(bound, images, None, subset, sanity=False, faithful=True,
                                     batch_size=batch_size).items():
            scores["faithful_images"] = scores.pop("images")
            report.metrics[label][name].update(scores)
    payload = json.loads(report.metrics_path.read_text())
    payload["metrics"] = json_safe(report.metrics)
    report.metrics_path.write_text(json.dumps(payload, indent=2) + "\n")


def _inputs(paths, images, data, count, root, labels, weights, device, target):
    """The models of ``paths``, their images and the classes to explain, as :func:`explain_runs` documents them:
    ({label: model}, the first run's information, LoadedImages, target for ``explain_models``, the device)."""
    from ..engine.runtime import resolve_device

    if (images is None) == (data is None):
        given = "both" if images is not None else "neither"
        raise ValueError(f"give image files (images=...) or a data set name (data=...): got {given}")
    dev = resolve_device(device)
    models, info = load_run_models(paths, weights, dev, labels)
    first = next(iter(models.values()))
    if images is not None:
        size = tuple(info.get("input_size") or first.default_input_size)
        streamed = (info.get("folder") or {}).get("in_memory") is False  # as the run's evaluation reads its images
        loaded = read_images(images, size, info["mean"], info["std"], classes=info.get("classes"),
                             crop_fraction=EVAL_CROP_FRACTION if streamed else 1.0)
    elif data == "folder":
        loaded = folder_test_images(paths[0], info, count, root)
    else:
        loaded = dataset_images(data, count, root)
    channels = getattr(first, "default_input_size", (loaded.images.shape[1],))[0]
    if loaded.images.shape[1] != channels:
        raise ValueError(f"the images have {loaded.images.shape[1]} channels but the model takes {channels}")
    if target is None:
        target = "label" if loaded.labels is not None else "predicted"
    if target == "label":
        if loaded.labels is None:
            raise ValueError("target 'label' needs labelled images: use data=NAME, images in class sub-folders named "
                             "as the run's classes, or target='predicted'")
        chosen: Target = loaded.labels.to(dev)
    elif target == "predicted":
        chosen = None
    elif isinstance(target, int) and not isinstance(target, bool):
        chosen = target
    else:
        raise ValueError(f"target must be 'label', 'predicted' or a class index, got {target!r}")
    return models, info, loaded, chosen, dev
