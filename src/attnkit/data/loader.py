"""Loaders: the whole data set on the device with batched augmentation (airbench's way), or streaming from files.

* :class:`DeviceLoader` keeps an :class:`~attnkit.data.ImageTensors` set on the training device as one uint8
  tensor and builds each batch with a handful of tensor operations: select, pad + random crop and horizontal
  flip for the whole batch in one gather, conversion to float, normalisation. No per-sample Python.
* :class:`FolderLoader` streams an :class:`~attnkit.data.folder.ImageFolderData` set through
  ``torch.utils.data.DataLoader`` workers that decode with Pillow (random resized crop + flip for training,
  resize + centre crop for evaluation) and normalises each batch on the device.
* :func:`make_loader` picks the one that fits the data: the device for in-memory sets and image folders decoded
  into memory (:func:`attnkit.data.folder_setup.decode_folder`), streaming for the other folders.

Both share one contract: ``len(loader)`` steps per epoch and ``loader.epoch_batches(epoch, start=0)`` yielding
``(images (b, C, H, W) float32, labels (b,) int64)`` on the device.

Determinism: epoch ``e``'s order depends only on (seed, e) and the augmentation of its global step ``i`` only
on (seed, e, i), drawn from CPU generators seeded through ``numpy.random.SeedSequence`` -- so the numbers
are the same on every device, and resuming at step ``i`` reproduces the rest of the epoch exactly.
Distributed: ``batch_size`` is the *global* batch; rank ``r`` of ``world_size`` yields
``torch.tensor_split(global_batch, world_size)[r]``, so the ranks' batches concatenate to the 1-process batch.
Training (``train=True``) shuffles, augments and drops the last partial batch; evaluation keeps the order,
does not augment and keeps the last partial batch (whose rank slices may be uneven, even empty).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ..validation import check_choice, check_int, choices, is_int
from ._dataset import ImageTensors
from .folder import EVAL_CROP_FRACTION, ImageFolderData, center_crop_image, load_image, random_resized_crop_image
from .images import Normalizer

__all__ = ["DIGIT_DATASETS", "PAD_MODES", "DecodedFolder", "DeviceLoader", "FolderLoader", "PadMode", "crop_flip",
           "make_loader"]

PadMode = Literal["reflect", "symmetric", "zeros"]  # how the random crop pads (see _fold)
PAD_MODES: tuple[str, ...] = choices(PadMode)
# Flipping a digit left-right changes what it is (2, 3, 4, 5, 7, 9), so these data sets do not flip by default.
DIGIT_DATASETS = frozenset({"mnist", "mnist5k", "cluttered-mnist", "svhn"})

_ORDER, _AUGMENT = 0, 1  # stream tags: the order and the augmentation draws never share a random stream


def _generator(seed: int, *key: int) -> torch.Generator:
    """A CPU generator whose state depends only on (seed, *key)."""
    state = np.random.SeedSequence([seed, *key]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def _fold(index: Tensor, size: int, mode: PadMode) -> tuple[Tensor, Tensor | None]:
    """Map coordinates of the padded image (-pad .. size-1+pad) to source coordinates; the mask marks real pixels.

    reflect: ``dcb|abcd|cba`` (torch/NumPy "reflect", torchvision ``Pad(padding_mode="reflect")``);
    symmetric: ``cba|abcd|dcb`` (NumPy "symmetric", OpenCV ``BORDER_REFLECT``); zeros: zero padding.
    """
    if mode == "reflect":
        index = index.abs()
        return (size - 1) - ((size - 1) - index).abs(), None
    if mode == "symmetric":
        index = torch.where(index < 0, -index - 1, index)
        return torch.where(index >= size, 2 * size - 1 - index, index), None
    inside = (index >= 0) & (index < size)
    return index.clamp(0, size - 1), inside


def crop_flip(
    images: Tensor, index: Tensor, top: Tensor, left: Tensor, flip: Tensor, pad: int, mode: PadMode = "reflect"
) -> Tensor:
    """Pad, crop back to the original size at (top, left) and optionally flip, for a whole batch in one gather.

    Args:
        images: (N, C, H, W) the source images, contiguous.
        index: (b,) which images.
        top, left: (b,) crop corners in the padded image, in ``0 .. 2 * pad``.
        flip: (b,) bool, mirror the crop left-right.
        pad: pixels of padding on each side (< H and < W for the reflecting modes).
        mode: one of :data:`PAD_MODES`.

    Returns:
        (b, C, H, W), the dtype of ``images``. Equal to padding each image, slicing
        ``[top:top + H, left:left + W]`` and flipping where ``flip`` (checked against ``numpy.pad`` in the tests).
        The padded images are never built: each output pixel reads its source pixel directly.
    """
    _, channels, height, width = images.shape
    rows = top[:, None] - pad + torch.arange(height, device=top.device)  # (b, H) rows of the padded image
    cols = left[:, None] - pad + torch.arange(width, device=left.device)  # (b, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # a flipped crop reads its columns backwards
    rows, row_inside = _fold(rows, height, mode)
    cols, col_inside = _fold(cols, width, mode)
    source = (rows[:, :, None] * width + cols[:, None, :]).flatten(1)  # (b, H*W) flat pixel read by each output pixel
    batch = images.index_select(0, index).flatten(2)  # (b, C, H*W)
    out = batch.gather(2, source[:, None, :].expand(-1, channels, -1)).view(-1, channels, height, width)
    if mode == "zeros":
        out = out * (row_inside[:, None, :, None] & col_inside[:, None, None, :])  # padding pixels read as 0
    return out


def _check_common(batch_size: int, seed: int, rank: int, world_size: int, num_samples: int, train: bool, source: str) -> None:
    check_int("seed", seed)
    check_int("batch_size", batch_size, minimum=1, note=" (the global batch over all ranks)")
    if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int) and 0 <= rank < world_size):
        raise ValueError(f"need world_size >= 1 and 0 <= rank < world_size, got rank={rank!r}, world_size={world_size!r}")
    if train and num_samples < batch_size:
        raise ValueError(
            f"{source} has {num_samples} samples, fewer than batch_size {batch_size}: training drops the last "
            "partial batch and would have no step; use a smaller batch_size"
        )


def _steps(num_samples: int, batch_size: int, drop_last: bool) -> int:
    return num_samples // batch_size if drop_last else -(-num_samples // batch_size)


def _check_epoch_start(epoch: int, start: int, steps: int) -> None:
    check_int("epoch", epoch)
    if not (is_int(start) and 0 <= start <= steps):
        raise ValueError(f"start must be a step in 0..{steps} (steps per epoch), got {start!r}")


def _epoch_order(num_samples: int, seed: int, epoch: int, shuffle: bool) -> Tensor:
    """The sample order of one epoch: a permutation seeded by (seed, epoch), or 0..N-1."""
    if not shuffle:
        return torch.arange(num_samples)
    return torch.randperm(num_samples, generator=_generator(seed, _ORDER, epoch))


class DeviceLoader:
    """The whole data set on ``device`` as uint8; each batch indexed, augmented and normalised in a few ops.

    Args:
        data: the images, labels, mean and std.
        batch_size: the global batch (over all ranks).
        train: shuffle, augment and drop the last partial batch (True), or keep the order, do not augment and
            keep the last partial batch (False).
        device: where the data and the batches live.
        augment: pad + random crop and flip; default ``train``.
        pad: padding for the random crop (pixels per side; 0 turns cropping off). Crops keep the image size.
        flip: random horizontal flips; default (None) on, except for the digit data sets in
            :data:`DIGIT_DATASETS`, where a mirrored digit is a different or no digit.
        pad_mode: ``"reflect"`` (default: szagoruyko/attention-transfer's cifar.py as it stands,
            ``T.Pad(4, padding_mode="reflect")``, and airbench), ``"symmetric"`` (the same file's 2017 version,
            OpenCV ``BORDER_REFLECT``, which repeats the edge pixel) or ``"zeros"`` (``RandomCrop(32, padding=4)``).
        seed: seeds the order and the augmentation of every epoch.
        rank, world_size: this process's share of each global batch under data parallelism.
        channels_last: return batches in channels-last memory format.

    >>> data = ImageTensors(torch.arange(8, dtype=torch.uint8).view(2, 1, 2, 2), torch.tensor([0, 1]),
    ...                     ["a", "b"], mean=(0.0,), std=(1 / 255,), name="toy")
    >>> loader = DeviceLoader(data, batch_size=2, train=False)
    >>> len(loader)
    1
    >>> images, labels = next(loader.epoch_batches(0))
    >>> images[1, 0]
    tensor([[4., 5.],
            [6., 7.]])
    """

    def __init__(
        self,
        data: ImageTensors,
        batch_size: int,
        *,
        train: bool,
        device: str | torch.device = "cpu",
        augment: bool | None = None,
        pad: int = 4,
        flip: bool | None = None,
        pad_mode: PadMode = "reflect",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
    ) -> None:
        if not isinstance(data, ImageTensors):
            raise TypeError(f"DeviceLoader needs ImageTensors, got {type(data).__name__}; use make_loader for folders")
        _check_common(batch_size, seed, rank, world_size, len(data), train, data.name)
        augment = train if augment is None else augment
        _, _, height, width = data.images.shape
        check_choice("pad_mode", pad_mode, PAD_MODES)
        if augment and not (isinstance(pad, int) and 0 <= pad and (pad_mode == "zeros" or pad < min(height, width))):
            raise ValueError(f"pad must be an int >= 0 (and < the image size {height}x{width} to reflect), got {pad!r}")
        self.data = data
        self.batch_size = batch_size
        self.train = train
        self.device = torch.device(device)
        self.augment = augment
        self.pad = pad
        self.flip = (data.name not in DIGIT_DATASETS) if flip is None else flip
        self.pad_mode = pad_mode
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.channels_last = channels_last
        self.images = data.images.to(self.device).contiguous()  # (N, C, H, W) uint8
        self.labels = data.labels.to(self.device)
        self.normalize = Normalizer(data.mean, data.std, self.device)

    def __len__(self) -> int:
        return _steps(len(self.data), self.batch_size, drop_last=self.train)

    def epoch_batches(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """This rank's (images (b, C, H, W) float32, labels (b,) int64) for steps ``start`` .. len-1 of ``epoch``."""
        _check_epoch_start(epoch, start, len(self))  # here, not in the generator, so bad arguments fail at once
        return self._iterate(epoch, start)

    def _iterate(self, epoch: int, start: int) -> Iterator[tuple[Tensor, Tensor]]:
        order = _epoch_order(len(self.data), self.seed, epoch, shuffle=self.train)
        for step in range(start, len(self)):
            yield self._batch(order[step * self.batch_size:(step + 1) * self.batch_size], epoch, step)

    def _batch(self, index: Tensor, epoch: int, step: int) -> tuple[Tensor, Tensor]:
        draws = self._draws(len(index), epoch, step) if self.augment else ()
        index, *draws = (torch.tensor_split(t, self.world_size)[self.rank] for t in (index, *draws))
        index = index.to(self.device, non_blocking=True)
        if self.augment:
            top, left, flip = (t.to(self.device, non_blocking=True) for t in draws)
            images = crop_flip(self.images, index, top, left, flip, self.pad, self.pad_mode)  # (b, C, H, W)
        else:
            images = self.images.index_select(0, index)  # (b, C, H, W)
        return self.normalize(images, self.channels_last), self.labels[index]

    def _draws(self, size: int, epoch: int, step: int) -> tuple[Tensor, Tensor, Tensor]:
        """Crop corners and flips for the whole global batch of (epoch, step); the same on every rank."""
        generator = _generator(self.seed, _AUGMENT, epoch, step)
        top = torch.randint(0, 2 * self.pad + 1, (size,), generator=generator)
        left = torch.randint(0, 2 * self.pad + 1, (size,), generator=generator)
        flip = torch.rand(size, generator=generator) < 0.5  # drawn even when off, so crops do not depend on it
        return top, left, flip & self.flip


class DecodedFolder(torch.utils.data.Dataset):
    """Decodes and transforms one image per key (sample index, epoch, position in the epoch); for workers.

    Training (``augment``): random resized crop + flip drawn from (seed, epoch, position). Evaluation: the shorter
    side to ``size / crop_fraction``, then the centre ``size`` x ``size``.
    """

    def __init__(self, data: ImageFolderData, size: int, augment: bool, flip: bool, seed: int, scale=(0.08, 1.0),
                 ratio=(3 / 4, 4 / 3), crop_fraction: float = EVAL_CROP_FRACTION) -> None:
        self.samples, self.channels, self.size, self.augment, self.flip = data.samples, data.channels, size, augment, flip
        self.seed, self.scale, self.ratio, self.crop_fraction = seed, scale, ratio, crop_fraction

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[Tensor, int]:
        index, epoch, position = key
        path, label = self.samples[index]
        image = load_image(path, self.channels)
        if self.augment:  # the draws depend on (seed, epoch, position) only: any worker, any start gives the same
            rng = np.random.default_rng([self.seed, _AUGMENT, epoch, position])
            image = random_resized_crop_image(image, self.size, rng, self.scale, self.ratio, self.flip)
        else:
            image = center_crop_image(image, self.size, self.crop_fraction)
        pixels = np.asarray(image, dtype=np.uint8).reshape(self.size, self.size, self.channels)
        return torch.from_numpy(pixels.copy()), label  # (H, W, C) uint8


class FolderLoader:
    """Streams an image folder: DataLoader workers decode with Pillow; batches are normalised on the device.

    Args:
        data: the file list (:func:`~attnkit.data.folder.load_image_folder` or ``load_dataset("folder")``).
        batch_size: the global batch (over all ranks).
        train: shuffle, random-resized-crop + flip and drop the last partial batch (True), or keep the order,
            resize + centre-crop and keep the last partial batch (False).
        device: where the batches go (pinned memory and asynchronous copies on CUDA).
        image_size: output height and width.
        augment: default ``train``; False gives the evaluation transform.
        flip: random horizontal flips when augmenting; default (None) on.
        scale, ratio: the random-resized-crop ranges (area fraction, aspect ratio).
        seed, rank, world_size, channels_last: as for :class:`DeviceLoader`.
        num_workers: decoding processes (default: up to 8, one per CPU core); 0 decodes in this process.
    """

    def __init__(
        self,
        data: ImageFolderData,
        batch_size: int,
        *,
        train: bool,
        device: str | torch.device = "cpu",
        image_size: int = 224,
        augment: bool | None = None,
        flip: bool | None = None,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
        num_workers: int | None = None,
    ) -> None:
        if not isinstance(data, ImageFolderData):
            raise TypeError(f"FolderLoader needs ImageFolderData, got {type(data).__name__}; use make_loader")
        _check_common(batch_size, seed, rank, world_size, len(data), train, str(data.root))
        self.data = data
        self.batch_size = batch_size
        self.train = train
        self.device = torch.device(device)
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.channels_last = channels_last
        self.num_workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
        augment = train if augment is None else augment
        self.image_size = image_size
        self.dataset = DecodedFolder(data, image_size, augment, flip is not False, seed, scale, ratio)
        self.normalize = Normalizer(data.mean, data.std, self.device)

    def __len__(self) -> int:
        return _steps(len(self.data), self.batch_size, drop_last=self.train)

    def epoch_batches(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """This rank's (images (b, C, S, S) float32, labels (b,) int64) for steps ``start`` .. len-1 of ``epoch``."""
        _check_epoch_start(epoch, start, len(self))
        return self._iterate(epoch, start)

    def _iterate(self, epoch: int, start: int) -> Iterator[tuple[Tensor, Tensor]]:
        keys = self._keys(epoch, start)
        decoded = iter(torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=[k for k in keys if k],  # a DataLoader cannot collate an empty batch
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
        ))
        for step_keys in keys:
            if step_keys:
                images, labels = _next_batch(decoded)  # (b, S, S, C) uint8, (b,) int64
            else:  # this rank's share of a last partial evaluation batch can be empty; it still takes the step
                size, channels = self.dataset.size, self.dataset.channels
                images, labels = torch.empty(0, size, size, channels, dtype=torch.uint8), torch.empty(0, dtype=torch.int64)
            images = images.to(self.device, non_blocking=True).permute(0, 3, 1, 2)  # (b, C, S, S), channels-last strides
            yield self.normalize(images, self.channels_last), labels.to(self.device, non_blocking=True)

    def _keys(self, epoch: int, start: int) -> list[list[tuple[int, int, int]]]:
        """Per step, this rank's slice of the global batch as (sample index, epoch, position in the epoch)."""
        order = _epoch_order(len(self.data), self.seed, epoch, shuffle=self.train).tolist()
        batches = []
        for step in range(start, len(self)):
            positions = torch.arange(step * self.batch_size, min((step + 1) * self.batch_size, len(order)))
            batches.append([(order[p], epoch, p) for p in torch.tensor_split(positions, self.world_size)[self.rank].tolist()])
        return batches


def _next_batch(batches: Iterator):
    """The next batch of a DataLoader; an error in a worker is raised as the worker raised it (one line naming
    the file), not wrapped in DataLoader's "Caught ... in DataLoader worker process" report with its traceback."""
    try:
        return next(batches)
    except Exception as err:
        text = str(err)
        if not (text.startswith("Caught ") and "Original Traceback" in text):
            raise
        kind, _, message = text.strip().splitlines()[-1].partition(": ")  # the worker's "ValueError: cannot ..."
        try:
            unwrapped = type(err)(message or kind)
        except Exception:  # an exception type that needs other arguments: keep DataLoader's
            raise err from None
        raise unwrapped from None


def make_loader(data, batch_size: int, *, train: bool, device: str | torch.device = "cpu", **options):
    """:class:`DeviceLoader` for :class:`ImageTensors` and decoded image folders, :class:`FolderLoader` for
    image folders streamed from their files; ``options`` go on."""
    if isinstance(data, ImageFolderData) and data.pixels is not None:
        data = data.as_tensors()
    if isinstance(data, ImageTensors):
        return DeviceLoader(data, batch_size, train=train, device=device, **options)
    if isinstance(data, ImageFolderData):
        return FolderLoader(data, batch_size, train=train, device=device, **options)
    raise TypeError(f"make_loader needs ImageTensors or ImageFolderData (from load_dataset), got {type(data).__name__}")
