"""Image files of every mode to 8-bit grey or RGB: 16-bit scaled by its depth, alpha dropped, palettes, refusals."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from attnkit.data.pixels import decode_image, grey_folder, image_is_grey

RGB = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]], [[10, 20, 30], [200, 100, 50], [0, 0, 0]]], np.uint8)  # (2, 3, 3)


def _save(tmp_path, image: Image.Image, name: str):
    path = tmp_path / name
    image.save(path)
    return path


def test_sixteen_bit_grey_is_scaled_by_its_depth_never_clipped(tmp_path):
    values = np.array([[0, 1, 128, 129], [257, 32767, 65280, 65535]], np.uint16)
    path = _save(tmp_path, Image.fromarray(values), "g16.png")
    assert Image.open(path).mode == "I;16"
    expected = [[0, 0, 0, 1], [1, 127, 254, 255]]  # round(v * 255 / 65535) by hand
    assert np.asarray(decode_image(path, 1)).tolist() == expected
    assert np.asarray(decode_image(path, 3)).tolist() == [[[v] * 3 for v in row] for row in expected]
    assert np.asarray(Image.open(path).convert("L")).max() == 255 and np.asarray(Image.open(path).convert("L"))[0, 2] == 128
    # (Pillow's own conversion clips: 128 stays 128 out of 65535, everything above 255 becomes 255)


def test_rgba_drops_alpha_and_palette_and_grey_modes_convert(tmp_path):
    rgba = np.concatenate([RGB, np.array([[[0], [128], [255]], [[7], [7], [7]]], np.uint8)], axis=2)
    path = _save(tmp_path, Image.fromarray(rgba, "RGBA"), "a.png")
    assert np.asarray(decode_image(path, 3)).tolist() == RGB.tolist()  # the stored colours, whatever the alpha
    palette = Image.fromarray(RGB).quantize(colors=8)
    path = _save(tmp_path, palette, "p.png")
    assert Image.open(path).mode == "P"
    np.testing.assert_array_equal(np.asarray(decode_image(path, 3)), np.asarray(palette.convert("RGB")))
    path = _save(tmp_path, Image.fromarray(RGB[..., 0]).convert("LA"), "la.png")
    assert np.asarray(decode_image(path, 1)).tolist() == RGB[..., 0].tolist()
    path = _save(tmp_path, Image.fromarray(RGB[..., 1] > 100), "one.png")
    assert Image.open(path).mode == "1" and np.asarray(decode_image(path, 1)).tolist() == [[0, 255, 0], [0, 0, 0]]
    # Colour read as grey: Pillow's ITU-R 601 luma, 299/587/114 in thousandths.
    grey = np.asarray(decode_image(_save(tmp_path, Image.fromarray(RGB), "c.png"), 1)).astype(int)
    luma = (RGB.astype(int) @ np.array([299, 587, 114]) + 500) // 1000
    assert np.abs(grey - luma).max() <= 1


def test_grey_modes_and_refusals(tmp_path):
    assert image_is_grey(_save(tmp_path, Image.fromarray(RGB[..., 0]), "l.png"))
    assert image_is_grey(_save(tmp_path, Image.fromarray(np.zeros((2, 2), np.uint16)), "g16.png"))
    assert not image_is_grey(_save(tmp_path, Image.fromarray(RGB), "rgb.png"))
    assert not image_is_grey(_save(tmp_path, Image.fromarray(RGB).quantize(4), "p.png"))  # palettes count as colour
    assert grey_folder(sorted(tmp_path.glob("[lg]*.png"))) and not grey_folder(sorted(tmp_path.glob("*.png")))
    with pytest.raises(ValueError, match=r"cannot decode image .*f\.tif: floating-point"):
        decode_image(_save(tmp_path, Image.fromarray(np.zeros((2, 2), np.float32)), "f.tif"), 3)
    with pytest.raises(ValueError, match=r"cannot decode image .*neg\.tif: .*negative"):
        decode_image(_save(tmp_path, Image.fromarray(np.full((2, 2), -5, np.int32)), "neg.tif"), 1)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot decode image .*bad\.png"):
        decode_image(tmp_path / "bad.png", 3)
