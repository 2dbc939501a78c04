"""Registers every VARIANTS row with the transformers Auto classes."""

from __future__ import annotations

import transformers

from clipzoo.variants import Variant, _load


__all__ = ["register_all", "register_variant"]


def register_variant(row: Variant) -> None:
    """Registers one row with `AutoConfig`, `AutoModel`, `AutoProcessor`, `AutoImageProcessor` and its task classes."""
    transformers.AutoConfig.register(row.model_type, row.config_class, exist_ok=True)
    transformers.AutoModel.register(row.config_class, row.model_class, exist_ok=True)
    for auto_name, model_class in row.task_classes.items():
        auto_class = getattr(transformers, auto_name, None)
        if auto_class is None:
            raise ValueError(f"Variant {row.slug!r} names unknown Auto class {auto_name!r}.")
        auto_class.register(row.config_class, model_class, exist_ok=True)
    if row.image_processor_class is not None:
        transformers.AutoImageProcessor.register(
            row.config_class, image_processor_classes={"pil": row.image_processor_class}, exist_ok=True
        )
    if row.processor_class is not None:
        transformers.AutoProcessor.register(row.config_class, row.processor_class, exist_ok=True)


def register_all() -> None:
    """Registers every row of the VARIANTS table (idempotent)."""
    for row in _load().values():
        register_variant(row)
