"""DeviceLoader: exact crops, flips and normalisation; determinism, resume, DDP shards, epoch coverage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnkit.data import DeviceLoader, ImageTensors, crop_flip, make_loader


def _data(n: int = 10, channels: int = 3, size: int = 8, name: str = "toy") -> ImageTensors:
    """n distinct random images; label i = image i, so every batch says which images it holds."""
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    return ImageTensors(images, torch.arange(n), [str(i) for i in range(n)], (0.5,) * channels, (0.25,) * channels, name)


def _epoch(loader, epoch: int = 0, start: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(loader.epoch_batches(epoch, start))


def _raw(loader, images: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation: back to the 0..255 pixel values (rounded)."""
    mean = torch.tensor(loader.data.mean).view(1, -1, 1, 1)
    std = torch.tensor(loader.data.std).view(1, -1, 1, 1)
    return ((images * std + mean) * 255).round()


# --- crop and flip, exact -------------------------------------------------------------------------------

NINE = torch.arange(1, 10, dtype=torch.uint8).view(1, 1, 3, 3)  # [[1,2,3],[4,5,6],[7,8,9]] as (N, C, H, W)


@pytest.mark.parametrize(
    "mode, top, left, flip, expected",
    [
        ("reflect", 2, 1, False, [[4, 5, 6], [7, 8, 9], [4, 5, 6]]),  # padded rows 1..3: row 3 reflects row 1
        ("reflect", 2, 1, True, [[6, 5, 4], [9, 8, 7], [6, 5, 4]]),
        ("reflect", 0, 0, False, [[5, 4, 5], [2, 1, 2], [5, 4, 5]]),
        ("symmetric", 0, 0, False, [[1, 1, 2], [1, 1, 2], [4, 4, 5]]),  # the edge pixel repeats
        ("zeros", 0, 0, False, [[0, 0, 0], [0, 1, 2], [0, 4, 5]]),
        ("zeros", 2, 2, True, [[0, 6, 5], [0, 9, 8], [0, 0, 0]]),  # crop [[5,6,0],[8,9,0],[0,0,0]], mirrored
        ("zeros", 1, 1, False, [[1, 2, 3], [4, 5, 6], [7, 8, 9]]),  # the centre crop is the image
    ],
)
def test_crop_flip_by_hand(mode, top, left, flip, expected):
    out = crop_flip(NINE, torch.tensor([0]), torch.tensor([top]), torch.tensor([left]), torch.tensor([flip]), 1, mode)
    assert out[0, 0].tolist() == expected


@pytest.mark.parametrize("mode, numpy_mode", [("reflect", "reflect"), ("symmetric", "symmetric"), ("zeros", "constant")])
def test_crop_flip_equals_pad_slice_flip_for_every_offset(mode, numpy_mode):
    images = _data(2, channels=2, size=5).images  # (2, 2, 5, 5)
    pad = 3
    padded = np.pad(images.numpy(), ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode=numpy_mode)  # the reference
    for top in range(2 * pad + 1):
        for left in range(2 * pad + 1):
            for flip in (False, True):
                out = crop_flip(images, torch.tensor([1, 0]), torch.tensor([top, top]), torch.tensor([left, left]),
                                torch.tensor([flip, flip]), pad, mode)
                expected = padded[[1, 0], :, top:top + 5, left:left + 5]
                np.testing.assert_array_equal(out.numpy(), expected[..., ::-1] if flip else expected)


# --- the loader -----------------------------------------------------------------------------------------


def test_normalisation_values_exact():
    data = ImageTensors(torch.tensor([[[[0, 51]], [[102, 255]]]], dtype=torch.uint8), torch.tensor([0]), ["a"],
                        mean=(0.2, 0.4), std=(0.5, 0.25), name="toy")
    images, labels = next(DeviceLoader(data, 1, train=False).epoch_batches(0))
    expected = [[[[(0 - 0.2) / 0.5, (0.2 - 0.2) / 0.5]], [[(0.4 - 0.4) / 0.25, (1.0 - 0.4) / 0.25]]]]
    torch.testing.assert_close(images, torch.tensor(expected), rtol=0, atol=1e-6)
    assert images.dtype == torch.float32 and labels.tolist() == [0]


def test_eval_is_sequential_unaugmented_and_keeps_the_partial_batch():
    data = _data(10)
    loader = DeviceLoader(data, 4, train=False)
    batches = _epoch(loader)
    assert len(loader) == 3 and [len(y) for _, y in batches] == [4, 4, 2]
    assert torch.cat([y for _, y in batches]).tolist() == list(range(10))
    torch.testing.assert_close(_raw(loader, torch.cat([x for x, _ in batches])), data.images.float())


def test_train_shuffles_sees_every_sample_at_most_once_and_drops_the_rest():
    loader = DeviceLoader(_data(10), 3, train=True)
    labels = torch.cat([y for _, y in _epoch(loader, 5)])
    assert len(loader) == 3 and len(labels) == 9 and len(set(labels.tolist())) == 9
    full = DeviceLoader(_data(12), 4, train=True)
    assert sorted(torch.cat([y for _, y in _epoch(full)]).tolist()) == list(range(12))


def test_every_training_sample_is_a_padded_crop_possibly_flipped_of_its_image():
    data = _data(6, size=6)
    loader = DeviceLoader(data, 3, train=True, pad=2, seed=3)
    seen_flip = seen_shift = False
    for images, labels in _epoch(loader):
        raw = _raw(loader, images)
        for x, i in zip(raw, labels.tolist()):
            candidates = {
                (t, l, f): crop_flip(data.images, torch.tensor([i]), torch.tensor([t]), torch.tensor([l]), torch.tensor([f]), 2)[0]
                for t in range(5) for l in range(5) for f in (False, True)
            }
            matches = [key for key, c in candidates.items() if torch.equal(c.float(), x)]
            assert matches, f"sample {i} is no crop of its image"
            seen_flip |= any(f for _, _, f in matches) and not any(not f for _, _, f in matches)
            seen_shift |= (2, 2) not in {(t, l) for t, l, _ in matches}
    assert seen_flip and seen_shift  # augmentation really happened


def test_same_seed_same_batches_other_epoch_or_seed_differs():
    data = _data(20)
    a = _epoch(DeviceLoader(data, 5, train=True, seed=7), 2)
    b = _epoch(DeviceLoader(data, 5, train=True, seed=7), 2)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other_epoch = _epoch(DeviceLoader(data, 5, train=True, seed=7), 3)
    other_seed = _epoch(DeviceLoader(data, 5, train=True, seed=8), 2)
    assert not torch.equal(torch.cat([y for _, y in a]), torch.cat([y for _, y in other_epoch]))
    assert not torch.equal(torch.cat([y for _, y in a]), torch.cat([y for _, y in other_seed]))


def test_resuming_at_step_i_equals_the_tail_of_the_epoch():
    loader = DeviceLoader(_data(20), 4, train=True, seed=1)
    full = _epoch(loader, 4)
    tail = _epoch(loader, 4, start=3)
    assert len(tail) == 2
    for (xf, yf), (xt, yt) in zip(full[3:], tail, strict=True):
        assert torch.equal(xf, xt) and torch.equal(yf, yt)
    assert _epoch(loader, 4, start=len(loader)) == []
    with pytest.raises(ValueError, match="start must be a step in 0..5"):
        loader.epoch_batches(0, start=6)
    with pytest.raises(ValueError, match="epoch must be an int >= 0"):
        loader.epoch_batches(-1)


@pytest.mark.parametrize("train, n, batch", [(True, 23, 7), (False, 23, 7), (False, 9, 4)])
def test_two_rank_shards_concatenate_to_the_one_process_batch(train, n, batch):
    data = _data(n)
    single = _epoch(DeviceLoader(data, batch, train=train, seed=5), 1)
    ranks = [_epoch(DeviceLoader(data, batch, train=train, seed=5, rank=r, world_size=2), 1) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(single)
    for (x, y), (x0, y0), (x1, y1) in zip(single, *ranks, strict=True):
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)
        assert len(y0) == -(-len(y) // 2)  # torch.tensor_split: the first rank takes the extra sample


def test_flip_default_is_off_for_digits_and_can_be_forced():
    assert DeviceLoader(_data(4, channels=1, name="mnist5k"), 2, train=True).flip is False
    assert DeviceLoader(_data(4, channels=1, name="cluttered-mnist"), 2, train=True).flip is False
    assert DeviceLoader(_data(4, name="cifar10"), 2, train=True).flip is True
    assert DeviceLoader(_data(4, channels=1, name="mnist"), 2, train=True, flip=True).flip is True
    digits = DeviceLoader(_data(4, channels=1, name="mnist5k"), 4, train=True, pad=0)  # shuffled, never flipped
    images, labels = next(digits.epoch_batches(0))
    torch.testing.assert_close(_raw(digits, images)[labels.argsort()], digits.data.images.float())


def test_channels_last_output_and_make_loader():
    data = _data(6)
    plain = _epoch(make_loader(data, 3, train=True, seed=2))
    cl = _epoch(make_loader(data, 3, train=True, seed=2, channels_last=True))
    for (x, _), (y, _) in zip(plain, cl, strict=True):
        assert y.is_contiguous(memory_format=torch.channels_last) and x.is_contiguous()
        assert torch.equal(x, y)
    with pytest.raises(TypeError, match="ImageTensors or ImageFolderData"):
        make_loader(torch.zeros(3), 2, train=True)


def test_loader_argument_errors():
    data = _data(4)
    with pytest.raises(ValueError, match="fewer than batch_size"):
        DeviceLoader(data, 5, train=True)
    with pytest.raises(ValueError, match="pad must be"):
        DeviceLoader(data, 2, train=True, pad=8)
    with pytest.raises(ValueError, match="pad_mode"):
        DeviceLoader(data, 2, train=True, pad_mode="wrap")
    with pytest.raises(ValueError, match="0 <= rank < world_size"):
        DeviceLoader(data, 2, train=True, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        DeviceLoader(data, 0, train=False)
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        DeviceLoader(data, 2, train=True, seed=-1)
