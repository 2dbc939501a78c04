"""Configuration of clipzoo's GroupViT (Xu et al., CVPR 2022), faithful to NVlabs/GroupViT.

The sub-configs are transformers' own `GroupViTTextConfig` / `GroupViTVisionConfig`, so the config of any transformers
GroupViT checkpoint (e.g. `nvidia/groupvit-gcc-yfcc`) is a valid `ClipzooGroupViTConfig`. What the official code has
and transformers' config lacks sits at the top level: stochastic depth, the logit-scale clamp, and the multi-label
contrastive loss (number of prompt texts, its weight, its own temperature).
"""

from __future__ import annotations

from transformers import GroupViTConfig
from transformers.utils import logging


logger = logging.get_logger(__name__)

__all__ = ["ClipzooGroupViTConfig"]


class ClipzooGroupViTConfig(GroupViTConfig):
    r"""
    Configuration of [`ClipzooGroupViTModel`]. Defaults reproduce the official "GroupViT-S" of
    `configs/group_vit_gcc_yfcc_30e.yml` (vision: 384 wide, stages `[6, 3, 3]`, group tokens `[64, 8, 0]`; text: 256
    wide, 12 layers; projections 4096 -> 256).

    Args:
        text_config (`dict` or `GroupViTTextConfig`, *optional*): the text tower (transformers' `GroupViTTextConfig`).
        vision_config (`dict` or `GroupViTVisionConfig`, *optional*): the vision tower (`GroupViTVisionConfig`).
        projection_dim (`int`, *optional*, defaults to 256): joint embedding size.
        projection_intermediate_dim (`int`, *optional*, defaults to 4096): hidden size of the MLP+BN projection heads.
        logit_scale_init_value (`float`, *optional*, defaults to 2.6592): `log(1 / 0.07)`, the initial temperature of
            both logit scales.
        drop_path_rate (`float`, *optional*, defaults to 0.1): stochastic depth of the vision transformer blocks,
            linearly spaced from 0 over all `sum(depths)` blocks (the grouping blocks get none), as in the official
            `GroupViT(drop_path_rate=0.1)`. transformers' `GroupViTModel` has no stochastic depth.
        logit_scale_max (`float`, *optional*, defaults to 100.0): `exp(logit_scale)` is clamped at this value in the
            logits and losses (official `torch.clamp(logit_scale.exp(), max=100)`).
        multi_label (`int`, *optional*, defaults to 3): K, the number of prompt texts per image for the multi-label
            contrastive loss ("a photo of a {noun}." etc.). 0 turns the loss, and its logit scale, off (the official
            RedCaps model). Official GCC+YFCC config: 3.
        multi_label_loss_weight (`float`, *optional*, defaults to 1.0): weight of the multi-label loss in the total.
        share_temperature (`bool`, *optional*, defaults to `False`): use `logit_scale` for the multi-label loss
            instead of a separate `multi_label_logit_scale`.
        local_attention_radius (`int` or `list[int]`, *optional*): clipzoo extension, not in the paper or the
            official code (`None`, the default, is the official model). When set, in the first stage's Transformer
            blocks each patch token attends only to the patches within this many patches (Chebyshev distance on the
            patch grid) and not to the group tokens; the group tokens still attend to everything. A list gives one
            radius per first-stage layer (e.g. `[1, 0, 0, 0]`: a 3 x 3 patch neighbourhood in the first layer, none
            after). The radius is given at `image_size` and scales with the patch grid at other input sizes. It keeps
            patch features local, so that a group's embedding describes its own pixels (see the model card).
        group_token_residual (`bool`, *optional*, defaults to `True`): `True` is the official grouping block, whose
            output for a group is its assigned tokens' pooled features plus the group token itself (which has attended
            to the whole image). `False` (clipzoo extension) drops the group-token term, so a group's output depends on
            the tokens assigned to it only; the group tokens still decide the assignment.
        within_group_layers (`int`, *optional*, defaults to 0): clipzoo extension (0 is the official block). Each
            grouping block runs this many Transformer layers on the image tokens after the assignment is decided and
            before they are pooled into groups; in them a token attends only to the tokens assigned to the same group.
            With `local_attention_radius=0` and `group_token_residual=False`, a group's embedding then depends on its
            own tokens and their arrangement only (which tokens it gets is still decided from the whole image).
        multi_label_pooling (`str`, *optional*, defaults to `"mean"`): how the multi-label loss scores an image
            against a prompt. `"mean"` is the official loss: the image embedding (mean of the final groups, projected).
            `"max"` (clipzoo extension) projects each final group on its own and takes the best-matching group, so a
            prompt's word has to be found in one group rather than spread over all of them; the caption loss is
            unchanged. `"group"` (clipzoo extension) scores images as `"max"` does, and in the prompt -> image
            direction ranks a prompt against every group of the batch instead of every image: its target is the
            best-matching group of its image, so the image's other groups are negatives too and only one group per
            image is pulled towards the word.
        multi_label_targets (`str`, *optional*, defaults to `"index"`): the multi-label loss's targets. `"index"` is
            the official loss: a prompt is a positive for its own image only, so prompts of other images that name the
            same word are negatives. `"word"` (clipzoo extension) makes a prompt a positive for every image in the
            batch with a prompt naming the same word; training then needs `prompt_ids` (the processor's
            `return_prompt_ids=True`). It matters when the caption vocabulary is small and many images share words.
        group_background_loss_weight (`float`, *optional*, defaults to 0.0): clipzoo extension (0 is the official
            loss). Adds a per-group loss: inside each image, every final group is classified among the image's own
            prompts; the best-matching group of each word prompt takes that word as its target and every other group
            takes the image's `background_word` prompt. Images without such a prompt are left out. Training then
            needs `prompt_ids`.
        group_background_classes (`str`, *optional*, defaults to `"image"`): what each group is classified among in
            that loss: `"image"`, the image's own prompts; `"batch"`, every prompt of the batch (other words are
            negatives, as at segmentation time when every label competes).
        background_word (`str`, *optional*, defaults to `"background"`): the caption word that names what is not an
            object, for `group_background_loss_weight`.

    Examples:

    ```python
    >>> from clipzoo.configuration.configuration_groupvit import ClipzooGroupViTConfig
    >>> config = ClipzooGroupViTConfig(multi_label=3, drop_path_rate=0.1)
    >>> config.vision_config.depths
    (6, 3, 3)
    ```
    """

    model_type = "clipzoo_groupvit"

    drop_path_rate: float = 0.1
    logit_scale_max: float = 100.0
    multi_label: int = 3
    multi_label_loss_weight: float = 1.0
    share_temperature: bool = False
    local_attention_radius: int | list[int] | None = None
    group_token_residual: bool = True
    within_group_layers: int = 0
    multi_label_pooling: str = "mean"
    multi_label_targets: str = "index"
    group_background_loss_weight: float = 0.0
    background_word: str = "background"
    group_background_classes: str = "image"

    def __post_init__(self, **kwargs):
        # A transformers GroupViT config.json says model_type "groupvit"; loading it here makes it a clipzoo config.
        kwargs.pop("model_type", None)
        super().__post_init__(**kwargs)
        self.validate_architecture()

    def validate_architecture(self):
        """Raises `ValueError` naming the first inconsistent value."""
        if not 0.0 <= float(self.drop_path_rate) < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}.")
        if float(self.logit_scale_max) <= 0:
            raise ValueError(f"logit_scale_max must be positive, got {self.logit_scale_max}.")
        radius = self.local_attention_radius
        if isinstance(radius, tuple):
            radius = self.local_attention_radius = list(radius)
        radii = radius if isinstance(radius, list) else [radius]
        if radius is not None and (
            not radii or any(isinstance(r, bool) or not isinstance(r, int) or r < 0 for r in radii)
        ):
            raise ValueError(
                f"local_attention_radius must be None, an integer >= 0 or a non-empty list of them, got {radius!r}."
            )
        layers = self.within_group_layers
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 0:
            raise ValueError(f"within_group_layers must be an integer >= 0, got {layers!r}.")
        if self.multi_label_pooling not in ("mean", "max", "group"):
            raise ValueError(
                f"multi_label_pooling must be 'mean', 'max' or 'group', got {self.multi_label_pooling!r}."
            )
        if self.multi_label_targets not in ("index", "word"):
            raise ValueError(f"multi_label_targets must be 'index' or 'word', got {self.multi_label_targets!r}.")
        if float(self.group_background_loss_weight) < 0:
            raise ValueError(f"group_background_loss_weight must be >= 0, got {self.group_background_loss_weight}.")
        if self.group_background_classes not in ("image", "batch"):
            raise ValueError(
                f"group_background_classes must be 'image' or 'batch', got {self.group_background_classes!r}."
            )
        if not isinstance(self.background_word, str) or not self.background_word.strip():
            raise ValueError(f"background_word must be a non-empty string, got {self.background_word!r}.")
        if int(self.multi_label) < 0:
            raise ValueError(f"multi_label (prompts per image) must be >= 0, got {self.multi_label}.")
        vision = self.vision_config
        if vision is None or isinstance(vision, dict):
            return
        depths, tokens = list(vision.depths), list(vision.num_group_tokens)
        outputs = list(vision.num_output_groups)
        if len(tokens) != len(depths) or len(outputs) < len(depths) - 1:
            raise ValueError(
                f"vision_config.num_group_tokens {tokens} / num_output_groups {outputs} do not match depths {depths}: "
                "expected one group-token count per stage and one output-group count per grouping stage."
            )
        if vision.hidden_size % vision.num_attention_heads:
            raise ValueError(
                f"vision_config.hidden_size ({vision.hidden_size}) must be divisible by num_attention_heads "
                f"({vision.num_attention_heads})."
            )
        if isinstance(self.local_attention_radius, list) and len(self.local_attention_radius) != depths[0]:
            raise ValueError(
                f"local_attention_radius {self.local_attention_radius} needs one radius per first-stage layer "
                f"(depths[0] = {depths[0]})."
            )
