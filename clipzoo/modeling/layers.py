"""Blocks shared, unchanged, by several clipzoo models (a block moves here when a second variant uses it)."""

from __future__ import annotations

from transformers import PreTrainedConfig


__all__ = ["check_config_type"]


def check_config_type(model_name: str, config: object, expected: type[PreTrainedConfig]) -> None:
    """Raises a `TypeError` when a model is built from a config of another model type.

    transformers only checks that `config` is *a* `PreTrainedConfig`; a `CLIPConfig` passed to a clipzoo model would
    otherwise fail later with an unrelated `AttributeError`.
    """
    if not isinstance(config, expected):
        got = getattr(config, "model_type", None)
        raise TypeError(
            f"{model_name} expects a {expected.__name__} (model_type {expected.model_type!r}), got "
            f"{type(config).__name__}" + (f" (model_type {got!r})." if got else ".")
        )
