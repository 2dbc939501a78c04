"""GroupViT's zero-shot semantic segmentation, the official recipe (NVlabs/GroupViT
`segmentation/evaluation/group_vit_seg.py::GroupViTSegInference` with mmseg's test pipeline).

Per image: resize so the short side is 448 (long side at most 2048), ImageNet-normalise, slide a 448 x 448 window with
stride 224 and average the overlapping window scores (mmseg `slide` mode), resize the scores to the input size and take
the argmax. Per window:

1. the soft assignment of every grouping stage, `(groups, tokens)`, is transposed and chained by matrix products
   (patches -> 64 groups -> 8 groups), reshaped to the patch grid and bilinearly upsampled to the window;
2. each pixel takes its arg-max group (one-hot);
3. group-class affinity `s * <group_emb, text_emb>` (normalised embeddings, `s` the clamped logit scale), softmax over
   classes (`pre`);
4. only the top-5 classes of the image-level affinity `softmax(s * <image_emb, text_emb>)` stay; the others get
   `-inf`, softmax again, then multiply by `pre`;
5. a pixel's class scores are those of its group;
6. background (when the label set has one): pixels whose best score is below `min(threshold, max affinity)` get
   background score 1 (threshold 0.95 for PASCAL VOC / COCO-Object, 0.35 for PASCAL Context).

The functions are split by step so each can be tested against a slow reference. The model is duck-typed: it needs
`get_group_features(pixel_values)`, `get_text_features(input_ids, attention_mask)`, `clamped_logit_scale()` and
`config.vision_config.patch_size`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SegmentationSettings",
    "chain_group_attentions",
    "check_labels",
    "class_scores_from_groups",
    "resize_short_side",
    "segment_images",
    "segment_images_multi",
    "slide_window_scores",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SegmentationSettings:
    """Knobs of the official recipe, with its defaults.

    Args:
        background_threshold (`float`, *optional*, defaults to 0.95): 0.95 for PASCAL VOC and COCO-Object, 0.35 for
            PASCAL Context.
        with_background (`bool`, *optional*, defaults to `True`): label 0 is background (no text prompt), labels
            1..N are the classes; else labels 0..N-1 and no threshold.
        short_side (`int`, *optional*, defaults to 448): resize target of the short side (`None`: keep the size).
        max_long_side (`int`, *optional*, defaults to 2048): cap on the long side (mmseg `img_scale=(2048, 448)`).
        crop_size (`int`, *optional*, defaults to 448): sliding-window size (`None`: one window, the whole image).
        stride (`int`, *optional*, defaults to 224): sliding-window stride.
        top_k (`int`, *optional*, defaults to 5): image-level class filter.
        template (`str`, *optional*, defaults to `"a photo of a {}."`): the official "simple" template.
        assignment (`str`, *optional*, defaults to `"soft"`): `"soft"` chains the soft assignments (official);
            `"hard"` chains each stage's arg-max assignment, as the model groups in its forward pass (the maintainers
            found soft better on their models, NVlabs/GroupViT issue #22; small models whose soft assignments are
            nearly uniform can need hard).
    """

    def __init__(
        self,
        background_threshold: float = 0.95,
        with_background: bool = True,
        short_side: int | None = 448,
        max_long_side: int = 2048,
        crop_size: int | None = 448,
        stride: int = 224,
        top_k: int = 5,
        template: str = "a photo of a {}.",
        assignment: str = "soft",
    ):
        if crop_size is not None and (stride <= 0 or stride > crop_size):
            raise ValueError(f"stride must be in (0, crop_size={crop_size}], got {stride}.")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}.")
        if assignment not in ("soft", "hard"):
            raise ValueError(f"assignment must be 'soft' or 'hard', got {assignment!r}.")
        if "{}" not in template:
            raise ValueError(f"template must contain '{{}}' for the class name, got {template!r}.")
        self.background_threshold = float(background_threshold)
        self.with_background = bool(with_background)
        self.short_side, self.max_long_side = short_side, max_long_side
        self.crop_size, self.stride, self.top_k, self.template = crop_size, stride, top_k, template
        self.assignment = assignment


def check_labels(labels: Sequence[str]) -> list[str]:
    """Returns the class names as a list, or raises a `ValueError` for an empty list, an empty name or duplicates."""
    if isinstance(labels, str):
        labels = [part.strip() for part in labels.split(",")]
    labels = list(labels)
    if not labels:
        raise ValueError("labels is empty; pass at least one class name, e.g. ['cat', 'dog'].")
    bad = [label for label in labels if not isinstance(label, str) or not label.strip()]
    if bad:
        raise ValueError(f"labels must be non-empty strings, got {bad!r}.")
    seen, duplicates = set(), []
    for label in labels:
        if label in seen and label not in duplicates:
            duplicates.append(label)
        seen.add(label)
    if duplicates:
        raise ValueError(f"labels contains duplicates {duplicates}; each class name must appear once.")
    return labels


def chain_group_attentions(
    attentions: Sequence[torch.Tensor], grid: tuple[int, int], size: tuple[int, int], hard: bool = False
):
    """Soft patch -> final-group map, upsampled to `size` (official `get_attn_maps(rescale=True)`).

    Args:
        attentions (`Sequence[torch.Tensor]`): soft assignment of each grouping stage, `(batch, groups_s, tokens_s)`,
            tokens of stage s+1 being the groups of stage s.
        grid (`tuple[int, int]`): patch grid `(h, w)` of the input, `h * w = tokens_0`.
        size (`tuple[int, int]`): output `(height, width)`.
        hard (`bool`, *optional*, defaults to `False`): replace each stage's assignment by its one-hot arg-max
            over groups before chaining.

    Returns:
        `torch.Tensor` of shape `(batch, height, width, groups_last)`.
    """
    chained = None
    for attn in attentions:
        if hard:
            attn = torch.zeros_like(attn).scatter_(1, attn.argmax(dim=1, keepdim=True), 1.0)
        step = attn.transpose(1, 2)
        chained = step if chained is None else chained @ step
    batch, tokens, groups = chained.shape
    if tokens != grid[0] * grid[1]:
        raise ValueError(f"attention has {tokens} tokens, the patch grid {grid} has {grid[0] * grid[1]}.")
    maps = chained.transpose(1, 2).reshape(batch, groups, grid[0], grid[1])
    maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    return maps.permute(0, 2, 3, 1)


def class_scores_from_groups(
    attention_map: torch.Tensor,
    group_embeds: torch.Tensor,
    image_embed: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor | float,
    top_k: int = 5,
    background_threshold: float | None = 0.95,
) -> torch.Tensor:
    """Per-pixel class scores of one window (official `GroupViTSegInference.encode_decode`).

    Args:
        attention_map (`torch.Tensor` of shape `(height, width, groups)`): soft patch -> group map.
        group_embeds (`torch.Tensor` of shape `(groups, dim)`): L2-normalised projected group tokens.
        image_embed (`torch.Tensor` of shape `(dim,)`): L2-normalised projected mean token.
        text_embeds (`torch.Tensor` of shape `(classes, dim)`): L2-normalised class-prompt embeddings (no background).
        logit_scale (`torch.Tensor` or `float`): the clamped, exponentiated logit scale.
        top_k (`int`, *optional*, defaults to 5): image-level class filter.
        background_threshold (`float`, *optional*, defaults to 0.95): `None` for a label set without background.

    Returns:
        `torch.Tensor` of shape `(1 + classes, height, width)` (channel 0 = background) or `(classes, height, width)`.
    """
    num_classes = text_embeds.shape[0]
    onehot = F.one_hot(attention_map.argmax(dim=-1), num_classes=attention_map.shape[-1]).to(text_embeds.dtype)
    affinity = logit_scale * group_embeds @ text_embeds.t()
    pre = affinity.softmax(dim=-1)
    image_affinity = (logit_scale * image_embed @ text_embeds.t()).softmax(dim=-1)
    keep = torch.zeros(num_classes, dtype=torch.bool, device=text_embeds.device)
    keep[image_affinity.topk(k=min(top_k, num_classes)).indices] = True
    affinity = affinity.masked_fill(~keep, float("-inf")).softmax(dim=-1) * pre
    pixel_scores = onehot @ affinity
    scores = pixel_scores.permute(2, 0, 1)
    if background_threshold is None:
        return scores
    threshold = min(background_threshold, affinity.max().item())
    background = (pixel_scores.max(dim=-1).values < threshold).to(scores.dtype)
    return torch.cat([background[None], scores], dim=0)


def slide_window_scores(fn, image: torch.Tensor, num_channels: int, crop_size: int | None, stride: int):
    """mmseg's `slide_inference`: average `fn(window)` over overlapping windows; `image` is `(1, 3, H, W)`.

    Windows start every `stride` pixels and the last one is shifted back to end at the border; an image smaller than
    the window is one window. `fn` maps a `(1, 3, h, w)` crop to `(num_channels, h, w)` scores.
    """
    _, _, height, width = image.shape
    if crop_size is None:
        return fn(image)
    rows = max(height - crop_size + stride - 1, 0) // stride + 1
    cols = max(width - crop_size + stride - 1, 0) // stride + 1
    total = image.new_zeros(num_channels, height, width)
    count = image.new_zeros(1, height, width)
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * stride + crop_size, height), min(c * stride + crop_size, width)
            y1, x1 = max(y2 - crop_size, 0), max(x2 - crop_size, 0)
            total[:, y1:y2, x1:x2] += fn(image[:, :, y1:y2, x1:x2])
            count[:, y1:y2, x1:x2] += 1
    return total / count


def resize_short_side(image: Image.Image, short_side: int | None, max_long_side: int = 2048) -> torch.Tensor:
    """RGB PIL image -> `(1, 3, H, W)` float tensor in [0, 255], rescaled as mmcv's `imrescale(keep_ratio)`.

    The scale is `min(max_long_side / long, short_side / short)`; new sides are `int(side * scale + 0.5)`; bilinear.
    """
    array = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32)).permute(2, 0, 1)[None]
    if short_side is None:
        return array
    height, width = array.shape[-2:]
    scale = min(max_long_side / max(height, width), short_side / min(height, width))
    size = (int(height * scale + 0.5), int(width * scale + 0.5))
    if size == (height, width):
        return array
    return F.interpolate(array, size=size, mode="bilinear", align_corners=False)


def _normalise(pixels: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, dtype=pixels.dtype).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, dtype=pixels.dtype).view(1, 3, 1, 1) * 255
    return (pixels - mean) / std


@torch.no_grad()
def encode_class_prompts(model, tokenizer, labels: Sequence[str], template: str) -> torch.Tensor:
    """L2-normalised text embeddings of `template.format(label)` for each label, `(classes, dim)`."""
    texts = [template.format(label) for label in labels]
    max_length = getattr(getattr(getattr(model, "config", None), "text_config", None), "max_position_embeddings", None)
    kwargs = {"truncation": True, "max_length": max_length} if max_length else {}
    tokens = tokenizer(texts, padding=True, return_tensors="pt", **kwargs)
    device = next(model.parameters()).device
    mask = tokens.get("attention_mask")
    embeds = model.get_text_features(tokens["input_ids"].to(device), None if mask is None else mask.to(device))
    return F.normalize(embeds, dim=-1)


@torch.no_grad()
def window_scores(model, window: torch.Tensor, text_embeds: torch.Tensor, settings: SegmentationSettings):
    """Class scores of one normalised `(1, 3, h, w)` window: steps 1-6 of the module docstring."""
    return _scores_from_features(model, model.get_group_features(window), window, text_embeds, settings)


def _scores_from_features(model, feats, window: torch.Tensor, text_embeds: torch.Tensor, settings) -> torch.Tensor:
    patch = model.config.vision_config.patch_size
    patch = patch if isinstance(patch, int) else patch[0]
    grid = (window.shape[2] // patch, window.shape[3] // patch)
    hard = settings.assignment == "hard"
    attention_map = chain_group_attentions(feats["attentions"], grid, tuple(window.shape[2:]), hard=hard)[0]
    threshold = settings.background_threshold if settings.with_background else None
    return class_scores_from_groups(
        attention_map,
        F.normalize(feats["group_embeds"][0], dim=-1),
        F.normalize(feats["image_embeds"][0], dim=-1),
        text_embeds,
        model.clamped_logit_scale(),
        top_k=settings.top_k,
        background_threshold=threshold,
    )


# Settings that change the model's input (so one forward pass cannot serve two values).
_INPUT_SETTINGS = ("short_side", "max_long_side", "crop_size", "stride", "template")


@torch.no_grad()
def segment_images(
    model,
    tokenizer,
    images: Sequence[Image.Image],
    labels: Sequence[str],
    settings: SegmentationSettings | None = None,
) -> list[torch.Tensor]:
    """Label maps `(H, W)` (long) at each input image's size; see the module docstring for the recipe.

    Raises:
        `ValueError`: empty or duplicated labels; an image smaller than one patch.
    """
    return segment_images_multi(model, tokenizer, images, labels, [settings or SegmentationSettings()])[0]


@torch.no_grad()
def segment_images_multi(
    model,
    tokenizer,
    images: Sequence[Image.Image],
    labels: Sequence[str],
    settings: Sequence[SegmentationSettings],
) -> list[list[torch.Tensor]]:
    """[`segment_images`] under several settings from one forward pass per window: `result[i]` are the label maps
    under `settings[i]`. The settings may differ in `assignment`, `background_threshold`, `with_background` and
    `top_k`, not in what changes the model's input (`short_side`, `max_long_side`, `crop_size`, `stride`,
    `template`).

    Raises:
        `ValueError`: no settings, or settings that differ in the model's input; empty or duplicated labels; an image
            smaller than one patch.
    """
    settings = list(settings)
    if not settings:
        raise ValueError("segment_images_multi needs at least one SegmentationSettings.")
    for name in _INPUT_SETTINGS:
        values = {getattr(s, name) for s in settings}
        if len(values) > 1:
            raise ValueError(
                f"Settings must share {name} (it changes the model's input); got {sorted(map(str, values))}."
            )
    first = settings[0]
    labels = check_labels(labels)
    if isinstance(images, Image.Image):
        images = [images]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    text_embeds = encode_class_prompts(model, tokenizer, labels, first.template)
    patch = model.config.vision_config.patch_size
    patch = patch if isinstance(patch, int) else patch[0]
    channels = [len(labels) + int(s.with_background) for s in settings]

    def all_scores(window: torch.Tensor) -> torch.Tensor:
        feats = model.get_group_features(window)
        return torch.cat([_scores_from_features(model, feats, window, text_embeds, s) for s in settings])

    results: list[list[torch.Tensor]] = [[] for _ in settings]
    for index, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise TypeError(f"Image {index} is a {type(image).__name__}, expected a PIL image.")
        if min(image.size) < patch:
            raise ValueError(
                f"Image {index} is {image.size[0]}x{image.size[1]} pixels, smaller than the {patch}-pixel patch."
            )
        pixels = _normalise(resize_short_side(image, first.short_side, first.max_long_side)).to(device)
        scores = slide_window_scores(all_scores, pixels, sum(channels), first.crop_size, first.stride)
        scores = F.interpolate(scores[None], size=image.size[::-1], mode="bilinear", align_corners=False)[0]
        for result, part in zip(results, scores.split(channels)):
            result.append(part.argmax(dim=0).cpu())
    model.train(was_training)
    return results


def overlay(image: Image.Image, label_map: Any, labels: Sequence[str], with_background: bool = True, alpha=0.5):
    """Blends a colour per class over `image` (background left as is); returns an RGB PIL image."""
    label_map = np.asarray(label_map)
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, size=(len(labels) + 1, 3)).astype(np.float32)
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    colours = palette[label_map]
    mask = (label_map != 0) if with_background else np.ones(label_map.shape, dtype=bool)
    base[mask] = base[mask] * (1 - alpha) + colours[mask] * alpha
    return Image.fromarray(base.clip(0, 255).astype(np.uint8))
