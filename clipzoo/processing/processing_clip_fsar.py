"""CLIP-FSAR processor: the shared video processor plus a CLIP tokenizer for the class-name prompts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.utils import logging


logger = logging.get_logger(__name__)

__all__ = ["ClipzooCLIPFSARProcessor"]


class ClipzooCLIPFSARProcessor(ProcessorMixin):
    r"""
    Video processor + tokenizer for CLIP-FSAR. Builds the model inputs of one episode from query videos, labelled
    support videos (labels are class names) and the prompt template.

    Args:
        image_processor ([`ClipzooVideoProcessor`]): frame sampling, resize, crop and normalisation.
        tokenizer: the CLIP text tower's tokenizer.
        prompt (`str`, *optional*, defaults to `"a photo of {}"`): class-name template.

    Examples:

    ```python
    >>> inputs = processor(videos=["query.mp4"], support_videos=["a.mp4", "b.mp4"],
    ...                    support_labels=["jump", "run"])  # doctest: +SKIP
    >>> model(**inputs).logits_per_video.softmax(-1)  # doctest: +SKIP
    ```
    """

    def __init__(self, image_processor=None, tokenizer=None, prompt: str = "a photo of {}", **kwargs):
        self.prompt = prompt
        super().__init__(image_processor, tokenizer)

    def prompts(self, class_names: Sequence[str]) -> list[str]:
        """The prompt of each class name (`"a photo of {}"` by default, no final period as officially)."""
        return [self.prompt.format(name) for name in class_names]

    def tokenize_class_names(self, class_names: Sequence[str]) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer(self.prompts(class_names), padding=True, truncation=True, return_tensors="pt")
        return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}

    def __call__(
        self,
        videos=None,
        support_videos=None,
        support_labels: Sequence[str] | None = None,
        training: bool = False,
        rng: np.random.Generator | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Episode inputs: `pixel_values` (queries), `support_pixel_values`, `support_labels` (episode labels in
        order of first appearance of each class name), `class_input_ids` / `class_attention_mask` (one prompt per
        class) and `class_names`. With only `videos`, returns just their `pixel_values`."""
        if videos is None and support_videos is None:
            raise ValueError("Pass videos= (queries), support_videos= with support_labels=, or both.")
        data = {}
        if videos is not None:
            data["pixel_values"] = self.image_processor(videos, training=training, rng=rng)["pixel_values"]
        if support_videos is not None:
            if support_labels is None or len(support_labels) != len(support_videos):
                raise ValueError(
                    f"support_labels must name the class of each of the {len(support_videos)} support videos; got "
                    f"{support_labels!r}."
                )
            names = list(dict.fromkeys(support_labels))
            data["support_pixel_values"] = self.image_processor(support_videos, training=training, rng=rng)[
                "pixel_values"
            ]
            data["support_labels"] = torch.tensor([names.index(label) for label in support_labels])
            tokens = self.tokenize_class_names(names)
            data["class_input_ids"], data["class_attention_mask"] = tokens["input_ids"], tokens["attention_mask"]
        batch = BatchFeature(data)
        batch["class_names"] = names if support_videos is not None else None
        return batch
