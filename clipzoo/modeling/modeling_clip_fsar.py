"""CLIP-FSAR: CLIP-guided prototype modulation for few-shot action recognition (Wang et al., IJCV 2023).

Faithful to the official `CNN_OTAM_CLIPFSAR` (alibaba-mmai-research/CLIP-FSAR, `models/base/few_shot.py`):

- every frame goes through the (trainable) CLIP image encoder; frame features are the projected CLIP embeddings;
- video-text loss: the frame-mean of every episode video (supports and queries) against the text embeddings of all
  training classes, `cos_eps(v, T) * scale` with a learnable `scale` initialised to 1, CE on the global class id;
- prototype modulation: the class text embedding is appended to each support video as one extra token, a 1-layer
  pre-LN Transformer (one LayerNorm shared by q, k and v; no positional encoding) runs over the 9 tokens and the first
  8 are kept; the same Transformer runs over the query frames (without text);
- few-shot metric: bidirectional OTAM (lambda 0.5) on `1 - cos_eps` frame distances; logits = -distance.

Shape legend: Ns support videos, Nq query videos, N classes (way), T frames, D = projection_dim.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection, PreTrainedModel
from transformers.utils import ModelOutput, logging

from clipzoo.configuration.configuration_clip_fsar import ClipzooCLIPFSARConfig
from clipzoo.modeling.alignment import frame_cosine_similarity, frame_distances, otam_distance


logger = logging.get_logger(__name__)

__all__ = ["ClipzooCLIPFSARModel", "ClipzooCLIPFSAROutput", "ClipzooCLIPFSARPreTrainedModel"]


@dataclass
class ClipzooCLIPFSAROutput(ModelOutput):
    """
    Output of [`ClipzooCLIPFSARModel`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): episode CE + `video_text_loss_weight` * video-text CE.
        logits_per_video (`torch.FloatTensor` of shape `(Nq, N)`): class scores of each query (-OTAM distance).
        episode_loss (`torch.FloatTensor` of shape `()`, *optional*): CE of `logits_per_video` against `labels`.
        video_text_loss (`torch.FloatTensor` of shape `()`, *optional*): CE of `video_text_logits`.
        video_text_logits (`torch.FloatTensor` of shape `(Ns + Nq, C)`, *optional*): supports then queries against
            the C training classes.
        video_embeds (`torch.FloatTensor` of shape `(Nq, T, D)`): query frame features fed to the metric.
        prototype_embeds (`torch.FloatTensor` of shape `(N or Ns, T, D)`): support prototypes fed to the metric.
    """

    loss: torch.FloatTensor | None = None
    logits_per_video: torch.FloatTensor | None = None
    episode_loss: torch.FloatTensor | None = None
    video_text_loss: torch.FloatTensor | None = None
    video_text_logits: torch.FloatTensor | None = None
    video_embeds: torch.FloatTensor | None = None
    prototype_embeds: torch.FloatTensor | None = None


class CLIPFSARAttention(nn.Module):
    """Multi-head attention with separate bias-free q/k/v projections and an output projection + dropout
    (official `Attention_qkv`; no dropout on the attention weights)."""

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = self.head_dim**-0.5
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.out_proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        batch, length, dim = q.shape

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, L, d)

        q, k, v = heads(self.to_q(q)), heads(self.to_k(k)), heads(self.to_v(v))
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)  # softmax(q k^T / sqrt(d)) v, fused
        out = out.transpose(1, 2).reshape(batch, length, dim)
        return self.dropout(self.out_proj(out))


class CLIPFSARTransformerLayer(nn.Module):
    """Pre-LN block: one LayerNorm shared by q, k and v, residual on q; FFN (GELU, dropout) without its own norm."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, attention_dropout: float, ffn_dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attention = CLIPFSARAttention(dim, num_heads, attention_dropout)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.ffn_dropout = nn.Dropout(ffn_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = self.norm(x)
        x = self.attention(normed, normed, normed) + x
        hidden = self.ffn_dropout(F.gelu(self.fc1(x)))
        return self.ffn_dropout(self.fc2(hidden)) + x


class CLIPFSARTemporalTransformer(nn.Module):
    """The prototype-modulation Transformer (official `Transformer_v1` with q = k = v). No positional encoding."""

    def __init__(self, config: ClipzooCLIPFSARConfig):
        super().__init__()
        self.layers = nn.ModuleList(
            CLIPFSARTransformerLayer(
                config.projection_dim,
                config.num_attention_heads,
                config.ffn_dim,
                config.attention_dropout,
                config.ffn_dropout,
            )
            for _ in range(config.transformer_depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def class_means(x: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean of `x` (Ns, ...) over the items of each class 0..num_classes-1 -> (num_classes, ...)."""
    one_hot = F.one_hot(labels, num_classes).to(x.dtype)  # (Ns, N)
    summed = torch.einsum("sn,s...->n...", one_hot, x)
    return summed / one_hot.sum(0).view(-1, *([1] * (x.dim() - 1)))


class ClipzooCLIPFSARPreTrainedModel(PreTrainedModel):
    config_class = ClipzooCLIPFSARConfig
    base_model_prefix = "clip_fsar"
    main_input_name = "pixel_values"
    input_modalities = ("video", "text")
    _no_split_modules = ["CLIPEncoderLayer", "CLIPFSARTransformerLayer"]
    _supports_sdpa = True
    _keys_to_ignore_at_inference = [
        "episode_loss",
        "video_text_loss",
        "video_text_logits",
        "video_embeds",
        "prototype_embeds",
    ]

    def _init_weights(self, module: nn.Module) -> None:
        for tower in (getattr(self, "vision_model", None), getattr(self, "text_model", None)):
            if tower is not None and any(m is module for m in tower.modules()):
                tower._init_weights(module)
                return
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, ClipzooCLIPFSARModel):
            nn.init.constant_(module.scale, self.config.scale_init)


class ClipzooCLIPFSARModel(ClipzooCLIPFSARPreTrainedModel):
    r"""
    CLIP-FSAR for N-way K-shot video classification: CLIP frame features, text-modulated prototypes and OTAM.

    Support text tokens come, in this order of precedence, from `support_text_embeds` (Ns, D), from
    `class_input_ids` (the tokenized prompts of the episode's classes in label order, embedded by the frozen text
    tower), or from a class table (`class_text_embeds` argument, default the `class_text_embeds` buffer of the
    training classes) indexed by `support_class_ids`.

    Args:
        config ([`ClipzooCLIPFSARConfig`]): the configuration.

    Attributes:
        otam_compile (`bool`, defaults to `False`): run OTAM's float64 row recurrence through `torch.compile` (same
            results, fewer kernels; about 25 s of compilation per new episode shape on a CPU, and a C++ compiler on
            CPU or Triton on GPU). A runtime switch like the attention implementation: it is not saved with the model,
            so a checkpoint never forces compilation on whoever loads it.

    Examples:

    ```python
    >>> import torch
    >>> from clipzoo.variants import get_variant
    >>> row = get_variant("clip_fsar")
    >>> model = row.model_class(row.tiny_config()).eval()
    >>> out = model(**row.tiny_inputs(model.config, 0))
    >>> out.logits_per_video.shape  # (queries, way)
    torch.Size([4, 2])
    ```
    """

    def __init__(self, config: ClipzooCLIPFSARConfig):
        # By model_type, not isinstance: remote code loads the config class from a different module copy.
        if getattr(config, "model_type", None) != ClipzooCLIPFSARConfig.model_type:
            raise TypeError(f"ClipzooCLIPFSARModel needs a ClipzooCLIPFSARConfig; got {type(config).__name__}.")
        super().__init__(config)
        self.vision_model = CLIPVisionModelWithProjection(config.vision_config)
        self.text_model = CLIPTextModelWithProjection(config.text_config)
        self.text_model.requires_grad_(False)
        self.temporal_transformer = CLIPFSARTemporalTransformer(config)
        self.scale = nn.Parameter(torch.full((1,), float(config.scale_init)))
        self.register_buffer("class_text_embeds", torch.zeros(len(config.class_names), config.projection_dim))
        self.otam_compile = False
        self.post_init()

    def train(self, mode: bool = True):
        super().train(mode)
        self.text_model.eval()  # frozen tower: never in training mode
        return self

    # ----------------------------------------------------------------------------------------------- encoders

    def get_video_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected CLIP embedding of every frame: `(B, T, 3, H, W)` -> `(B, T, D)` (not normalised)."""
        if pixel_values.dim() != 5:
            raise ValueError(
                f"pixel_values must be (batch, frames, 3, height, width); got {tuple(pixel_values.shape)}."
            )
        batch, frames = pixel_values.shape[:2]
        embeds = self.vision_model(pixel_values=pixel_values.flatten(0, 1)).image_embeds
        return embeds.view(batch, frames, -1)

    @torch.no_grad()
    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Projected embeddings of tokenized prompts from the frozen text tower: `(C, L)` -> `(C, D)`."""
        return self.text_model(input_ids=input_ids, attention_mask=attention_mask).text_embeds

    def set_class_text_embeds(self, class_text_embeds: torch.Tensor, class_names: list[str]) -> None:
        """Stores the training classes' text embeddings (saved with the model) and their names in the config."""
        if class_text_embeds.shape != (len(class_names), self.config.projection_dim):
            raise ValueError(
                f"class_text_embeds must have shape ({len(class_names)}, {self.config.projection_dim}); "
                f"got {tuple(class_text_embeds.shape)}."
            )
        self.class_text_embeds = class_text_embeds.detach().to(self.scale.device, self.scale.dtype).clone()
        self.config.class_names = list(class_names)

    # ---------------------------------------------------------------------------------------------- the head

    def video_text_logits(self, frame_features: torch.Tensor, class_text_embeds: torch.Tensor) -> torch.Tensor:
        """`cos_eps(mean_t frames, class texts) * scale`: `(B, T, D)`, `(C, D)` -> `(B, C)`."""
        return frame_cosine_similarity(frame_features.mean(1), class_text_embeds, self.config.cos_eps) * self.scale

    def prototypes(
        self, support_features: torch.Tensor, support_text: torch.Tensor | None, support_labels: torch.Tensor, way: int
    ) -> tuple[torch.Tensor, bool]:
        """Support prototypes `(N, T, D)` (or per-video `(Ns, T, D)` when distances are averaged per class later),
        and whether they are per class."""
        frames = support_features.shape[1]
        merge = self.config.merge_support_before
        if not self.config.use_prototype_modulation:
            return (class_means(support_features, support_labels, way), True) if merge else (support_features, False)
        tokens = torch.cat([support_features, support_text[:, None]], dim=1)  # (Ns, T + 1, D)
        if merge:
            tokens = class_means(tokens, support_labels, way)
        modulated = self.temporal_transformer(tokens)[:, :frames]
        return (modulated, True) if merge else (class_means(modulated, support_labels, way), True)

    def episode_logits(
        self,
        query_features: torch.Tensor,
        support_features: torch.Tensor,
        support_labels: torch.Tensor,
        support_text: torch.Tensor | None,
        way: int,
        query_modulated: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Class scores `(Nq, N)` from frame features; also returns the metric's query and prototype features.
        `query_modulated=True` means `query_features` already went through the Transformer (queries are modulated
        without text, so evaluation can do it once per video)."""
        if self.config.use_prototype_modulation and not query_modulated:
            query_features = self.temporal_transformer(query_features)
        prototypes, per_class = self.prototypes(support_features, support_text, support_labels, way)
        if self.config.metric == "frame_mean_cosine":
            similarity = frame_cosine_similarity(query_features.mean(1), prototypes.mean(1), self.config.cos_eps)
            # 2T cos spans the same range as the bidirectional OTAM sum, so both train with one learning rate.
            scores = 2 * query_features.shape[1] * similarity
        else:
            dists = frame_distances(query_features, prototypes, self.config.cos_eps)
            # 1 - cos with eps >= 0 lies in [0, 2] (up to rounding under low-precision autocast, which the exponent
            # budget's headroom absorbs): the bound spares OTAM a device sync to read the maximum.
            scores = -otam_distance(
                dists,
                self.config.otam_lambda,
                self.config.otam_bidirectional,
                max_distance=2.0,
                compiled=self.otam_compile,
            )
        if not per_class:
            scores = class_means(scores.t(), support_labels, way).t()
        return scores, query_features, prototypes

    # ----------------------------------------------------------------------------------------------- checks

    def _check_episode(self, pixel_values, support_pixel_values, support_labels, labels) -> int:
        if pixel_values is None or support_pixel_values is None or support_labels is None:
            raise ValueError("CLIP-FSAR needs pixel_values (queries), support_pixel_values and support_labels.")
        if pixel_values.shape[1] != support_pixel_values.shape[1]:
            raise ValueError(
                f"Support and query videos must have the same number of frames; got {support_pixel_values.shape[1]} "
                f"(support) and {pixel_values.shape[1]} (query)."
            )
        if support_labels.shape != (support_pixel_values.shape[0],):
            raise ValueError(
                f"support_labels must have shape ({support_pixel_values.shape[0]},); got {tuple(support_labels.shape)}."
            )
        way = int(support_labels.max()) + 1 if support_labels.numel() else 0
        present = torch.unique(support_labels)
        if support_labels.min() < 0 or present.numel() != way:
            raise ValueError(f"support_labels must cover 0..N-1 (episode labels); got {sorted(present.tolist())}.")
        if labels is not None and (labels.min() < 0 or labels.max() >= way):
            raise ValueError(
                f"Query labels {sorted(set(labels.tolist()))} are outside the episode's classes 0..{way - 1}."
            )
        return way

    def _support_text(self, support_text_embeds, class_input_ids, class_attention_mask, table, support_class_ids, way,
                      support_labels) -> torch.Tensor | None:  # fmt: skip
        if support_text_embeds is not None:
            return support_text_embeds
        if class_input_ids is not None:
            if class_input_ids.shape[0] != way:
                raise ValueError(
                    f"class_input_ids must hold one prompt per episode class ({way}); got {class_input_ids.shape[0]}."
                )
            return self.get_text_features(class_input_ids, class_attention_mask)[support_labels]
        if support_class_ids is None:
            if self.config.use_prototype_modulation:
                raise ValueError(
                    "Prototype modulation needs the support classes' text: pass support_text_embeds, class_input_ids, "
                    "or support_class_ids (indices into class_text_embeds)."
                )
            return None
        self._check_class_ids(support_class_ids, table, "support_class_ids")
        return table[support_class_ids]

    @staticmethod
    def _check_class_ids(class_ids: torch.Tensor, table: torch.Tensor, name: str) -> None:
        if class_ids.numel() and (class_ids.min() < 0 or class_ids.max() >= table.shape[0]):
            raise ValueError(
                f"{name} {sorted(set(class_ids.tolist()))} are outside the class list of {table.shape[0]} classes."
            )

    # ----------------------------------------------------------------------------------------------- losses

    def _losses(self, logits, video_text_logits, labels, support_class_ids, query_class_ids, num_classes):
        if labels is None:
            raise ValueError("return_loss=True needs labels (episode labels of the queries).")
        episode_loss = F.cross_entropy(logits.float(), labels)
        if video_text_logits is None:
            return episode_loss, episode_loss, None
        targets = torch.cat([support_class_ids, query_class_ids])
        if targets.min() < 0 or targets.max() >= num_classes:
            raise ValueError(f"class ids {sorted(set(targets.tolist()))} are outside the class list of {num_classes}.")
        video_text_loss = F.cross_entropy(video_text_logits.float(), targets)
        return episode_loss + self.config.video_text_loss_weight * video_text_loss, episode_loss, video_text_loss

    def loss_from_outputs(self, outputs: ClipzooCLIPFSAROutput, inputs: dict, gather=None) -> torch.Tensor:
        """The training loss from outputs of `forward(return_loss=False)`. Episodes are independent, so nothing is
        gathered across processes: each process trains on its own episodes and DDP averages the gradients, as the
        official multi-GPU training does."""
        loss, _, _ = self._losses(
            outputs.logits_per_video,
            outputs.video_text_logits,
            inputs.get("labels"),
            inputs.get("support_class_ids"),
            inputs.get("query_class_ids"),
            self.class_text_embeds.shape[0],
        )
        return loss

    # ---------------------------------------------------------------------------------------------- forward

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        support_pixel_values: torch.Tensor | None = None,
        support_labels: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        support_class_ids: torch.Tensor | None = None,
        query_class_ids: torch.Tensor | None = None,
        support_text_embeds: torch.Tensor | None = None,
        class_input_ids: torch.Tensor | None = None,
        class_attention_mask: torch.Tensor | None = None,
        class_text_embeds: torch.Tensor | None = None,
        return_loss: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ClipzooCLIPFSAROutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(Nq, T, 3, H, W)`): query videos.
            support_pixel_values (`torch.FloatTensor` of shape `(Ns, T, 3, H, W)`): support videos.
            support_labels (`torch.LongTensor` of shape `(Ns,)`): episode labels 0..N-1 of the supports.
            labels (`torch.LongTensor` of shape `(Nq,)`, *optional*): episode labels of the queries.
            support_class_ids / query_class_ids (`torch.LongTensor`, *optional*): global class ids (rows of the class
                table) of supports and queries; the video-text loss needs both.
            support_text_embeds (`torch.FloatTensor` of shape `(Ns, D)`, *optional*): text token of each support.
            class_input_ids / class_attention_mask (`torch.LongTensor` of shape `(N, L)`, *optional*): tokenized
                prompts of the episode's classes in label order.
            class_text_embeds (`torch.FloatTensor` of shape `(C, D)`, *optional*): a class table replacing the
                buffer (e.g. test classes); the video-text loss is then skipped.
            return_loss (`bool`, *optional*): return the total loss (needs `labels`).
        """
        return_dict = return_dict if return_dict is not None else getattr(self.config, "return_dict", True)
        way = self._check_episode(pixel_values, support_pixel_values, support_labels, labels)
        table = class_text_embeds if class_text_embeds is not None else self.class_text_embeds
        support_text = self._support_text(
            support_text_embeds, class_input_ids, class_attention_mask, table, support_class_ids, way, support_labels
        )
        num_support = support_pixel_values.shape[0]
        features = self.get_video_features(torch.cat([support_pixel_values, pixel_values]))  # one backbone pass
        support_features, query_features = features[:num_support], features[num_support:]
        logits, video_embeds, prototype_embeds = self.episode_logits(
            query_features, support_features, support_labels, support_text, way
        )

        loss = episode_loss = video_text_loss = video_text_logits = None
        use_video_text = (
            self.config.video_text_loss_weight > 0
            and class_text_embeds is None
            and support_class_ids is not None
            and query_class_ids is not None
            and table.shape[0] > 0
        )
        if use_video_text:
            video_text_logits = self.video_text_logits(features, table)
        if return_loss:
            loss, episode_loss, video_text_loss = self._losses(
                logits, video_text_logits, labels, support_class_ids, query_class_ids, table.shape[0]
            )
        output = ClipzooCLIPFSAROutput(
            loss=loss,
            logits_per_video=logits,
            episode_loss=episode_loss,
            video_text_loss=video_text_loss,
            video_text_logits=video_text_logits,
            video_embeds=video_embeds,
            prototype_embeds=prototype_embeds,
        )
        return output if return_dict else output.to_tuple()
