"""Reading a digit image the way MNIST looks: grayscale, 28x28, light on dark."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.predict import ImageError, digit_pixels, open_grayscale


def test_dark_ink_on_paper_is_inverted_and_resized(tmp_path):
    paper = np.full((56, 56, 3), 255, dtype=np.uint8)
    paper[10:46, 26:30] = 0  # a dark "1"
    Image.fromarray(paper).save(tmp_path / "one.png")
    pixels = digit_pixels(open_grayscale(tmp_path / "one.png"), (28, 28))
    assert pixels.shape == (28, 28) and pixels.dtype == np.uint8
    assert pixels[14, 14] > 200 and pixels[0, 0] < 10


def test_mnist_like_image_is_kept(tmp_path):
    digit = np.zeros((28, 28), dtype=np.uint8)
    digit[5:20, 12:15] = 255
    Image.fromarray(digit).save(tmp_path / "d.png")
    np.testing.assert_array_equal(digit_pixels(open_grayscale(tmp_path / "d.png"), (28, 28)), digit)


def test_non_image_and_missing_file(tmp_path):
    (tmp_path / "x.png").write_bytes(b"%PDF-1.4 not an image")
    with pytest.raises(ImageError, match=r"x\.png: not an image Pillow can read"):
        open_grayscale(tmp_path / "x.png")
    with pytest.raises(ImageError, match=r"nope\.png: no such file"):
        open_grayscale(tmp_path / "nope.png")
