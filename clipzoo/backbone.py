"""The tiny pretrained CLIP that clipzoo's methods use offline.

No pretrained CLIP can be downloaded on the machines clipzoo is developed and tested on, yet APE, CLIP-FSAR, MA-FSAR and
DIVA start from one. `pretrain_backbone` trains a small transformers `CLIPModel` on ShapesWorld captions (optionally
mixed with templated captions of some Fashion-MNIST classes) with the `ClipzooTrainer`, together with a byte-level BPE
tokenizer trained on the same text, and saves both as an ordinary transformers checkpoint: `CLIPModel.from_pretrained`
and `AutoProcessor.from_pretrained` load it, so users can swap in any Hub CLIP id.

The default checkpoint is cached in `$CLIPZOO_CACHE/backbone-shapesworld` (default `~/.cache/clipzoo`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPProcessor,
    TrainingArguments,
)
from transformers.utils import logging

from clipzoo.processing.tokenization_offline import build_offline_tokenizer
from clipzoo.variants import CardFacts


logger = logging.get_logger(__name__)

__all__ = [
    "BACKBONE_CARD",
    "BackboneDataArguments",
    "BackboneModelArguments",
    "default_backbone_dir",
    "ensure_backbone",
    "evaluate_backbone",
    "load_backbone",
    "pretrain_backbone",
    "zero_shot_prompts",
]

DEFAULT_RECIPE = "backbone_shapesworld"
METADATA_FILE = "clipzoo_backbone.json"
# Fashion-MNIST captions for the mixed backbone (APE's benchmark pretrains on half of the classes).
FASHION_TEMPLATES = ("a photo of a {}.", "a grey photo of a {}.", "a picture of a {}.", "a {}.")


BACKBONE_CARD = CardFacts(
    title="clipzoo tiny CLIP backbone (ShapesWorld)",
    arxiv="2103.00020",
    official_repo="openai/CLIP",
    license="apache-2.0",
    summary=(
        "A tiny transformers `CLIPModel` pretrained by clipzoo on the generated ShapesWorld captions with a byte-level "
        "BPE tokenizer trained on the same text. It stands in for a pretrained CLIP wherever none can be downloaded "
        "(tests, demos, offline CI). It is not OpenAI's CLIP and must not be reported as such."
    ),
    citation=(
        "@inproceedings{radford2021learning,\n  title={Learning Transferable Visual Models From Natural Language "
        "Supervision},\n  author={Radford, Alec and others},\n  booktitle={ICML},\n  year={2021}\n}"
    ),
    datasets=("shapesworld",),
    metrics=("accuracy",),
    tags=("clip", "tiny"),
)


@dataclass
class BackboneModelArguments:
    """Size of the tiny CLIP (both towers) and of its tokenizer."""

    image_size: int = field(default=64, metadata={"help": "Input resolution (ShapesWorld renders 64 px)."})
    patch_size: int = field(default=8, metadata={"help": "ViT patch size."})
    hidden_size: int = field(default=96, metadata={"help": "Width of both towers."})
    num_hidden_layers: int = field(default=3, metadata={"help": "Depth of both towers."})
    num_attention_heads: int = field(default=4, metadata={"help": "Attention heads in both towers."})
    intermediate_size: int = field(default=384, metadata={"help": "MLP width in both towers."})
    projection_dim: int = field(default=64, metadata={"help": "Joint embedding size."})
    vocab_size: int = field(default=1024, metadata={"help": "BPE vocabulary bound, special tokens included."})
    max_text_length: int = field(default=32, metadata={"help": "Text context length."})


@dataclass
class BackboneDataArguments:
    """What the backbone is pretrained on."""

    num_train: int = field(default=20000, metadata={"help": "ShapesWorld caption images."})
    num_eval: int = field(default=256, metadata={"help": "Held-out caption images for eval_loss."})
    seed: int = field(default=0, metadata={"help": "Data seed (the eval set uses seed + 1)."})
    caption_column: str = field(default="caption", metadata={"help": "'caption' (short) or 'long_caption'."})
    fashion_mnist_classes: list[int] = field(
        default_factory=list, metadata={"help": "Fashion-MNIST class ids mixed in with templated captions."}
    )
    fashion_mnist_per_class: int = field(default=1000, metadata={"help": "Training images per mixed class."})


def default_backbone_dir() -> Path:
    """`$CLIPZOO_CACHE/backbone-shapesworld`, `CLIPZOO_CACHE` defaulting to `~/.cache/clipzoo`."""
    root = Path(os.environ.get("CLIPZOO_CACHE", Path.home() / ".cache" / "clipzoo"))
    return root / "backbone-shapesworld"


def zero_shot_prompts(class_names: list[str]) -> list[str]:
    """The prompt used for zero-shot classification with the backbone (captions in ShapesWorld read 'a red circle')."""
    return [f"a {name}" for name in class_names]


def _training_corpus(data_args: BackboneDataArguments):
    """Returns (train dataset with `image`/`caption`, eval dataset, tokenizer corpus)."""
    from datasets import concatenate_datasets

    from clipzoo.data.shapesworld import shapesworld

    train = shapesworld("captions", data_args.num_train, seed=data_args.seed)
    evald = shapesworld("captions", data_args.num_eval, seed=data_args.seed + 1)
    column = data_args.caption_column
    train = train.select_columns(["image", column])
    evald = evald.select_columns(["image", column])
    if column != "caption":
        train, evald = train.rename_column(column, "caption"), evald.rename_column(column, "caption")
    corpus = list(train["caption"])
    if data_args.fashion_mnist_classes:
        fashion = _fashion_mnist_captions(data_args)
        train = concatenate_datasets([train, fashion.cast(train.features)]).shuffle(seed=data_args.seed)
        corpus += list(fashion["caption"])
    return train, evald, corpus


def _fashion_mnist_captions(data_args: BackboneDataArguments, image_size: int = 64):
    """Templated captions for the chosen Fashion-MNIST training classes, images as RGB at ShapesWorld's size."""
    from datasets import Dataset, Features, Image, Value
    from PIL import Image as PILImage

    from clipzoo.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist_arrays

    images, labels = load_fashion_mnist_arrays("train")
    rng = np.random.default_rng(data_args.seed)
    picked = []
    for c in data_args.fashion_mnist_classes:
        if not 0 <= c < len(FASHION_MNIST_CLASSES):
            raise ValueError(f"Fashion-MNIST class id {c} is out of range 0..{len(FASHION_MNIST_CLASSES) - 1}.")
        idx = np.flatnonzero(labels == c)
        picked.extend(rng.choice(idx, size=min(data_args.fashion_mnist_per_class, len(idx)), replace=False))
    picked = sorted(int(i) for i in picked)
    rows = {"image": [], "caption": []}
    for i in picked:
        rgb = PILImage.fromarray(images[i]).convert("RGB").resize((image_size, image_size), PILImage.BICUBIC)
        rows["image"].append(rgb)
        template = FASHION_TEMPLATES[rng.integers(len(FASHION_TEMPLATES))]
        rows["caption"].append(template.format(FASHION_MNIST_CLASSES[labels[i]]))
    return Dataset.from_dict(rows, features=Features({"image": Image(), "caption": Value("string")}))


def build_backbone(model_args: BackboneModelArguments, tokenizer) -> tuple[CLIPModel, CLIPProcessor]:
    """A randomly initialised tiny CLIP and its processor (CLIP normalisation, PIL backend)."""
    width, depth = model_args.hidden_size, model_args.num_hidden_layers
    tower = {
        "hidden_size": width,
        "num_hidden_layers": depth,
        "num_attention_heads": model_args.num_attention_heads,
        "intermediate_size": model_args.intermediate_size,
    }
    config = CLIPConfig(
        text_config={
            **tower,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": model_args.max_text_length,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={**tower, "image_size": model_args.image_size, "patch_size": model_args.patch_size},
        projection_dim=model_args.projection_dim,
    )
    model = CLIPModel(config)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": model_args.image_size},
        crop_size={"height": model_args.image_size, "width": model_args.image_size},
    )
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def pretrain_backbone(
    output_dir: str | Path,
    recipe: str | Path = DEFAULT_RECIPE,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """Pretrains the tiny CLIP and saves model + processor (+ `clipzoo_backbone.json`) to `output_dir`.

    Args:
        output_dir (`str` or `Path`): where the final checkpoint goes; trainer checkpoints go to `output_dir/trainer`.
        recipe (`str` or `Path`, *optional*): recipe name or YAML file with `model`, `data`, `training` sections.
        overrides (`dict`, *optional*): per-section values replacing the recipe's.

    Returns:
        `Path`: `output_dir`.
    """
    from clipzoo.training.collators import ImageTextCollator
    from clipzoo.training.recipes import load_recipe
    from clipzoo.training.trainer import ClipzooTrainer

    output_dir = Path(output_dir)
    overrides = {k: dict(v) for k, v in (overrides or {}).items()}
    overrides.setdefault("training", {}).setdefault("output_dir", str(output_dir / "trainer"))
    args = load_recipe(
        recipe,
        {"model": BackboneModelArguments, "data": BackboneDataArguments, "training": TrainingArguments},
        overrides,
    )
    model_args, data_args, training_args = args["model"], args["data"], args["training"]
    torch.manual_seed(training_args.seed)
    start = time.perf_counter()
    train, evald, corpus = _training_corpus(data_args)
    tokenizer = build_offline_tokenizer(
        corpus + zero_shot_prompts(_class_names()), model_args.vocab_size, model_args.max_text_length
    )
    model, processor = build_backbone(model_args, tokenizer)
    trainer = ClipzooTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=evald if training_args.eval_strategy != "no" else None,
        data_collator=ImageTextCollator(processor),
    )
    result = trainer.train(resume_from_checkpoint=_last_checkpoint(training_args.output_dir))
    output_dir.mkdir(parents=True, exist_ok=True)
    trainer.save_model(str(output_dir))
    processor.save_pretrained(str(output_dir))
    metadata = {
        "recipe": str(recipe),
        "model": asdict(model_args),
        "data": asdict(data_args),
        "global_step": result.global_step,
        "train_seconds": round(time.perf_counter() - start, 1),
    }
    (output_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    return output_dir


def _last_checkpoint(trainer_dir: str) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(trainer_dir) if os.path.isdir(trainer_dir) else None


def _class_names() -> list[str]:
    from clipzoo.data.shapesworld import class_names

    return list(class_names("classification", "all"))


def load_backbone(path: str | Path | None = None) -> tuple[CLIPModel, CLIPProcessor]:
    """Loads a backbone checkpoint (default: the cached ShapesWorld backbone).

    Raises:
        `FileNotFoundError`: when no checkpoint is there, naming the command that makes one.
    """
    path = Path(path) if path is not None else default_backbone_dir()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"No backbone checkpoint at {str(path)!r}. Make one with `clipzoo pretrain-backbone --out {path}` "
            "(about 5 minutes on a CPU), or pass any Hugging Face CLIP id/path."
        )
    from transformers import AutoModel, AutoProcessor

    return AutoModel.from_pretrained(path), AutoProcessor.from_pretrained(path)


def ensure_backbone(path: str | Path | None = None, recipe: str | Path = DEFAULT_RECIPE) -> Path:
    """Returns a backbone directory, pretraining it first when it is absent."""
    path = Path(path) if path is not None else default_backbone_dir()
    if not (path / "config.json").is_file():
        logger.warning(f"No backbone at {path}; pretraining one with recipe {recipe!s} (a few minutes on CPU).")
        pretrain_backbone(path, recipe)
    return path


@torch.no_grad()
def evaluate_backbone(
    model_dir: str | Path | None = None, num_samples: int = 1000, seed: int = 12345, batch_size: int = 128
) -> dict[str, float]:
    """Zero-shot classification accuracy of a backbone on a fresh ShapesWorld classification split.

    Returns:
        `dict`: `zero_shot_accuracy`, `chance`, `num_classes`, `num_samples`.
    """
    from clipzoo.data.shapesworld import shapesworld
    from clipzoo.metrics import ZeroShotAccuracy

    model, processor = load_backbone(model_dir)
    model.eval()
    ds = shapesworld("classification", num_samples, seed=seed)
    names = ds.features["label"].names
    text = processor(text=zero_shot_prompts(names), padding=True, truncation=True, return_tensors="pt")
    text_embeds = model.get_text_features(**text)
    text_embeds = getattr(text_embeds, "pooler_output", text_embeds)
    text_embeds = text_embeds / text_embeds.norm(dim=-1, keepdim=True)
    scores = []
    for start in range(0, len(ds), batch_size):
        rows = ds[start : start + batch_size]
        pixels = processor(images=[im.convert("RGB") for im in rows["image"]], return_tensors="pt")["pixel_values"]
        image_embeds = model.get_image_features(pixel_values=pixels)
        image_embeds = getattr(image_embeds, "pooler_output", image_embeds)
        image_embeds = image_embeds / image_embeds.norm(dim=-1, keepdim=True)
        scores.append(image_embeds @ text_embeds.t())
    scores = torch.cat(scores).numpy()
    result = ZeroShotAccuracy().compute(predictions=scores, references=ds["label"])
    return {
        "zero_shot_accuracy": float(result["accuracy"]),
        "chance": 1.0 / len(names),
        "num_classes": len(names),
        "num_samples": len(ds),
    }
