"""Converter from the official NVlabs/GroupViT checkpoint layout, on a synthetic state dict with that layout."""

import argparse

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clipzoo.conversion.convert_groupvit_original_to_hf import (
    config_from_original,
    convert,
    convert_state_dict,
    load_original_checkpoint,
)


WIDTH, TEXT_WIDTH, PROJ_HIDDEN, PROJ_OUT, VOCAB, CONTEXT = 32, 64, 48, 16, 50, 12
DEPTHS, GROUP_TOKENS, OUTPUT_GROUPS, PATCH, GRID = (2, 1, 1), (8, 4, 0), (8, 4), 8, 4


def _official_state_dict(multi_label=True):
    """Keys and shapes of `MultiLabelContrastive` (models/group_vit.py, transformer.py, multi_label_contrastive.py)."""
    g = torch.Generator().manual_seed(0)

    def t(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    def linear(prefix, out_dim, in_dim):
        return {f"{prefix}.weight": t(out_dim, in_dim), f"{prefix}.bias": t(out_dim)}

    def norm(prefix, dim):
        return {f"{prefix}.weight": 1 + t(dim), f"{prefix}.bias": t(dim)}

    sd = {
        "img_encoder.patch_embed.proj.weight": t(WIDTH, 3, PATCH, PATCH),
        "img_encoder.patch_embed.proj.bias": t(WIDTH),
    }
    sd |= norm("img_encoder.patch_embed.norm", WIDTH) | {"img_encoder.pos_embed": t(1, GRID * GRID, WIDTH)}
    for i, depth in enumerate(DEPTHS):
        p = f"img_encoder.layers.{i}"
        for j in range(depth):
            b = f"{p}.blocks.{j}"
            sd |= (
                norm(f"{b}.norm1", WIDTH)
                | linear(f"{b}.attn.qkv", 3 * WIDTH, WIDTH)
                | linear(f"{b}.attn.proj", WIDTH, WIDTH)
            )
            sd |= (
                norm(f"{b}.norm2", WIDTH)
                | linear(f"{b}.mlp.fc1", 4 * WIDTH, WIDTH)
                | linear(f"{b}.mlp.fc2", WIDTH, 4 * WIDTH)
            )
        if GROUP_TOKENS[i]:
            sd[f"{p}.group_token"] = t(1, GROUP_TOKENS[i], WIDTH)
            d = f"{p}.downsample"
            sd |= norm(f"{d}.norm_tokens", WIDTH) | norm(f"{d}.norm_post_tokens", WIDTH) | norm(f"{d}.norm_x", WIDTH)
            sd |= linear(f"{d}.mlp_inter.fc1", WIDTH // 2, GROUP_TOKENS[i])
            sd |= linear(f"{d}.mlp_inter.fc2", OUTPUT_GROUPS[i], WIDTH // 2)
            for name in ("q_proj", "k_proj", "v_proj", "proj"):
                sd |= linear(f"{d}.pre_assign_attn.attn.{name}", WIDTH, WIDTH) | linear(
                    f"{d}.assign.{name}", WIDTH, WIDTH
                )
            sd |= norm(f"{d}.pre_assign_attn.norm2", WIDTH) | norm(f"{d}.pre_assign_attn.norm_post", WIDTH)
            sd |= linear(f"{d}.pre_assign_attn.mlp.fc1", 4 * WIDTH, WIDTH)
            sd |= linear(f"{d}.pre_assign_attn.mlp.fc2", WIDTH, 4 * WIDTH)
            sd |= norm(f"{d}.norm_new_x", WIDTH) | linear(f"{d}.mlp_channels.fc1", 4 * WIDTH, WIDTH)
            sd |= linear(f"{d}.mlp_channels.fc2", WIDTH, 4 * WIDTH)
        if i > 0 and GROUP_TOKENS[i]:
            sd |= norm(f"{p}.group_projector.0", WIDTH)
            sd |= linear(f"{p}.group_projector.1.fc1", WIDTH // 2, OUTPUT_GROUPS[i - 1])
            sd |= linear(f"{p}.group_projector.1.fc2", GROUP_TOKENS[i], WIDTH // 2)
    sd |= norm("img_encoder.norm", WIDTH)
    sd |= {
        "text_encoder.token_embedding.weight": t(VOCAB, TEXT_WIDTH),
        "text_encoder.positional_embedding": t(CONTEXT, TEXT_WIDTH),
    }
    for n in range(2):
        b = f"text_encoder.transformer.resblocks.{n}"
        sd |= {f"{b}.attn.in_proj_weight": t(3 * TEXT_WIDTH, TEXT_WIDTH), f"{b}.attn.in_proj_bias": t(3 * TEXT_WIDTH)}
        sd |= linear(f"{b}.attn.out_proj", TEXT_WIDTH, TEXT_WIDTH) | norm(f"{b}.ln_1", TEXT_WIDTH)
        sd |= norm(f"{b}.ln_2", TEXT_WIDTH) | linear(f"{b}.mlp.c_fc", 4 * TEXT_WIDTH, TEXT_WIDTH)
        sd |= linear(f"{b}.mlp.c_proj", TEXT_WIDTH, 4 * TEXT_WIDTH)
    sd |= norm("text_encoder.ln_final", TEXT_WIDTH)
    for name, in_dim in (("img_projector", WIDTH), ("text_projector", TEXT_WIDTH)):
        sd[f"{name}.linear_hidden.0.weight"] = t(PROJ_HIDDEN, in_dim, 1)
        sd[f"{name}.linear_hidden.0.bias"] = t(PROJ_HIDDEN)
        sd |= norm(f"{name}.linear_hidden.1", PROJ_HIDDEN)
        sd[f"{name}.linear_hidden.1.running_mean"] = t(PROJ_HIDDEN)
        sd[f"{name}.linear_hidden.1.running_var"] = 1 + t(PROJ_HIDDEN).abs()
        sd[f"{name}.linear_hidden.1.num_batches_tracked"] = torch.tensor(7)
        sd[f"{name}.linear_out.weight"] = t(PROJ_OUT, PROJ_HIDDEN, 1)
        sd[f"{name}.linear_out.bias"] = t(PROJ_OUT)
    sd["logit_scale"] = torch.tensor(2.5)
    if multi_label:
        sd["multi_label_logit_scale"] = torch.tensor(3.1)
    return sd


def _official_text_embedding(sd, text):
    """The official TextTransformer + ProjectMLP forward, with torch's MultiheadAttention and Conv1d/BN modules."""
    x = sd["text_encoder.token_embedding.weight"][text] + sd["text_encoder.positional_embedding"]
    mask = torch.full((CONTEXT, CONTEXT), float("-inf")).triu_(1)
    for n in range(2):
        b = f"text_encoder.transformer.resblocks.{n}"
        attn = nn.MultiheadAttention(TEXT_WIDTH, TEXT_WIDTH // 64)
        attn.load_state_dict({k.removeprefix(f"{b}.attn."): v for k, v in sd.items() if k.startswith(f"{b}.attn.")})
        h = F.layer_norm(x, (TEXT_WIDTH,), sd[f"{b}.ln_1.weight"], sd[f"{b}.ln_1.bias"]).transpose(0, 1)
        x = x + attn(h, h, h, need_weights=False, attn_mask=mask)[0].transpose(0, 1)
        h = F.layer_norm(x, (TEXT_WIDTH,), sd[f"{b}.ln_2.weight"], sd[f"{b}.ln_2.bias"])
        h = F.linear(h, sd[f"{b}.mlp.c_fc.weight"], sd[f"{b}.mlp.c_fc.bias"])
        h = h * torch.sigmoid(1.702 * h)  # QuickGELU
        x = x + F.linear(h, sd[f"{b}.mlp.c_proj.weight"], sd[f"{b}.mlp.c_proj.bias"])
    x = F.layer_norm(x, (TEXT_WIDTH,), sd["text_encoder.ln_final.weight"], sd["text_encoder.ln_final.bias"])
    x = x[torch.arange(x.shape[0]), text.argmax(dim=-1)]
    conv1, bn, conv2 = (
        nn.Conv1d(TEXT_WIDTH, PROJ_HIDDEN, 1),
        nn.BatchNorm1d(PROJ_HIDDEN),
        nn.Conv1d(PROJ_HIDDEN, PROJ_OUT, 1),
    )
    conv1.load_state_dict(
        {"weight": sd["text_projector.linear_hidden.0.weight"], "bias": sd["text_projector.linear_hidden.0.bias"]}
    )
    bn.load_state_dict(
        {
            k.removeprefix("text_projector.linear_hidden.1."): v
            for k, v in sd.items()
            if k.startswith("text_projector.linear_hidden.1.")
        }
    )
    conv2.load_state_dict(
        {"weight": sd["text_projector.linear_out.weight"], "bias": sd["text_projector.linear_out.bias"]}
    )
    head = nn.Sequential(conv1, bn, nn.ReLU(), conv2).eval()
    return head(x.unsqueeze(-1)).squeeze(-1)  # [B, C] -> [B, C, 1] as ProjectMLP does


def _official_fused_attention(sd, block, x, heads):
    """Official `Attention(qkv_fuse=True)`: qkv reshaped to (B, N, 3, heads, C/heads); q, k, v in that order."""
    batch, tokens, width = x.shape
    qkv = F.linear(x, sd[f"{block}.attn.qkv.weight"], sd[f"{block}.attn.qkv.bias"])
    q, k, v = qkv.reshape(batch, tokens, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
    attn = ((q @ k.transpose(-2, -1)) * (width // heads) ** -0.5).softmax(dim=-1)
    out = (attn @ v).transpose(1, 2).reshape(batch, tokens, width)
    return F.linear(out, sd[f"{block}.attn.proj.weight"], sd[f"{block}.attn.proj.bias"])


def _save(tmp_path, obj):
    path = tmp_path / "groupvit.pth"
    torch.save(obj, path)
    return path


def test_config_inferred_from_shapes():
    config = config_from_original(_official_state_dict(), vision_heads=4, text_heads=1)
    vision, text = config.vision_config, config.text_config
    assert list(vision.depths) == list(DEPTHS) and list(vision.num_group_tokens) == list(GROUP_TOKENS)
    assert list(vision.num_output_groups)[:2] == list(OUTPUT_GROUPS) and vision.patch_size == PATCH
    assert vision.image_size == GRID * PATCH and vision.hidden_size == WIDTH and vision.intermediate_size == 4 * WIDTH
    assert (text.hidden_size, text.num_hidden_layers, text.vocab_size) == (TEXT_WIDTH, 2, VOCAB)
    assert text.max_position_embeddings == CONTEXT and config.projection_dim == PROJ_OUT
    assert config.projection_intermediate_dim == PROJ_HIDDEN and config.multi_label == 3
    assert (
        config_from_original(_official_state_dict(multi_label=False), vision_heads=4).multi_label == 0
    )  # the RedCaps model


def test_convert_checkpoint_matches_official_forward(tmp_path):
    sd = _official_state_dict()
    path = _save(tmp_path, {"model": sd, "epoch": 30, "metrics": {"acc1": 0.1}})
    model = convert(path, tmp_path / "out", vision_heads=4, text_heads=1)
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert model.multi_label_logit_scale.item() == pytest.approx(3.1)
    assert model.logit_scale.item() == pytest.approx(2.5)
    text = torch.randint(1, VOCAB - 1, (3, CONTEXT))
    text[:, 6] = VOCAB - 1  # end-of-text = the largest id (official pools at argmax)
    text[:, 7:] = 0
    with torch.no_grad():
        expected = _official_text_embedding(sd, text)
        torch.testing.assert_close(model.get_text_features(text), expected, atol=1e-5, rtol=1e-5)
        x = torch.randn(2, 5, WIDTH)
        block = model.vision_model.encoder.stages[0].layers[1].self_attn
        torch.testing.assert_close(
            block(x)[0], _official_fused_attention(sd, "img_encoder.layers.0.blocks.1", x, heads=4), atol=1e-5, rtol=0
        )
        patch = torch.randn(1, 3, GRID * PATCH, GRID * PATCH)
        emb = model.vision_model.embeddings(patch)
        conv = F.conv2d(
            patch, sd["img_encoder.patch_embed.proj.weight"], sd["img_encoder.patch_embed.proj.bias"], stride=PATCH
        )
        ref = F.layer_norm(conv.flatten(2).transpose(1, 2), (WIDTH,), sd["img_encoder.patch_embed.norm.weight"],
                           sd["img_encoder.patch_embed.norm.bias"]) + sd["img_encoder.pos_embed"]  # fmt: skip
        torch.testing.assert_close(emb, ref, atol=1e-5, rtol=0)


def test_converted_keys_cover_the_model():
    converted = convert_state_dict(_official_state_dict())
    model = convert.__globals__["ClipzooGroupViTModel"](config_from_original(_official_state_dict(), vision_heads=4))
    assert set(converted) == set(model.state_dict())
    assert converted["visual_projection.0.weight"].shape == (PROJ_HIDDEN, WIDTH)
    assert converted["text_projection.1.num_batches_tracked"].item() == 7


def test_pickled_config_gives_clear_error(tmp_path):
    path = _save(tmp_path, {"model": _official_state_dict(), "config": argparse.Namespace(lr=1.6e-3)})
    with pytest.raises(ValueError, match="(?s)pickled OmegaConf.*weights_only=False"):
        load_original_checkpoint(path)


def test_other_models_state_dict_rejected(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    clip = CLIPModel(CLIPConfig(text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                             "num_attention_heads": 2},
                                vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                               "num_attention_heads": 2, "image_size": 16, "patch_size": 8}))  # fmt: skip
    path = _save(tmp_path, clip.state_dict())
    with pytest.raises(ValueError, match="Not an official GroupViT"):
        convert(path)
    broken = _official_state_dict()
    broken["img_encoder.layers.0.blocks.0.attn.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="Unrecognised GroupViT keys"):
        convert_state_dict(broken)
    with pytest.raises(FileNotFoundError):
        load_original_checkpoint(tmp_path / "missing.pth")
