"""Shared toy models and assertion helpers for the test suite."""

from __future__ import annotations

import torch
from torch import nn


def toy_cnn(widths: tuple[int, ...] = (4, 8), convs_per_stage: int = 1, in_chans: int = 3, num_classes: int = 5) -> nn.Sequential:
    """A plain CNN: per stage `convs_per_stage` conv-ReLU pairs, then 2x2 max-pool; GAP + linear head."""
    layers: list[nn.Module] = []
    channels = in_chans
    for width in widths:
        for _ in range(convs_per_stage):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
            channels = width
        layers.append(nn.MaxPool2d(2))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)


def hook_count(model: nn.Module) -> int:
    """Number of forward / pre-forward hooks installed anywhere in `model`."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def assert_close(actual: torch.Tensor, expected, rtol: float = 1e-6, atol: float = 1e-9) -> None:
    torch.testing.assert_close(actual, torch.as_tensor(expected, dtype=actual.dtype), rtol=rtol, atol=atol)


class TensorBatches:
    """A minimal loader with the engine's protocol (len, epoch_batches, info) over in-memory float tensors.

    Order depends only on (seed, epoch), so resuming at a step reproduces the rest of the epoch.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0,
                 num_classes: int | None = None) -> None:
        self.images, self.labels, self.batch_size, self.shuffle, self.seed = images, labels, batch_size, shuffle, seed
        classes = num_classes or int(labels.max()) + 1
        self.info = {"dataset": "synthetic", "num_classes": classes, "classes": [str(i) for i in range(classes)],
                     "in_chans": images.shape[1], "input_size": list(images.shape[1:]), "mean": [0.0] * images.shape[1],
                     "std": [1.0] * images.shape[1]}

    def __len__(self) -> int:
        return len(self.labels) // self.batch_size if self.shuffle else -(-len(self.labels) // self.batch_size)

    def epoch_batches(self, epoch: int, start: int = 0):
        order = (torch.randperm(len(self.labels), generator=torch.Generator().manual_seed(self.seed * 1000 + epoch))
                 if self.shuffle else torch.arange(len(self.labels)))
        for step in range(start, len(self)):
            index = order[step * self.batch_size:(step + 1) * self.batch_size]
            yield self.images[index], self.labels[index]


def blob_data(n: int = 256, classes: int = 4, size: int = 8, channels: int = 1, seed: int = 0):
    """Images whose class is where a bright blob sits: learnable in a few steps by a tiny CNN."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=gen)
    images = torch.randn(n, channels, size, size, generator=gen) * 0.3
    half = size // 2
    for c in range(classes):
        rows, cols = divmod(c, 2)
        images[labels == c, :, rows * half:(rows + 1) * half, cols * half:(cols + 1) * half] += 1.5
    return images, labels


IMAGE_MODES = ("L", "RGB", "RGBA", "I;16", "P")  # the modes write_image_folder cycles through


def write_image_folder(root, per_split: dict, classes=("east", "north", "south"), sizes=(20, 36), seed: int = 0):
    """PNGs in ImageFolder layout: ``root/SPLIT/CLASS/CLASS_K.png`` for each ``{SPLIT: images per class}`` (SPLIT
    "" = one tree, ``root/CLASS/...``). Class c is a bright square in quadrant c of a noisy image of a random size
    in ``sizes``; the files cycle through the modes grey, RGB, RGBA, 16-bit grey and palette."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    written = 0
    for split, count in per_split.items():
        for c, name in enumerate(classes):
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(count):
                width, height = (int(v) for v in rng.integers(sizes[0], sizes[1] + 1, 2))
                rgb = rng.integers(0, 90, (height, width, 3), dtype=np.uint8)
                rows, cols = divmod(c % 4, 2)
                rgb[rows * height // 2:(rows + 1) * height // 2, cols * width // 2:(cols + 1) * width // 2] += 150
                mode = IMAGE_MODES[written % len(IMAGE_MODES)]
                image = Image.fromarray(rgb)
                if mode == "L":
                    image = image.convert("L")
                elif mode == "RGBA":
                    image = Image.fromarray(np.dstack([rgb, rng.integers(0, 256, (height, width), dtype=np.uint8)]))
                elif mode == "I;16":
                    image = Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257)
                elif mode == "P":
                    image = image.quantize(colors=32)
                image.save(folder / f"{name}_{k}.png")
                written += 1
    return root


def run_cli(*args: str, cwd=None, pythonpath: tuple = (), timeout: float = 300):
    """``python -m attnkit ARGS`` in a fresh process (one thread; extra ``pythonpath`` entries first)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([*map(str, pythonpath), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "attnkit", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)
