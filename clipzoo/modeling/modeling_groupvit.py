"""GroupViT (Xu et al., CVPR 2022) as in NVlabs/GroupViT, built on transformers' GroupViT encoder modules.

The module tree and parameter names are those of transformers' `GroupViTModel` (`text_model.*`, `vision_model.*`,
`visual_projection.*`, `text_projection.*`, `logit_scale`), so its checkpoints (the Hub's `nvidia/groupvit-gcc-yfcc`)
load unchanged. Added, as in the official code and missing from transformers:

- stochastic depth in the vision blocks (`drop_path_rate`, linearly spaced, grouping blocks excluded);
- `exp(logit_scale)` clamped at `logit_scale_max` (100);
- the multi-label contrastive loss with its own `multi_label_logit_scale` (text input `[batch, 1 + K, seq]`: the
  caption then K prompt texts);
- bicubic position-embedding interpolation at every input size (transformers raises on anything but 224 x 224);
- both losses over the global batch under several processes (`loss_from_outputs(..., gather=...)`).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import GroupViTTextConfig, GroupViTVisionConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.groupvit.modeling_groupvit import (
    GroupViTEncoderLayer,
    GroupViTStage,
    GroupViTTextTransformer,
    GroupViTTokenAssign,
    GroupViTVisionEmbeddings,
    GroupViTVisionEncoder,
)
from transformers.utils import ModelOutput, logging

from clipzoo.configuration.configuration_groupvit import ClipzooGroupViTConfig
from clipzoo.modeling.losses import contrastive_loss, gather_features, soft_target_cross_entropy


logger = logging.get_logger(__name__)

__all__ = [
    "ClipzooGroupViTModel",
    "ClipzooGroupViTOutput",
    "ClipzooGroupViTPreTrainedModel",
    "groupvit_contrastive_loss",
    "groupvit_multi_label_loss",
]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def groupvit_contrastive_loss(image_embeds, text_embeds, logit_scale, gather=gather_features) -> torch.Tensor:
    """Image-caption InfoNCE of the official `MultiLabelContrastive.loss`, over the gathered (global) batch.

    Args:
        image_embeds (`torch.Tensor` of shape `(batch, dim)`): L2-normalised image embeddings.
        text_embeds (`torch.Tensor` of shape `(batch, dim)`): L2-normalised caption embeddings.
        logit_scale (`torch.Tensor`): the clamped, exponentiated scale.
        gather (`Callable`, *optional*): gathers a per-sample tensor over processes (identity on one process).

    Returns:
        Scalar `torch.Tensor`: `(CE(s X Y^T) + CE(s Y X^T)) / 2` with the diagonal as targets.
    """
    image_embeds, text_embeds = gather(image_embeds), gather(text_embeds)
    logits_per_image = logit_scale * image_embeds @ text_embeds.t()
    return 0.5 * (contrastive_loss(logits_per_image) + contrastive_loss(logits_per_image.t()))


def groupvit_multi_label_loss(
    image_embeds,
    prompt_embeds,
    logit_scale,
    gather=gather_features,
    prompt_ids: torch.Tensor | None = None,
    prompts_to_groups: bool = False,
) -> torch.Tensor:
    """The official multi-label contrastive loss (`MultiLabelContrastive.multi_label_loss`), global batch.

    Image -> prompts: soft-target cross-entropy over all `batch * K` prompts, target `1/K` on the image's own K
    prompts (a mean of log-probabilities, not the log of a summed probability). Prompts -> image: every prompt against
    all images, one-hot on its own image. Prompts built from the same word for other images are negatives.

    With `image_embeds` of shape `(batch, groups, dim)` (the clipzoo extension `multi_label_pooling="max"`, not in the
    official code) the image-prompt similarity is the maximum over the image's groups instead: a prompt has to match
    one group, and the other groups are free to describe something else.

    With `prompt_ids` (the clipzoo extension `multi_label_targets="word"`, not in the official code) the targets follow
    what the prompts name instead of their index: a prompt is a positive for every image that has a prompt with the
    same id. Image -> prompts: each of the image's K prompts keeps its `1/K` of the target, spread evenly over the
    batch's prompts with its id. Prompt -> images: the target is spread evenly over the images that have its id. With
    ids that are all different this is the official loss.

    With `prompts_to_groups=True` (the clipzoo extension `multi_label_pooling="group"`; needs per-group embeddings)
    the prompt -> image term becomes prompt -> group: a cross-entropy over all `batch * groups` groups, whose target is
    the best-matching group (arg-max, no gradient through the choice) of each image the prompt is a positive for.

    Args:
        image_embeds (`torch.Tensor` of shape `(batch, dim)` or `(batch, groups, dim)`): L2-normalised image (or
            per-group) embeddings.
        prompt_embeds (`torch.Tensor` of shape `(batch, K, dim)`): L2-normalised prompt-text embeddings.
        logit_scale (`torch.Tensor`): the clamped, exponentiated multi-label scale.
        gather (`Callable`, *optional*): gathers a per-sample tensor over processes (identity on one process).
        prompt_ids (`torch.LongTensor` of shape `(batch, K)`, *optional*): what each prompt names (equal ids = same
            label); `None` gives the official index targets.
        prompts_to_groups (`bool`, *optional*, defaults to `False`): rank each prompt against all groups.

    Returns:
        Scalar `torch.Tensor`: `(L_image->prompts + L_prompts->image) / 2`.
    """
    if prompt_ids is not None and tuple(prompt_ids.shape) != tuple(prompt_embeds.shape[:2]):
        raise ValueError(
            f"prompt_ids must have shape (batch, K) = {tuple(prompt_embeds.shape[:2])}, got {tuple(prompt_ids.shape)}."
        )
    if prompt_embeds.ndim != 3 or prompt_embeds.shape[0] != image_embeds.shape[0]:
        raise ValueError(
            f"prompt_embeds must have shape (batch, K, dim) with batch = {image_embeds.shape[0]}, got "
            f"{tuple(prompt_embeds.shape)}."
        )
    if image_embeds.ndim not in (2, 3):
        raise ValueError(
            f"image_embeds must be (batch, dim) or (batch, groups, dim), got {tuple(image_embeds.shape)}."
        )
    if prompts_to_groups and image_embeds.ndim != 3:
        raise ValueError("prompts_to_groups=True needs per-group image_embeds of shape (batch, groups, dim).")
    image_embeds, prompt_embeds = gather(image_embeds), gather(prompt_embeds)
    batch, num_prompts, _ = prompt_embeds.shape
    prompts = prompt_embeds.reshape(batch * num_prompts, -1)
    if prompt_ids is None:
        eye = torch.eye(batch, dtype=image_embeds.dtype, device=image_embeds.device)
        # Column j * K + k is prompt k of image j, so the image's own prompts are the j-th block of K columns.
        image_targets = eye.repeat_interleave(num_prompts, dim=1) / num_prompts
        text_targets = eye.repeat_interleave(num_prompts, dim=0)
    else:
        image_targets, text_targets = _word_targets(gather(prompt_ids), image_embeds.dtype)
    if prompts_to_groups:
        sims = torch.einsum("bgd,td->tbg", image_embeds, prompts)  # (prompts, images, groups)
        logits_per_image = logit_scale * sims.amax(dim=-1).t()
        best = torch.nn.functional.one_hot(sims.argmax(dim=-1), sims.shape[-1]).to(sims.dtype)
        group_targets = (text_targets.unsqueeze(-1) * best).flatten(1)  # the positive images' best groups
        loss_image = soft_target_cross_entropy(logits_per_image, image_targets)
        loss_text = soft_target_cross_entropy(logit_scale * sims.flatten(1), group_targets)
        return 0.5 * (loss_image + loss_text)
    if image_embeds.ndim == 3:
        logits_per_image = logit_scale * torch.einsum("bgd,td->bgt", image_embeds, prompts).amax(dim=1)
        logits_per_prompt = logits_per_image.t()
    else:
        # Two products, as before the extension: the same values, and bit-identical training runs of the default.
        logits_per_image = logit_scale * image_embeds @ prompts.t()
        logits_per_prompt = logit_scale * prompts @ image_embeds.t()
    loss_image = soft_target_cross_entropy(logits_per_image, image_targets)
    loss_text = soft_target_cross_entropy(logits_per_prompt, text_targets)
    return 0.5 * (loss_image + loss_text)


def groupvit_group_background_loss(
    group_embeds: torch.Tensor,
    prompt_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    prompt_ids: torch.Tensor,
    prompt_is_caption: torch.Tensor,
    background_id: int,
    gather=gather_features,
    classes: str = "image",
) -> torch.Tensor:
    """Per-group loss of the clipzoo extension `group_background_loss_weight` (not in the official code).

    Inside each image, every final group is classified among the image's own prompts (prompts that are the raw
    caption are left out). The targets come from the current similarities, with no gradient through the choice: the
    best-matching group of each word prompt takes that prompt as its target (split evenly when several prompts pick
    the same group), and every group that no word prompt picked takes the image's background prompt(s). Images
    without a background prompt are left out; with none in the batch the loss is zero.

    With `classes="batch"` the choice of targets is the same, but each group is classified among all the batch's
    prompts (caption-filled ones left out), as segmentation later classifies it among every label: a target's mass is
    spread evenly over the prompts with its id, and prompts naming other words are negatives, so a background group is
    also pushed away from the words that are absent from its image.

    Args:
        group_embeds (`torch.Tensor` of shape `(batch, groups, dim)`): L2-normalised projected final groups.
        prompt_embeds (`torch.Tensor` of shape `(batch, K, dim)`): L2-normalised prompt-text embeddings.
        logit_scale (`torch.Tensor`): the clamped, exponentiated multi-label scale.
        prompt_ids (`torch.LongTensor` of shape `(batch, K)`): what each prompt names.
        prompt_is_caption (`torch.BoolTensor` of shape `(batch, K)`): prompts filled with the raw caption.
        background_id (`int`): the id of the background word (`prompt_key(background_word)`).
        gather (`Callable`, *optional*): gathers a per-sample tensor over processes (identity on one process).
        classes (`str`, *optional*, defaults to `"image"`): `"image"` (the image's own prompts) or `"batch"`.

    Returns:
        Scalar `torch.Tensor`: the cross-entropy averaged over the groups of each image, then over the images.
    """
    if group_embeds.ndim != 3 or prompt_embeds.ndim != 3 or group_embeds.shape[0] != prompt_embeds.shape[0]:
        raise ValueError(
            f"group_embeds must be (batch, groups, dim) and prompt_embeds (batch, K, dim) with the same batch, got "
            f"{tuple(group_embeds.shape)} and {tuple(prompt_embeds.shape)}."
        )
    if classes not in ("image", "batch"):
        raise ValueError(f"classes must be 'image' or 'batch', got {classes!r}.")
    for name, value in (("prompt_ids", prompt_ids), ("prompt_is_caption", prompt_is_caption)):
        if tuple(value.shape) != tuple(prompt_embeds.shape[:2]):
            raise ValueError(
                f"{name} must have shape (batch, K) = {tuple(prompt_embeds.shape[:2])}, got {tuple(value.shape)}."
            )
    group_embeds, prompt_embeds = gather(group_embeds), gather(prompt_embeds)
    prompt_ids, is_caption = gather(prompt_ids), gather(prompt_is_caption.long()).bool()
    is_background = (prompt_ids == background_id) & ~is_caption
    is_word = ~is_background & ~is_caption
    logits = logit_scale * torch.einsum("bgd,bkd->bgk", group_embeds, prompt_embeds)  # (batch, groups, K)
    num_groups = logits.shape[1]
    best = torch.nn.functional.one_hot(logits.detach().argmax(dim=1), num_groups).transpose(1, 2)  # (batch, groups, K)
    claims = best.to(logits.dtype) * is_word.unsqueeze(1)
    claimed = claims.sum(dim=-1, keepdim=True)
    background = is_background.to(logits.dtype).unsqueeze(1)
    targets = torch.where(
        claimed > 0, claims / claimed.clamp_min(1), background / background.sum(dim=-1, keepdim=True).clamp_min(1)
    )
    if classes == "batch":
        batch, num_prompts = prompt_ids.shape
        keep = ~is_caption.reshape(-1)
        # same[b, k, p]: flat prompt p names what prompt k of image b names (caption-filled prompts excluded).
        same = ((prompt_ids.unsqueeze(-1) == prompt_ids.reshape(-1)) & keep).to(logits.dtype)
        targets = torch.einsum("bgk,bkp->bgp", targets, same / same.sum(dim=-1, keepdim=True).clamp_min(1))
        logits = logit_scale * torch.einsum(
            "bgd,pd->bgp", group_embeds, prompt_embeds.reshape(batch * num_prompts, -1)
        )
        log_probs = logits.masked_fill(~keep, torch.finfo(logits.dtype).min).log_softmax(dim=-1)
    else:
        log_probs = logits.masked_fill(is_caption.unsqueeze(1), torch.finfo(logits.dtype).min).log_softmax(dim=-1)
    per_image = -(targets * log_probs).sum(dim=-1).mean(dim=-1)
    valid = is_background.any(dim=-1)
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return per_image[valid].mean()


def _word_targets(prompt_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft targets of the multi-label loss from prompt ids `(batch, K)`: `(batch, batch*K)` and `(batch*K, batch)`."""
    batch, num_prompts = prompt_ids.shape
    flat = prompt_ids.reshape(-1)
    same = (prompt_ids.unsqueeze(-1) == flat).to(dtype)  # (batch, K, batch*K): own prompt k has the column's id
    # Each own prompt's 1/K goes evenly to the columns with its id (its own column among them).
    image_targets = (same / same.sum(dim=-1, keepdim=True)).sum(dim=1) / num_prompts
    has_word = same.amax(dim=1).t()  # (batch*K, batch): image j has a prompt with the column's id
    text_targets = has_word / has_word.sum(dim=-1, keepdim=True)
    return image_targets, text_targets


def drop_path(hidden_states: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth per sample (timm's `DropPath`): zero a residual branch for a random subset of samples."""
    if drop_prob == 0.0 or not training:
        return hidden_states
    keep_prob = 1.0 - drop_prob
    shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
    mask = hidden_states.new_empty(shape).bernoulli_(keep_prob)
    return hidden_states * mask / keep_prob


class ClipzooGroupViTDropPathLayer(GroupViTEncoderLayer):
    """transformers' pre-norm `GroupViTEncoderLayer` (same parameters) with stochastic depth on both residuals.

    Args:
        config (`GroupViTVisionConfig`): the vision config.
        drop_prob (`float`): this block's drop-path probability.
    """

    def __init__(self, config: GroupViTVisionConfig, drop_prob: float = 0.0):
        super().__init__(config)
        self.drop_prob = float(drop_prob)
        # Set by ClipzooGroupViTVisionTransformer.forward for the duration of one call (local attention), else None.
        self.local_attention_mask: torch.Tensor | None = None

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        if attention_mask is None and self.local_attention_mask is not None:
            attention_mask = self.local_attention_mask.expand(hidden_states.shape[0], -1, -1, -1)
        attn_out, _ = self.self_attn(hidden_states=self.layer_norm1(hidden_states), attention_mask=attention_mask)
        hidden_states = hidden_states + drop_path(attn_out, self.drop_prob, self.training)
        mlp_out = self.mlp(self.layer_norm2(hidden_states))
        return hidden_states + drop_path(mlp_out, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


class ClipzooGroupViTTokenAssign(GroupViTTokenAssign):
    """transformers' `GroupViTTokenAssign` (same parameters) with two opt-in clipzoo extensions.

    `group_token_residual=False` drops the group-token term. `within_group_layers=n` adds `n` Transformer layers that run
    on the image tokens after the assignment is decided and before they are pooled into groups; in them a token attends
    only to the tokens assigned to the same group (the arg-max of the assignment, the hard assignment of training).

    Args:
        config (`GroupViTVisionConfig`): the vision config.
        num_group_token (`int`) / num_output_group (`int`): this grouping stage's token counts.
        group_token_residual (`bool`, *optional*, defaults to `True`): `True` is the official block.
        within_group_layers (`int`, *optional*, defaults to 0): 0 is the official block.
    """

    def __init__(
        self,
        config: GroupViTVisionConfig,
        num_group_token: int,
        num_output_group: int,
        group_token_residual: bool = True,
        within_group_layers: int = 0,
    ):
        super().__init__(config, num_group_token, num_output_group)
        self.group_token_residual = bool(group_token_residual)
        self.within_group_layers = nn.ModuleList(
            [ClipzooGroupViTDropPathLayer(config) for _ in range(int(within_group_layers))]
        )

    def forward(self, image_tokens: torch.Tensor, group_tokens: torch.Tensor):
        group_tokens = self.norm_tokens(group_tokens)
        image_tokens = self.norm_x(image_tokens)
        projected_group_tokens = self.pre_assign_attn(self.project_group_token(group_tokens), image_tokens)
        if len(self.within_group_layers):
            new_image_tokens, attention = self._assign_within_groups(projected_group_tokens, image_tokens)
        else:
            new_image_tokens, attention = self.assign(projected_group_tokens, image_tokens)
        if self.group_token_residual:
            new_image_tokens = new_image_tokens + projected_group_tokens
        new_image_tokens = new_image_tokens + self.mlp_channels(self.norm_new_x(new_image_tokens))
        return new_image_tokens, attention

    def _assign_within_groups(self, groups: torch.Tensor, tokens: torch.Tensor):
        # `GroupViTAssignAttention.forward`, with the values taken from the tokens after the within-group layers.
        assign = self.assign
        raw = assign.q_proj(groups) @ assign.k_proj(tokens).transpose(-2, -1) * assign.scale
        weights = assign.get_attn(raw)
        soft = assign.get_attn(raw, gumbel=False, hard=False)
        label = weights.detach().argmax(dim=1)  # (batch, tokens): each token's group
        same = label[:, :, None] == label[:, None, :]
        mask = torch.zeros(same.shape, dtype=tokens.dtype, device=tokens.device).masked_fill(
            ~same, torch.finfo(tokens.dtype).min
        )[:, None]
        for layer in self.within_group_layers:
            tokens = layer(tokens, attention_mask=mask)
        weights = weights / (weights.sum(dim=-1, keepdim=True) + assign.assign_eps)
        return assign.proj(weights @ assign.v_proj(tokens)), soft

    def extra_repr(self) -> str:
        return f"group_token_residual={self.group_token_residual}"


class ClipzooGroupViTVisionTransformer(nn.Module):
    """transformers' `GroupViTVisionTransformer` with drop-path blocks and position embeddings interpolated to any size.

    Args:
        config (`GroupViTVisionConfig`): the vision config.
        drop_path_rate (`float`): the last block's drop-path probability (linear from 0 over all stages' blocks).
        local_attention_radius (`int` or `list[int]`, *optional*): see [`ClipzooGroupViTConfig`]; `None` is the
            official model.
        group_token_residual (`bool`, *optional*, defaults to `True`): see [`ClipzooGroupViTConfig`].
        within_group_layers (`int`, *optional*, defaults to 0): see [`ClipzooGroupViTConfig`].
    """

    def __init__(
        self,
        config: GroupViTVisionConfig,
        drop_path_rate: float = 0.0,
        local_attention_radius: int | list[int] | None = None,
        group_token_residual: bool = True,
        within_group_layers: int = 0,
    ):
        super().__init__()
        self.config = config
        self.local_attention_radius = local_attention_radius
        self.embeddings = GroupViTVisionEmbeddings(config)
        self.encoder = GroupViTVisionEncoder(config)
        rates = torch.linspace(0, drop_path_rate, sum(config.depths)).tolist()
        start = 0
        for stage, depth in zip(self.encoder.stages, config.depths):
            stage.layers = nn.ModuleList(
                [ClipzooGroupViTDropPathLayer(config, rates[start + j]) for j in range(depth)]
            )
            start += depth
        if not group_token_residual or within_group_layers:
            # Only then: building extra modules draws from the RNG and would change the official model's init.
            for index, stage in enumerate(self.encoder.stages):
                if stage.downsample is not None:
                    stage.downsample = ClipzooGroupViTTokenAssign(
                        config,
                        config.num_group_tokens[index],
                        config.num_output_groups[index],
                        group_token_residual,
                        within_group_layers,
                    )
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def _check_pixels(self, pixel_values: torch.Tensor | None) -> None:
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values.")
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"pixel_values must have shape (batch, {self.config.num_channels}, height, width), got "
                f"{tuple(pixel_values.shape)}."
            )
        patch = self.embeddings.patch_embeddings.patch_size
        if pixel_values.shape[2] < patch[0] or pixel_values.shape[3] < patch[1]:
            raise ValueError(
                f"Image of {pixel_values.shape[2]}x{pixel_values.shape[3]} pixels is smaller than the patch size "
                f"{patch[0]}x{patch[1]}; resize it to at least one patch."
            )

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
    ) -> BaseModelOutputWithPooling:
        self._check_pixels(pixel_values)
        if self.local_attention_radius is None:
            return self._forward(pixel_values, output_hidden_states, output_attentions)
        layers = self.encoder.stages[0].layers
        radii = self.local_attention_radius
        radii = [radii] * len(layers) if isinstance(radii, int) else list(radii)
        if len(radii) != len(layers):
            raise ValueError(
                f"local_attention_radius has {len(radii)} entries but the first stage has {len(layers)} layers."
            )
        masks = {}
        for layer, radius in zip(layers, radii):
            if radius not in masks:
                masks[radius] = self.local_attention_mask(
                    pixel_values.shape[2], pixel_values.shape[3], pixel_values.dtype, radius=radius
                ).to(pixel_values.device)
            layer.local_attention_mask = masks[radius]
        try:
            return self._forward(pixel_values, output_hidden_states, output_attentions)
        finally:
            for layer in layers:
                layer.local_attention_mask = None

    def local_attention_mask(
        self, height: int, width: int, dtype: torch.dtype = torch.float32, radius: int | None = None
    ) -> torch.Tensor:
        """Additive mask `(1, 1, T, T)` of the first stage (patch tokens, then its group tokens) for one input size.

        A patch attends to the patches within `radius` (Chebyshev distance on the patch grid; the radius, by default
        the configured one, scaled by `grid / (image_size / patch_size)`, rounded) and to no group token; a group
        token attends to all.
        """
        if radius is None:
            radius = self.local_attention_radius
            if not isinstance(radius, int):
                raise ValueError("local_attention_radius is per layer here; pass radius= explicitly.")
        patch = self.embeddings.patch_embeddings.patch_size
        rows, cols = height // patch[0], width // patch[1]
        native = self.config.image_size // patch[0]
        radius = int(round(radius * min(rows, cols) / native))
        y, x = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
        y, x = y.flatten(), x.flatten()
        near = torch.maximum((y[:, None] - y[None]).abs(), (x[:, None] - x[None]).abs()) <= radius
        groups = self.config.num_group_tokens[0]
        allowed = torch.ones(rows * cols + groups, rows * cols + groups, dtype=torch.bool)
        allowed[: rows * cols, : rows * cols] = near
        allowed[: rows * cols, rows * cols :] = False
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
        return mask[None, None]

    def _forward(self, pixel_values, output_hidden_states, output_attentions) -> BaseModelOutputWithPooling:
        # The official model interpolates the 14x14 table bicubically at eval; we do it at every size != the table's.
        hidden_states = self.embeddings(pixel_values, interpolate_pos_encoding=True)
        encoder_outputs = self.encoder(
            hidden_states=hidden_states,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        last_hidden_state = self.layernorm(encoder_outputs.last_hidden_state)
        return BaseModelOutputWithPooling(
            last_hidden_state=last_hidden_state,
            pooler_output=last_hidden_state.mean(dim=1),
            hidden_states=encoder_outputs.hidden_states,
            attentions=encoder_outputs.attentions,
        )


def _projection_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    # Official ProjectMLP: Conv1d(k=1) -> BN -> ReLU -> Conv1d(k=1); transformers stores it as Linear layers.
    head = nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim),
    )
    for layer in (head[0], head[3]):
        layer._clipzoo_torch_default_init = True
    return head


@dataclass
class ClipzooGroupViTOutput(ModelOutput):
    """Output of [`ClipzooGroupViTModel`].

    Args:
        loss (`torch.Tensor`, *optional*): `contrastive_loss + multi_label_loss_weight * multi_label_loss`, plus
            `group_background_loss_weight * group_background_loss` when that weight is positive.
        contrastive_loss (`torch.Tensor`, *optional*): image-caption InfoNCE.
        multi_label_loss (`torch.Tensor`, *optional*): the multi-label loss (unweighted), when prompts were given.
        logits_per_image (`torch.Tensor` of shape `(image_batch, text_batch)`): clamped-scale cosine similarities.
        logits_per_text (`torch.Tensor` of shape `(text_batch, image_batch)`): the transpose.
        text_embeds (`torch.Tensor` of shape `(text_batch, projection_dim)`): normalised caption embeddings.
        image_embeds (`torch.Tensor` of shape `(image_batch, projection_dim)`): normalised image embeddings.
        prompt_embeds (`torch.Tensor` of shape `(batch, K, projection_dim)`, *optional*): normalised prompt embeddings.
        group_embeds (`torch.Tensor` of shape `(batch, groups, projection_dim)`, *optional*): normalised embeddings of
            the final groups, each projected on its own; computed only when prompts are given and
            `config.multi_label_pooling` is "max" or "group" or `config.group_background_loss_weight > 0`.
        text_model_output (`BaseModelOutputWithPooling`): the text tower's output.
        group_background_loss (`torch.Tensor`, *optional*): the per-group loss of `group_background_loss_weight`.
        vision_model_output (`BaseModelOutputWithPooling`): the vision tower's output (`attentions` holds the soft
            assignment of each grouping stage, `(batch, groups, tokens)`, when `output_attentions=True`).
    """

    loss: torch.Tensor | None = None
    contrastive_loss: torch.Tensor | None = None
    multi_label_loss: torch.Tensor | None = None
    logits_per_image: torch.Tensor | None = None
    logits_per_text: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    prompt_embeds: torch.Tensor | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None
    group_embeds: torch.Tensor | None = None
    group_background_loss: torch.Tensor | None = None

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(
            self[k] if k not in ("text_model_output", "vision_model_output") else getattr(self, k).to_tuple()
            for k in self.keys()
        )


class ClipzooGroupViTPreTrainedModel(PreTrainedModel):
    """Weight initialisation of the official code and the HF plumbing shared by the GroupViT classes."""

    config_class = ClipzooGroupViTConfig
    config: ClipzooGroupViTConfig
    base_model_prefix = "groupvit"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = False
    _no_split_modules = ["GroupViTEncoderLayer", "ClipzooGroupViTDropPathLayer", "GroupViTTokenAssign"]
    _supports_sdpa = False
    _supports_flash_attn = False
    # The official optimiser (`utils/optimizer.py::set_weight_decay`): no decay for 1-D parameters and `*.bias` only,
    # so the 0-D logit scales, the group tokens and the position embeddings are decayed. `ClipzooTrainer` reads this.
    weight_decay_rule = "exclude_1d_and_bias"

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # Vision tower (official GroupViT._init_weights): Linear trunc-normal(0.02), zero bias; LayerNorm (1, 0);
        # position table trunc-normal(0.02); stage-1 group tokens trunc-normal(0.02), later ones zero (they are added
        # to the projected previous groups). Conv layers and the projection heads keep PyTorch's default init.
        if isinstance(module, (nn.Linear, nn.Conv2d)) and (
            getattr(module, "_clipzoo_torch_default_init", False) or isinstance(module, nn.Conv2d)
        ):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1 / math.sqrt(module.weight[0].numel())
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm1d)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            if isinstance(module, nn.BatchNorm1d):
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)
        elif isinstance(module, GroupViTVisionEmbeddings):
            init.trunc_normal_(module.position_embeddings, std=0.02)
        elif isinstance(module, GroupViTStage) and module.group_token is not None:
            if module.group_projector is None:
                init.trunc_normal_(module.group_token, std=0.02)
            else:
                init.zeros_(module.group_token)
        elif isinstance(module, ClipzooGroupViTModel):
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)
            if getattr(module, "multi_label_logit_scale", None) is not None:
                init.constant_(module.multi_label_logit_scale, self.config.logit_scale_init_value)
            self._init_text_tower(module.text_model)

    def _init_text_tower(self, text_model: GroupViTTextTransformer) -> None:
        # Official TextTransformer (CLIP): token emb N(0, 0.02), positions N(0, 0.01), attention in-proj
        # N(0, w^-0.5), out-proj and c_proj N(0, w^-0.5 (2L)^-0.5), c_fc N(0, (2w)^-0.5); MHA biases zero.
        width, layers = text_model.config.hidden_size, text_model.config.num_hidden_layers
        attn_std, proj_std, fc_std = width**-0.5, width**-0.5 * (2 * layers) ** -0.5, (2 * width) ** -0.5
        init.normal_(text_model.embeddings.token_embedding.weight, std=0.02)
        init.normal_(text_model.embeddings.position_embedding.weight, std=0.01)
        for layer in text_model.encoder.layers:
            attn = layer.self_attn
            for proj, std in ((attn.q_proj, attn_std), (attn.k_proj, attn_std), (attn.v_proj, attn_std)):
                init.normal_(proj.weight, std=std)
                init.zeros_(proj.bias)
            init.normal_(attn.out_proj.weight, std=proj_std)
            init.zeros_(attn.out_proj.bias)
            init.normal_(layer.mlp.fc1.weight, std=fc_std)
            init.normal_(layer.mlp.fc2.weight, std=proj_std)


class ClipzooGroupViTModel(ClipzooGroupViTPreTrainedModel):
    """GroupViT: hierarchical grouping vision transformer and CLIP-style text transformer, trained contrastively.

    Text may be `(batch, seq)` (captions) or `(batch, 1 + K, seq)`: the caption followed by K prompt texts
    ("a photo of a {word}.") for the multi-label loss; `ClipzooGroupViTProcessor(..., expand_prompts=True)` makes
    them. Images may have any size of at least one patch.

    Args:
        config ([`ClipzooGroupViTConfig`]): the model configuration.

    Examples:

    ```python
    >>> import torch
    >>> from clipzoo.configuration.configuration_groupvit import ClipzooGroupViTConfig
    >>> from clipzoo.modeling.modeling_groupvit import ClipzooGroupViTModel
    >>> config = ClipzooGroupViTConfig(
    ...     text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
    ...                  "vocab_size": 100, "max_position_embeddings": 16},
    ...     vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "depths": [1, 1, 1],
    ...                    "num_group_tokens": [8, 4, 0], "num_output_groups": [8, 4, 4], "num_attention_heads": 2,
    ...                    "image_size": 32, "patch_size": 8},
    ...     projection_dim=16, projection_intermediate_dim=32)
    >>> model = ClipzooGroupViTModel(config).eval()
    >>> out = model(input_ids=torch.randint(0, 100, (2, 3, 8)), pixel_values=torch.randn(2, 3, 48, 48),
    ...             return_loss=True)
    >>> out.logits_per_image.shape
    torch.Size([2, 2])
    ```
    """

    def __init__(self, config: ClipzooGroupViTConfig):
        # By model_type, not isinstance: remote code loads the config class from a second copy of its module.
        if getattr(config, "model_type", None) != ClipzooGroupViTConfig.model_type:
            raise TypeError(f"config must be a ClipzooGroupViTConfig, got {type(config).__name__}.")
        super().__init__(config)
        if not isinstance(config.text_config, GroupViTTextConfig):
            raise TypeError(f"config.text_config must be a GroupViTTextConfig, got {type(config.text_config)}.")
        if not isinstance(config.vision_config, GroupViTVisionConfig):
            raise TypeError(f"config.vision_config must be a GroupViTVisionConfig, got {type(config.vision_config)}.")
        text_config, vision_config = config.text_config, config.vision_config
        self.text_model = GroupViTTextTransformer(text_config)
        self.vision_model = ClipzooGroupViTVisionTransformer(
            vision_config,
            config.drop_path_rate,
            getattr(config, "local_attention_radius", None),
            getattr(config, "group_token_residual", True),
            getattr(config, "within_group_layers", 0),
        )
        inner, out = config.projection_intermediate_dim, config.projection_dim
        self.visual_projection = _projection_head(vision_config.hidden_size, inner, out)
        self.text_projection = _projection_head(text_config.hidden_size, inner, out)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        if config.multi_label > 0 and not config.share_temperature:
            self.multi_label_logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        else:
            self.multi_label_logit_scale = None
        self.post_init()

    # ----------------------------------------------------------------------------------------------- features

    def clamped_logit_scale(self, multi_label: bool = False) -> torch.Tensor:
        """`min(exp(scale), logit_scale_max)`; the multi-label one unless `share_temperature` is set."""
        scale = self.logit_scale
        if multi_label and self.multi_label_logit_scale is not None:
            scale = self.multi_label_logit_scale
        return scale.exp().clamp(max=self.config.logit_scale_max)

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Projected (not normalised) text embeddings, `(batch, projection_dim)`; `input_ids` is `(batch, seq)`."""
        pooled = self.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return self.text_projection(pooled)

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected (not normalised) image embeddings: the mean of the final group tokens, projected."""
        return self.visual_projection(self.vision_model(pixel_values).pooler_output)

    def get_group_features(self, pixel_values: torch.Tensor) -> dict[str, Any]:
        """What the official segmentation recipe needs from one forward pass.

        Returns:
            `dict` with `group_embeds` `(batch, groups, projection_dim)` (each final group token projected),
            `image_embeds` `(batch, projection_dim)` (projected mean token; both unnormalised) and `attentions`, the
            soft assignment of each grouping stage, `(batch, groups_s, tokens_s)`.
        """
        vision = self.vision_model(pixel_values, output_attentions=True)
        groups = self._project_groups(vision.last_hidden_state)
        image = self.visual_projection(vision.pooler_output)
        return {"group_embeds": groups, "image_embeds": image, "attentions": vision.attentions}

    def _project_groups(self, tokens: torch.Tensor) -> torch.Tensor:
        # (batch, groups, hidden) -> (batch, groups, projection_dim): every group through the head on its own.
        return self.visual_projection(tokens.reshape(-1, tokens.shape[-1])).reshape(*tokens.shape[:2], -1)

    def _encode_text(self, input_ids, attention_mask, position_ids):
        # [B, 1 + K, L] goes through the tower (and the BatchNorm of its head) as one batch, as in the official
        # encode_text; index 0 is the caption, 1..K the prompts.
        num_texts = input_ids.shape[1] if input_ids.ndim == 3 else 1
        if input_ids.ndim == 3:
            input_ids = input_ids.reshape(-1, input_ids.shape[-1])
            if attention_mask is not None:
                attention_mask = attention_mask.reshape(-1, attention_mask.shape[-1])
        elif input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, seq) or (batch, 1 + K, seq), got {tuple(input_ids.shape)}.")
        text_outputs = self.text_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
        embeds = self.text_projection(text_outputs.pooler_output)
        embeds = embeds / embeds.norm(dim=-1, keepdim=True)
        if num_texts == 1:
            return embeds, None, text_outputs
        embeds = embeds.reshape(-1, num_texts, embeds.shape[-1])
        return embeds[:, 0], embeds[:, 1:], text_outputs

    # ----------------------------------------------------------------------------------------------- forward

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        return_loss: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        prompt_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> ClipzooGroupViTOutput | tuple:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch, seq)` or `(batch, 1 + K, seq)`): captions, or captions
                followed by K prompt texts (training with the multi-label loss).
            pixel_values (`torch.FloatTensor` of shape `(batch, channels, height, width)`): any height and width of at
                least one patch; ImageNet-normalised (see `ClipzooGroupViTImageProcessor`).
            attention_mask (`torch.Tensor`, *optional*): same leading shape as `input_ids`.
            position_ids (`torch.LongTensor`, *optional*): text positions.
            return_loss (`bool`, *optional*): return the image-caption InfoNCE plus, when prompts are given and
                `config.multi_label > 0`, the weighted multi-label loss.
            output_attentions (`bool`, *optional*): return the soft grouping attentions in `vision_model_output`.
            output_hidden_states (`bool`, *optional*): return the vision hidden states.
            return_dict (`bool`, *optional*): return a `ClipzooGroupViTOutput` (default) or a tuple.
            prompt_ids (`torch.LongTensor` of shape `(batch, K)`, *optional*): what each prompt names (the processor's
                `return_prompt_ids=True`); needed with `return_loss` when `config.multi_label_targets="word"`.
        """
        if input_ids is None or pixel_values is None:
            raise ValueError("ClipzooGroupViTModel.forward needs both input_ids and pixel_values.")
        if input_ids.ndim == 3 and self.config.multi_label == 0 and return_loss:
            raise ValueError(
                f"input_ids has {input_ids.shape[1]} texts per image (caption + prompts) but config.multi_label=0; "
                "pass plain (batch, seq) captions or set multi_label > 0."
            )
        vision_outputs = self.vision_model(
            pixel_values, output_hidden_states=output_hidden_states, output_attentions=output_attentions
        )
        image_embeds = self.visual_projection(vision_outputs.pooler_output)
        image_embeds = image_embeds / image_embeds.norm(dim=-1, keepdim=True)
        text_embeds, prompt_embeds, text_outputs = self._encode_text(input_ids, attention_mask, position_ids)
        group_embeds = None
        if prompt_embeds is not None and (
            getattr(self.config, "multi_label_pooling", "mean") in ("max", "group")
            or getattr(self.config, "group_background_loss_weight", 0.0) > 0
        ):
            group_embeds = self._project_groups(vision_outputs.last_hidden_state)
            group_embeds = group_embeds / group_embeds.norm(dim=-1, keepdim=True)

        logits_per_text = text_embeds @ image_embeds.t() * self.clamped_logit_scale()
        output = ClipzooGroupViTOutput(
            logits_per_image=logits_per_text.t(),
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            prompt_embeds=prompt_embeds,
            text_model_output=text_outputs,
            vision_model_output=vision_outputs,
            group_embeds=group_embeds,
        )
        if return_loss:
            self._fill_losses(output, gather=gather_features, prompt_ids=prompt_ids, input_ids=input_ids)
        if return_dict is False:
            return output.to_tuple()
        return output

    def _fill_losses(
        self,
        output: ClipzooGroupViTOutput,
        gather,
        prompt_ids: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
    ) -> None:
        word_targets = getattr(self.config, "multi_label_targets", "index") == "word"
        group_weight = float(getattr(self.config, "group_background_loss_weight", 0.0))
        uses_prompts = output.prompt_embeds is not None and self.config.multi_label > 0
        for needed, name in (
            (word_targets, "multi_label_targets='word'"),
            (group_weight > 0, "group_background_loss_weight > 0"),
        ):
            if needed and uses_prompts and prompt_ids is None:
                raise ValueError(
                    f"config.{name} needs prompt_ids (batch, K) with the loss: build the batch with the processor's "
                    "return_prompt_ids=True (GroupViTCollator(..., prompt_ids=True))."
                )
        output.contrastive_loss = groupvit_contrastive_loss(
            output.image_embeds, output.text_embeds, self.clamped_logit_scale(), gather=gather
        )
        output.loss = output.contrastive_loss
        if output.prompt_embeds is not None and self.config.multi_label > 0:
            per_group = self.config.multi_label_pooling in ("max", "group")
            pooled = output.group_embeds if per_group else output.image_embeds
            output.multi_label_loss = groupvit_multi_label_loss(
                pooled, output.prompt_embeds, self.clamped_logit_scale(multi_label=True), gather=gather,
                prompt_ids=prompt_ids if word_targets else None,
                prompts_to_groups=self.config.multi_label_pooling == "group",
            )  # fmt: skip
            output.loss = output.loss + self.config.multi_label_loss_weight * output.multi_label_loss
        if uses_prompts and group_weight > 0:
            if input_ids is None or input_ids.ndim != 3:
                raise ValueError("group_background_loss_weight > 0 needs input_ids (batch, 1 + K, seq) with the loss.")
            # A prompt is the raw caption when its tokens are the caption's (the official filler for missing words).
            is_caption = (input_ids[:, 1:] == input_ids[:, :1]).all(dim=-1)
            output.group_background_loss = groupvit_group_background_loss(
                output.group_embeds,
                output.prompt_embeds,
                self.clamped_logit_scale(multi_label=True),
                prompt_ids,
                is_caption,
                zlib.crc32(self.config.background_word.encode("utf-8")),
                gather=gather,
                classes=self.config.group_background_classes,
            )  # fmt: skip  (the id is processing's prompt_key of the word)
            output.loss = output.loss + group_weight * output.group_background_loss

    def loss_from_outputs(
        self, outputs: ClipzooGroupViTOutput, inputs: dict | None = None, gather=None
    ) -> torch.Tensor:
        """The total loss from a forward run without `return_loss`, gathering over processes with `gather`.

        `ClipzooTrainer` calls this under several processes with `clipzoo.modeling.losses.gather_features`: every rank
        computes the same global-batch loss (see `clipzoo/modeling/losses.py` for why the gradients are then exact).
        """
        prompt_ids = None if inputs is None else inputs.get("prompt_ids")
        input_ids = None if inputs is None else inputs.get("input_ids")
        self._fill_losses(outputs, gather=gather or _identity, prompt_ids=prompt_ids, input_ids=input_ids)
        return outputs.loss
