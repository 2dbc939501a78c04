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
    tiny_processor: Callable[[], Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

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
