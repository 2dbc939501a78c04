"""Image helpers shared by the clipzoo image and video processors (PIL + numpy only): image-mode normalisation and
`RandomResizedCrop`'s box sampling."""

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image


__all__ = ["sample_crop_box", "to_rgb"]

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_DIRECT_MODES = ("1", "L", "RGBX", "CMYK", "YCbCr")


def _composite_on_white(image: Image.Image) -> Image.Image:
    if image.mode == "La":  # premultiplied; PIL cannot convert La -> RGBA directly
        image = image.convert("LA")
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """Return `image` as an 8-bit RGB `PIL.Image.Image`.

    Transparent pixels (modes RGBA, RGBa, LA, La, PA, and P with a transparency entry) are alpha-composited on a
    white background, as most captioned web images with alpha are drawn on white; converting them with
    `image.convert("RGB")` would instead expose whatever colour the transparent pixels happen to hold. 16-bit
    grayscale (I;16 and its byte orders) is scaled by 255 / 65535, whereas PIL's own conversion clips every value
    above 255 to white. Modes 1, L, P, RGBX, CMYK and YCbCr use PIL's conversion; RGB is returned unchanged.

    Args:
        image (`PIL.Image.Image`): the input image.

    Returns:
        `PIL.Image.Image`: an image of mode "RGB" and the same size.

    Raises:
        TypeError: if `image` is not a PIL image.
        ValueError: for modes whose value range or colour space is ambiguous (I, F, LAB, HSV, ...).

    Examples:

    ```python
    >>> from PIL import Image
    >>> from clipzoo.processing.image_utils import to_rgb

    >>> to_rgb(Image.new("RGBA", (2, 2), (255, 0, 0, 0))).getpixel((0, 0))
    (255, 255, 255)
    ```
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"to_rgb expects a PIL.Image.Image, got {type(image).__name__}")
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        return _composite_on_white(image)
    if mode == "P" or mode in _DIRECT_MODES:
        return image.convert("RGB")
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.float64)
        gray = np.rint(values * (255.0 / 65535.0)).astype(np.uint8)
        return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2))
    raise ValueError(
        f"unsupported image mode {mode!r}: expected one of RGB, {', '.join(_ALPHA_MODES + _DIRECT_MODES)}, P or "
        f"{', '.join(_SIXTEEN_BIT_MODES)}. Modes I and F have no fixed value range and LAB/HSV need a colour-space "
        "conversion: convert the image to 'L' or 'RGB' yourself first"
    )


def sample_crop_box(
    width: int,
    height: int,
    scale: Sequence[float],
    ratio: Sequence[float],
    rng: np.random.Generator,
    attempts: int = 10,
) -> tuple[int, int, int, int]:
    """Sample a random-resized-crop box the way timm's `RandomResizedCropAndInterpolation` does.

    Up to `attempts` times: area = uniform(scale) * width * height, aspect ratio (width / height) = exp(uniform(log
    ratio)), crop width = round(sqrt(area * ratio)), crop height = round(sqrt(area / ratio)); the first box that fits
    is placed at a uniformly random top-left corner. If none fits: a centre crop with the image's aspect ratio clamped
    to `ratio` (the whole image when it is already in range). A `scale` whose minimum is 1.0 returns the whole image.

    Args:
        width (`int`): image width.
        height (`int`): image height.
        scale (`Sequence[float]`): (min, max) fraction of the image area.
        ratio (`Sequence[float]`): (min, max) aspect ratio, width / height.
        rng (`numpy.random.Generator`): the random generator.
        attempts (`int`, *optional*, defaults to 10): sampling attempts before the fallback.

    Returns:
        `tuple[int, int, int, int]`: (left, top, crop_width, crop_height).
    """
    if scale[0] >= 1.0:
        return 0, 0, width, height
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target_area = rng.uniform(scale[0], scale[1]) * area
        aspect = math.exp(rng.uniform(*log_ratio))
        crop_width = int(round(math.sqrt(target_area * aspect)))
        crop_height = int(round(math.sqrt(target_area / aspect)))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            top = int(rng.integers(0, height - crop_height + 1))
            left = int(rng.integers(0, width - crop_width + 1))
            return left, top, crop_width, crop_height
    in_ratio = width / height
    if in_ratio < min(ratio):
        crop_width, crop_height = width, max(1, int(round(width / min(ratio))))
    elif in_ratio > max(ratio):
        crop_width, crop_height = max(1, int(round(height * max(ratio)))), height
    else:
        crop_width, crop_height = width, height
    return (width - crop_width) // 2, (height - crop_height) // 2, crop_width, crop_height
