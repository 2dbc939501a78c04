"""clipzoo.processing.image_utils.to_rgb: every supported mode, alpha on white, 16-bit scaling, clear errors."""

import numpy as np
import pytest
from PIL import Image

from clipzoo.processing.image_utils import to_rgb


def test_grayscale_is_replicated_to_three_channels():
    gray = Image.fromarray(np.array([[0, 128], [200, 255]], np.uint8))
    assert gray.mode == "L"
    rgb = to_rgb(gray)
    assert rgb.mode == "RGB" and rgb.size == (2, 2)
    np.testing.assert_array_equal(np.asarray(rgb), np.repeat(np.asarray(gray)[:, :, None], 3, axis=2))


def test_rgba_alpha_is_composited_on_white():
    pixels = np.array([[[255, 0, 0, 255], [255, 0, 0, 0]], [[0, 0, 255, 128], [0, 0, 0, 255]]], np.uint8)
    rgb = np.asarray(to_rgb(Image.fromarray(pixels, mode="RGBA")))
    assert rgb[0, 0].tolist() == [255, 0, 0]  # opaque red stays red
    assert rgb[0, 1].tolist() == [255, 255, 255]  # fully transparent -> white, not the hidden red
    # half-transparent blue over white: 255 * (1 - 128/255) = 127 on R and G, 255 on B (PIL rounds to 127)
    assert rgb[1, 0].tolist() == pytest.approx([127, 127, 255], abs=1)
    assert rgb[1, 1].tolist() == [0, 0, 0]


def test_la_and_palette_with_transparency():
    la = Image.fromarray(np.array([[[10, 255], [10, 0]]], np.uint8), mode="LA")
    assert np.asarray(to_rgb(la)).tolist() == [[[10, 10, 10], [255, 255, 255]]]
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    palette.putpixel((1, 0), 1)
    assert np.asarray(to_rgb(palette)).tolist() == [[[0, 0, 0], [0, 255, 0]]]
    palette.info["transparency"] = 0  # index 0 transparent -> white
    assert np.asarray(to_rgb(palette)).tolist() == [[[255, 255, 255], [0, 255, 0]]]


def test_cmyk_and_bilevel():
    cmyk = Image.new("CMYK", (1, 1), (0, 255, 255, 0))  # no cyan, full magenta and yellow -> red
    assert to_rgb(cmyk).getpixel((0, 0)) == (255, 0, 0)
    assert to_rgb(Image.new("1", (1, 1), 1)).getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_is_scaled_not_clipped():
    values = np.array([[0, 257, 32768, 65535]], np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    # round(v * 255 / 65535) = 0, 1, 128, 255 (PIL's own convert would clip 257 and up to 255)
    assert np.asarray(to_rgb(image))[0, :, 0].tolist() == [0, 1, 128, 255]


def test_rgb_is_returned_unchanged_and_errors():
    rgb = Image.new("RGB", (1, 1))
    assert to_rgb(rgb) is rgb
    with pytest.raises(ValueError, match="unsupported image mode 'F'"):
        to_rgb(Image.new("F", (1, 1)))
    with pytest.raises(ValueError, match="unsupported image mode 'I'"):
        to_rgb(Image.new("I", (1, 1)))
    with pytest.raises(TypeError, match="expects a PIL.Image.Image, got ndarray"):
        to_rgb(np.zeros((2, 2, 3), np.uint8))
