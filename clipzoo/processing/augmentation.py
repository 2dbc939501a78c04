"""GroupViT's training image augmentation: the DeiT recipe of timm's `create_transform(is_training=True)` as NVlabs/GroupViT
configures it (`configs/default.yml`: `img_aug.deit_aug: true`, `img_size: 224`, `interpolation: bilinear`,
`color_jitter: 0.4`, `auto_augment: rand-m9-mstd0.5-inc1`, `re_prob: 0.25`, `re_mode: pixel`, `re_count: 1`),
written here with PIL, numpy and torch only (no torchvision, no timm).

Per image, in this order:

1. random resized crop (`sample_crop_box`): area fraction uniform in `scale` = (0.08, 1.0), aspect ratio log-uniform
   in `ratio` = (3/4, 4/3), 10 attempts, else a centre crop with the aspect ratio clamped to `ratio`; the crop is
   resized to `size` x `size` with bilinear resampling;
2. horizontal flip with probability 0.5;
3. RandAugment `rand-m9-mstd0.5-inc1` (`RandAugment`): 2 ops drawn with replacement from the 15 "increasing" ops
   (`RAND_INCREASING_OPS`), each applied with probability 0.5 at magnitude N(9, 0.5) clipped to [0, 10]; geometric
   ops fill with the mean colour (124, 116, 104) and resample bilinearly;
4. `ToTensor` and ImageNet normalisation;
5. random erasing (`random_erase`) with probability 0.25: one box of area fraction uniform in (0.02, 1/3) and aspect
   ratio log-uniform in (0.3, 1/0.3), 10 attempts, filled with per-pixel standard-normal values (in the normalised
   domain).

Colour jitter: the official config sets `color_jitter: 0.4`, but timm adds colour jitter only when no auto-augment
policy is given, so with RandAugment on it is never applied; this module has no colour jitter.

Differences from timm, all deliberate:

- randomness comes from one `numpy.random.Generator` per transform (seeded from `seed`), not from Python's `random`
  and torch's global generators: the distributions are timm's, the random streams are not;
- inside a `torch.utils.data.DataLoader` worker the generator is re-seeded from the worker's seed (which the loader
  derives from its own generator, and changes every epoch), otherwise every worker, in every epoch, would replay the
  same stream of the transform copied into it;
- a `scale` whose minimum is 1.0 means the whole image (timm still samples an aspect ratio and may, through rounding,
  take a crop one pixel short, or a centre crop when the image's aspect ratio is outside `ratio`);
- `inc0` selects the original (non-increasing) op set; timm tests `bool("0")`, which is true, so in timm any `inc`
  value selects the increasing set (the official config uses `inc1`, where both agree);
- boxes with a zero side are rejected as failed attempts (timm accepts them, which crops to nothing, or erases
  nothing); this only matters for images a few pixels wide;
- posterize uses its own lookup table, so keeping 0 bits (PosterizeIncreasing at magnitude 10, which N(9, 0.5)
  clipped to 10 reaches about 2% of the time) gives black as in old Pillow, where recent Pillow (13) raises.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

from clipzoo.processing.image_utils import sample_crop_box, to_rgb
from clipzoo.processing.segmentation_groupvit import IMAGENET_MEAN, IMAGENET_STD


__all__ = [
    "DEFAULT_FILL",
    "RAND_AUGMENT_OPS",
    "RAND_INCREASING_OPS",
    "RAND_OPS",
    "DeiTTrainTransform",
    "RandAugment",
    "RandAugmentSettings",
    "fill_from_mean",
    "parse_rand_augment",
    "random_erase",
    "sample_crop_box",
]

MAX_MAGNITUDE = 10.0
_BILINEAR = Image.Resampling.BILINEAR


def fill_from_mean(mean: Sequence[float]) -> tuple[int, ...]:
    """The 8-bit fill colour of the geometric RandAugment ops: `min(255, round(255 * m))` per channel (timm's rule).

    Args:
        mean (`Sequence[float]`): per-channel mean in [0, 1].

    Returns:
        `tuple[int, ...]`: e.g. (124, 116, 104) for the ImageNet mean.
    """
    return tuple(min(255, round(255 * float(m))) for m in mean)


DEFAULT_FILL = fill_from_mean(IMAGENET_MEAN)


# --------------------------------------------------------------------------------------------------------------------
# RandAugment ops. Each op is `op(image, magnitude, rng, fill=DEFAULT_FILL) -> image`, with `magnitude` in [0, 10];
# ops that take a random sign draw it from `rng` (negated when `rng.random() > 0.5`, as timm does).
# --------------------------------------------------------------------------------------------------------------------


def _random_sign(value: float, rng: np.random.Generator) -> float:
    return -value if rng.random() > 0.5 else value


def _level(magnitude: float) -> float:
    return float(magnitude) / MAX_MAGNITUDE


def _auto_contrast(image: Image.Image, magnitude: float, rng: np.random.Generator, fill=DEFAULT_FILL) -> Image.Image:
    return ImageOps.autocontrast(image)


def _equalize(image: Image.Image, magnitude: float, rng: np.random.Generator, fill=DEFAULT_FILL) -> Image.Image:
    return ImageOps.equalize(image)


def _invert(image: Image.Image, magnitude: float, rng: np.random.Generator, fill=DEFAULT_FILL) -> Image.Image:
    return ImageOps.invert(image)


def _rotate(image: Image.Image, magnitude: float, rng: np.random.Generator, fill=DEFAULT_FILL) -> Image.Image:
    degrees = _random_sign(_level(magnitude) * 30.0, rng)
    return image.rotate(degrees, resample=_BILINEAR, fillcolor=tuple(fill))


def _posterize_bits(image: Image.Image, bits: int) -> Image.Image:
    # ImageOps.posterize's lookup table, written out because recent Pillow rejects bits=0, which timm's level
    # mapping reaches at magnitude 10 (0 bits kept: black), e.g. M = 9 plus noise clipped to 10
    if bits >= 8:
        return image
    mask = ~(2 ** (8 - bits) - 1) & 0xFF
    return image.point([value & mask for value in range(256)] * len(image.getbands()))


def _posterize(image: Image.Image, magnitude: float, rng: np.random.Generator, fill=DEFAULT_FILL) -> Image.Image:
    # keeps 0 .. 4 bits: the effect weakens as the magnitude grows (the original RandAugment set)
    return _posterize_bits(image, int(_level(magnitude) * 4))


def _posterize_increasing(
    image: Image.Image, magnitude: float, rng: np.random.Generator, fill=DEFAULT_FILL
) -> Image.Image:
    # keeps 4 .. 0 bits: the effect strengthens with the magnitude
    return _posterize_bits(image, 4 - int(_level(magnitude) * 4))


def _solarize(image: Image.Image, magnitude: float, rng: np.random.Generator, fill=DEFAULT_FILL) -> Image.Image:
    return ImageOps.solarize(image, int(_level(magnitude) * 256))


def _solarize_increasing(
    image: Image.Image, magnitude: float, rng: np.random.Generator, fill=DEFAULT_FILL
) -> Image.Image:
    return ImageOps.solarize(image, 256 - int(_level(magnitude) * 256))


def _solarize_add(image: Image.Image, magnitude: float, rng: np.random.Generator, fill=DEFAULT_FILL) -> Image.Image:
    add, threshold = int(_level(magnitude) * 110), 128
    lut = [min(255, value + add) if value < threshold else value for value in range(256)]
    if image.mode not in ("L", "RGB"):
        return image
    return image.point(lut * len(image.getbands()))


def _enhancer(enhance_cls: type, increasing: bool) -> Callable[..., Image.Image]:
    def op(image: Image.Image, magnitude: float, rng: np.random.Generator, fill=DEFAULT_FILL) -> Image.Image:
        if increasing:  # 1 +- 0.9 * level: the further from 1, the stronger
            factor = max(0.1, 1.0 + _random_sign(_level(magnitude) * 0.9, rng))
        else:  # 0.1 .. 1.9, no sign
            factor = _level(magnitude) * 1.8 + 0.1
        return enhance_cls(image).enhance(factor)

    return op


def _affine(image: Image.Image, coefficients: tuple[float, ...], fill) -> Image.Image:
    return image.transform(image.size, Image.Transform.AFFINE, coefficients, resample=_BILINEAR, fillcolor=tuple(fill))


def _shear_x(image: Image.Image, magnitude: float, rng: np.random.Generator, fill=DEFAULT_FILL) -> Image.Image:
    factor = _random_sign(_level(magnitude) * 0.3, rng)
    return _affine(image, (1, factor, 0, 0, 1, 0), fill)


def _shear_y(image: Image.Image, magnitude: float, rng: np.random.Generator, fill=DEFAULT_FILL) -> Image.Image:
    factor = _random_sign(_level(magnitude) * 0.3, rng)
    return _affine(image, (1, 0, 0, factor, 1, 0), fill)


def _translate_x_rel(image: Image.Image, magnitude: float, rng: np.random.Generator, fill=DEFAULT_FILL) -> Image.Image:
    pixels = _random_sign(_level(magnitude) * 0.45, rng) * image.size[0]
    return _affine(image, (1, 0, pixels, 0, 1, 0), fill)


def _translate_y_rel(image: Image.Image, magnitude: float, rng: np.random.Generator, fill=DEFAULT_FILL) -> Image.Image:
    pixels = _random_sign(_level(magnitude) * 0.45, rng) * image.size[1]
    return _affine(image, (1, 0, 0, 0, 1, pixels), fill)


RAND_AUGMENT_OPS: dict[str, Callable[..., Image.Image]] = {
    "AutoContrast": _auto_contrast,
    "Equalize": _equalize,
    "Invert": _invert,
    "Rotate": _rotate,
    "Posterize": _posterize,
    "PosterizeIncreasing": _posterize_increasing,
    "Solarize": _solarize,
    "SolarizeIncreasing": _solarize_increasing,
    "SolarizeAdd": _solarize_add,
    "Color": _enhancer(ImageEnhance.Color, increasing=False),
    "ColorIncreasing": _enhancer(ImageEnhance.Color, increasing=True),
    "Contrast": _enhancer(ImageEnhance.Contrast, increasing=False),
    "ContrastIncreasing": _enhancer(ImageEnhance.Contrast, increasing=True),
    "Brightness": _enhancer(ImageEnhance.Brightness, increasing=False),
    "BrightnessIncreasing": _enhancer(ImageEnhance.Brightness, increasing=True),
    "Sharpness": _enhancer(ImageEnhance.Sharpness, increasing=False),
    "SharpnessIncreasing": _enhancer(ImageEnhance.Sharpness, increasing=True),
    "ShearX": _shear_x,
    "ShearY": _shear_y,
    "TranslateXRel": _translate_x_rel,
    "TranslateYRel": _translate_y_rel,
}
"""Every RandAugment op by timm's name: `op(image, magnitude, rng, fill=DEFAULT_FILL) -> PIL.Image.Image`."""

RAND_OPS: tuple[str, ...] = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "SolarizeAdd",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)
"""The original RandAugment op set (`inc0`)."""

RAND_INCREASING_OPS: tuple[str, ...] = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "PosterizeIncreasing",
    "SolarizeIncreasing",
    "SolarizeAdd",
    "ColorIncreasing",
    "ContrastIncreasing",
    "BrightnessIncreasing",
    "SharpnessIncreasing",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)
"""The op set whose strength increases with the magnitude (`inc1`, GroupViT's)."""


@dataclass(frozen=True)
class RandAugmentSettings:
    """A parsed RandAugment string.

    Args:
        magnitude (`float`): the mean magnitude `M`, in [0, 10].
        num_ops (`int`): ops drawn (with replacement) per image.
        magnitude_std (`float`): std of the Gaussian noise on the magnitude per op application; `inf` samples the
            magnitude uniformly in [0, M].
        increasing (`bool`): use `RAND_INCREASING_OPS` (else `RAND_OPS`).
    """

    magnitude: float = MAX_MAGNITUDE
    num_ops: int = 2
    magnitude_std: float = 0.0
    increasing: bool = False


def _parse_number(kind: type, key: str, text: str, config: str) -> float | int:
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"rand_augment key {key!r} has a malformed value {text!r} in {config!r}") from None
    if not value >= 0:  # also rejects nan
        raise ValueError(f"rand_augment key {key!r} must be >= 0, got {text!r} in {config!r}")
    return value


def parse_rand_augment(config: str) -> RandAugmentSettings:
    """Parse a timm RandAugment string `rand-m{M}-n{N}-mstd{S}-inc{0|1}` (sections optional, in any order).

    Defaults are timm's: M = 10, N = 2, no magnitude noise, the original op set. An `mstd` above 100 means uniform
    sampling in [0, M] (timm's convention).

    Args:
        config (`str`): e.g. "rand-m9-mstd0.5-inc1".

    Returns:
        `RandAugmentSettings`

    Raises:
        TypeError: if `config` is not a string.
        ValueError: if the string does not start with "rand", a section has an unknown key (timm's `w` and `mmax`
            are not supported) or no value, or a value is out of range.

    Examples:

    ```python
    >>> from clipzoo.processing.augmentation import parse_rand_augment

    >>> parse_rand_augment("rand-m9-mstd0.5-inc1")
    RandAugmentSettings(magnitude=9.0, num_ops=2, magnitude_std=0.5, increasing=True)
    ```
    """
    if not isinstance(config, str):
        raise TypeError(f"rand_augment must be a str, got {type(config).__name__}")
    sections = config.split("-")
    if sections[0] != "rand":
        raise ValueError(f"rand_augment must start with 'rand', got {config!r}")
    values: dict[str, float | int | bool] = {}
    for section in sections[1:]:
        match = re.fullmatch(r"([A-Za-z]*)(\d.*)", section)
        if match is None:
            raise ValueError(f"rand_augment section {section!r} of {config!r} is not <key><number> (unknown key)")
        key, text = match.groups()
        if key == "m":
            magnitude = _parse_number(float, key, text, config)
            if not 0 <= magnitude <= MAX_MAGNITUDE:
                raise ValueError(f"rand_augment magnitude 'm' must be in [0, 10], got {text!r} in {config!r}")
            values["magnitude"] = magnitude
        elif key == "n":
            values["num_ops"] = _parse_number(int, key, text, config)
        elif key == "mstd":
            std = _parse_number(float, key, text, config)
            values["magnitude_std"] = math.inf if std > 100 else std
        elif key == "inc":
            if text not in ("0", "1"):
                raise ValueError(f"rand_augment 'inc' must be 0 or 1, got {text!r} in {config!r}")
            values["increasing"] = text == "1"
        else:
            raise ValueError(f"unknown rand_augment key {key!r} in {config!r}: expected 'm', 'n', 'mstd' or 'inc'")
    return RandAugmentSettings(**values)


class RandAugment:
    """timm's RandAugment on PIL images, with an explicit random generator.

    `num_ops` ops are drawn uniformly with replacement from the op set; each is applied with probability 0.5, at a
    magnitude drawn per application (N(M, mstd), or uniform in [0, M] when mstd is inf) and clipped to [0, 10].

    Args:
        config (`str`, *optional*, defaults to "rand-m9-mstd0.5-inc1"): see `parse_rand_augment`.
        fill (`Sequence[int]`, *optional*, defaults to `DEFAULT_FILL`): fill colour of the geometric ops.
        prob (`float`, *optional*, defaults to 0.5): probability of applying each drawn op.

    Examples:

    ```python
    >>> import numpy as np
    >>> from PIL import Image
    >>> from clipzoo.processing.augmentation import RandAugment

    >>> augment = RandAugment("rand-m9-mstd0.5-inc1")
    >>> augment(Image.new("RGB", (32, 32), (200, 30, 30)), np.random.default_rng(0)).size
    (32, 32)
    ```
    """

    def __init__(self, config: str = "rand-m9-mstd0.5-inc1", fill: Sequence[int] = DEFAULT_FILL, prob: float = 0.5):
        self.settings = parse_rand_augment(config)
        self.config = config
        self.fill = tuple(int(value) for value in fill)
        if not 0 <= prob <= 1:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        self.prob = float(prob)
        self.op_names = RAND_INCREASING_OPS if self.settings.increasing else RAND_OPS

    def sample_magnitude(self, rng: np.random.Generator) -> float:
        """One application's magnitude: the configured one plus noise, clipped to [0, 10]."""
        magnitude, std = self.settings.magnitude, self.settings.magnitude_std
        if std == math.inf:
            magnitude = rng.uniform(0.0, magnitude)
        elif std > 0:
            magnitude = rng.normal(magnitude, std)
        return float(min(MAX_MAGNITUDE, max(0.0, magnitude)))

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        if self.settings.num_ops <= 0:
            return image
        chosen = rng.integers(0, len(self.op_names), size=self.settings.num_ops)
        for index in chosen:
            if self.prob < 1.0 and rng.random() > self.prob:
                continue
            magnitude = self.sample_magnitude(rng)
            image = RAND_AUGMENT_OPS[self.op_names[index]](image, magnitude, rng, fill=self.fill)
        return image

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r}, fill={self.fill}, prob={self.prob})"


# --------------------------------------------------------------------------------------------------------------------
# Random resized crop and random erasing.
# --------------------------------------------------------------------------------------------------------------------


def random_erase(
    pixels: torch.Tensor,
    rng: np.random.Generator,
    probability: float = 0.25,
    scale: Sequence[float] = (0.02, 1 / 3),
    ratio: Sequence[float] = (0.3, 1 / 0.3),
    attempts: int = 10,
) -> torch.Tensor:
    """timm's `RandomErasing(mode="pixel", max_count=1)` on one normalised `(channels, height, width)` image.

    With probability `probability`, up to `attempts` times: area = uniform(scale) * height * width, aspect ratio =
    exp(uniform(log ratio)), box height = round(sqrt(area * ratio)), box width = round(sqrt(area / ratio)); the
    first box strictly smaller than the image (both sides) is placed at a uniformly random position and filled with
    per-pixel, per-channel standard-normal values.

    Args:
        pixels (`torch.Tensor`): `(channels, height, width)` float image; not modified.
        rng (`numpy.random.Generator`): the random generator.
        probability (`float`, *optional*, defaults to 0.25): probability of erasing.
        scale (`Sequence[float]`, *optional*, defaults to (0.02, 1/3)): (min, max) fraction of the image area.
        ratio (`Sequence[float]`, *optional*, defaults to (0.3, 1/0.3)): (min, max) aspect ratio, height / width.
        attempts (`int`, *optional*, defaults to 10): sampling attempts.

    Returns:
        `torch.Tensor`: a new tensor, erased or a plain copy.
    """
    out = pixels.clone()
    if probability <= 0 or rng.random() >= probability:
        return out
    channels, height, width = out.shape
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target_area = rng.uniform(scale[0], scale[1]) * area
        aspect = math.exp(rng.uniform(*log_ratio))
        box_height = int(round(math.sqrt(target_area * aspect)))
        box_width = int(round(math.sqrt(target_area / aspect)))
        if 0 < box_height < height and 0 < box_width < width:
            top = int(rng.integers(0, height - box_height + 1))
            left = int(rng.integers(0, width - box_width + 1))
            noise = rng.standard_normal((channels, box_height, box_width), dtype=np.float32)
            out[:, top : top + box_height, left : left + box_width] = torch.from_numpy(noise).to(out.dtype)
            break
    return out


# --------------------------------------------------------------------------------------------------------------------
# The full transform.
# --------------------------------------------------------------------------------------------------------------------


def _check_probability(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _check_pair(name: str, value: Sequence[float]) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a (min, max) pair of numbers, got {value!r}") from error
    return low, high


class DeiTTrainTransform:
    """GroupViT's (DeiT-style) training transform: PIL image in, normalised `(3, size, size)` float32 tensor out.

    Random resized crop (bilinear) -> horizontal flip -> RandAugment -> to tensor and normalise -> random erasing;
    see the module docstring for every parameter of the official recipe and where this differs from timm. There is
    no colour jitter: the official config sets 0.4, but timm disables colour jitter whenever RandAugment is on.

    With `scale=(1.0, 1.0)`, `hflip=0`, `rand_augment=None` and `random_erasing=0` this is a plain bilinear resize to
    `size` x `size` followed by normalisation.

    Randomness comes from the transform's own `numpy.random.Generator`, seeded from `seed` (OS entropy when `None`);
    `set_seed` restarts it. Inside a `DataLoader` worker the generator is re-seeded once per worker from
    `(seed, worker seed)`, so workers and epochs get different streams while a seeded run stays reproducible (the
    loader's worker seeds follow `torch.manual_seed` / the loader's `generator`). Under several training processes
    pass `process_index`: every process seeds torch alike, so without it all processes would draw the same crops.

    Args:
        size (`int`): output height and width.
        scale (`Sequence[float]`, *optional*, defaults to (0.08, 1.0)): crop area fraction range, `0 < min <= max
            <= 1`; a minimum of 1.0 keeps the whole image.
        ratio (`Sequence[float]`, *optional*, defaults to (3/4, 4/3)): crop aspect ratio (width / height) range.
        hflip (`float`, *optional*, defaults to 0.5): horizontal flip probability.
        rand_augment (`str`, *optional*, defaults to "rand-m9-mstd0.5-inc1"): timm RandAugment string, or `None`
            to skip RandAugment.
        random_erasing (`float`, *optional*, defaults to 0.25): random erasing probability (pixel mode, one box).
        mean (`Sequence[float]`, *optional*, defaults to the ImageNet mean): normalisation mean; also sets the fill
            colour of the geometric RandAugment ops.
        std (`Sequence[float]`, *optional*, defaults to the ImageNet std): normalisation std.
        seed (`int`, *optional*): seed of the random generator.
        process_index (`int`, *optional*, defaults to 0): this training process's index
            (`TrainingArguments.process_index`); it enters the seed, so processes draw different augmentations.

    Raises:
        ValueError: for `size < 1`, a `scale` outside `0 < min <= max <= 1`, a bad `ratio`, probabilities outside
            [0, 1], a malformed `rand_augment`, or a `mean`/`std` that is not three numbers (std > 0).

    Examples:

    ```python
    >>> from PIL import Image
    >>> from clipzoo.processing.augmentation import DeiTTrainTransform

    >>> transform = DeiTTrainTransform(224, seed=0)
    >>> transform(Image.new("RGB", (320, 240), (90, 160, 30))).shape
    torch.Size([3, 224, 224])
    ```
    """

    def __init__(
        self,
        size: int,
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        rand_augment: str | None = "rand-m9-mstd0.5-inc1",
        random_erasing: float = 0.25,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        seed: int | None = None,
        process_index: int = 0,
    ):
        if isinstance(process_index, bool) or not isinstance(process_index, numbers.Integral) or process_index < 0:
            raise ValueError(f"process_index must be a non-negative int, got {process_index!r}")
        self.process_index = int(process_index)
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise ValueError(f"size must be a positive int, got {size!r}")
        self.size = int(size)
        self.scale = _check_pair("scale", scale)
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {tuple(scale)!r}")
        self.ratio = _check_pair("ratio", ratio)
        if not (0 < self.ratio[0] <= self.ratio[1] and math.isfinite(self.ratio[1])):
            raise ValueError(f"ratio must satisfy 0 < min <= max < inf, got {tuple(ratio)!r}")
        self.hflip = _check_probability("hflip", hflip)
        self.random_erasing = _check_probability("random_erasing", random_erasing)
        if len(mean) != 3 or len(std) != 3 or any(float(s) <= 0 for s in std):
            raise ValueError(f"mean and std must be 3 numbers each (std > 0), got mean={mean!r}, std={std!r}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.rand_augment = None if rand_augment is None else RandAugment(rand_augment, fill=fill_from_mean(mean))
        self._mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)
        self.set_seed(seed)

    def set_seed(self, seed: int | None) -> None:
        """Restart the random generator from `seed` (OS entropy when `None`)."""
        self.seed = seed
        self._rng = np.random.default_rng(self._entropy())
        info = torch.utils.data.get_worker_info()
        self._worker_seed = None if info is None else info.seed  # an explicit seed inside a worker is kept

    def _entropy(self, worker_seed: int | None = None) -> int | list[int] | None:
        """Seed material `[seed, process_index, worker seed]`, leaving out what is unknown or 0 (process 0). A seeded
        transform in process 0 outside workers is plain `default_rng(seed)`; no seed outside workers is OS entropy."""
        if self.seed is None and worker_seed is None:
            return None  # OS entropy already differs between processes
        parts = [] if self.seed is None else [int(self.seed)]
        if self.process_index:
            parts.append(self.process_index)
        if worker_seed is None:
            return parts[0] if len(parts) == 1 else parts
        return [*parts, worker_seed]

    def _generator(self) -> np.random.Generator:
        info = torch.utils.data.get_worker_info()
        if info is not None and info.seed != self._worker_seed:
            self._rng = np.random.default_rng(self._entropy(int(info.seed)))
            self._worker_seed = info.seed
        return self._rng

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if not isinstance(image, Image.Image):
            raise TypeError(f"{type(self).__name__} expects a PIL.Image.Image, got {type(image).__name__}")
        rng = self._generator()
        image = to_rgb(image)
        left, top, width, height = sample_crop_box(image.width, image.height, self.scale, self.ratio, rng)
        image = image.crop((left, top, left + width, top + height)).resize((self.size, self.size), _BILINEAR)
        if self.hflip > 0 and rng.random() < self.hflip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.rand_augment is not None:
            image = self.rand_augment(image, rng)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
        pixels = (pixels - self._mean) / self._std
        if self.random_erasing > 0:
            pixels = random_erase(pixels, rng, probability=self.random_erasing)
        return pixels

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self.size}, scale={self.scale}, ratio={self.ratio}, hflip={self.hflip}, "
            f"rand_augment={None if self.rand_augment is None else self.rand_augment.config!r}, "
            f"random_erasing={self.random_erasing}, mean={self.mean}, std={self.std}, seed={self.seed})"
        )
