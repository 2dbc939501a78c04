"""Convert an official CLIP-FSAR training checkpoint to a clipzoo `ClipzooCLIPFSARModel` folder.

No official weights were released (alibaba-mmai-research/CLIP-FSAR issue #4); training writes
`<OUTPUT_DIR>/checkpoints/checkpoint_epoch_{:05d}.pyth`, a dict `{epoch, model_state, optimizer_state, cfg}` whose
`model_state` keys start with `head.` (`utils/checkpoint.py`; `module.` in front when saved from DDP without unwrapping):

- `head.backbone.*`: the OpenAI CLIP visual encoder (`conv1`, `class_embedding`, `positional_embedding`, `ln_pre`,
  `transformer.resblocks.{i}.{ln_1, attn.in_proj_*, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}`, `ln_post`, `proj`)
  -> transformers' CLIP vision tower (fused `in_proj` split into q/k/v, `proj` transposed into `visual_projection`);
- `head.context2.layers.{i}.0.norm` / `.0.fn.to_{q,k,v}` / `.0.fn.to_out.0` and `.1.net.{0,3}` (the modulation
  Transformer) -> `temporal_transformer.layers.{i}.{norm, attention.to_*, attention.out_proj, fc1, fc2}`;
- `head.scale` -> `scale`.

The text encoder is not in the checkpoint (the official head embeds class names once at init and discards it), so the
frozen text tower and the tokenizer come from an HF CLIP (`--clip`, e.g. `openai/clip-vit-base-patch16`), and the
class-name embeddings of `--class-names` (one per line, in the config's `TRAIN.CLASS_NAME` order) are recomputed with
the prompt. Only ViT backbones convert: RN50 (every shipped config) has no transformers implementation.

Usage:

    python -m clipzoo.conversion.convert_clip_fsar_original_to_hf --checkpoint checkpoint_epoch_00010.pyth \
        --clip openai/clip-vit-base-patch16 --class-names train_classes.txt --out clip-fsar-ssv2 [--loss-weight 3.0]
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import torch
from transformers import CLIPModel, CLIPProcessor, CLIPVisionConfig
from transformers.utils import logging

from clipzoo.configuration.configuration_clip_fsar import ClipzooCLIPFSARConfig
from clipzoo.modeling.modeling_clip_fsar import ClipzooCLIPFSARModel
from clipzoo.processing.processing_clip_fsar import ClipzooCLIPFSARProcessor
from clipzoo.processing.video_processing import ClipzooVideoProcessor


logger = logging.get_logger(__name__)

__all__ = ["convert", "convert_state_dict", "load_original_checkpoint", "main", "vision_config_from_state_dict"]

_VISION = "vision_model.vision_model."
_RENAMES = [
    (r"^backbone\.conv1\.weight$", _VISION + "embeddings.patch_embedding.weight"),
    (r"^backbone\.class_embedding$", _VISION + "embeddings.class_embedding"),
    (r"^backbone\.positional_embedding$", _VISION + "embeddings.position_embedding.weight"),
    (r"^backbone\.ln_pre\.", _VISION + "pre_layrnorm."),
    (r"^backbone\.ln_post\.", _VISION + "post_layernorm."),
    (r"^backbone\.transformer\.resblocks\.(\d+)\.ln_1\.", _VISION + r"encoder.layers.\1.layer_norm1."),
    (r"^backbone\.transformer\.resblocks\.(\d+)\.ln_2\.", _VISION + r"encoder.layers.\1.layer_norm2."),
    (
        r"^backbone\.transformer\.resblocks\.(\d+)\.attn\.out_proj\.",
        _VISION + r"encoder.layers.\1.self_attn.out_proj.",
    ),
    (r"^backbone\.transformer\.resblocks\.(\d+)\.mlp\.c_fc\.", _VISION + r"encoder.layers.\1.mlp.fc1."),
    (r"^backbone\.transformer\.resblocks\.(\d+)\.mlp\.c_proj\.", _VISION + r"encoder.layers.\1.mlp.fc2."),
    (r"^context2\.layers\.(\d+)\.0\.norm\.", r"temporal_transformer.layers.\1.norm."),
    (r"^context2\.layers\.(\d+)\.0\.fn\.to_(q|k|v)\.", r"temporal_transformer.layers.\1.attention.to_\2."),
    (r"^context2\.layers\.(\d+)\.0\.fn\.to_out\.0\.", r"temporal_transformer.layers.\1.attention.out_proj."),
    (r"^context2\.layers\.(\d+)\.1\.net\.0\.", r"temporal_transformer.layers.\1.fc1."),
    (r"^context2\.layers\.(\d+)\.1\.net\.3\.", r"temporal_transformer.layers.\1.fc2."),
    (r"^scale$", "scale"),
]
_IN_PROJ = re.compile(r"^backbone\.transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)$")


def load_original_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The `model_state` of an official `.pyth` checkpoint, read with `weights_only=True`, without `head.`/`module.`."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get("model_state", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds no 'model_state' dict; got {type(checkpoint).__name__}.")
    return {re.sub(r"^(module\.)?head\.", "", key): value for key, value in state.items()}


def vision_config_from_state_dict(state: dict[str, torch.Tensor]) -> CLIPVisionConfig:
    """The CLIP-ViT vision config implied by the shapes of the official `backbone.*` tensors."""
    if "backbone.conv1.weight" not in state or "backbone.proj" not in state:
        if any(key.startswith("backbone.layer1.") for key in state):
            raise ValueError(
                "This checkpoint has an RN50 backbone (ModifiedResNet); transformers has no CLIP ResNet, so only "
                "ViT CLIP-FSAR checkpoints convert."
            )
        raise ValueError(
            "No CLIP ViT backbone found (expected 'head.backbone.conv1.weight' and 'head.backbone.proj')."
        )
    width, _, patch, _ = state["backbone.conv1.weight"].shape
    positions = state["backbone.positional_embedding"].shape[0]
    layers = 1 + max(
        int(m.group(1)) for key in state if (m := re.match(r"backbone\.transformer\.resblocks\.(\d+)\.", key))
    )
    return CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=state["backbone.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        num_hidden_layers=layers,
        num_attention_heads=max(1, width // 64),
        image_size=int(math.isqrt(positions - 1)) * patch,
        patch_size=patch,
        projection_dim=state["backbone.proj"].shape[1],
    )


def convert_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official head keys (without `head.`) -> clipzoo keys. Unknown keys are an error naming them."""
    converted, unknown = {}, []
    for key, value in state.items():
        if key == "backbone.proj":
            converted["vision_model.visual_projection.weight"] = value.t().contiguous()
            continue
        if match := _IN_PROJ.match(key):
            layer, kind = match.groups()
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                converted[f"{_VISION}encoder.layers.{layer}.self_attn.{name}.{kind}"] = part.contiguous()
            continue
        for pattern, replacement in _RENAMES:
            if re.match(pattern, key):
                converted[re.sub(pattern, replacement, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"Unexpected keys in the CLIP-FSAR checkpoint (not converted): {unknown[:10]}")
    return converted


def convert(
    state: dict[str, torch.Tensor],
    clip_model: CLIPModel,
    clip_processor: CLIPProcessor,
    class_names: list[str],
    video_text_loss_weight: float = 3.0,
    prompt: str = "a photo of {}",
) -> tuple[ClipzooCLIPFSARModel, ClipzooCLIPFSARProcessor]:
    """Builds the clipzoo model (vision + head from `state`, text tower from `clip_model`) and its processor."""
    vision_config = vision_config_from_state_dict(state)
    depth = 1 + max(
        (int(m.group(1)) for key in state if (m := re.match(r"context2\.layers\.(\d+)\.", key))), default=0
    )
    ffn_dim = state["context2.layers.0.1.net.0.weight"].shape[0]
    config = ClipzooCLIPFSARConfig(
        vision_config=vision_config.to_dict(),
        # A CLIPModel's text projection width is CLIPConfig.projection_dim; its text_config.projection_dim may differ.
        text_config={**clip_model.config.text_config.to_dict(), "projection_dim": clip_model.config.projection_dim},
        projection_dim=vision_config.projection_dim,
        transformer_depth=depth,
        ffn_dim=ffn_dim,
        video_text_loss_weight=video_text_loss_weight,
        prompt=prompt,
        class_names=class_names,
    )
    model = ClipzooCLIPFSARModel(config)
    text_state = {
        k: v for k, v in clip_model.state_dict().items() if k.startswith(("text_model.", "text_projection."))
    }
    missing, unexpected = model.text_model.load_state_dict(text_state, strict=False)
    if missing or unexpected:
        raise ValueError(f"The --clip text tower does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}.")
    missing, unexpected = model.load_state_dict(convert_state_dict(state), strict=False)
    missing = [k for k in missing if not k.startswith("text_model.") and k != "class_text_embeds"]
    if missing or unexpected:
        raise ValueError(
            f"Converted weights do not fit the model: missing {missing[:10]}, unexpected {unexpected[:10]}."
        )
    image_processor = ClipzooVideoProcessor(
        num_frames=config.num_frames,
        shortest_edge=vision_config.image_size * 8 // 7,
        crop_size=vision_config.image_size,
    )
    processor = ClipzooCLIPFSARProcessor(
        image_processor=image_processor, tokenizer=clip_processor.tokenizer, prompt=prompt
    )
    if class_names:
        tokens = processor.tokenize_class_names(class_names)
        model.set_class_text_embeds(model.get_text_features(**tokens), class_names)
    return model, processor


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="official checkpoint_epoch_XXXXX.pyth")
    parser.add_argument("--clip", required=True, help="HF CLIP id or folder providing the text tower and tokenizer")
    parser.add_argument("--class-names", required=True, help="text file: training class names, one per line, in order")
    parser.add_argument("--out", required=True)
    parser.add_argument("--loss-weight", type=float, default=3.0, help="USE_CLASSIFICATION_VALUE of the config")
    args = parser.parse_args(argv)
    names = [line.strip() for line in Path(args.class_names).read_text().splitlines() if line.strip()]
    clip_model, clip_processor = CLIPModel.from_pretrained(args.clip), CLIPProcessor.from_pretrained(args.clip)
    model, processor = convert(
        load_original_checkpoint(args.checkpoint), clip_model, clip_processor, names, args.loss_weight
    )
    model.save_pretrained(args.out)
    processor.save_pretrained(args.out)
    logger.warning(f"Saved the converted CLIP-FSAR model to {args.out}.")


if __name__ == "__main__":
    main()
