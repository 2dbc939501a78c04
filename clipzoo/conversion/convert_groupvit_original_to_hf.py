"""Convert an official NVlabs/GroupViT checkpoint (`.pth`) to a clipzoo `ClipzooGroupViTModel` folder.

The official files (`group_vit_gcc_yfcc_30e-879422e0.pth`, `group_vit_gcc_redcap_30e-3dd09a76.pth`) are written by
`utils/checkpoint.py::save_checkpoint`: a dict whose `model` entry is the state dict of `MultiLabelContrastive`
(`img_encoder.*`, `text_encoder.*`, `img_projector.*`, `text_projector.*`, `logit_scale`, and on the yfcc model
`multi_label_logit_scale`). The mapping follows the module names of the official code and transformers' GroupViT:

- vision: the fused `attn.qkv` is split into q/k/v (rows in that order); `layers -> stages`, `blocks -> layers`,
  `norm1/2 -> layer_norm1/2`, `attn -> self_attn`, `proj -> out_proj` (also in the grouping block's cross-attention);
- text: `nn.MultiheadAttention.in_proj_{weight,bias}` split into q/k/v; `ln_1/2 -> layer_norm1/2`,
  `c_fc/c_proj -> fc1/fc2`, `ln_final -> final_layer_norm`, `positional_embedding -> position_embedding.weight`;
- projectors: `Conv1d(k=1) -> BN -> ReLU -> Conv1d(k=1)` become `Linear -> BatchNorm1d -> ReLU -> Linear` (weights
  squeezed, BN running statistics kept);
- `multi_label_logit_scale` is kept (transformers' converter dropped it).

Usage:

    python -m clipzoo.conversion.convert_groupvit_original_to_hf --checkpoint group_vit_gcc_yfcc_30e-879422e0.pth \
        --out groupvit-gcc-yfcc [--tokenizer DIR]
"""

from __future__ import annotations

import argparse
import pickle
import re
from pathlib import Path

import torch

from clipzoo.configuration.configuration_groupvit import ClipzooGroupViTConfig
from clipzoo.modeling.modeling_groupvit import ClipzooGroupViTModel


__all__ = ["config_from_original", "convert_state_dict", "load_original_checkpoint", "main"]

_PICKLED_CONFIG_HELP = (
    "{path} cannot be read with torch.load(weights_only=True): it holds pickled Python objects. Official "
    "GroupViT checkpoints may carry the training config as a pickled OmegaConf object next to the weights. clipzoo "
    "never unpickles arbitrary objects. If you trust the file, strip it once in a sandbox:\n"
    "    python -c \"import torch; ck = torch.load('{path}', weights_only=False, map_location='cpu'); "
    "torch.save({{'model': ck['model']}}, 'groupvit_weights_only.pth')\"\n"
    "and convert groupvit_weights_only.pth instead."
)

_VISION_RENAMES = [
    (r"^img_encoder\.patch_embed\.proj\.", "vision_model.embeddings.patch_embeddings.projection."),
    (r"^img_encoder\.patch_embed\.norm\.", "vision_model.embeddings.layernorm."),
    (r"^img_encoder\.pos_embed$", "vision_model.embeddings.position_embeddings"),
    (r"^img_encoder\.norm\.", "vision_model.layernorm."),
    (r"^img_encoder\.layers\.(\d+)\.blocks\.(\d+)\.norm1\.", r"vision_model.encoder.stages.\1.layers.\2.layer_norm1."),
    (r"^img_encoder\.layers\.(\d+)\.blocks\.(\d+)\.norm2\.", r"vision_model.encoder.stages.\1.layers.\2.layer_norm2."),
    (r"^img_encoder\.layers\.(\d+)\.blocks\.(\d+)\.attn\.proj\.", r"vision_model.encoder.stages.\1.layers.\2.self_attn.out_proj."),
    (r"^img_encoder\.layers\.(\d+)\.blocks\.(\d+)\.mlp\.", r"vision_model.encoder.stages.\1.layers.\2.mlp."),
    (r"^img_encoder\.layers\.(\d+)\.downsample\.pre_assign_attn\.attn\.proj\.",
     r"vision_model.encoder.stages.\1.downsample.pre_assign_attn.attn.out_proj."),
    (r"^img_encoder\.layers\.(\d+)\.", r"vision_model.encoder.stages.\1."),
]  # fmt: skip
_TEXT_RENAMES = [
    (r"^text_encoder\.token_embedding\.", "text_model.embeddings.token_embedding."),
    (r"^text_encoder\.positional_embedding$", "text_model.embeddings.position_embedding.weight"),
    (r"^text_encoder\.ln_final\.", "text_model.final_layer_norm."),
    (r"^text_encoder\.transformer\.resblocks\.(\d+)\.ln_1\.", r"text_model.encoder.layers.\1.layer_norm1."),
    (r"^text_encoder\.transformer\.resblocks\.(\d+)\.ln_2\.", r"text_model.encoder.layers.\1.layer_norm2."),
    (r"^text_encoder\.transformer\.resblocks\.(\d+)\.attn\.out_proj\.", r"text_model.encoder.layers.\1.self_attn.out_proj."),
    (r"^text_encoder\.transformer\.resblocks\.(\d+)\.mlp\.c_fc\.", r"text_model.encoder.layers.\1.mlp.fc1."),
    (r"^text_encoder\.transformer\.resblocks\.(\d+)\.mlp\.c_proj\.", r"text_model.encoder.layers.\1.mlp.fc2."),
]  # fmt: skip
_PROJECTOR_RENAMES = [
    (r"^img_projector\.linear_hidden\.0\.", "visual_projection.0."),
    (r"^img_projector\.linear_hidden\.1\.", "visual_projection.1."),
    (r"^img_projector\.linear_out\.", "visual_projection.3."),
    (r"^text_projector\.linear_hidden\.0\.", "text_projection.0."),
    (r"^text_projector\.linear_hidden\.1\.", "text_projection.1."),
    (r"^text_projector\.linear_out\.", "text_projection.3."),
]
_FUSED = [
    (re.compile(r"^img_encoder\.layers\.(\d+)\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$"),
     "vision_model.encoder.stages.{0}.layers.{1}.self_attn.{{}}_proj.{2}"),
    (re.compile(r"^text_encoder\.transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)$"),
     "text_model.encoder.layers.{0}.self_attn.{{}}_proj.{1}"),
]  # fmt: skip
_REQUIRED = ("img_encoder.patch_embed.proj.weight", "text_encoder.token_embedding.weight", "logit_scale")


def load_original_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Reads an official `.pth` with `weights_only=True` and returns its model state dict.

    Raises:
        `ValueError`: the file holds pickled objects (e.g. the official OmegaConf config), with how to proceed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(_PICKLED_CONFIG_HELP.format(path=path)) from err
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("model"), dict):
        checkpoint = checkpoint["model"]
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path} holds a {type(checkpoint).__name__}, expected a state dict or {{'model': ...}}.")
    return checkpoint


def _check_layout(state_dict: dict[str, torch.Tensor]) -> None:
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    missing = [key for key in _REQUIRED if key not in state_dict]
    if missing:
        sample = ", ".join(sorted(state_dict)[:5])
        raise ValueError(
            f"Not an official GroupViT (NVlabs MultiLabelContrastive) state dict: keys {missing} are missing. "
            f"Its first keys are: {sample}."
        )


def config_from_original(state_dict: dict[str, torch.Tensor], **overrides) -> ClipzooGroupViTConfig:
    """Infers a `ClipzooGroupViTConfig` from tensor shapes; head counts follow the official code (vision 6 by default,
    text width / 64) and can be overridden (`vision_heads=`, `text_heads=`, any config field)."""
    _check_layout(state_dict)
    sd = state_dict
    patch_weight = sd["img_encoder.patch_embed.proj.weight"]
    width, patch = patch_weight.shape[0], patch_weight.shape[-1]
    num_positions = sd["img_encoder.pos_embed"].shape[1]
    stages = sorted({int(m.group(1)) for k in sd if (m := re.match(r"img_encoder\.layers\.(\d+)\.", k))})
    depths = [len({k.split(".")[4] for k in sd if k.startswith(f"img_encoder.layers.{i}.blocks.")}) for i in stages]
    group_tokens = [
        sd[f"img_encoder.layers.{i}.group_token"].shape[1] if f"img_encoder.layers.{i}.group_token" in sd else 0
        for i in stages
    ]
    output_groups = [
        sd[f"img_encoder.layers.{i}.downsample.mlp_inter.fc2.weight"].shape[0]
        for i in stages
        if f"img_encoder.layers.{i}.downsample.mlp_inter.fc2.weight" in sd
    ]
    output_groups.append(output_groups[-1] if output_groups else 0)
    text_width = sd["text_encoder.token_embedding.weight"].shape[1]
    text_layers = len({k.split(".")[3] for k in sd if k.startswith("text_encoder.transformer.resblocks.")})
    mlp_hidden = sd["img_encoder.layers.0.blocks.0.mlp.fc1.weight"].shape[0]
    text_mlp = sd["text_encoder.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
    vision = {
        "hidden_size": width, "intermediate_size": mlp_hidden, "num_hidden_layers": sum(depths), "depths": depths,
        "num_group_tokens": group_tokens, "num_output_groups": output_groups,
        "num_attention_heads": overrides.pop("vision_heads", 6), "patch_size": patch,
        "image_size": int(round(num_positions**0.5)) * patch,
    }  # fmt: skip
    text = {
        "hidden_size": text_width, "intermediate_size": text_mlp, "num_hidden_layers": text_layers,
        "num_attention_heads": overrides.pop("text_heads", max(text_width // 64, 1)),
        "vocab_size": sd["text_encoder.token_embedding.weight"].shape[0],
        "max_position_embeddings": sd["text_encoder.positional_embedding"].shape[0],
    }  # fmt: skip
    # CLIP BPE layout: <|startoftext|> and <|endoftext|> are the last two ids; the official model pools at the
    # argmax id, which is the end-of-text token.
    text["bos_token_id"], text["eos_token_id"] = text["vocab_size"] - 2, text["vocab_size"] - 1
    has_multi_label = "multi_label_logit_scale" in sd
    kwargs = {
        "text_config": text,
        "vision_config": vision,
        "projection_dim": sd["img_projector.linear_out.weight"].shape[0],
        "projection_intermediate_dim": sd["img_projector.linear_out.weight"].shape[1],
        "multi_label": 3 if has_multi_label else 0,
    }
    kwargs.update(overrides)
    return ClipzooGroupViTConfig(**kwargs)


def convert_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official key layout -> clipzoo/transformers key layout (see the module docstring)."""
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    _check_layout(state_dict)
    converted: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        fused = next(((pattern, target) for pattern, target in _FUSED if pattern.match(key)), None)
        if fused is not None:
            target = fused[1].format(*fused[0].match(key).groups())
            for name, chunk in zip(("q", "k", "v"), value.chunk(3, dim=0)):
                converted[target.format(name)] = chunk.clone()
            continue
        if key in ("logit_scale", "multi_label_logit_scale"):
            converted[key] = value
            continue
        new_key = key
        for pattern, replacement in _VISION_RENAMES + _TEXT_RENAMES + _PROJECTOR_RENAMES:
            new_key, hits = re.subn(pattern, replacement, new_key)
            if hits:
                break
        if new_key == key or ".blocks." in new_key:
            unknown.append(key)
            continue
        if key.endswith(".weight") and value.ndim == 3 and "projector" in key:
            value = value.squeeze(-1)  # Conv1d(k=1) -> Linear
        converted[new_key] = value
    if unknown:
        raise ValueError(f"Unrecognised GroupViT keys (not converted): {unknown[:10]}.")
    return converted


def convert(checkpoint: str | Path, out_dir: str | Path | None = None, **config_overrides) -> ClipzooGroupViTModel:
    """Loads an official checkpoint into a `ClipzooGroupViTModel`; saves it to `out_dir` when given."""
    original = load_original_checkpoint(checkpoint)
    config = config_from_original(original, **config_overrides)
    model = ClipzooGroupViTModel(config)
    result = model.load_state_dict(convert_state_dict(original), strict=False)
    missing = [k for k in result.missing_keys if k != "multi_label_logit_scale"]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"Converted weights do not fit the inferred config: missing {missing[:10]}, unexpected "
            f"{result.unexpected_keys[:10]}."
        )
    model.eval()
    if out_dir is not None:
        model.save_pretrained(out_dir)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="official GroupViT .pth")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder to save with the processor (CLIP BPE)")
    parser.add_argument("--vision-heads", type=int, default=6)
    args = parser.parse_args(argv)
    convert(args.checkpoint, args.out, vision_heads=args.vision_heads)
    if args.tokenizer:
        from transformers import AutoTokenizer

        from clipzoo.processing.processing_groupvit import ClipzooGroupViTImageProcessor, ClipzooGroupViTProcessor

        processor = ClipzooGroupViTProcessor(
            ClipzooGroupViTImageProcessor(), AutoTokenizer.from_pretrained(args.tokenizer)
        )
        processor.save_pretrained(args.out)


if __name__ == "__main__":
    main()
