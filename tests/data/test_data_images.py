"""Images as the model sees them: one normalisation for the loaders and for read / sampled images."""

import pytest
import torch
from PIL import Image

from attnkit.data import DeviceLoader, ImageTensors, Normalizer, dataset_images, evenly_spaced, load_dataset, read_images

MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.5]


def test_normalizer_is_the_loaders_normalisation():
    pixels = torch.randint(0, 256, (5, 3, 4, 4), dtype=torch.uint8)
    data = ImageTensors(pixels, torch.zeros(5, dtype=torch.long), ["a"], tuple(MEAN), tuple(STD), "toy")
    batch, _ = next(DeviceLoader(data, batch_size=5, train=False).epoch_batches(0))
    assert torch.equal(Normalizer(MEAN, STD)(pixels), batch)
    expected = (pixels.double() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(batch, expected.float(), rtol=1e-6, atol=1e-6)


def test_read_images_crops_to_aspect_resizes_and_normalises(tmp_path):
    Image.new("RGB", (40, 20), (255, 0, 51)).save(tmp_path / "wide.png")
    Image.new("L", (10, 10), 102).save(tmp_path / "grey.png")
    (tmp_path / "notes.txt").write_text("not an image")
    loaded = read_images([tmp_path], (3, 8, 8), MEAN, STD)
    assert loaded.names == ["grey.png", "wide.png"] and loaded.images.shape == (2, 3, 8, 8)
    expected_wide = (torch.tensor([1.0, 0.0, 0.2]) - torch.tensor(MEAN)) / torch.tensor(STD)
    torch.testing.assert_close(loaded.images[1, :, 4, 4], expected_wide)
    torch.testing.assert_close(loaded.images[0, :, 0, 0], (0.4 - torch.tensor(MEAN)) / torch.tensor(STD))
    grey = read_images([tmp_path / "wide.png"], (1, 4, 6), [0.0], [1.0]).images
    assert grey.shape == (1, 1, 4, 6)
    torch.testing.assert_close(grey, torch.full_like(grey, round(0.299 * 255 + 0.114 * 51) / 255), atol=1 / 255, rtol=0)
    with pytest.raises(FileNotFoundError, match="no such image file"):
        read_images([tmp_path / "missing.png"], (3, 8, 8), MEAN, STD)


def test_dataset_images_are_evenly_spaced_with_labels():
    assert evenly_spaced(10, 4).tolist() == [0, 3, 6, 9] and evenly_spaced(3, 8).tolist() == [0, 1, 2]
    test = load_dataset("mnist5k", "test")
    loaded = dataset_images("mnist5k", 4)
    index = evenly_spaced(len(test), 4)
    assert loaded.names == [f"test[{i}]" for i in index.tolist()] and torch.equal(loaded.labels, test.labels[index])
    assert torch.equal(loaded.images, Normalizer(test.mean, test.std)(test.images[index]))
    assert loaded.boxes is None and loaded.classes == list(test.classes)
