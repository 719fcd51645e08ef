"""Data sets and loaders of a run, from its ``data`` config section (see :mod:`attnkit.data`).

Set-up reads the data sets and their information first (:func:`load_data`), decides the memory format from
them and the model, and only then builds the loaders in that format (:func:`build_loaders`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .config import ConfigError, RunConfig
from .runtime import Distributed

__all__ = ["ChannelsLastBatches", "DataSource", "build_loaders", "data_info", "load_data", "load_splits",
           "make_split_loader", "take"]


@dataclass
class DataSource:
    """A run's data before its loaders exist: the splits (or the caller's loaders) and what the model must know."""

    info: dict[str, Any]  # data_info() of the training split: data set, classes, input size, normalisation
    train: Any = None  # the training split (an attnkit.data.DataSet), None when the caller gave loaders
    test: Any = None  # the test split
    train_loader: Any = None  # loaders given by the caller (anything with len() and epoch_batches(epoch, start))
    test_loader: Any = None


def take(data: Any, limit: int | None) -> Any:
    """:func:`attnkit.data.fixed_subset`: ``limit`` examples, the same for every seed (``data.train_limit``)."""
    from ..data import fixed_subset

    return fixed_subset(data, limit)


def data_info(data: Any, name: str, image_size: int | None = None) -> dict[str, Any]:
    """What a trained model needs to know about its data: classes, input size, normalisation.

    ``data`` is any :class:`attnkit.data.DataSet`; where its images differ in size (folders), ``image_size`` (the
    loader's crop) gives the input size.
    """
    input_size = data.input_size
    if input_size is None:
        if image_size is None:
            raise ValueError(f"the images of {name} differ in size; give the image_size the loader crops them to")
        input_size = (data.in_chans, image_size, image_size)
    info = {"dataset": name, "num_classes": len(data.classes), "classes": list(data.classes), "in_chans": input_size[0],
            "input_size": list(input_size), "mean": list(data.mean), "std": list(data.std)}
    details = getattr(data, "details", None)  # image folders: how they were read (attnkit.data.folder_setup)
    return {**info, "folder": dict(details)} if details else info


def load_data(config: RunConfig, dist: Distributed, train_loader: Any = None, test_loader: Any = None,
              recorded: dict[str, Any] | None = None) -> DataSource:
    """The run's splits and their information, or the caller's loaders and theirs; no loader is built here.

    ``recorded``: a resumed run's information (run.json): its folder is read with the decisions recorded there.
    """
    d = config.data
    if (train_loader is None) != (test_loader is None):
        raise ValueError("give both train_loader and test_loader, or neither")
    if train_loader is not None:
        # Loaders given by the caller carry their data information in an `info` dict or in the `data` they wrap.
        info = getattr(train_loader, "info", None)
        if info is None:
            info = data_info(train_loader.data, d.name, getattr(train_loader, "image_size", d.image_size))
        return DataSource(dict(info), train_loader=train_loader, test_loader=test_loader)
    if d.batch_size % dist.world_size:
        raise ConfigError("data.batch_size", f"{d.batch_size} is not divisible by the {dist.world_size} processes")
    train, test = load_splits(config, dist, ("train", "test"), recorded, resumed=recorded is not None)
    return DataSource(data_info(train, d.name, d.image_size), train, test)


def build_loaders(
    source: DataSource, config: RunConfig, device: torch.device, dist: Distributed, channels_last: bool
) -> tuple[Any, Any]:
    """Train and test loaders emitting batches in the run's memory format (the caller's loaders are adapted)."""
    if source.train_loader is not None:
        if not channels_last:
            return source.train_loader, source.test_loader
        return ChannelsLastBatches(source.train_loader), ChannelsLastBatches(source.test_loader)
    train = make_split_loader(source.train, config, device, dist, train=True, channels_last=channels_last)
    test = make_split_loader(source.test, config, device, dist, train=False, channels_last=channels_last)
    return train, test


class ChannelsLastBatches:
    """A caller's loader whose image batches are handed on in channels_last memory format."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:  # info, data, ... of the wrapped loader
        return getattr(self.loader, name)

    def epoch_batches(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        for images, labels in self.loader.epoch_batches(epoch, start):
            yield images.contiguous(memory_format=torch.channels_last), labels


def load_splits(config: RunConfig, dist: Distributed, splits: tuple[str, ...],
                recorded: dict[str, Any] | None = None, resumed: bool = False) -> list[Any]:
    """The run's data set splits (downloaded once per file system if asked), limited as configured.

    Image folders go through :func:`attnkit.data.prepare_folder`; ``recorded`` (a run's information: its
    ``folder`` record, classes, mean and std) makes it read the images as that run did, and refuses a folder whose
    classes are no longer the recorded ones; ``resumed``: also one whose layout (split folders or one tree) changed.
    """
    from .. import data as datasets  # imported here: the engine also runs on caller-made loaders

    d = config.data
    limits = {"train": d.train_limit, "test": d.test_limit}
    if d.root is not None and Path(d.root).expanduser().is_file():
        raise ConfigError("data.root", f"{d.root} is a file; give data.root=DIR, a directory")
    try:
        if d.name == "folder":
            return _folder_splits(config, splits, limits, recorded, resumed)
        download = d.download
        if download and dist.enabled:
            _download_once(lambda: [datasets.load_dataset(d.name, s, root=d.root, download=True) for s in splits], dist)
            download = False
        return [take(datasets.load_dataset(d.name, s, root=d.root, download=download), limits[s]) for s in splits]
    except ConfigError:
        raise
    except KeyError as err:
        raise ConfigError("data.name", err.args[0]) from None
    except FileNotFoundError as err:
        raise ConfigError("data.root", as_config_hint(str(err.args[0] if err.args else err))) from None
    except ValueError as err:  # a file that fails its checksum (ChecksumError), ...
        raise ConfigError("data", as_config_hint(str(err.args[0] if err.args else err))) from None


# The data layer's hints name its Python arguments; a run's user sets config keys instead.
_CONFIG_HINTS = (("load again with download=True", "run again with data.download=true"),
                 ("load with download=True", "pass data.download=true"), (" or pass mirror=", ""))


def as_config_hint(message: str) -> str:
    """``message`` of the data layer with its hints in config keys (``download=True`` -> ``data.download=true``)."""
    for python, config in _CONFIG_HINTS:
        message = message.replace(python, config)
    return message


def _folder_splits(config: RunConfig, splits: tuple[str, ...], limits: dict[str, int | None],
                   recorded: dict[str, Any] | None, resumed: bool) -> list[Any]:
    from ..data import folder_layout, prepare_folder

    d = config.data
    if d.root is None:
        raise ConfigError("data.root", "data.name=folder needs data.root=DIR, a folder of class sub-folders of images")
    if not Path(d.root).expanduser().is_dir():
        raise ConfigError("data.root", f"{d.root} is not a directory; give data.root=DIR, a folder of class "
                                       "sub-folders of images")
    own = recorded is not None and recorded.get("dataset") == "folder"  # the run's own folder, not another data set
    recorded_classes = recorded.get("classes") if own else None
    decisions = dict(recorded.get("folder") or {}) if own else {}
    if resumed and decisions.get("layout") and decisions["layout"] != folder_layout(d.root):
        raise ConfigError("data.root", f"the run read {d.root} as {decisions['layout']} (run.json, key folder.layout), "
                                       f"it is now {folder_layout(d.root)}; restore the folder to resume the run")
    if recorded is not None:  # a trained model's images: its folder's decisions, or at least its channels and normalisation
        recorded = {**decisions, "channels": recorded["in_chans"], "mean": recorded["mean"], "std": recorded["std"],
                    **({} if resumed else {"classes": recorded.get("classes")})}  # resumed: train/'s, checked below
    try:
        ready = prepare_folder(d.root, splits, d.image_size, val_fraction=d.val_fraction, channels=d.channels,
                               normalization=d.normalization, memory_budget_mb=d.memory_budget_mb, workers=d.workers,
                               limits=limits, recorded=recorded)
    except ValueError as err:
        message = err.args[0] if err.args else str(err)
        raise ConfigError("data.val_fraction" if "val_fraction" in message else "data.root", message) from None
    if own and ready and recorded_classes is not None and list(ready[0].classes) != list(recorded_classes):
        raise ConfigError("data.root", f"the classes of {d.root} are now {', '.join(ready[0].classes)}, but the run "
                                       f"recorded {', '.join(recorded_classes)} (run.json, key classes); give the "
                                       "folder the run was trained on")
    return ready


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
    for turn in (dist.is_main, int(os.environ.get("LOCAL_RANK", dist.rank)) == 0 and not dist.is_main):
        error = None
        if turn:
            try:
                fetch()
            except Exception as err:  # the others must not wait for a download that failed
                error = err
        dist.barrier(long=True)  # a download may take longer than ddp_timeout
        failures = [f for f in dist.all_gather_object(None if error is None else str(error)) if f is not None]
        if error is not None:
            raise error
        if failures:
            raise ConfigError("data", f"another process could not fetch the data: {failures[0]}")


def _loader_options(data: Any, d: Any) -> dict[str, Any]:
    """The options each kind of loader takes: padding for sets in memory (image folders decoded into memory too),
    image size and workers for folders streamed from their files."""
    from ..data import ImageTensors

    if isinstance(data, ImageTensors) or getattr(data, "pixels", None) is not None:
        return {"pad": d.pad, "pad_mode": d.pad_mode}
    return {"image_size": d.image_size, "num_workers": d.workers}
