"""GroupViT image processor and processor, with the official preprocessing (not the Hub's CLIP constants).

The official training and evaluation normalise with the ImageNet mean/std and resize bilinearly (eval: short side 256,
centre crop 224; NVlabs/GroupViT `datasets/builder.py`). The Hub's `nvidia/groupvit-gcc-yfcc` ships the
`CLIPProcessor` of `openai/clip-vit-base-patch32` instead (CLIP mean/std, bicubic), saved by transformers' conversion
script; `ClipzooGroupViTImageProcessor` restores the official settings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling
from transformers.processing_utils import ProcessorMixin
from transformers.utils import logging

from clipzoo.processing.segmentation_groupvit import SegmentationSettings, segment_images
from clipzoo.processing.text_groupvit import FULL_IMAGENET_TEMPLATES, build_prompt_texts, prompt_key


logger = logging.get_logger(__name__)

__all__ = ["ClipzooGroupViTImageProcessor", "ClipzooGroupViTProcessor"]


class ClipzooGroupViTImageProcessor(PilBackend):
    r"""
    GroupViT's evaluation transform: bilinear resize of the short side to 256, centre crop 224, ImageNet mean/std.

    Args:
        size (`dict`, *optional*, defaults to `{"shortest_edge": 256}`): resize target.
        crop_size (`dict`, *optional*, defaults to `{"height": 224, "width": 224}`): centre crop.
        resample (`PILImageResampling`, *optional*, defaults to `BILINEAR`).
        image_mean / image_std (`list[float]`, *optional*): ImageNet constants by default.

    Examples:

    ```python
    >>> from PIL import Image
    >>> from clipzoo.processing.processing_groupvit import ClipzooGroupViTImageProcessor
    >>> processor = ClipzooGroupViTImageProcessor()
    >>> processor(Image.new("RGB", (320, 240)), return_tensors="pt")["pixel_values"].shape
    torch.Size([1, 3, 224, 224])
    ```
    """

    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BILINEAR
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"shortest_edge": 256}
    default_to_square = False
    crop_size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True


class ClipzooGroupViTProcessor(ProcessorMixin):
    r"""
    Image processor + tokenizer for GroupViT, with the multi-label prompt expansion and the official zero-shot
    segmentation recipe.

    Args:
        image_processor ([`ClipzooGroupViTImageProcessor`]): the image processor.
        tokenizer: any tokenizer whose sequences end with an end-of-text token (CLIP BPE, clipzoo's offline BPE).

    Examples:

    ```python
    >>> batch = processor(images=images, text=["a red triangle"], expand_prompts=True, num_prompts=3,
    ...                   padding="max_length", return_tensors="pt")  # doctest: +SKIP
    >>> batch["input_ids"].shape  # (batch, 1 + K, seq): caption, then K prompts  # doctest: +SKIP
    ```
    """

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor, tokenizer)

    def expand_prompts(
        self,
        captions: Sequence[str],
        num_prompts: int = 3,
        word_extractor: Callable[[str], list[str]] | None = None,
        templates: Sequence[str] = FULL_IMAGENET_TEMPLATES,
        rng: np.random.Generator | None = None,
        no_word_policy: str = "fill",
        return_words: bool = False,
    ) -> list[list[str]] | tuple[list[list[str]], list[list[str]]]:
        """`[caption, p_1, ..., p_K]` for each caption (see `clipzoo.processing.text_groupvit.build_prompt_texts`);
        with `return_words=True` also what each prompt names."""
        rng = rng if rng is not None else np.random.default_rng()
        built = [
            build_prompt_texts(caption, num_prompts, word_extractor, templates, rng, no_word_policy, return_words=True)
            for caption in captions
        ]
        texts = [texts for texts, _ in built]
        return (texts, [words for _, words in built]) if return_words else texts

    def __call__(
        self,
        images=None,
        text: str | Sequence[str] | None = None,
        expand_prompts: bool = False,
        num_prompts: int = 3,
        word_extractor: Callable[[str], list[str]] | None = None,
        rng: np.random.Generator | None = None,
        no_word_policy: str = "fill",
        return_prompt_ids: bool = False,
        **kwargs,
    ) -> BatchFeature:
        """Processes images and/or texts. With `expand_prompts=True` each caption becomes `1 + num_prompts` texts and
        `input_ids` / `attention_mask` get shape `(batch, 1 + num_prompts, seq)` (training with the multi-label loss);
        `return_prompt_ids=True` adds `prompt_ids`, `(batch, num_prompts)` ids of the word each prompt names
        (`clipzoo.processing.text_groupvit.prompt_key`), for `multi_label_targets="word"`. Other keyword arguments go
        to the tokenizer (`padding`, `max_length`, `truncation`, `return_tensors`) and the image processor."""
        if images is None and text is None:
            raise ValueError("Pass images=, text= or both.")
        return_tensors = kwargs.pop("return_tensors", "pt")
        text_kwargs = {k: kwargs.pop(k) for k in ("padding", "max_length", "truncation") if k in kwargs}
        data = {}
        if text is not None:
            captions = [text] if isinstance(text, str) else list(text)
            if return_prompt_ids and not expand_prompts:
                raise ValueError("return_prompt_ids=True needs expand_prompts=True (the ids name the prompts' words).")
            if expand_prompts:
                groups, words = self.expand_prompts(captions, num_prompts, word_extractor, rng=rng,
                                                    no_word_policy=no_word_policy, return_words=True)  # fmt: skip
                if return_prompt_ids:
                    data["prompt_ids"] = torch.tensor(
                        [[prompt_key(w) for w in row] for row in words], dtype=torch.long
                    )
                flat = [t for group in groups for t in group]
                text_kwargs.setdefault("padding", True)
                tokens = self.tokenizer(flat, return_tensors="pt", **text_kwargs)
                for key, value in tokens.items():
                    data[key] = value.reshape(len(captions), 1 + num_prompts, -1)
            else:
                data.update(self.tokenizer(captions, return_tensors="pt", **text_kwargs))
        if images is not None:
            data.update(self.image_processor(images, return_tensors="pt", **kwargs))
        return BatchFeature(data=data, tensor_type=return_tensors)

    def post_process_semantic_segmentation(
        self,
        model: torch.nn.Module,
        images: Image.Image | Sequence[Image.Image],
        labels: Sequence[str],
        background_threshold: float = 0.95,
        with_background: bool = True,
        short_side: int | None = 448,
        crop_size: int | None = 448,
        stride: int = 224,
        top_k: int = 5,
        template: str = "a photo of a {}.",
        max_long_side: int = 2048,
        assignment: str = "soft",
    ) -> list[torch.Tensor]:
        """Zero-shot semantic segmentation, the official GroupViT recipe (see
        `clipzoo/processing/segmentation_groupvit.py`). Unlike transformers' `post_process_*` methods it runs the model
        itself, because the recipe resizes and slides a window over each image.

        Args:
            model ([`ClipzooGroupViTModel`]): the model.
            images (`PIL.Image` or list of them): RGB images of any size (at least one patch).
            labels (`Sequence[str]`): class names, without background; unique and non-empty.
            background_threshold (`float`, *optional*, defaults to 0.95): 0.95 (VOC, COCO-Object), 0.35 (Context).
            with_background (`bool`, *optional*, defaults to `True`): label 0 is background and `labels[i]` is i + 1.
            short_side / crop_size / stride (`int`, *optional*): resize and sliding window (448 / 448 / 224).
            top_k (`int`, *optional*, defaults to 5): image-level class filter.
            template (`str`, *optional*): class prompt, the official "simple" template by default.
            max_long_side (`int`, *optional*, defaults to 2048): cap on the resized long side.
            assignment (`str`, *optional*, defaults to `"soft"`): `"soft"` (official) or `"hard"` chaining of the
                grouping stages (see [`SegmentationSettings`]).

        Returns:
            `list[torch.Tensor]`: one `(height, width)` long tensor of label ids per image, at the image's size.
        """
        settings = SegmentationSettings(
            background_threshold, with_background, short_side, max_long_side, crop_size, stride, top_k, template,
            assignment,
        )  # fmt: skip
        return segment_images(model, self.tokenizer, images, labels, settings)
