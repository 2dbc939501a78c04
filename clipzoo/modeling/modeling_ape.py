"""APE / APE-T (and the Tip-Adapter baselines) as an image-classification adapter on a frozen CLIP-family model.

Zhu et al., "Not All Features Matter: Enhancing Few-shot CLIP with Adaptive Prior Refinement", ICCV 2023
(arXiv 2304.01195). The maths lives in `ape_math.py`; this module holds the adapter state and the frozen base.

The frozen base is deliberately *not* a registered submodule: it is kept out of `state_dict()`, `parameters()` and
`save_pretrained`, like a peft adapter. It is attached explicitly (`attach_backbone`, or `backbone=` in
`from_pretrained`) or loaded lazily on first use from `config.base_model_name_or_path` (or built from the inline
`config.base_config`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput, logging

from clipzoo.configuration.configuration_ape import APEConfig
from clipzoo.modeling.ape_math import ape_logits, ape_t_logits, tip_adapter_logits


logger = logging.get_logger(__name__)

__all__ = ["APEForImageClassification", "APEOutput", "APEPreTrainedModel"]


@dataclass
class APEOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): cross-entropy when `labels` are given.
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`): class scores of the configured method.
        image_embeds (`torch.FloatTensor` of shape `(batch_size, feature_dim)`): L2-normalised image features.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None


def check_backbone(model: nn.Module) -> nn.Module:
    """Raises `TypeError` unless `model` is a dual encoder with `get_image_features` and `get_text_features`."""
    missing = [
        name for name in ("get_image_features", "get_text_features") if not callable(getattr(model, name, None))
    ]
    if missing:
        raise TypeError(
            f"APE needs a CLIP-family dual encoder with get_image_features/get_text_features; "
            f"{type(model).__name__} lacks {', '.join(missing)}. Pass e.g. a transformers CLIPModel or SiglipModel."
        )
    return model


def pooled_features(output: torch.Tensor | ModelOutput) -> torch.Tensor:
    """`get_*_features` returns a tensor in transformers 4 and a ModelOutput with `pooler_output` in 5."""
    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output


class APEPreTrainedModel(PreTrainedModel):
    config_class = APEConfig
    base_model_prefix = "ape"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = []
    _supports_sdpa = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # APE-T starts as training-free Tip-Adapter-style scoring: zero residual, unit value weights.
        if isinstance(module, APEForImageClassification) and module.config.method == "ape_t":
            init.zeros_(module.category_residual)
            init.ones_(module.value_weights)


class APEForImageClassification(APEPreTrainedModel):
    """
    A few-shot classifier on a frozen dual encoder: the text classifier W and the key-value cache built from the support
    set score every image with the method in `config.method`:

    - `"zero_shot"`: `100 · f Wᵀ`;
    - `"tip_adapter"` / `"tip_adapter_f"`: `+ α · exp(−β(1 − f Fᵀ)) L` (Tip-Adapter-F trains the keys F);
    - `"ape"`: refined cache edge on Q selected channels and the KL edge `exp(γ · KL_bits)` on the values;
    - `"ape_t"`: a trainable category residual (C × Q_T) shared by W and F and per-entry value weights.

    Buffers are filled by `clipzoo.training.ape.fit_ape` (or by hand); the base is re-attached on load.

    Args:
        config ([`APEConfig`]): the adapter configuration.
        backbone (`nn.Module`, *optional*): an already loaded base; otherwise it is loaded on first use.

    Examples:

    ```python
    >>> from transformers import AutoModelForImageClassification, pipeline
    >>> model = AutoModelForImageClassification.from_pretrained("path/to/ape-adapter")  # base re-attached lazily
    >>> classifier = pipeline("image-classification", model="path/to/ape-adapter")
    ```
    """

    def __init__(self, config: APEConfig, backbone: nn.Module | None = None):
        # By model_type, not isinstance: remote code may load the config class from another module copy.
        if getattr(config, "model_type", None) != APEConfig.model_type:
            raise TypeError(f"{type(self).__name__} expects an APEConfig, got {type(config).__name__}.")
        super().__init__(config)
        num_classes, dim, entries = config.num_labels, config.feature_dim, config.num_cache_entries
        self.register_buffer("text_weights", torch.zeros(num_classes, dim))
        # A parameter so that Tip-Adapter-F can train it; frozen for every other method.
        self.cache_keys = nn.Parameter(torch.zeros(entries, dim), requires_grad=config.method == "tip_adapter_f")
        self.register_buffer("cache_labels", torch.zeros(entries, dtype=torch.long))
        self.register_buffer("alpha", torch.tensor(float(config.init_alpha)))
        self.register_buffer("beta", torch.tensor(float(config.init_beta)))
        self.register_buffer("gamma", torch.tensor(float(config.init_gamma)))
        if config.method == "ape":
            self.register_buffer("selected_channels", torch.zeros(config.resolved_feat_num(False), dtype=torch.long))
        if config.method == "ape_t":
            q_train = config.resolved_feat_num(True)
            self.register_buffer("selected_channels", torch.zeros(q_train, dtype=torch.long))
            self.category_residual = nn.Parameter(torch.zeros(num_classes, q_train))
            self.value_weights = nn.Parameter(torch.ones(entries))
        self._backbone_slot: list[nn.Module | None] = [None]
        if backbone is not None:
            self.attach_backbone(backbone)
        self.post_init()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        model = super().from_pretrained(*args, **kwargs)
        model.set_trainable()
        return model

    def set_trainable(self) -> None:
        """Only the method's own parameters train: the keys for Tip-Adapter-F, residual + value weights for APE-T."""
        self.cache_keys.requires_grad_(self.config.method == "tip_adapter_f")
        if self.config.method == "ape_t":
            self.category_residual.requires_grad_(True)
            self.value_weights.requires_grad_(True)

    # ---- the frozen base ------------------------------------------------------------------------------------------

    def attach_backbone(self, backbone: nn.Module) -> None:
        """Attaches a frozen base (not saved with the adapter). Raises `TypeError` for a non dual encoder."""
        check_backbone(backbone)
        backbone.requires_grad_(False).eval()
        self._backbone_slot[0] = backbone
        name = getattr(backbone, "name_or_path", None) or getattr(
            getattr(backbone, "config", None), "_name_or_path", ""
        )
        if self.config.base_model_name_or_path is None and self.config.base_config is None and name:
            self.config.base_model_name_or_path = name

    @property
    def backbone(self) -> nn.Module:
        """The frozen base, loaded from `config.base_model_name_or_path` / `config.base_config` on first access."""
        if self._backbone_slot[0] is None:
            self.attach_backbone(self._load_backbone())
        return self._backbone_slot[0]

    def _load_backbone(self) -> nn.Module:
        config = self.config
        if config.base_model_name_or_path:
            return AutoModel.from_pretrained(config.base_model_name_or_path)
        if config.base_config is not None:
            base_config = dict(config.base_config)
            base_config = AutoConfig.for_model(base_config.pop("model_type"), **base_config)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.base_init_seed)
                return AutoModel.from_config(base_config)
        raise ValueError(
            "This APE adapter names no base model: set config.base_model_name_or_path (Hub id or local path of a CLIP "
            "model) or call attach_backbone(model)."
        )

    @torch.no_grad()
    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """L2-normalised image features of the frozen base, shape `(batch_size, feature_dim)`."""
        backbone = self.backbone
        device = self.text_weights.device
        if next(backbone.parameters()).device != device:
            backbone.to(device)
        dtype = next(backbone.parameters()).dtype
        features = pooled_features(backbone.get_image_features(pixel_values=pixel_values.to(device, dtype)))
        if features.shape[-1] != self.config.feature_dim:
            raise ValueError(
                f"The base returns {features.shape[-1]}-d features but the adapter was built for "
                f"feature_dim={self.config.feature_dim}."
            )
        return F.normalize(features.float(), dim=-1)

    # ---- scoring --------------------------------------------------------------------------------------------------

    def logits_from_features(self, features: torch.Tensor) -> torch.Tensor:
        """Class scores of `config.method` for L2-normalised features `(N, D)`."""
        method = self.config.method
        features = features.to(self.text_weights.dtype)
        if method == "zero_shot":
            return self.config.text_logit_scale * features @ self.text_weights.t()
        if method in ("tip_adapter", "tip_adapter_f"):
            return tip_adapter_logits(
                features, self.text_weights, self.cache_keys, self.cache_labels, self.alpha, self.beta
            )
        if method == "ape":
            return ape_logits(
                features,
                self.text_weights,
                self.cache_keys,
                self.cache_labels,
                self.selected_channels,
                self.alpha,
                self.beta,
                self.gamma,
            )
        return ape_t_logits(
            features,
            self.text_weights,
            self.cache_keys,
            self.cache_labels,
            self.selected_channels,
            self.category_residual,
            self.value_weights,
            self.alpha,
            self.beta,
        )

    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        image_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> APEOutput | tuple:
        """
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, channels, height, width)`, *optional*): images
                preprocessed for the base.
            image_embeds (`torch.FloatTensor` of shape `(batch_size, feature_dim)`, *optional*): pre-computed base
                features (normalised here), used instead of `pixel_values`.
            labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*): classes for the cross-entropy loss.
        """
        if image_embeds is None:
            if pixel_values is None:
                raise ValueError("APE needs pixel_values or image_embeds.")
            image_embeds = self.get_image_features(pixel_values)
        else:
            image_embeds = F.normalize(image_embeds.float(), dim=-1)
        logits = self.logits_from_features(image_embeds)
        loss = F.cross_entropy(logits, labels.to(logits.device)) if labels is not None else None
        output = APEOutput(loss=loss, logits=logits, image_embeds=image_embeds)
        return output if return_dict is not False else output.to_tuple()
