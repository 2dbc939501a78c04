"""CLIP-FSAR converter on a synthetic official checkpoint (`model_state` with `head.`-prefixed keys)."""

import pytest
import torch
from torch.nn import functional as F
from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

from clipzoo.conversion.convert_clip_fsar_original_to_hf import (
    convert_state_dict,
    load_original_checkpoint,
    main,
    vision_config_from_state_dict,
)
from clipzoo.modeling.modeling_clip_fsar import ClipzooCLIPFSARModel
from clipzoo.processing.tokenization_offline import build_offline_tokenizer


WIDTH, LAYERS, PATCH, IMAGE, DIM, FFN = 128, 2, 8, 16, 32, 48


def _official_state(generator):
    def r(*shape, scale=0.05):
        return torch.randn(*shape, generator=generator) * scale

    state = {
        "backbone.conv1.weight": r(WIDTH, 3, PATCH, PATCH),
        "backbone.class_embedding": r(WIDTH),
        "backbone.positional_embedding": r((IMAGE // PATCH) ** 2 + 1, WIDTH),
        "backbone.ln_pre.weight": 1 + r(WIDTH),
        "backbone.ln_pre.bias": r(WIDTH),
        "backbone.ln_post.weight": 1 + r(WIDTH),
        "backbone.ln_post.bias": r(WIDTH),
        "backbone.proj": r(WIDTH, DIM),
        "context2.layers.0.0.norm.weight": 1 + r(DIM),
        "context2.layers.0.0.norm.bias": r(DIM),
        "context2.layers.0.0.fn.to_q.weight": r(DIM, DIM, scale=0.2),
        "context2.layers.0.0.fn.to_k.weight": r(DIM, DIM, scale=0.2),
        "context2.layers.0.0.fn.to_v.weight": r(DIM, DIM, scale=0.2),
        "context2.layers.0.0.fn.to_out.0.weight": r(DIM, DIM, scale=0.2),
        "context2.layers.0.0.fn.to_out.0.bias": r(DIM),
        "context2.layers.0.1.net.0.weight": r(FFN, DIM, scale=0.2),
        "context2.layers.0.1.net.0.bias": r(FFN),
        "context2.layers.0.1.net.3.weight": r(DIM, FFN, scale=0.2),
        "context2.layers.0.1.net.3.bias": r(DIM),
        "scale": torch.tensor([1.7]),
    }
    for i in range(LAYERS):
        block = f"backbone.transformer.resblocks.{i}."
        state.update({
            block + "ln_1.weight": 1 + r(WIDTH), block + "ln_1.bias": r(WIDTH),
            block + "attn.in_proj_weight": r(3 * WIDTH, WIDTH), block + "attn.in_proj_bias": r(3 * WIDTH),
            block + "attn.out_proj.weight": r(WIDTH, WIDTH), block + "attn.out_proj.bias": r(WIDTH),
            block + "ln_2.weight": 1 + r(WIDTH), block + "ln_2.bias": r(WIDTH),
            block + "mlp.c_fc.weight": r(4 * WIDTH, WIDTH), block + "mlp.c_fc.bias": r(4 * WIDTH),
            block + "mlp.c_proj.weight": r(WIDTH, 4 * WIDTH), block + "mlp.c_proj.bias": r(WIDTH),
        })  # fmt: skip
    return state


def _openai_visual(state, images):
    """OpenAI CLIP `VisionTransformer.forward` written from the official layout (QuickGELU, fused in_proj)."""
    x = F.conv2d(images, state["backbone.conv1.weight"], stride=PATCH).flatten(2).transpose(1, 2)
    x = torch.cat([state["backbone.class_embedding"].expand(x.shape[0], 1, -1), x], 1)
    x = F.layer_norm(x + state["backbone.positional_embedding"], (WIDTH,), state["backbone.ln_pre.weight"],
                     state["backbone.ln_pre.bias"])  # fmt: skip
    heads = WIDTH // 64
    for i in range(LAYERS):
        p = lambda name, i=i: state[f"backbone.transformer.resblocks.{i}.{name}"]  # noqa: E731
        h = F.layer_norm(x, (WIDTH,), p("ln_1.weight"), p("ln_1.bias"))
        attn, _ = F.multi_head_attention_forward(
            h.transpose(0, 1), h.transpose(0, 1), h.transpose(0, 1), WIDTH, heads, p("attn.in_proj_weight"),
            p("attn.in_proj_bias"), None, None, False, 0.0, p("attn.out_proj.weight"), p("attn.out_proj.bias"),
            need_weights=False,
        )  # fmt: skip
        x = x + attn.transpose(0, 1)
        h = F.linear(
            F.layer_norm(x, (WIDTH,), p("ln_2.weight"), p("ln_2.bias")), p("mlp.c_fc.weight"), p("mlp.c_fc.bias")
        )
        x = x + F.linear(h * torch.sigmoid(1.702 * h), p("mlp.c_proj.weight"), p("mlp.c_proj.bias"))
    pooled = F.layer_norm(x[:, 0], (WIDTH,), state["backbone.ln_post.weight"], state["backbone.ln_post.bias"])
    return pooled @ state["backbone.proj"]


def _official_context2(state, x):
    """Official Transformer_v1 (PreNormattention_qkv + Attention_qkv, 8 heads, + FeedForward) from the raw tensors."""
    p = lambda name: state[f"context2.layers.0.{name}"]  # noqa: E731
    n = F.layer_norm(x, (DIM,), p("0.norm.weight"), p("0.norm.bias"))
    q, k, v = (F.linear(n, p(f"0.fn.to_{t}.weight")).view(*x.shape[:2], 8, DIM // 8).transpose(1, 2) for t in "qkv")
    attn = torch.softmax(q @ k.transpose(-1, -2) * (DIM // 8) ** -0.5, dim=-1) @ v
    x = F.linear(attn.transpose(1, 2).reshape(x.shape), p("0.fn.to_out.0.weight"), p("0.fn.to_out.0.bias")) + x
    return (
        F.linear(F.gelu(F.linear(x, p("1.net.0.weight"), p("1.net.0.bias"))), p("1.net.3.weight"), p("1.net.3.bias"))
        + x
    )


@pytest.fixture()
def tiny_clip_dir(tmp_path):
    tokenizer = build_offline_tokenizer(["a photo of jump", "a photo of run"], vocab_size=300, model_max_length=16)
    tower = {"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_hidden_layers": 1}
    config = CLIPConfig(
        text_config={**tower, "vocab_size": len(tokenizer), "max_position_embeddings": 16, "bos_token_id": 0,
                     "eos_token_id": 1, "pad_token_id": 2},
        vision_config={**tower, "image_size": 16, "patch_size": 8}, projection_dim=DIM,
    )  # fmt: skip
    path = tmp_path / "clip"
    CLIPModel(config).save_pretrained(path)
    CLIPProcessor(image_processor=CLIPImageProcessorPil(), tokenizer=tokenizer).save_pretrained(path)
    return path


def test_convert_official_checkpoint_end_to_end(tmp_path, tiny_clip_dir):
    state = _official_state(torch.Generator().manual_seed(0))
    checkpoint = tmp_path / "checkpoint_epoch_00010.pyth"
    torch.save(
        {"epoch": 10, "model_state": {f"head.{k}": v for k, v in state.items()}, "optimizer_state": {}}, checkpoint
    )
    (tmp_path / "classes.txt").write_text("jump\nrun\n")
    out = tmp_path / "converted"
    main(["--checkpoint", str(checkpoint), "--clip", str(tiny_clip_dir), "--class-names", str(tmp_path / "classes.txt"),
          "--out", str(out), "--loss-weight", "1.2"])  # fmt: skip
    model = ClipzooCLIPFSARModel.from_pretrained(out).eval()
    assert model.config.class_names == ["jump", "run"] and model.config.video_text_loss_weight == 1.2
    assert model.config.vision_config.num_attention_heads == 2 and model.config.ffn_dim == FFN
    images = torch.randn(3, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model.get_video_features(images[None])[0]
        torch.testing.assert_close(ours, _openai_visual(state, images), atol=1e-4, rtol=1e-4)
        x = torch.randn(2, 9, DIM)
        torch.testing.assert_close(model.temporal_transformer(x), _official_context2(state, x), atol=1e-5, rtol=1e-5)
    assert model.scale.item() == pytest.approx(1.7)
    clip = CLIPModel.from_pretrained(tiny_clip_dir)
    torch.testing.assert_close(model.text_model.text_projection.weight, clip.text_projection.weight)
    assert model.class_text_embeds.abs().sum() > 0


def test_bad_checkpoints(tmp_path):
    with pytest.raises(ValueError, match="RN50"):
        vision_config_from_state_dict({"backbone.layer1.0.conv1.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="Unexpected keys"):
        convert_state_dict({"something.else": torch.zeros(1)})
    path = tmp_path / "x.pyth"
    torch.save([1, 2], path)
    with pytest.raises(ValueError, match="model_state"):
        load_original_checkpoint(path)
    state = _official_state(torch.Generator().manual_seed(0))
    torch.save({"model_state": {f"module.head.{k}": v for k, v in state.items()}}, path)
    assert set(load_original_checkpoint(path)) == set(state)
