"""Data sets and loaders of a run, from its ``data`` config section (see :mod:`attnkit.data`)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

from .config import ConfigError, RunConfig
from .runtime import Distributed

__all__ = ["build_loaders", "data_info", "load_splits", "make_split_loader", "take"]


def take(data: Any, limit: int | None) -> Any:
    """``limit`` examples of an in-memory data set (all of them for None), a fixed random subset in data order.

    Not simply the first ``limit``: several data sets are stored sorted by class (mnist5k, cluttered-mnist), and
    their first images are all zeros. The subset does not depend on the run's seed, so runs that differ only
    in their seed see the same images.
    """
    if limit is None or limit >= len(data.labels):
        return data
    index = torch.randperm(len(data.labels), generator=torch.Generator().manual_seed(0))[:limit].sort().values
    boxes = None if getattr(data, "boxes", None) is None else data.boxes[index]
    return dataclasses.replace(data, images=data.images[index], labels=data.labels[index], boxes=boxes)


def data_info(data: Any, name: str) -> dict[str, Any]:
    """What a trained model needs to know about its data: classes, input size, normalisation."""
    images = getattr(data, "images", None)
    input_size = list(images.shape[1:]) if images is not None else [3, data.image_size, data.image_size]
    return {"dataset": name, "num_classes": len(data.classes), "classes": list(data.classes), "in_chans": input_size[0],
            "input_size": input_size, "mean": list(data.mean), "std": list(data.std)}


def build_loaders(
    config: RunConfig, device: torch.device, dist: Distributed, train_loader: Any = None, test_loader: Any = None,
    channels_last: bool = False,
) -> tuple[Any, Any, dict[str, Any]]:
    """Train and test loaders (or the given ones) and the data information of :func:`data_info`."""
    d = config.data
    if train_loader is not None and test_loader is not None:
        # Loaders given by the caller: anything with len() and epoch_batches(epoch, start); their data
        # information comes from an `info` dict or from the `data` they wrap.
        info = getattr(train_loader, "info", None) or data_info(train_loader.data, d.name)
        return train_loader, test_loader, info
    if d.batch_size % dist.world_size:
        raise ConfigError("data.batch_size", f"{d.batch_size} is not divisible by the {dist.world_size} processes")
    train, test = load_splits(config, dist, ("train", "test"))
    train_loader = make_split_loader(train, config, device, dist, train=True, channels_last=channels_last)
    test_loader = make_split_loader(test, config, device, dist, train=False, channels_last=channels_last)
    return train_loader, test_loader, data_info(train, d.name)


def load_splits(config: RunConfig, dist: Distributed, splits: tuple[str, ...]) -> list[Any]:
    """The run's data set splits (downloaded once per file system if asked), limited as configured."""
    from .. import data as datasets  # imported here: the engine also runs on caller-made loaders

    d = config.data
    limits = {"train": d.train_limit, "test": d.test_limit}
    try:
        download = d.download
        if download and dist.enabled:
            _download_once(lambda: [datasets.load_dataset(d.name, s, root=d.root, download=True) for s in splits], dist)
            download = False
        return [take(datasets.load_dataset(d.name, s, root=d.root, download=download), limits[s]) for s in splits]
    except KeyError as err:
        raise ConfigError("data.name", err.args[0]) from None
    except FileNotFoundError as err:
        raise ConfigError("data.root", f"{err.args[0] if err.args else err}; pass data.download=true to fetch it") from None


def make_split_loader(
    data: Any, config: RunConfig, device: torch.device, dist: Distributed, train: bool, channels_last: bool = False
) -> Any:
    """The training loader (shuffled, augmented) or the evaluation loader of one split."""
    from .. import data as datasets

    d = config.data
    options = {"augment": d.augment, "flip": d.flip} if train else {}
    try:
        return datasets.make_loader(data, d.batch_size if train else d.eval_batch_size, train=train, device=device,
                                    seed=config.seed, rank=dist.rank, world_size=dist.world_size,
                                    channels_last=channels_last, **options, **_loader_options(data, d))
    except ValueError as err:
        raise ConfigError("data", err.args[0]) from None


def _download_once(fetch, dist: Distributed) -> None:
    """Fetch the data once per file system while the other ranks wait (ranks writing one .part file corrupt it).

    Global rank 0 downloads first; then the first rank of every other machine fetches whatever its machine still
    lacks (nothing, when the machines share the data directory).
    """
    if dist.is_main:
        fetch()
    dist.barrier()
    if int(os.environ.get("LOCAL_RANK", dist.rank)) == 0 and not dist.is_main:
        fetch()
    dist.barrier()


def _loader_options(data: Any, d: Any) -> dict[str, Any]:
    """The options each kind of loader takes: padding for in-memory sets, image size and workers for folders."""
    from ..data import ImageTensors

    if isinstance(data, ImageTensors):
        return {"pad": d.pad, "pad_mode": d.pad_mode}
    return {"image_size": d.image_size, "num_workers": d.workers}
