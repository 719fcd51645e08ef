"""``attnkit bench loader``: the device-resident DeviceLoader against a per-sample DataLoader pipeline, images/s.

Data: CIFAR-shaped random uint8 images (default 50,000 x 3 x 32 x 32), batch 128, the CIFAR training recipe in
both pipelines: pad 4 (reflect) + random 32x32 crop, horizontal flip, float conversion, mean/std normalisation.

* ``DeviceLoader``: the whole set on the device; each batch is one gather plus a few tensor operations.
* ``DataLoader``: the usual torchvision-style pipeline, written without torchvision -- a ``Dataset`` whose
  ``__getitem__`` pads, crops, flips and normalises one image, default collate, ``num_workers`` 0 and 2 (with
  persistent workers), batches copied to the device.

Each pipeline runs as an endless stream over epochs; one timed call draws ``batches`` batches from it, and
calls alternate between the pipelines (``time_calls``). Worker processes refill their prefetch queue (2 batches
per worker) between calls, which slightly favours the DataLoader rows. The speed-up column is DeviceLoader's
images/s divided by the row's.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from ..data import DeviceLoader, ImageTensors
from ._measure import time_calls

CIFAR10_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR10_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)


class PerSampleCifar(torch.utils.data.Dataset):
    """One image at a time: pad (reflect), random crop, random flip, normalise -- the per-sample baseline."""

    def __init__(self, data: ImageTensors, pad: int = 4) -> None:
        self.images, self.labels, self.pad = data.images, data.labels, pad
        self.mean = torch.tensor(data.mean).view(-1, 1, 1)
        self.std = torch.tensor(data.std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self.images[i].float().div_(255)  # (C, H, W)
        _, height, width = image.shape
        padded = F.pad(image[None], (self.pad,) * 4, mode="reflect")[0]  # (C, H + 2p, W + 2p)
        top, left = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
        crop = padded[:, top:top + height, left:left + width]
        if torch.rand(()) < 0.5:
            crop = crop.flip(2)
        return (crop - self.mean) / self.std, int(self.labels[i])


def _forever(batches) -> Iterator:
    """An endless stream of batches over successive epochs."""
    epoch = 0
    while True:
        yield from batches(epoch)
        epoch += 1


def _consume(stream: Iterator, count: int, device: torch.device) -> None:
    for _ in range(count):
        images, labels = next(stream)
        images.to(device, non_blocking=True), labels.to(device, non_blocking=True)


def run(
    device: str = "cpu",
    repeats: int = 10,
    num_images: int = 50_000,
    batch_size: int = 128,
    batches: int = 50,
    workers: tuple[int, ...] = (0, 2),
) -> list[dict]:
    """Images per second of each pipeline over ``batches`` batches per timed call; one row per pipeline."""
    dev = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    data = ImageTensors(
        torch.randint(0, 256, (num_images, 3, 32, 32), generator=generator, dtype=torch.uint8),
        torch.randint(0, 10, (num_images,), generator=generator),
        [str(c) for c in range(10)],
        CIFAR10_MEAN,
        CIFAR10_STD,
        "cifar10-shaped",
    )
    device_loader = DeviceLoader(data, batch_size, train=True, device=dev)
    streams = {"DeviceLoader": _forever(device_loader.epoch_batches)}
    for w in workers:
        loader = torch.utils.data.DataLoader(
            PerSampleCifar(data), batch_size=batch_size, shuffle=True, drop_last=True, num_workers=w,
            persistent_workers=w > 0, pin_memory=dev.type == "cuda",
        )
        streams[f"DataLoader, {w} workers"] = _forever(lambda epoch, loader=loader: iter(loader))
    seconds = time_calls(
        {name: (lambda s=stream: _consume(s, batches, dev)) for name, stream in streams.items()},
        dev,
        min_repeats=repeats,
        min_seconds=0.0,
    )
    images_per_call = batches * batch_size
    best = images_per_call / seconds["DeviceLoader"]
    return [
        {
            "pipeline": name,
            "ms_per_batch": t / batches * 1e3,
            "images_per_s": images_per_call / t,
            "speedup": best / (images_per_call / t),
        }
        for name, t in seconds.items()
    ]


COLUMNS = [
    ("pipeline", "pipeline", "{}"),
    ("ms_per_batch", "ms / batch", "{:.2f}"),
    ("images_per_s", "images / s", "{:,.0f}"),
    ("speedup", "DeviceLoader speed-up", "{:.1f}x"),
]
