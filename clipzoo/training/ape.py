"""Fitting APE / APE-T and the Tip-Adapter baselines on a frozen CLIP-family model.

The procedure follows the official code (yangyangyang127/APE, gaopengcuhk/Tip-Adapter), re-written:

1. few-shot support set: K images per class, drawn without replacement (with replacement and a warning for a class
   with fewer than K images, as the official `generate_fewshot_dataset` does);
2. cache keys: mean over `augment_epochs` augmented views (random resized crop, scale (0.5, 1), flip) of each support
   image's feature, then L2-normalised; values: one-hot labels;
3. text classifier: per class, every prompt (templates + optional descriptions) encoded and L2-normalised, averaged,
   L2-normalised again;
4. per method: zero-shot; Tip-Adapter (β, α search); APE (criterion → top-Q channels → (β, α, γ) search); Tip-Adapter-F
   and APE-T trained with the `ClipzooTrainer` (CE, AdamW, cosine per step, best epoch on the validation split), then
   a (β, α) search.

Every search runs on the validation split, never on the test split (the official Tip-Adapter-F picks its epoch on the
test set, and ImageNet's val = test in both repositories).
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import TrainingArguments
from transformers.trainer_callback import PrinterCallback, TrainerCallback
from transformers.utils import logging

from clipzoo.configuration.configuration_ape import APEConfig
from clipzoo.modeling import ape_math
from clipzoo.modeling.modeling_ape import APEForImageClassification, check_backbone, pooled_features
from clipzoo.processing.processing_ape import APEImageProcessor


logger = logging.get_logger(__name__)

__all__ = [
    "APEDataArguments",
    "APEFeatures",
    "APEModelArguments",
    "accuracy",
    "build_adapter",
    "build_cache",
    "build_text_classifier",
    "check_label_names",
    "encode_images",
    "evaluate",
    "extract_features",
    "load_descriptions",
    "sample_few_shot",
    "search_adapter",
    "support_and_val",
    "train",
    "train_adapter",
    "trainable_parameter_count",
]

DEFAULT_TEMPLATES = ("a photo of a {}.",)


# ---- data -----------------------------------------------------------------------------------------------------------


def sample_few_shot(labels: Sequence[int], shots: int, num_classes: int, seed: int = 1) -> list[int]:
    """Indices of a K-shot support set, class by class (so the cache is laid out class-major).

    Raises:
        ValueError: for `shots < 1`, or a class with no image at all (an empty support set cannot be filled).
    """
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}.")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    picked: list[int] = []
    for c in range(num_classes):
        pool = np.flatnonzero(labels == c)
        if len(pool) == 0:
            raise ValueError(
                f"Class {c} has no image in the support data: a {shots}-shot support set needs at least 1."
            )
        replace = len(pool) < shots
        if replace:
            logger.warning(
                f"Class {c} has {len(pool)} < {shots} images; sampling with replacement (as the official code)."
            )
        picked.extend(int(i) for i in rng.choice(pool, size=shots, replace=replace))
    return picked


def load_descriptions(path: str | Path) -> dict[str, list[str]]:
    """Reads a CuPL-style JSON file `{class name: [sentence, ...]}`."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ValueError(f"{path}: expected a JSON object mapping class names to lists of sentences.")
    return {str(k): [str(s) for s in v] for k, v in data.items()}


# ---- features -------------------------------------------------------------------------------------------------------


@torch.no_grad()
def encode_images(backbone, pixel_values: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """L2-normalised image features of already preprocessed images."""
    device = next(backbone.parameters()).device
    outs = []
    for start in range(0, len(pixel_values), batch_size):
        batch = pixel_values[start : start + batch_size].to(device)
        outs.append(pooled_features(backbone.get_image_features(pixel_values=batch)).float().cpu())
    return F.normalize(torch.cat(outs), dim=-1)


def _preprocess(image_processor, images: Sequence[Any]) -> torch.Tensor:
    return image_processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]


@torch.no_grad()
def build_cache(
    backbone, image_processor: APEImageProcessor, images: Sequence[Any], augment_epochs: int = 10, seed: int = 1
) -> torch.Tensor:
    """Cache keys (NK, D): per image, the mean feature of `augment_epochs` augmented views, then L2-normalised."""
    if len(images) == 0:
        raise ValueError("The support set is empty: the cache needs at least one image per class.")
    if augment_epochs < 1:
        raise ValueError(f"augment_epochs must be >= 1, got {augment_epochs}.")
    rng = np.random.default_rng(seed)
    total = None
    for _ in range(augment_epochs):
        pixels = image_processor.augment([im.convert("RGB") for im in images], rng)["pixel_values"]
        feats = encode_images(backbone, pixels)
        total = feats if total is None else total + feats
    # The official code averages the (already normalised) views first and normalises once at the end.
    return F.normalize(total / augment_epochs, dim=-1)


@torch.no_grad()
def build_text_classifier(
    backbone,
    tokenizer,
    class_names: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    descriptions: Mapping[str, Sequence[str]] | None = None,
    max_length: int | None = None,
) -> torch.Tensor:
    """Text classifier W (C, D) from a prompt ensemble (templates + per-class descriptions, all weighted equally).

    Raises:
        ValueError: when `descriptions` names classes that are not in `class_names`, or misses some of them.
    """
    if descriptions is not None:
        names = {n.replace("_", " ") for n in class_names}
        extra, missing = sorted(set(descriptions) - names), sorted(names - set(descriptions))
        if extra or missing:
            raise ValueError(
                f"The description file's class names do not match the classifier's: missing {missing}, "
                f"unknown {extra}."
            )
    device = next(backbone.parameters()).device
    # SigLIP text towers were trained on max_length padding and pool the last token.
    padding = "max_length" if "siglip" in getattr(backbone.config, "model_type", "") else True
    rows = []
    for name in class_names:
        name = name.replace("_", " ")
        texts = [t.format(name) for t in templates] + list((descriptions or {}).get(name, []))
        if not texts:
            raise ValueError(f"No prompt for class {name!r}: give templates or descriptions.")
        tokens = tokenizer(texts, padding=padding, truncation=True, max_length=max_length, return_tensors="pt")
        tokens = {k: v.to(device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        feats = F.normalize(pooled_features(backbone.get_text_features(**tokens)).float(), dim=-1)
        rows.append(F.normalize(feats.mean(0), dim=-1).cpu())
    return torch.stack(rows)


@dataclass
class APEFeatures:
    """Everything the methods need, computed once so that every method sees identical features."""

    class_names: list[str]
    text_weights: torch.Tensor  # (C, D)
    cache_keys: torch.Tensor  # (NK, D)
    cache_labels: torch.Tensor  # (NK,)
    val_features: torch.Tensor  # (N_val, D)
    val_labels: torch.Tensor  # (N_val,)
    support_images: list = field(default_factory=list)  # PIL images, for the trained methods
    shots: int = 0


def extract_features(
    backbone,
    processor,
    support_images: Sequence[Any],
    support_labels: Sequence[int],
    class_names: Sequence[str],
    val_images: Sequence[Any],
    val_labels: Sequence[int],
    shots: int,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    descriptions: Mapping[str, Sequence[str]] | None = None,
    augment_epochs: int = 10,
    seed: int = 1,
) -> APEFeatures:
    """Text classifier, cache and validation features. `support_*` is the K-shot set (see `sample_few_shot`)."""
    check_backbone(backbone)
    backbone.eval()
    labels = torch.as_tensor(list(support_labels), dtype=torch.long)
    if len(labels) == 0:
        raise ValueError("The support set is empty.")
    if int(labels.max()) >= len(class_names) or int(labels.min()) < 0:
        raise ValueError(f"Support labels must lie in [0, {len(class_names) - 1}] (one per class name).")
    image_processor = ape_image_processor(processor)
    max_length = getattr(getattr(backbone.config, "text_config", None), "max_position_embeddings", None)
    text = build_text_classifier(backbone, processor.tokenizer, class_names, templates, descriptions, max_length)
    keys = build_cache(backbone, image_processor, support_images, augment_epochs, seed)
    val = encode_images(backbone, _preprocess(image_processor, val_images)) if len(val_images) else None
    if val is None:
        raise ValueError("The validation split is empty: APE searches its hyper-parameters on it.")
    return APEFeatures(
        class_names=list(class_names),
        text_weights=text,
        cache_keys=keys,
        cache_labels=labels,
        val_features=val,
        val_labels=torch.as_tensor(list(val_labels), dtype=torch.long),
        support_images=list(support_images),
        shots=shots,
    )


def ape_image_processor(processor) -> APEImageProcessor:
    """An `APEImageProcessor` with the settings of the base's (CLIP) image processor."""
    image_processor = getattr(processor, "image_processor", processor)
    if isinstance(image_processor, APEImageProcessor):
        return image_processor
    settings = {k: v for k, v in image_processor.to_dict().items() if k not in ("image_processor_type", "auto_map")}
    settings.pop("_processor_class", None)
    return APEImageProcessor(**settings)


# ---- building and searching the adapter -----------------------------------------------------------------------------


def _new_model(features: APEFeatures, method: str, backbone, **config_kwargs) -> APEForImageClassification:
    num_classes = len(features.class_names)
    config = APEConfig(
        method=method,
        feature_dim=features.text_weights.shape[1],
        num_cache_entries=len(features.cache_labels),
        shots=features.shots or max(1, len(features.cache_labels) // num_classes),
        id2label={i: n for i, n in enumerate(features.class_names)},
        label2id={n: i for i, n in enumerate(features.class_names)},
        **config_kwargs,
    )
    model = APEForImageClassification(config, backbone=backbone)
    with torch.no_grad():
        model.text_weights.copy_(features.text_weights)
        model.cache_keys.copy_(features.cache_keys)
        model.cache_labels.copy_(features.cache_labels)
    return model


def _select(features: APEFeatures, config: APEConfig, training: bool) -> torch.Tensor:
    weights = config.criterion_weights_training if training else config.criterion_weights_training_free
    keys = features.cache_keys if config.criterion_use_cache else None
    criterion = ape_math.ape_criterion(features.text_weights, keys, features.cache_labels, weights)
    return ape_math.select_channels(criterion, config.resolved_feat_num(training))


def build_adapter(features: APEFeatures, method: str, backbone=None, **config_kwargs) -> APEForImageClassification:
    """Builds a training-free adapter (`zero_shot`, `tip_adapter`, `ape`) and searches its hyper-parameters on val.

    For `tip_adapter_f` / `ape_t` use `train_adapter`.
    """
    if method in ("tip_adapter_f", "ape_t"):
        raise ValueError(f"{method!r} is trained: use train_adapter(features, {method!r}, backbone).")
    model = _new_model(features, method, backbone, **config_kwargs)
    if method == "ape":
        with torch.no_grad():
            model.selected_channels.copy_(_select(features, model.config, training=False))
    if method != "zero_shot":
        search_adapter(model, features.val_features, features.val_labels)
    return model


@torch.no_grad()
def search_adapter(model: APEForImageClassification, val_features: torch.Tensor, val_labels: torch.Tensor) -> float:
    """Grid search of (β, α[, γ]) on the validation features with the official grids; sets the buffers.

    Returns:
        `float`: the best validation accuracy.
    """
    config = model.config
    f = F.normalize(val_features.float(), dim=-1).to(model.text_weights.device)
    labels = val_labels.to(f.device)
    w, keys, cache_labels = model.text_weights, model.cache_keys.detach(), model.cache_labels
    onehot = F.one_hot(cache_labels, config.num_labels).float()
    gammas = [float(model.gamma)]
    if config.method == "ape":
        idx = model.selected_channels
        refined_keys = ape_math.refine(keys, idx)
        affinity = ape_math.refine(f, idx) @ refined_keys.t()
        kl = ape_math.cache_divergence_bits(refined_keys, ape_math.refine(w, idx), cache_labels)
        gammas = ape_math.official_grid(config.search_scale[2], config.search_step[2], start=0.0)
        values = torch.stack([onehot * torch.exp(g * kl)[:, None] for g in gammas])
    elif config.method == "ape_t":
        w, keys = ape_math.apply_category_residual(
            w, keys, cache_labels, model.selected_channels, model.category_residual.detach()
        )
        affinity, values = f @ keys.t(), (onehot * model.value_weights.detach()[:, None])[None]
    else:
        affinity, values = f @ keys.t(), onehot[None]
    betas = ape_math.official_grid(config.search_scale[0], config.search_step[0])
    alphas = ape_math.official_grid(config.search_scale[1], config.search_step[1])
    text_logits = config.text_logit_scale * f @ w.t()
    (bi, ai, gi), correct = ape_math.grid_search(text_logits, affinity, values, labels, betas, alphas)
    model.beta.fill_(betas[bi])
    model.alpha.fill_(alphas[ai])
    model.gamma.fill_(gammas[gi])
    return float(correct[bi, ai, gi]) / len(labels)


def check_label_names(model: APEForImageClassification, class_names: Sequence[str]) -> None:
    """Raises `ValueError` unless the adapter's `id2label` lists `class_names` in order."""
    own = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if own != list(class_names):
        raise ValueError(f"The adapter classifies {own}, but the data's classes are {list(class_names)}.")


def trainable_parameter_count(model: APEForImageClassification) -> int:
    """Trainable parameters of the adapter (the frozen base is not part of the model's parameters)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---- the trained methods: Tip-Adapter-F and APE-T through the Trainer ---------------------------------------------


class APETrainCollator:
    """Training rows (`image`, `labels`) get one fresh augmented view each; eval rows carry pre-computed features."""

    def __init__(self, image_processor: APEImageProcessor, seed: int = 0):
        self.image_processor = image_processor
        self.rng = np.random.default_rng(seed)

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        labels = torch.tensor([int(r["labels"]) for r in rows], dtype=torch.long)
        if "image_embeds" in rows[0]:
            return {"image_embeds": torch.stack([r["image_embeds"] for r in rows]), "labels": labels}
        pixels = self.image_processor.augment([r["image"].convert("RGB") for r in rows], self.rng)["pixel_values"]
        return {"pixel_values": pixels, "labels": labels}


def _accuracy(eval_pred) -> dict[str, float]:
    logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
    return {"accuracy": float((np.asarray(logits).argmax(-1) == np.asarray(eval_pred.label_ids)).mean())}


class _BestEpoch(TrainerCallback):
    """Keeps the adapter state of the epoch with the best validation accuracy (strictly better: first best wins, as
    the official `acc > best_acc`) in memory; the adapter is tiny, so no checkpoint files are needed."""

    def __init__(self):
        self.best_accuracy, self.state = -1.0, None

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        accuracy = (metrics or {}).get("eval_accuracy")
        if accuracy is not None and model is not None and accuracy > self.best_accuracy:
            self.best_accuracy = accuracy
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def restore(self, model) -> None:
        if self.state is not None:
            model.load_state_dict(self.state)


# Tip-Adapter-F's official optimiser: AdamW lr 1e-3, eps 1e-4, torch's default weight decay 0.01, 20 epochs.
TIP_ADAPTER_F_DEFAULTS = {"learning_rate": 1e-3, "adam_epsilon": 1e-4, "weight_decay": 0.01, "train_epochs": 20}


def train_adapter(
    features: APEFeatures,
    method: str,
    backbone,
    processor,
    output_dir: str | Path | None = None,
    seed: int = 0,
    training_overrides: Mapping[str, Any] | None = None,
    **config_kwargs,
) -> APEForImageClassification:
    """Trains Tip-Adapter-F (the cache keys) or APE-T (category residual + value weights) with the `ClipzooTrainer`.

    Each step re-encodes a freshly augmented batch of the support images with the frozen base, as the official code;
    CE loss; AdamW with the config's lr / eps / weight decay and a cosine schedule stepped per iteration; the epoch
    with the best validation accuracy is kept (β, α at their init values during training, as the official code); then
    (β, α) are grid-searched on the validation features.
    """
    from clipzoo.training.trainer import ClipzooTrainer

    if method not in ("tip_adapter_f", "ape_t"):
        raise ValueError(f"train_adapter trains 'tip_adapter_f' or 'ape_t', got {method!r}.")
    if not features.support_images:
        raise ValueError("train_adapter needs features.support_images (the K-shot images) to train on.")
    if method == "tip_adapter_f":
        config_kwargs = {**TIP_ADAPTER_F_DEFAULTS, **config_kwargs}
    model = _new_model(features, method, backbone, **config_kwargs)
    config = model.config
    if method == "ape_t":
        with torch.no_grad():
            model.selected_channels.copy_(_select(features, config, training=True))
    train_rows = [{"image": im, "labels": int(y)} for im, y in zip(features.support_images, features.cache_labels)]
    eval_rows = [{"image_embeds": f, "labels": int(y)} for f, y in zip(features.val_features, features.val_labels)]
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            **{
                "output_dir": str(output_dir or tmp),
                "num_train_epochs": config.train_epochs,
                "per_device_train_batch_size": config.train_batch_size,
                "per_device_eval_batch_size": 1024,
                "learning_rate": config.learning_rate,
                "adam_epsilon": config.adam_epsilon,
                "weight_decay": config.weight_decay,
                "lr_scheduler_type": "cosine",
                "warmup_steps": 0,
                "eval_strategy": "epoch",
                "save_strategy": "no",
                "logging_strategy": "epoch",
                "remove_unused_columns": False,
                "report_to": "none",
                "dataloader_num_workers": 0,
                "dataloader_pin_memory": False,
                "disable_tqdm": True,
                "seed": seed,
                **(training_overrides or {}),
            }
        )
        trainer = ClipzooTrainer(
            model=model,
            args=args,
            train_dataset=train_rows,
            eval_dataset=eval_rows,
            data_collator=APETrainCollator(ape_image_processor(processor), seed),
            compute_metrics=_accuracy,
        )
        trainer.remove_callback(PrinterCallback)
        best = _BestEpoch()
        trainer.add_callback(best)
        trainer.train()
    model = trainer.model
    best.restore(model)
    model.set_trainable()
    search_adapter(model, features.val_features, features.val_labels)
    return model


@torch.no_grad()
def accuracy(model: APEForImageClassification, features: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of the adapter on pre-computed features."""
    model.eval()
    logits = model.logits_from_features(F.normalize(features.float(), dim=-1).to(model.text_weights.device))
    return float((logits.argmax(-1).cpu() == labels).float().mean())


def _mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean and 95% CI half-width over seeds with Student's t (few seeds: 1.96 would understate the spread)."""
    arr = np.asarray(values, dtype=float)
    if len(arr) < 2:
        return float(arr.mean()), float("nan")
    t = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776}.get(len(arr), 1.96)
    return float(arr.mean()), float(t * arr.std(ddof=1) / math.sqrt(len(arr)))


# ---- `clipzoo train ape` / `clipzoo evaluate ape` -----------------------------------------------------------------


@dataclass
class APEModelArguments:
    """Which method, on which base, with which APEConfig overrides."""

    method: str = field(default="ape", metadata={"help": "zero_shot, tip_adapter, tip_adapter_f, ape or ape_t."})
    backbone: str | None = field(default=None, metadata={"help": "Base CLIP id/path (default: clipzoo's backbone)."})
    shots: int = field(default=16, metadata={"help": "K images per class in the cache."})
    config: dict = field(default_factory=dict, metadata={"help": "APEConfig overrides (feat_num_training_free, ...)."})


@dataclass
class APEDataArguments:
    """The few-shot task: Fashion-MNIST classes, validation size, prompts."""

    dataset: str = field(
        default="fashion_mnist", metadata={"help": "'fashion_mnist' (Debian package) or 'shapesworld' (generated)."}
    )
    classes: list[int] = field(default_factory=list, metadata={"help": "Class ids to classify (empty: all)."})
    val_per_class: int = field(default=20, metadata={"help": "Validation images per class (from the train split)."})
    test_samples: int = field(default=2000, metadata={"help": "Test images evaluated by `clipzoo evaluate ape`."})
    seed: int = field(default=1, metadata={"help": "Seed of the few-shot draw and of the augmentations."})
    templates: list[str] = field(default_factory=lambda: list(DEFAULT_TEMPLATES), metadata={"help": "Prompts."})
    descriptions: str | None = field(default=None, metadata={"help": "CuPL-style JSON of per-class sentences."})
    data_root: str | None = field(default=None, metadata={"help": "Fashion-MNIST folder (default: Debian's)."})
    shapesworld_pool_per_class: int = field(
        default=60, metadata={"help": "ShapesWorld: generated train images per held-out class (support + val pool)."}
    )


DATA_FILE = "ape_task.json"


def _shapesworld_split(data_args: APEDataArguments, split: str):
    """ShapesWorld classification over its held-out classes; train and test pools come from different seeds."""
    from clipzoo.data.shapesworld import class_names, shapesworld

    names = class_names("classification", "heldout")
    size = data_args.shapesworld_pool_per_class * len(names) if split == "train" else data_args.test_samples
    ds = shapesworld("classification", size, seed=1000 if split == "train" else 2000, split="heldout")
    return list(ds["image"]), np.asarray(ds["label"]), names


def load_task_split(data_args: APEDataArguments, split: str) -> tuple[list, np.ndarray, list[str]]:
    """Images, labels re-indexed to 0..C-1, and class names of the task's classes in a split of the dataset."""
    if data_args.dataset == "shapesworld":
        images, labels, names = _shapesworld_split(data_args, split)
    elif data_args.dataset == "fashion_mnist":
        from clipzoo.data.fashion_mnist import load_fashion_mnist

        ds = load_fashion_mnist(split, root=data_args.data_root)
        images, labels, names = ds["image"], np.asarray(ds["label"]), ds.features["label"].names
    else:
        raise ValueError(f"Unknown APE dataset {data_args.dataset!r}; supported: 'fashion_mnist', 'shapesworld'.")
    classes = list(data_args.classes) or list(range(len(names)))
    bad = [c for c in classes if not 0 <= c < len(names)]
    if bad:
        raise ValueError(f"Class ids {bad} are out of range 0..{len(names) - 1}.")
    keep = np.flatnonzero(np.isin(labels, classes))
    remap = {c: i for i, c in enumerate(classes)}
    return [images[i] for i in keep], np.asarray([remap[int(y)] for y in labels[keep]]), [names[c] for c in classes]


def support_and_val(labels: np.ndarray, shots: int, num_classes: int, val_per_class: int, seed: int):
    """Disjoint support (K per class, class-major) and validation indices drawn from one labelled pool."""
    support = sample_few_shot(labels, shots, num_classes, seed)
    rng = np.random.default_rng(seed + 1000)
    taken = set(support)
    val = []
    for c in range(num_classes):
        pool = [i for i in np.flatnonzero(labels == c).tolist() if i not in taken]
        val.extend(rng.choice(pool, size=min(val_per_class, len(pool)), replace=False).tolist())
    return support, val


def fit_from_args(model_args: APEModelArguments, data_args: APEDataArguments, output_dir: str | Path | None = None):
    """Loads base and data, fits the adapter; returns `(model, processor, backbone_path)`."""
    from clipzoo.backbone import ensure_backbone, load_backbone

    backbone_path = model_args.backbone or str(ensure_backbone())
    backbone, processor = load_backbone(backbone_path)
    images, labels, names = load_task_split(data_args, "train")
    support, val = support_and_val(labels, model_args.shots, len(names), data_args.val_per_class, data_args.seed)
    descriptions = load_descriptions(data_args.descriptions) if data_args.descriptions else None
    features = extract_features(
        backbone,
        processor,
        [images[i] for i in support],
        labels[support].tolist(),
        names,
        [images[i] for i in val],
        labels[val].tolist(),
        shots=model_args.shots,
        templates=data_args.templates,
        descriptions=descriptions,
        augment_epochs=int(model_args.config.get("augment_epochs", 10)),
        seed=data_args.seed,
    )
    kwargs = dict(model_args.config)
    if model_args.method in ("tip_adapter_f", "ape_t"):
        model = train_adapter(features, model_args.method, backbone, processor, seed=data_args.seed, **kwargs)
    else:
        model = build_adapter(features, model_args.method, backbone, **kwargs)
    model.config.base_model_name_or_path = (
        str(Path(backbone_path).resolve()) if Path(backbone_path).exists() else backbone_path
    )
    return model, processor, backbone_path


def train(
    recipe: str | Path, output_dir: str | Path, overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> Path:
    """`clipzoo train ape`: fits the adapter of the recipe and saves it (adapter only) with its image processor."""
    from clipzoo.training.recipes import load_recipe

    overrides = {k: dict(v) for k, v in (overrides or {}).items() if k in ("model", "data")}
    args = load_recipe(recipe, {"model": APEModelArguments, "data": APEDataArguments}, overrides)
    model, processor, _ = fit_from_args(args["model"], args["data"], output_dir)
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    ape_image_processor(processor).save_pretrained(output_dir)
    task = {k: getattr(args["data"], k) for k in APEDataArguments.__dataclass_fields__}
    (output_dir / DATA_FILE).write_text(json.dumps(task, indent=2))
    return output_dir


@torch.no_grad()
def evaluate(model_dir: str | Path, num_samples: int | None = None, batch_size: int = 256) -> dict[str, Any]:
    """`clipzoo evaluate ape`: top-1 accuracy of a saved adapter on the test split of the task it was fitted on."""
    model_dir = Path(model_dir)
    model = APEForImageClassification.from_pretrained(model_dir).eval()
    image_processor = APEImageProcessor.from_pretrained(model_dir)
    task_file = model_dir / DATA_FILE
    data_args = APEDataArguments(**json.loads(task_file.read_text())) if task_file.is_file() else APEDataArguments()
    images, labels, names = load_task_split(data_args, "test")
    check_label_names(model, names)
    n = min(len(images), num_samples or data_args.test_samples)
    order = np.random.default_rng(12345).permutation(len(images))[:n]
    correct = 0
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        logits = model(pixel_values=_preprocess(image_processor, [images[i] for i in idx])).logits
        correct += int((logits.argmax(-1).cpu().numpy() == labels[idx]).sum())
    return {
        "accuracy": correct / n,
        "num_samples": int(n),
        "method": model.config.method,
        "shots": model.config.shots,
        "num_classes": model.config.num_labels,
        "trainable_parameters": trainable_parameter_count(model),
    }
