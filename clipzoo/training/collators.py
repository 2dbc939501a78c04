"""Data collators: raw dataset rows (PIL images, captions) to model inputs with `return_loss=True`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import BatchFeature

from clipzoo.processing.image_utils import to_rgb


__all__ = ["ImageTextCollator", "check_captions"]


def check_captions(captions: Sequence[Any], where: str = "batch") -> list[str]:
    """Returns the captions as strings, or raises a `ValueError` naming the first empty or non-string one."""
    out = []
    for i, caption in enumerate(captions):
        if not isinstance(caption, str):
            raise TypeError(f"Caption {i} of the {where} is a {type(caption).__name__}, expected a string.")
        if not caption.strip():
            raise ValueError(f"Caption {i} of the {where} is empty; every image needs a non-empty caption.")
        out.append(caption)
    return out


class ImageTextCollator:
    """Collates `{image, caption}` rows into CLIP inputs.

    Args:
        processor: a processor taking `images=` and `text=` (e.g. `CLIPProcessor`).
        image_column (`str`, *optional*, defaults to `"image"`): column holding PIL images.
        text_column (`str`, *optional*, defaults to `"caption"`): column holding captions.
        max_length (`int`, *optional*): pad/truncate texts to this many tokens (defaults to the tokenizer's
            `model_max_length`).

    Examples:

    ```python
    >>> collator = ImageTextCollator(processor)  # doctest: +SKIP
    >>> batch = collator([{"image": img, "caption": "a red triangle"}])  # doctest: +SKIP
    >>> sorted(batch)  # doctest: +SKIP
    ['attention_mask', 'input_ids', 'pixel_values', 'return_loss']
    ```
    """

    def __init__(self, processor, image_column: str = "image", text_column: str = "caption", max_length=None):
        self.processor = processor
        self.image_column = image_column
        self.text_column = text_column
        self.max_length = max_length or getattr(processor.tokenizer, "model_max_length", None)

    def __call__(self, rows: list[dict[str, Any]]) -> BatchFeature:
        missing = {self.image_column, self.text_column} - set(rows[0])
        if missing:
            raise KeyError(f"Rows lack column(s) {sorted(missing)}; they have {sorted(rows[0])}.")
        images = [to_rgb(row[self.image_column]) for row in rows]
        captions = check_captions([row[self.text_column] for row in rows])
        batch = self.processor(
            images=images,
            text=captions,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        batch["return_loss"] = True
        return batch
