"""GroupViT from scratch on ShapesWorld captions: recipe arguments, collator, `train`, `evaluate`, `segment`.

`clipzoo train groupvit` trains with `ClipzooTrainer` (image-caption InfoNCE + multi-label loss over K prompt texts per
image). `clipzoo evaluate groupvit --model DIR` reports zero-shot semantic segmentation mIoU on the ShapesWorld
segmentation split (masks from the generator, the official recipe of `segmentation_groupvit.py`), the two trivial
baselines (all background; every pixel = the image's top-1 class) and zero-shot shape classification accuracy.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import BatchFeature, TrainingArguments
from transformers.utils import logging

from clipzoo.configuration.configuration_groupvit import ClipzooGroupViTConfig
from clipzoo.modeling.modeling_groupvit import ClipzooGroupViTModel
from clipzoo.processing.processing_groupvit import ClipzooGroupViTImageProcessor, ClipzooGroupViTProcessor
from clipzoo.processing.segmentation_groupvit import (
    SegmentationSettings,
    check_labels,
    overlay,
    segment_images,
    segment_images_multi,
)
from clipzoo.processing.text_groupvit import (
    FULL_IMAGENET_TEMPLATES,
    SUBSET_IMAGENET_TEMPLATES,
    LexiconWordExtractor,
)


logger = logging.get_logger(__name__)

__all__ = [
    "GroupViTCollator",
    "GroupViTDataArguments",
    "GroupViTModelArguments",
    "NLTKWordExtractor",
    "build_model_and_processor",
    "evaluate",
    "segment",
    "train",
]

METADATA_FILE = "clipzoo_groupvit_training.json"


class NLTKWordExtractor:
    """The official extractor: `nltk.pos_tag(nltk.word_tokenize(text))`, keeping `NN, NNS, NNP, VB*` tags.

    Needs `pip install nltk` and its tagger/tokenizer data (`nltk.download('popular')`), which cannot be fetched
    offline.
    """

    TAGS = ("NN", "NNS", "NNP", "VBG", "VB", "VBD", "VBN", "VBP", "VBZ")

    def __init__(self):
        try:
            import nltk
        except ImportError as err:
            raise ImportError(
                "NLTKWordExtractor needs NLTK: `pip install nltk` and `python -m nltk.downloader popular`; "
                "or use the offline LexiconWordExtractor (the default)."
            ) from err
        self._nltk = nltk

    def __call__(self, text: str) -> list[str]:
        tokens = self._nltk.word_tokenize(text)
        return [word for word, tag in self._nltk.pos_tag(tokens) if tag in self.TAGS]


@dataclass
class GroupViTModelArguments:
    """A small GroupViT for 64-px ShapesWorld images (the official GroupViT-S is 384 wide, 224 px, patch 16)."""

    image_size: int = 64
    patch_size: int = 8
    hidden_size: int = 64
    depths: list[int] = field(default_factory=lambda: [2, 1, 1])
    num_group_tokens: list[int] = field(default_factory=lambda: [16, 8, 0])
    num_output_groups: list[int] = field(default_factory=lambda: [16, 8, 8])
    num_attention_heads: int = 4
    text_hidden_size: int = 64
    text_layers: int = 2
    text_heads: int = 2
    projection_dim: int = 64
    projection_intermediate_dim: int = 256
    drop_path_rate: float = 0.1
    multi_label: int = 3
    # clipzoo extension (not in the official model): first-stage patches attend only to patches this close.
    # An integer, or a list with one radius per first-stage layer (the recipe parser allows one type per field, so the
    # annotation says list; an integer is passed through as is).
    local_attention_radius: list[int] | None = None
    # clipzoo extension: False drops the group-token term from the grouping block's output.
    group_token_residual: bool = True
    # clipzoo extension: "max" scores each prompt against the best-matching final group in the multi-label loss.
    multi_label_pooling: str = "mean"
    # clipzoo extension: Transformer layers inside the grouping block, attention restricted to each group's tokens.
    within_group_layers: int = 0
    # clipzoo extension: "word" makes prompts naming the same word positives for each other's images.
    multi_label_targets: str = "index"
    # clipzoo extension: > 0 adds the per-group loss (each word's best group names it, the other groups the background).
    group_background_loss_weight: float = 0.0
    background_word: str = "background"
    group_background_classes: str = "image"
    vocab_size: int = 512
    max_text_length: int = 24


@dataclass
class GroupViTDataArguments:
    """ShapesWorld captions to train on. The scene options (`min_objects`, `max_objects`, `object_scale`) are saved
    with the model, and `evaluate` draws its segmentation and classification images with the same options."""

    num_train: int = 8000
    seed: int = 0
    no_word_policy: str = "fill"
    min_objects: int = 1
    max_objects: int = 4
    object_scale: float = 1.0
    named_backgrounds: bool = False
    augmentation: str = "none"  # "deit": the official DeiT-style augmentation (`DeiTTrainTransform`)
    rand_augment: str | None = "rand-m9-mstd0.5-inc1"
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    # Words the multi-label prompts never use, on top of the extractor's closed-class words. A word that is in every
    # caption (ShapesWorld's "background") makes a prompt that names no image in particular.
    prompt_stopwords: list[str] = field(default_factory=list)
    # Share of training scenes with no object ("an empty grey background"). Training only: `evaluate` always draws
    # scenes with objects.
    empty_fraction: float = 0.0

    def scene_options(self) -> dict[str, Any]:
        return {
            "min_objects": self.min_objects, "max_objects": self.max_objects, "object_scale": self.object_scale,
            "named_backgrounds": self.named_backgrounds,
        }  # fmt: skip


@functools.lru_cache(maxsize=1)
def _corpus() -> tuple[str, ...]:
    """The offline tokenizer's corpus: ShapesWorld captions (no images rendered), prompts and colour-shape pairs."""
    from clipzoo.data.shapesworld import COLOURS, SHAPES, shapesworld_captions

    captions = shapesworld_captions(2000, seed=12345)
    captions += shapesworld_captions(500, seed=12346, named_backgrounds=True)
    prompts = [t.format(word) for t in FULL_IMAGENET_TEMPLATES for word in (*SHAPES, *(s + "s" for s in SHAPES))]
    return (*captions, *prompts, *(f"{c} {s}" for c in COLOURS for s in SHAPES))


def build_model_and_processor(args: GroupViTModelArguments) -> tuple[ClipzooGroupViTModel, ClipzooGroupViTProcessor]:
    """A randomly initialised model (official init) and its processor with an offline BPE tokenizer."""
    from clipzoo.processing.tokenization_offline import build_offline_tokenizer

    tokenizer = build_offline_tokenizer(_corpus(), args.vocab_size, args.max_text_length)
    config = ClipzooGroupViTConfig(
        text_config={
            "hidden_size": args.text_hidden_size, "intermediate_size": 4 * args.text_hidden_size,
            "num_hidden_layers": args.text_layers, "num_attention_heads": args.text_heads,
            "vocab_size": len(tokenizer), "max_position_embeddings": args.max_text_length,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": args.hidden_size, "intermediate_size": 4 * args.hidden_size,
            "num_hidden_layers": sum(args.depths), "depths": list(args.depths),
            "num_group_tokens": list(args.num_group_tokens), "num_output_groups": list(args.num_output_groups),
            "num_attention_heads": args.num_attention_heads, "image_size": args.image_size,
            "patch_size": args.patch_size,
        },
        projection_dim=args.projection_dim, projection_intermediate_dim=args.projection_intermediate_dim,
        drop_path_rate=args.drop_path_rate, multi_label=args.multi_label,
        local_attention_radius=args.local_attention_radius, group_token_residual=args.group_token_residual,
        multi_label_pooling=args.multi_label_pooling, within_group_layers=args.within_group_layers,
        multi_label_targets=args.multi_label_targets,
        group_background_loss_weight=args.group_background_loss_weight, background_word=args.background_word,
        group_background_classes=args.group_background_classes,
    )  # fmt: skip
    side = {"shortest_edge": args.image_size}
    crop = {"height": args.image_size, "width": args.image_size}
    processor = ClipzooGroupViTProcessor(ClipzooGroupViTImageProcessor(size=side, crop_size=crop), tokenizer)
    return ClipzooGroupViTModel(config), processor


class GroupViTCollator:
    """`{image, caption}` rows -> inputs with `[caption, K prompts]` texts and `return_loss=True`.

    Args:
        processor ([`ClipzooGroupViTProcessor`]): the processor.
        num_prompts (`int`): K; 0 gives plain `(batch, seq)` captions (no multi-label loss).
        seed (`int`, *optional*, defaults to 0): seed of the prompt sampling (words and templates).
        no_word_policy (`str`, *optional*, defaults to `"fill"`): see `build_prompt_texts`.
        image_transform (`Callable[[PIL.Image.Image], torch.Tensor]`, *optional*): training augmentation returning
            normalised `(3, H, W)` pixels (e.g. [`~clipzoo.processing.augmentation.DeiTTrainTransform`]); by default
            the processor's deterministic resize + normalise.
        word_extractor (`Callable[[str], list[str]]`, *optional*): the prompt-word extractor; defaults to
            [`~clipzoo.processing.text_groupvit.LexiconWordExtractor`].
        prompt_ids (`bool`, *optional*, defaults to `False`): add `prompt_ids`, the ids of the words the prompts name
            (for `multi_label_targets="word"`).
    """

    def __init__(
        self,
        processor,
        num_prompts: int,
        seed: int = 0,
        no_word_policy: str = "fill",
        image_transform=None,
        word_extractor: Callable[[str], list[str]] | None = None,
        prompt_ids: bool = False,
    ):
        if prompt_ids and num_prompts < 1:
            raise ValueError("prompt_ids=True needs num_prompts >= 1 (the ids name the multi-label prompts).")
        self.processor, self.num_prompts, self.no_word_policy = processor, num_prompts, no_word_policy
        self.prompt_ids = prompt_ids
        self.image_transform, self.word_extractor = image_transform, word_extractor
        self.rng = np.random.default_rng(seed)
        self.max_length = processor.tokenizer.model_max_length

    def __call__(self, rows: list[dict[str, Any]]) -> BatchFeature:
        images = [row["image"].convert("RGB") for row in rows]
        captions = [row["caption"] for row in rows]
        for i, caption in enumerate(captions):
            if not isinstance(caption, str) or not caption.strip():
                raise ValueError(f"Caption {i} of the batch is {caption!r}; every image needs a non-empty caption.")
        batch = self.processor(
            images=images if self.image_transform is None else None, text=captions, expand_prompts=self.num_prompts > 0,
            num_prompts=self.num_prompts, word_extractor=self.word_extractor, rng=self.rng,
            no_word_policy=self.no_word_policy, return_prompt_ids=self.prompt_ids, padding="max_length",
            truncation=True, max_length=self.max_length,
        )  # fmt: skip
        if self.image_transform is not None:
            batch["pixel_values"] = torch.stack([self.image_transform(image) for image in images])
        batch["return_loss"] = True
        return batch


def needs_prompt_ids(model_args: GroupViTModelArguments) -> bool:
    """Whether the model's loss reads `prompt_ids` (word targets or the per-group background loss)."""
    return model_args.multi_label > 0 and (
        model_args.multi_label_targets == "word" or model_args.group_background_loss_weight > 0
    )


def train(recipe: str | Path, output_dir: str | Path, overrides: dict[str, dict[str, Any]] | None = None) -> Path:
    """`clipzoo train groupvit`: trains from scratch on ShapesWorld captions and saves model + processor."""
    from clipzoo.data.shapesworld import shapesworld
    from clipzoo.training.recipes import load_recipe
    from clipzoo.training.trainer import ClipzooTrainer, sync_batchnorm

    output_dir = Path(output_dir)
    overrides = {k: dict(v) for k, v in (overrides or {}).items()}
    overrides.setdefault("training", {}).setdefault("output_dir", str(output_dir / "trainer"))
    sections = {"model": GroupViTModelArguments, "data": GroupViTDataArguments, "training": TrainingArguments}
    args = load_recipe(recipe, sections, overrides)
    model_args, data_args, training_args = args["model"], args["data"], args["training"]
    transform = None
    if data_args.augmentation == "deit":
        from clipzoo.processing.augmentation import DeiTTrainTransform

        transform = DeiTTrainTransform(
            model_args.image_size, scale=tuple(data_args.crop_scale), rand_augment=data_args.rand_augment,
            seed=data_args.seed, process_index=training_args.process_index,
        )  # fmt: skip
    elif data_args.augmentation != "none":
        raise ValueError(f"data.augmentation must be 'none' or 'deit', got {data_args.augmentation!r}.")
    torch.manual_seed(training_args.seed)
    start = time.perf_counter()
    model, processor = build_model_and_processor(model_args)
    model = sync_batchnorm(model, training_args.world_size, training_args.device.type)
    dataset = shapesworld(
        "captions", data_args.num_train, seed=data_args.seed, image_size=model_args.image_size,
        empty_fraction=data_args.empty_fraction, **data_args.scene_options(),
    )  # fmt: skip
    collator = GroupViTCollator(
        processor,
        model_args.multi_label,
        data_args.seed,
        data_args.no_word_policy,
        image_transform=transform,
        word_extractor=LexiconWordExtractor(extra_stopwords=data_args.prompt_stopwords),
        prompt_ids=needs_prompt_ids(model_args),
    )
    trainer = ClipzooTrainer(
        model=model, args=training_args, train_dataset=dataset.select_columns(["image", "caption"]),
        data_collator=collator,
    )  # fmt: skip
    result = trainer.train()
    output_dir.mkdir(parents=True, exist_ok=True)
    trainer.save_model(str(output_dir))
    processor.save_pretrained(str(output_dir))
    metadata = {
        "recipe": str(recipe), "model": asdict(model_args), "data": asdict(data_args),
        "global_step": result.global_step, "train_seconds": round(time.perf_counter() - start, 1),
        "final_loss": result.training_loss,
    }  # fmt: skip
    (output_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    return output_dir


@torch.no_grad()
def class_text_embeddings(model, tokenizer, names, templates=SUBSET_IMAGENET_TEMPLATES) -> torch.Tensor:
    """Official `build_text_embedding`: mean of the projected template embeddings per class, L2-normalised."""
    texts = [t.format(name) for name in names for t in templates]
    max_length = model.config.text_config.max_position_embeddings
    tokens = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    embeds = model.get_text_features(tokens["input_ids"], tokens.get("attention_mask"))
    embeds = F.normalize(embeds, dim=-1).reshape(len(names), len(templates), -1).mean(dim=1)
    return F.normalize(embeds, dim=-1)


@torch.no_grad()
def _top1_class_maps(model, processor, images, names) -> list[np.ndarray]:
    """Trivial baseline: every pixel = the image's top-1 zero-shot class (no background)."""
    text = class_text_embeddings(model, processor.tokenizer, names, ("a photo of a {}.",))
    pixels = processor.image_processor(images, return_tensors="pt")["pixel_values"]
    top1 = (F.normalize(model.get_image_features(pixels), dim=-1) @ text.t()).argmax(-1)
    return [np.full(image.size[::-1], int(c) + 1, dtype=np.int64) for image, c in zip(images, top1)]


def _miou(predictions, references, num_labels) -> dict[str, Any]:
    from clipzoo.metrics.mean_iou import MeanIoU

    result = MeanIoU().compute(
        predictions=[np.asarray(p).tolist() for p in predictions],
        references=[np.asarray(r).tolist() for r in references],
        num_labels=num_labels,
    )
    return {"mean_iou": float(result["mean_iou"]), "per_category_iou": [float(x) for x in result["per_category_iou"]]}


def foreground_stats(predictions, references) -> dict[str, float]:
    """Label 0 (background) against everything else, over all pixels: foreground IoU, precision and recall.

    A diagnostic beside mIoU: it separates finding the objects from naming them. A ratio whose denominator is 0 is 0.
    """
    predicted = np.concatenate([np.asarray(p).ravel() > 0 for p in predictions])
    true = np.concatenate([np.asarray(r).ravel() > 0 for r in references])
    if predicted.shape != true.shape:
        raise ValueError(f"predictions hold {predicted.size} pixels, references {true.size}.")
    both = float((predicted & true).sum())
    return {
        "iou": both / max(float((predicted | true).sum()), 1.0),
        "precision": both / max(float(predicted.sum()), 1.0),
        "recall": both / max(float(true.sum()), 1.0),
    }


@torch.no_grad()
def evaluate(
    model_dir: str | Path,
    num_samples: int | None = None,
    seed: int = 1000,
    background_threshold: float = 0.95,
    short_side: int | None = 128,
    crop_size: int | None = 128,
    stride: int = 64,
    background_prompt: str | None = "background",
) -> dict[str, Any]:
    """`clipzoo evaluate groupvit`: zero-shot segmentation mIoU (+ trivial baselines) and classification accuracy.

    `segmentation` is the official recipe (soft assignments chained); `segmentation_hard_assignment` chains each
    stage's arg-max assignment instead (`SegmentationSettings(assignment="hard")`); `segmentation_foreground` scores
    the official recipe's maps as background vs any object ([`foreground_stats`]).

    With `background_prompt` (default `"background"`; `None` skips it), `segmentation_background_prompt` (and its
    `_foreground` scores) labels background like any class, by prompting the word, instead of the official
    threshold: the label set becomes `[background_prompt, *shapes]`, no threshold, the same top-5 filter. It suits
    models trained on captions that name the background (e.g. with `group_background_loss_weight > 0`).

    The official evaluation runs a 224-px model at short side 448 with 448/224 windows (2x the training size); here the
    64-px model runs at short side 128 with 128/64 windows, the same ratios.
    """
    from clipzoo.data.shapesworld import SEGMENTATION_CLASSES, SHAPES, shapesworld
    from clipzoo.metrics.zero_shot_accuracy import ZeroShotAccuracy

    model = ClipzooGroupViTModel.from_pretrained(model_dir).eval()
    processor = ClipzooGroupViTProcessor.from_pretrained(model_dir)
    n = num_samples or 200
    image_size = model.config.vision_config.image_size
    scene = _training_scene_options(model_dir)
    seg = shapesworld("segmentation", n, seed=seed, image_size=image_size, **scene)
    images = [row.convert("RGB") for row in seg["image"]]
    masks = [np.asarray(mask, dtype=np.int64) for mask in seg["mask"]]
    names = check_labels(list(SEGMENTATION_CLASSES[1:]))
    settings = SegmentationSettings(background_threshold, True, short_side, 2048, crop_size, stride)
    hard = SegmentationSettings(background_threshold, True, short_side, 2048, crop_size, stride, assignment="hard")
    start = time.perf_counter()
    # One forward pass per window serves both chainings.
    soft_maps, hard_maps = segment_images_multi(model, processor.tokenizer, images, names, [settings, hard])
    seconds = time.perf_counter() - start
    num_labels = len(SEGMENTATION_CLASSES)
    result: dict[str, Any] = {"num_segmentation_images": n, "seconds_soft_and_hard_segmentation": seconds}
    result["segmentation"] = _miou([m.numpy() for m in soft_maps], masks, num_labels)
    result["segmentation_hard_assignment"] = _miou([m.numpy() for m in hard_maps], masks, num_labels)
    result["segmentation_foreground"] = foreground_stats([m.numpy() for m in soft_maps], masks)
    if background_prompt is not None:
        prompted = SegmentationSettings(0.0, False, short_side, 2048, crop_size, stride)
        labels = check_labels([background_prompt, *names])
        maps = [m.numpy() for m in segment_images_multi(model, processor.tokenizer, images, labels, [prompted])[0]]
        result["segmentation_background_prompt"] = _miou(maps, masks, num_labels)
        result["segmentation_background_prompt_foreground"] = foreground_stats(maps, masks)
    result["baseline_all_background"] = _miou([np.zeros_like(m) for m in masks], masks, num_labels)
    result["baseline_top1_class"] = _miou(_top1_class_maps(model, processor, images, names), masks, num_labels)

    cls = shapesworld(
        "classification", n, seed=seed + 1, image_size=image_size, label_by="shape",
        object_scale=scene.get("object_scale", 1.0), named_backgrounds=scene.get("named_backgrounds", False),
    )  # fmt: skip
    text = class_text_embeddings(model, processor.tokenizer, list(SHAPES))
    pixels = processor.image_processor([im.convert("RGB") for im in cls["image"]], return_tensors="pt")["pixel_values"]
    features = model.get_group_features(pixels)
    scores = F.normalize(features["image_embeds"], dim=-1) @ text.t()
    accuracy = ZeroShotAccuracy().compute(predictions=scores.tolist(), references=list(cls["label"]))
    result["zero_shot_classification_accuracy"] = float(accuracy["accuracy"])
    # Scoring each class by its best-matching group, as `multi_label_pooling="max"` trains the prompts.
    group_scores = (F.normalize(features["group_embeds"], dim=-1) @ text.t()).amax(dim=1)
    accuracy = ZeroShotAccuracy().compute(predictions=group_scores.tolist(), references=list(cls["label"]))
    result["zero_shot_classification_accuracy_group_max"] = float(accuracy["accuracy"])
    result["segmentation_settings"] = vars(settings)
    result["scene_options"] = scene
    return result


def _training_scene_options(model_dir: str | Path) -> dict[str, Any]:
    """The ShapesWorld scene options the model was trained on (from its training metadata; defaults if absent)."""
    path = Path(model_dir) / METADATA_FILE
    defaults = GroupViTDataArguments()
    data = json.loads(path.read_text()).get("data", {}) if path.is_file() else {}
    return {key: data.get(key, value) for key, value in defaults.scene_options().items()}


def segment(image_path: str | Path, model_dir: str | Path, labels, out: str | Path, **settings) -> Path:
    """`clipzoo segment IMAGE --model DIR --labels a,b,c --out overlay.png`: writes a coloured overlay; returns `out`.

    Keyword arguments are `SegmentationSettings` fields (`background_threshold`, `short_side`, `crop_size`, ...).
    """
    from PIL import Image

    labels = check_labels(labels)
    model = ClipzooGroupViTModel.from_pretrained(model_dir).eval()
    processor = ClipzooGroupViTProcessor.from_pretrained(model_dir)
    image = Image.open(image_path).convert("RGB")
    label_map = segment_images(model, processor.tokenizer, [image], labels, SegmentationSettings(**settings))[0]
    out = Path(out)
    overlay(image, label_map.numpy(), labels, settings.get("with_background", True)).save(out)
    return out
