"""Configuration of APE / APE-T (and the Tip-Adapter baselines) as an adapter on a frozen CLIP-family model."""

from __future__ import annotations

import json

from transformers import PreTrainedConfig
from transformers.utils import logging


logger = logging.get_logger(__name__)

__all__ = ["APEConfig", "APE_METHODS"]

APE_METHODS = ("zero_shot", "tip_adapter", "tip_adapter_f", "ape", "ape_t")


class APEConfig(PreTrainedConfig):
    r"""
    Configuration of an APE adapter: which frozen dual encoder it sits on, which scoring rule it uses (APE, APE-T, or one
    of the baselines zero-shot CLIP / Tip-Adapter / Tip-Adapter-F), and the method's settings. The adapter checkpoint
    holds only the adapter's tensors (text classifier, cache, selected channels, α/β/γ, APE-T parameters); the base
    model is referenced, like a peft adapter, and re-attached when the adapter is loaded.

    Defaults follow the official code (yangyangyang127/APE `configs/caltech101.yaml`, the "generic" dataset config):
    criterion weights (0.5, 0.5) training-free and (0.2, 0.8) for APE-T, search grid scale (7, 7, 1) with
    (200, 20, 20) steps, init β = 1, α = 1, γ = 0.1, 10 augmented views, APE-T lr 1e-3 / eps 1e-3 / weight decay 0.1 /
    30 epochs / batch 256. The official Q values are for RN50 (D = 1024) only; when `feat_num_training_free` /
    `feat_num_training` are `None` we use round(0.7 · D) and round(0.8 · D) (the official medians are 700 / 800 of
    1024).

    Args:
        base_model_name_or_path (`str`, *optional*):
            Hub id or local path of the frozen base (any model with `get_image_features` / `get_text_features`:
            transformers `CLIPModel`, `SiglipModel`, the clipzoo tiny backbone, ...).
        base_config (`dict`, *optional*):
            Alternative to `base_model_name_or_path`: an inline config dict (with `model_type`) of the base. The base is
            then built from it with randomly initialised weights drawn with `base_init_seed`, so the same adapter
            always gets the same base without storing it. Meant for unit tests and tiny demos.
        base_init_seed (`int`, *optional*, defaults to 0): seed for the inline base's initialisation.
        method (`str`, *optional*, defaults to `"ape"`): one of `"zero_shot"`, `"tip_adapter"`, `"tip_adapter_f"`,
            `"ape"`, `"ape_t"`.
        feature_dim (`int`, *optional*, defaults to 512): D, the base's joint embedding size.
        num_cache_entries (`int`, *optional*, defaults to 0): NK, the number of cache entries (classes × shots).
        shots (`int`, *optional*, defaults to 16): K, images per class in the cache.
        feat_num_training_free (`int`, *optional*): Q, channels kept by the prior refinement for APE.
        feat_num_training (`int`, *optional*): Q_T, channels carrying APE-T's category residual.
        criterion_weights_training_free (`list[float]`, *optional*, defaults to `[0.5, 0.5]`): (w0, w1) of
            `J = −w0 · S + w1 · V` for APE.
        criterion_weights_training (`list[float]`, *optional*, defaults to `[0.2, 0.8]`): (w0, w1) for APE-T.
        criterion_use_cache (`bool`, *optional*, defaults to `True`): whether S includes the cache keys (the official
            "full" mode) or only the text classifier ("text-only" mode).
        init_alpha, init_beta, init_gamma (`float`): α (residual ratio), β (sharpness), γ (KL weight) before search;
            APE-T trains with the init values.
        search_scale (`list[float]`, *optional*, defaults to `[7.0, 7.0, 1.0]`): upper ends of the β, α, γ grids.
        search_step (`list[int]`, *optional*, defaults to `[200, 20, 20]`): number of β, α, γ grid points.
        augment_epochs (`int`, *optional*, defaults to 10): augmented views averaged per cache image.
        learning_rate, adam_epsilon, weight_decay (`float`): APE-T's AdamW (defaults 1e-3, 1e-3, 0.1).
        train_epochs (`int`, *optional*, defaults to 30): APE-T epochs (best epoch chosen on the validation split).
        train_batch_size (`int`, *optional*, defaults to 256): APE-T batch size.
        text_logit_scale (`float`, *optional*, defaults to 100.0): scale of the text edge (`100 · f Wᵀ`).

    Examples:

    ```python
    >>> from clipzoo.configuration.configuration_ape import APEConfig

    >>> config = APEConfig(base_model_name_or_path="openai/clip-vit-base-patch32", method="ape", shots=16)
    >>> config.resolved_feat_num(training=False)
    358
    ```
    """

    model_type = "clipzoo_ape"

    base_model_name_or_path: str | None = None
    base_config: dict | None = None
    base_init_seed: int = 0
    method: str = "ape"
    feature_dim: int = 512
    num_cache_entries: int = 0
    shots: int = 16
    feat_num_training_free: int | None = None
    feat_num_training: int | None = None
    criterion_weights_training_free: list | tuple = (0.5, 0.5)
    criterion_weights_training: list | tuple = (0.2, 0.8)
    criterion_use_cache: bool = True
    init_alpha: float = 1.0
    init_beta: float = 1.0
    init_gamma: float = 0.1
    search_scale: list | tuple = (7.0, 7.0, 1.0)
    search_step: list | tuple = (200, 20, 20)
    augment_epochs: int = 10
    learning_rate: float = 1e-3
    adam_epsilon: float = 1e-3
    weight_decay: float = 0.1
    train_epochs: int = 30
    train_batch_size: int = 256
    text_logit_scale: float = 100.0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.criterion_weights_training_free = [float(w) for w in self.criterion_weights_training_free]
        self.criterion_weights_training = [float(w) for w in self.criterion_weights_training]
        self.search_scale = [float(s) for s in self.search_scale]
        self.search_step = [int(s) for s in self.search_step]
        if self.base_config is not None:
            # Keep the JSON form (int dict keys become strings), so a saved config reloads equal.
            self.base_config = json.loads(json.dumps(self.base_config))
        self.validate_architecture()

    def resolved_feat_num(self, training: bool) -> int:
        """Q (training-free) or Q_T (APE-T), with the documented defaults when unset."""
        value = self.feat_num_training if training else self.feat_num_training_free
        if value is None:
            value = max(1, round((0.8 if training else 0.7) * self.feature_dim))
        return int(value)

    def validate_architecture(self):
        """Raises `ValueError` naming the first inconsistent setting."""
        if self.method not in APE_METHODS:
            raise ValueError(f"method must be one of {APE_METHODS}, got {self.method!r}.")
        if self.feature_dim < 1:
            raise ValueError(f"feature_dim must be >= 1, got {self.feature_dim}.")
        for name in ("feat_num_training_free", "feat_num_training"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= self.feature_dim:
                raise ValueError(
                    f"{name} (Q) = {value} must be in [1, feature_dim = {self.feature_dim}]: Q channels are selected "
                    "out of the feature dimension."
                )
        for name in ("criterion_weights_training_free", "criterion_weights_training"):
            if len(getattr(self, name)) != 2:
                raise ValueError(f"{name} must be a pair (w0, w1), got {getattr(self, name)!r}.")
        if len(self.search_scale) != 3 or len(self.search_step) != 3 or min(self.search_step) < 1:
            raise ValueError(
                f"search_scale / search_step must be (β, α, γ) triples with steps >= 1, got {self.search_scale!r} / "
                f"{self.search_step!r}."
            )
        if self.num_cache_entries < 0 or self.shots < 1:
            raise ValueError(
                f"num_cache_entries must be >= 0 and shots >= 1, got {self.num_cache_entries}, {self.shots}."
            )
        if self.base_config is not None and "model_type" not in self.base_config:
            raise ValueError(
                "base_config must be a config dict with a 'model_type' key (e.g. CLIPConfig().to_dict())."
            )
