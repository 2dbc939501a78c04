"""Image processing for APE: the CLIP evaluation preprocessing plus the cache / APE-T training augmentation.

The official cache augmentation is torchvision's `RandomResizedCrop(size, scale=(0.5, 1), bicubic)` +
`RandomHorizontalFlip(0.5)` followed by CLIP normalisation. torchvision is not available here, so the crop sampler is
re-implemented with PIL + numpy following torchvision's documented algorithm (10 area/aspect attempts, log-uniform
aspect ratio in [3/4, 4/3], centre-crop fallback).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image
from transformers import BatchFeature
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from clipzoo.processing.image_utils import sample_crop_box


__all__ = ["APEImageProcessor", "random_resized_crop_box", "augment_image"]


def random_resized_crop_box(
    width: int,
    height: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.5, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """A crop box `(left, top, right, bottom)` covering a random `scale` fraction of the area with a random aspect
    (`RandomResizedCrop`'s sampling, shared with GroupViT's augmentation: see
    [`~clipzoo.processing.image_utils.sample_crop_box`])."""
    left, top, crop_w, crop_h = sample_crop_box(width, height, scale, ratio, rng)
    return left, top, left + crop_w, top + crop_h


def augment_image(
    image: Image.Image,
    size: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.5, 1.0),
    flip_probability: float = 0.5,
) -> Image.Image:
    """RandomResizedCrop(size, scale) with bicubic resampling, then a horizontal flip with `flip_probability`."""
    image = image.convert("RGB")
    box = random_resized_crop_box(image.width, image.height, rng, scale)
    out = image.resize((size, size), Image.Resampling.BICUBIC, box=box)
    if rng.random() < flip_probability:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return out


class APEImageProcessor(CLIPImageProcessorPil):
    r"""
    CLIP preprocessing (bicubic resize of the shortest edge, centre crop, CLIP mean/std) for evaluation, plus
    `augment()` for the cache views and APE-T training batches (random resized crop with scale (0.5, 1) + horizontal
    flip, then the same normalisation).

    Args:
        augment_scale (`list[float]`, *optional*, defaults to `[0.5, 1.0]`): area range of the random crops.
        flip_probability (`float`, *optional*, defaults to 0.5): probability of a horizontal flip.
        **kwargs: the `CLIPImageProcessorPil` settings (`size`, `crop_size`, `image_mean`, ...).

    Examples:

    ```python
    >>> import numpy as np
    >>> from PIL import Image
    >>> from clipzoo.processing.processing_ape import APEImageProcessor

    >>> processor = APEImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    >>> image = Image.new("RGB", (48, 40))
    >>> processor.augment([image], rng=np.random.default_rng(0))["pixel_values"].shape
    torch.Size([1, 3, 32, 32])
    ```
    """

    model_input_names = ["pixel_values"]

    def __init__(self, augment_scale: Sequence[float] = (0.5, 1.0), flip_probability: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        if len(augment_scale) != 2 or not 0 < augment_scale[0] <= augment_scale[1] <= 1:
            raise ValueError(f"augment_scale must be (low, high) with 0 < low <= high <= 1, got {augment_scale!r}.")
        self.augment_scale = [float(s) for s in augment_scale]
        self.flip_probability = float(flip_probability)

    def augment(self, images: Sequence[Image.Image], rng: np.random.Generator) -> BatchFeature:
        """One augmented view of every image, preprocessed to `pixel_values` of the crop size."""
        crop = self.crop_size or {"height": 224, "width": 224}
        size = int(crop["height"])
        views = [augment_image(image, size, rng, tuple(self.augment_scale), self.flip_probability) for image in images]
        # The crops are already `size`-square; the standard path then only rescales and normalises them
        # (resize of a square to its shortest edge and centre crop are identities when size == crop size).
        return self(images=views, size={"shortest_edge": size}, return_tensors="pt")
