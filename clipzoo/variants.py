"""The VARIANTS table: one row per clipzoo method.

Every consumer reads this table instead of hard-coding a list of models: `import clipzoo` registers each row with the
transformers Auto classes, the CLI resolves `clipzoo train <slug>` / `clipzoo evaluate <slug>` through it, the Hub
exporter takes the card facts and the classes to bundle from it, and the common tests in `tests/test_common.py` are
parametrised over it. A new variant is wired in, and tested, by adding its row to `_ROWS` below.

Hooks (`train`, `evaluate`, `demo`) are given as `"module:function"` strings and resolved lazily, so that importing the
table never imports training code (which needs the `[train]` extra).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


__all__ = ["CardFacts", "Variant", "VARIANTS", "get_variant", "resolve_hook"]


@dataclass(frozen=True)
class CardFacts:
    """Facts about the paper and the official code, rendered into the model card.

    Args:
        title (`str`): the paper's title.
        arxiv (`str`): arXiv id, e.g. `"2202.11094"`.
        official_repo (`str`): `owner/name` of the official code on GitHub.
        license (`str`): the licence of the clipzoo weights we publish (SPDX id).
        summary (`str`): one paragraph saying what the method does.
        citation (`str`): BibTeX.
        base_model (`str`, *optional*): Hub id of the CLIP the official weights start from.
        datasets (`tuple[str, ...]`): training datasets of the published weights.
        metrics (`tuple[str, ...]`): metric names reported in the card.
        tags (`tuple[str, ...]`): extra Hub tags.
        notes (`str`): choices that differ from the official code, and why.
    """

    title: str
    arxiv: str
    official_repo: str
    license: str
    summary: str
    citation: str
    base_model: str | None = None
    datasets: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    notes: str = ""


@dataclass(frozen=True)
class Variant:
    """One clipzoo method.

    Args:
        slug (`str`): short name used on the command line and in file names (`modeling_<slug>.py`).
        config_class (`type`): the `PreTrainedConfig` subclass; its `model_type` is `"clipzoo_<slug>"`.
        model_class (`type`): the base `PreTrainedModel` registered with `AutoModel`.
        processor_class (`type`, *optional*): registered with `AutoProcessor`.
        image_processor_class (`type`, *optional*): registered with `AutoImageProcessor` (PIL backend).
        task_classes (`dict[str, type]`): task Auto class name -> model class, e.g.
            `{"AutoModelForZeroShotImageClassification": GroupViTForZeroShot...}`.
        pipeline_tag (`str`): Hub pipeline tag of the exported model.
        tiny_config (`Callable[[], PreTrainedConfig]`): a config small enough for unit tests (< 1 s forward on CPU).
        tiny_inputs (`Callable[[PreTrainedConfig, int], dict]`): random model inputs for a tiny config and a seed;
            the common tests call `model(**tiny_inputs(config, seed))`.
        card (`CardFacts`): paper facts for the model card.
        default_recipe (`str`): recipe name under `clipzoo/training/recipes/` used by `clipzoo train <slug>`.
        train (`str`, *optional*): `"module:function"` of the training entry point, called as
            `fn(recipe_args, output_dir=...)`.
        evaluate (`str`, *optional*): `"module:function"` returning a dict of metrics, called as `fn(model_dir, **kw)`.
        demo (`str`, *optional*): `"module:function"` run by `clipzoo demo`; returns a dict of summary numbers.
        lora_target_modules (`str | list[str]`, *optional*): the peft LoRA preset's `target_modules`.
        lora_modules_to_save (`list[str]`, *optional*): modules trained in full (and saved with the adapter) under the
            preset, e.g. a head that the backbone checkpoint does not contain.
        tiny_processor (`Callable[[], ProcessorMixin]`, *optional*): a processor matching `tiny_config`, used by the
            common tests for the save/load round trip and `AutoProcessor`.
    """

    slug: str
    config_class: type
    model_class: type
    processor_class: type | None
    image_processor_class: type | None
    task_classes: dict[str, type]
    pipeline_tag: str
    tiny_config: Callable[[], Any]
    tiny_inputs: Callable[[Any, int], dict]
    card: CardFacts
    default_recipe: str = ""
    train: str | None = None
    evaluate: str | None = None
    demo: str | None = None
    lora_target_modules: str | list[str] | None = None
    lora_modules_to_save: list[str] | None = None
    tiny_processor: Callable[[], Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def lora_config(self, **kwargs: Any):
        """The variant's peft LoRA preset: `peft.LoraConfig(target_modules=..., modules_to_save=..., **kwargs)`.

        Raises:
            `ValueError`: the variant has no LoRA preset.
        """
        if self.lora_target_modules is None:
            raise ValueError(f"Variant {self.slug!r} has no LoRA preset.")
        from peft import LoraConfig

        kwargs.setdefault("target_modules", self.lora_target_modules)
        if self.lora_modules_to_save:
            kwargs.setdefault("modules_to_save", list(self.lora_modules_to_save))
        return LoraConfig(**kwargs)

    @property
    def model_type(self) -> str:
        return self.config_class.model_type


def _rows() -> list[Variant]:
    """The rows, one builder per variant (each builder imports its own classes)."""
    return [build() for build in _ROW_BUILDERS]


VARIANTS: dict[str, Variant] = {}


def _load() -> dict[str, Variant]:
    if not VARIANTS:
        for row in _rows():
            if row.slug in VARIANTS:
                raise ValueError(f"Duplicate variant slug {row.slug!r} in the VARIANTS table.")
            if row.model_type != f"clipzoo_{row.slug}":
                raise ValueError(
                    f"Variant {row.slug!r} has model_type {row.model_type!r}; expected 'clipzoo_{row.slug}'."
                )
            VARIANTS[row.slug] = row
    return VARIANTS


def get_variant(slug: str) -> Variant:
    """Returns the row for `slug`, or raises a `ValueError` listing the known slugs."""
    table = _load()
    if slug not in table:
        known = ", ".join(sorted(table)) or "(none)"
        raise ValueError(f"Unknown variant {slug!r}. Known variants: {known}.")
    return table[slug]


def resolve_hook(spec: str) -> Callable[..., Any]:
    """Imports `"package.module:function"` and returns the function."""
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"Hook {spec!r} must have the form 'module:function'.")
    return getattr(importlib.import_module(module_name), attr)


# ---------------------------------------------------------------------------------------------------------------------
# Rows. Each variant adds one builder function below and appends it to _ROW_BUILDERS.
# ---------------------------------------------------------------------------------------------------------------------

_ROW_BUILDERS: list[Callable[[], Variant]] = []


def _ape_tiny_config():
    from transformers import CLIPConfig

    from clipzoo.configuration.configuration_ape import APEConfig

    tower = {"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_hidden_layers": 1}
    base = CLIPConfig(
        text_config={
            **tower,
            "vocab_size": 64,
            "max_position_embeddings": 16,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 2,
        },
        vision_config={**tower, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    # Inline base (built from base_config with a fixed seed), so the tiny adapter needs no base on disk.
    return APEConfig(
        base_config=base.to_dict(),
        method="ape",
        feature_dim=16,
        num_cache_entries=6,
        shots=2,
        feat_num_training_free=8,
        id2label={0: "circle", 1: "square", 2: "triangle"},
        label2id={"circle": 0, "square": 1, "triangle": 2},
    )


def _ape_tiny_inputs(config, seed: int) -> dict:
    import torch

    generator = torch.Generator().manual_seed(seed)
    return {"pixel_values": torch.randn(2, 3, 32, 32, generator=generator)}


def _ape_row() -> Variant:
    from clipzoo.configuration.configuration_ape import APEConfig
    from clipzoo.modeling.modeling_ape import APEForImageClassification
    from clipzoo.processing.processing_ape import APEImageProcessor

    return Variant(
        slug="ape",
        config_class=APEConfig,
        model_class=APEForImageClassification,
        processor_class=None,
        image_processor_class=APEImageProcessor,
        task_classes={"AutoModelForImageClassification": APEForImageClassification},
        pipeline_tag="image-classification",
        tiny_config=_ape_tiny_config,
        tiny_inputs=_ape_tiny_inputs,
        card=CardFacts(
            title="Not All Features Matter: Enhancing Few-shot CLIP with Adaptive Prior Refinement",
            arxiv="2304.01195",
            official_repo="yangyangyang127/APE",
            license="apache-2.0",
            summary=(
                "APE is a few-shot adapter on a frozen CLIP: a key-value cache of K-shot image features and a text "
                "classifier score an image through three edges (text, refined cache on the Q most discriminative "
                "channels, and a KL-weighted cache-vs-text edge), with hyper-parameters searched on a validation "
                "split. APE-T adds a trainable category residual (C x Q) and per-entry value weights. Tip-Adapter and "
                "Tip-Adapter-F are included as baselines on identical features."
            ),
            citation=(
                "@inproceedings{zhu2023ape,\n  title={Not All Features Matter: Enhancing Few-shot CLIP with Adaptive "
                "Prior Refinement},\n  author={Zhu, Xiangyang and Zhang, Renrui and He, Bowei and Zhou, Aojun and "
                "Wang, Dong and Zhao, Bin and Gao, Peng},\n  booktitle={ICCV},\n  year={2023}\n}"
            ),
            datasets=("fashion_mnist",),
            metrics=("accuracy",),
            tags=("few-shot", "clip", "adapter", "ape", "tip-adapter"),
            notes=(
                "Adapter checkpoint only: the frozen base is referenced by config.base_model_name_or_path. "
                "APE-T uses Q_T channels from the full (text + cache) criterion with the APE-T weights; the official "
                "APE-T crashes at HEAD (see model_cards/ape.md). All searches and epoch choices use the validation "
                "split, never the test split."
            ),
        ),
        default_recipe="ape_fashion_mnist",
        train="clipzoo.training.ape:train",
        evaluate="clipzoo.training.ape:evaluate",
        demo="clipzoo.demo:demo_ape",
    )


_ROW_BUILDERS.append(_ape_row)


def _groupvit_tiny_config():
    from clipzoo.configuration.configuration_groupvit import ClipzooGroupViTConfig

    return ClipzooGroupViTConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "vocab_size": 64, "max_position_embeddings": 16, "bos_token_id": 0, "eos_token_id": 1,
                     "pad_token_id": 2},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "depths": [1, 1, 1],
                       "num_group_tokens": [8, 4, 0], "num_output_groups": [8, 4, 4], "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16, projection_intermediate_dim=32, multi_label=2,
    )  # fmt: skip


def _groupvit_tiny_inputs(config, seed: int) -> dict:
    import torch

    generator = torch.Generator().manual_seed(seed)
    # Caption + K prompts per image, each ending with the end-of-text id (pooling position).
    input_ids = torch.randint(3, config.text_config.vocab_size, (2, 1 + config.multi_label, 8), generator=generator)
    input_ids[..., 0], input_ids[..., -1] = config.text_config.bos_token_id, config.text_config.eos_token_id
    return {"input_ids": input_ids, "pixel_values": torch.randn(2, 3, 32, 32, generator=generator)}


def _groupvit_tiny_processor():
    from clipzoo.processing.processing_groupvit import ClipzooGroupViTImageProcessor, ClipzooGroupViTProcessor
    from clipzoo.processing.tokenization_offline import build_offline_tokenizer

    tokenizer = build_offline_tokenizer(["a red circle", "a photo of a square."], vocab_size=260, model_max_length=16)
    image_processor = ClipzooGroupViTImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return ClipzooGroupViTProcessor(image_processor, tokenizer)


def _groupvit_row() -> Variant:
    from clipzoo.configuration.configuration_groupvit import ClipzooGroupViTConfig
    from clipzoo.modeling.modeling_groupvit import ClipzooGroupViTModel
    from clipzoo.processing.processing_groupvit import ClipzooGroupViTImageProcessor, ClipzooGroupViTProcessor

    return Variant(
        slug="groupvit",
        config_class=ClipzooGroupViTConfig,
        model_class=ClipzooGroupViTModel,
        processor_class=ClipzooGroupViTProcessor,
        image_processor_class=ClipzooGroupViTImageProcessor,
        task_classes={"AutoModelForZeroShotImageClassification": ClipzooGroupViTModel},
        pipeline_tag="zero-shot-image-classification",
        tiny_config=_groupvit_tiny_config,
        tiny_inputs=_groupvit_tiny_inputs,
        tiny_processor=_groupvit_tiny_processor,
        card=CardFacts(
            title="GroupViT: Semantic Segmentation Emerges from Text Supervision",
            arxiv="2202.11094",
            official_repo="NVlabs/GroupViT",
            license="apache-2.0",
            summary=(
                "GroupViT is a vision transformer that groups image patches into progressively larger, arbitrarily "
                "shaped segments with learnable group tokens and Gumbel-softmax assignment, trained only on "
                "image-text pairs with a contrastive loss plus a multi-label loss over prompts built from the "
                "caption's nouns. Zero-shot semantic segmentation emerges: each final group is labelled with its "
                "closest class prompt."
            ),
            citation=(
                "@inproceedings{xu2022groupvit,\n  title={GroupViT: Semantic Segmentation Emerges from Text "
                "Supervision},\n  author={Xu, Jiarui and De Mello, Shalini and Liu, Sifei and Byeon, Wonmin and "
                "Breuel, Thomas and Kautz, Jan and Wang, Xiaolong},\n  booktitle={CVPR},\n  year={2022}\n}"
            ),
            datasets=("shapesworld",),
            metrics=("mean_iou", "accuracy"),
            tags=("groupvit", "zero-shot-segmentation", "clip", "contrastive"),
            notes=(
                "Weights of transformers' GroupViTModel load unchanged. Preprocessing uses the official ImageNet "
                "mean/std and bilinear resizing, not the CLIP constants of the Hub processor. The multi-label "
                "prompts use an offline lexicon word extractor instead of NLTK's tagger (see model_cards/groupvit.md)."
            ),
        ),
        default_recipe="groupvit_shapesworld",
        train="clipzoo.training.groupvit:train",
        evaluate="clipzoo.training.groupvit:evaluate",
        demo="clipzoo.demo:demo_groupvit",
        lora_target_modules=r".*(text_model|vision_model)\.encoder\..*self_attn\.(q_proj|k_proj|v_proj|out_proj)",
    )


_ROW_BUILDERS.append(_groupvit_row)


def _clip_fsar_tiny_config():
    from clipzoo.configuration.configuration_clip_fsar import ClipzooCLIPFSARConfig

    tower = {"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_hidden_layers": 1}
    return ClipzooCLIPFSARConfig(
        vision_config={**tower, "image_size": 16, "patch_size": 8, "projection_dim": 16},
        text_config={**tower, "vocab_size": 300, "max_position_embeddings": 16, "projection_dim": 16,
                     "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2},
        projection_dim=16, num_frames=4, num_attention_heads=2, ffn_dim=32,
        class_names=["move left", "move right", "grow"],
    )  # fmt: skip


def _clip_fsar_tiny_inputs(config, seed: int) -> dict:
    import torch

    generator = torch.Generator().manual_seed(seed)
    # A 2-way 1-shot episode with 2 queries per class; class ids index config.class_names.
    return {
        "support_pixel_values": torch.randn(2, config.num_frames, 3, 16, 16, generator=generator),
        "support_labels": torch.tensor([0, 1]),
        "support_class_ids": torch.tensor([2, 0]),
        "pixel_values": torch.randn(4, config.num_frames, 3, 16, 16, generator=generator),
        "labels": torch.tensor([0, 0, 1, 1]),
        "query_class_ids": torch.tensor([2, 2, 0, 0]),
        "return_loss": True,
    }


def _clip_fsar_tiny_processor():
    from clipzoo.processing.processing_clip_fsar import ClipzooCLIPFSARProcessor
    from clipzoo.processing.tokenization_offline import build_offline_tokenizer
    from clipzoo.processing.video_processing import ClipzooVideoProcessor

    tokenizer = build_offline_tokenizer(
        ["a photo of move left", "a photo of grow"], vocab_size=300, model_max_length=16
    )
    video_processor = ClipzooVideoProcessor(num_frames=4, shortest_edge=16, crop_size=16)
    return ClipzooCLIPFSARProcessor(image_processor=video_processor, tokenizer=tokenizer)


def _clip_fsar_row() -> Variant:
    from clipzoo.configuration.configuration_clip_fsar import ClipzooCLIPFSARConfig
    from clipzoo.modeling.modeling_clip_fsar import ClipzooCLIPFSARModel
    from clipzoo.processing.processing_clip_fsar import ClipzooCLIPFSARProcessor
    from clipzoo.processing.video_processing import ClipzooVideoProcessor

    return Variant(
        slug="clip_fsar",
        config_class=ClipzooCLIPFSARConfig,
        model_class=ClipzooCLIPFSARModel,
        processor_class=ClipzooCLIPFSARProcessor,
        image_processor_class=ClipzooVideoProcessor,
        task_classes={},
        pipeline_tag="video-classification",
        tiny_config=_clip_fsar_tiny_config,
        tiny_inputs=_clip_fsar_tiny_inputs,
        tiny_processor=_clip_fsar_tiny_processor,
        card=CardFacts(
            title="CLIP-guided Prototype Modulating for Few-shot Action Recognition",
            arxiv="2303.02982",
            official_repo="alibaba-mmai-research/CLIP-FSAR",
            license="apache-2.0",
            summary=(
                "CLIP-FSAR fine-tunes CLIP's image encoder for few-shot action recognition with two additions: a "
                "video-text contrastive loss between frame-averaged videos and the class-name text embeddings of all "
                "training classes, and prototype modulation, in which the class text embedding is appended to the "
                "support frames as an extra token of a one-layer temporal Transformer. Queries are matched to the "
                "modulated prototypes with bidirectional OTAM (soft-min temporal alignment of frame distances)."
            ),
            citation=(
                "@article{wang2023clipfsar,\n  title={CLIP-guided Prototype Modulating for Few-shot Action "
                "Recognition},\n  author={Wang, Xiang and Zhang, Shiwei and Cen, Jun and Gao, Changxin and Zhang, "
                "Yingya and Zhao, Deli and Sang, Nong},\n  journal={International Journal of Computer Vision},\n  "
                "year={2023}\n}"
            ),
            datasets=("shapesworld-actions",),
            metrics=("accuracy",),
            tags=("few-shot", "action-recognition", "video", "clip", "otam", "clip-fsar"),
            notes=(
                "Model selection on the validation split (the official code selects on test). Evaluation frames are "
                "segment centres (official: random per segment; eval_sampling='random' restores it). OTAM is the "
                "official recurrence, computed exactly (float64 row recurrence; the official exp/log overflows in float32)."
            ),
        ),
        default_recipe="clip_fsar_shapesworld",
        train="clipzoo.training.clip_fsar:train",
        evaluate="clipzoo.training.clip_fsar:evaluate",
        demo="clipzoo.demo:demo_clip_fsar",
        lora_target_modules=r".*vision_model\.vision_model\.encoder\..*self_attn\.(q_proj|k_proj|v_proj|out_proj)",
        # The modulation Transformer is new on top of a CLIP backbone: it trains in full under the preset. The bare
        # video-text `scale` parameter cannot be a peft module and stays at its loaded value.
        lora_modules_to_save=["temporal_transformer"],
    )


_ROW_BUILDERS.append(_clip_fsar_row)
