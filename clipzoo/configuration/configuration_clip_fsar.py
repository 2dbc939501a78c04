"""Configuration of clipzoo's CLIP-FSAR ("CLIP-guided Prototype Modulating for Few-shot Action Recognition", Wang et
al., IJCV 2023), with defaults from the official code (alibaba-mmai-research/CLIP-FSAR, `CNN_OTAM_CLIPFSAR`).
"""

from __future__ import annotations

from transformers import CLIPTextConfig, CLIPVisionConfig, PreTrainedConfig
from transformers.utils import logging


logger = logging.get_logger(__name__)

__all__ = ["ClipzooCLIPFSARConfig"]

METRICS = ("otam", "frame_mean_cosine")


class ClipzooCLIPFSARConfig(PreTrainedConfig):
    r"""
    Configuration of [`ClipzooCLIPFSARModel`]: a trainable CLIP vision tower, a frozen CLIP text tower that embeds
    class names, the prototype-modulation Transformer and the OTAM few-shot metric.

    Args:
        vision_config (`dict` or `CLIPVisionConfig`, *optional*): the CLIP vision tower (with its projection).
        text_config (`dict` or `CLIPTextConfig`, *optional*): the frozen CLIP text tower.
        projection_dim (`int`, *optional*, defaults to 512): D, CLIP's joint embedding size (official: 1024 for RN50,
            512 for ViT-B/16); the modulation Transformer works at this width.
        num_frames (`int`, *optional*, defaults to 8): frames per video (`DATA.NUM_INPUT_FRAMES`).
        num_attention_heads (`int`, *optional*, defaults to 8): heads of the modulation Transformer (head size D / 8).
        transformer_depth (`int`, *optional*, defaults to 1): its depth (`TRAIN.TRANSFORMER_DEPTH`).
        ffn_dim (`int`, *optional*, defaults to 2048): its feed-forward width (2048 for both backbones officially).
        attention_dropout (`float`, *optional*, defaults to 0.2): dropout after the attention output projection.
        ffn_dropout (`float`, *optional*, defaults to 0.05): dropout inside the feed-forward block.
        scale_init (`float`, *optional*, defaults to 1.0): initial value of the learnable video-text logit scale.
        otam_lambda (`float`, *optional*, defaults to 0.5): OTAM soft-min temperature (`OTAM_cum_dist_v2`).
        otam_bidirectional (`bool`, *optional*, defaults to `True`): add the support-to-query alignment.
        cos_eps (`float`, *optional*, defaults to 0.01): epsilon of the official cosine.
        video_text_loss_weight (`float`, *optional*, defaults to 3.0): w of the video-text CE
            (`USE_CLASSIFICATION_VALUE`: 3.0 SSv2, 1.5 Kinetics/UCF101, 1.2 HMDB51); 0 disables the loss.
        use_prototype_modulation (`bool`, *optional*, defaults to `True`): run the text-conditioned Transformer;
            `False` gives plain OTAM on CLIP frame features (an ablation).
        metric (`str`, *optional*, defaults to `"otam"`): `"otam"` or `"frame_mean_cosine"` (cosine between
            frame-averaged videos and class prototypes, an order-blind baseline).
        merge_support_before (`bool`, *optional*, defaults to `True`): with K > 1, average support frames and text
            tokens per class before the Transformer (`TRAIN.MERGE_BEFORE`, official 5-shot configs); otherwise the
            per-video outputs are averaged after it.
        prompt (`str`, *optional*, defaults to `"a photo of {}"`): class-name prompt (no final period, as official).
        class_names (`list[str]`, *optional*): training classes in class-id order; their text embeddings are stored
            in the `class_text_embeds` buffer and are the targets of the video-text loss.

    Examples:

    ```python
    >>> from clipzoo.configuration.configuration_clip_fsar import ClipzooCLIPFSARConfig
    >>> config = ClipzooCLIPFSARConfig(class_names=["jump", "run"])
    >>> config.otam_lambda, config.num_frames
    (0.5, 8)
    ```
    """

    model_type = "clipzoo_clip_fsar"
    sub_configs_defaults = {"vision_config": CLIPVisionConfig, "text_config": CLIPTextConfig}

    vision_config: dict | CLIPVisionConfig | None = None
    text_config: dict | CLIPTextConfig | None = None
    projection_dim: int = 512
    num_frames: int = 8
    num_attention_heads: int = 8
    transformer_depth: int = 1
    ffn_dim: int = 2048
    attention_dropout: float = 0.2
    ffn_dropout: float = 0.05
    scale_init: float = 1.0
    otam_lambda: float = 0.5
    otam_bidirectional: bool = True
    cos_eps: float = 0.01
    video_text_loss_weight: float = 3.0
    use_prototype_modulation: bool = True
    metric: str = "otam"
    merge_support_before: bool = True
    prompt: str = "a photo of {}"
    class_names: list[str] | None = None
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        if self.vision_config is None:
            self.vision_config = CLIPVisionConfig(projection_dim=self.projection_dim)
        elif isinstance(self.vision_config, dict):
            self.vision_config = CLIPVisionConfig(**self.vision_config)
        if self.text_config is None:
            self.text_config = CLIPTextConfig(projection_dim=self.projection_dim)
        elif isinstance(self.text_config, dict):
            self.text_config = CLIPTextConfig(**self.text_config)
        self.class_names = list(self.class_names) if self.class_names is not None else []
        super().__post_init__(**kwargs)
        self.validate_architecture()

    def validate_architecture(self):
        """Raises `ValueError` naming the first inconsistent value."""
        for name in ("vision_config", "text_config"):
            sub = getattr(self, name)
            if sub.projection_dim != self.projection_dim:
                raise ValueError(
                    f"{name}.projection_dim ({sub.projection_dim}) must equal projection_dim ({self.projection_dim})."
                )
        if self.projection_dim % self.num_attention_heads:
            raise ValueError(
                f"projection_dim ({self.projection_dim}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})."
            )
        if self.num_frames < 1 or self.transformer_depth < 1 or self.ffn_dim < 1:
            raise ValueError(
                f"num_frames, transformer_depth and ffn_dim must be >= 1; got {self.num_frames}, "
                f"{self.transformer_depth}, {self.ffn_dim}."
            )
        if self.otam_lambda <= 0:
            raise ValueError(f"otam_lambda must be > 0; got {self.otam_lambda}.")
        if self.cos_eps < 0:
            raise ValueError(f"cos_eps must be >= 0 (it keeps frame distances within [0, 2]); got {self.cos_eps}.")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}; got {self.metric!r}.")
        if self.video_text_loss_weight < 0:
            raise ValueError(f"video_text_loss_weight must be >= 0; got {self.video_text_loss_weight}.")
        if "{}" not in self.prompt:
            raise ValueError(f"prompt must contain '{{}}' for the class name; got {self.prompt!r}.")
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"class_names must be unique; got {self.class_names}.")
