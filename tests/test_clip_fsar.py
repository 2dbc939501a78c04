"""CLIP-FSAR model: modulation Transformer, prototypes, logits and losses against slow references; bad inputs."""

import math

import pytest
import torch
from torch.nn import functional as F

from clipzoo.modeling.alignment import otam_cumulative_distance_reference
from clipzoo.modeling.modeling_clip_fsar import ClipzooCLIPFSARModel
from clipzoo.variants import get_variant


ROW = get_variant("clip_fsar")


def _model(**overrides):
    torch.manual_seed(0)
    config = ROW.tiny_config()
    for key, value in overrides.items():
        setattr(config, key, value)
    model = ClipzooCLIPFSARModel(config).eval()
    model.class_text_embeds.normal_()
    return model


def _reference_layer(layer, x):
    """The official PreNormattention_qkv + Attention_qkv + FeedForward, head by head."""
    normed = layer.norm(x)
    q, k, v = layer.attention.to_q(normed), layer.attention.to_k(normed), layer.attention.to_v(normed)
    heads, d = layer.attention.num_heads, layer.attention.head_dim
    outs = []
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        weights = torch.softmax(q[..., sl] @ k[..., sl].transpose(-1, -2) / math.sqrt(d), dim=-1)
        outs.append(weights @ v[..., sl])
    x = layer.attention.out_proj(torch.cat(outs, dim=-1)) + x
    return layer.fc2(F.gelu(layer.fc1(x))) + x


def _cos_eps(x, y, eps=0.01):
    return (x @ y.T) / (x.norm(dim=-1)[:, None] * y.norm(dim=-1)[None] + eps)


def test_transformer_layer_matches_the_official_formula():
    model = _model()
    x = torch.randn(3, 5, 16)
    layer = model.temporal_transformer.layers[0]
    torch.testing.assert_close(layer(x), _reference_layer(layer, x), atol=1e-5, rtol=1e-5)


def test_no_positional_encoding_permutation_equivariant():
    model = _model()
    x = torch.randn(2, 5, 16)
    perm = torch.tensor([3, 0, 4, 1, 2])
    torch.testing.assert_close(model.temporal_transformer(x)[:, perm], model.temporal_transformer(x[:, perm]))


def test_logits_and_total_loss_match_slow_reference():
    model = _model()
    inputs = ROW.tiny_inputs(model.config, 0)
    out = model(**inputs)
    frames = model.get_video_features(torch.cat([inputs["support_pixel_values"], inputs["pixel_values"]]))
    support, query = frames[:2], frames[2:]
    text = model.class_text_embeds[inputs["support_class_ids"]]
    protos = model.temporal_transformer(torch.cat([support, text[:, None]], dim=1))[:, :4]  # 1-shot: label order
    queries = model.temporal_transformer(query)
    dists = torch.stack([1 - _cos_eps(q, p) for q in queries for p in protos]).view(4, 2, 4, 4).double()
    otam = otam_cumulative_distance_reference(dists, 0.5) + otam_cumulative_distance_reference(
        dists.transpose(-1, -2), 0.5
    )
    torch.testing.assert_close(out.logits_per_video.double(), -otam, atol=1e-5, rtol=0)
    v2t = _cos_eps(frames.mean(1), model.class_text_embeds) * model.scale
    torch.testing.assert_close(out.video_text_logits, v2t, atol=1e-5, rtol=1e-5)
    targets = torch.cat([inputs["support_class_ids"], inputs["query_class_ids"]])
    expected = F.cross_entropy(-otam.float(), inputs["labels"]) + 3.0 * F.cross_entropy(v2t, targets)
    torch.testing.assert_close(out.loss, expected, atol=1e-5, rtol=1e-5)


def _five_shot_inputs(model, shots=3):
    generator = torch.Generator().manual_seed(1)
    labels = torch.tensor([0, 1] * shots)
    return {
        "support_pixel_values": torch.randn(2 * shots, 4, 3, 16, 16, generator=generator),
        "support_labels": labels,
        "support_class_ids": torch.where(labels == 0, 2, 1),
        "pixel_values": torch.randn(2, 4, 3, 16, 16, generator=generator),
        "labels": torch.tensor([0, 1]),
    }


def test_merge_before_averages_frames_and_text_per_class():
    model = _model()
    inputs = _five_shot_inputs(model)
    out = model(**inputs)
    support = model.get_video_features(inputs["support_pixel_values"])
    text = model.class_text_embeds[inputs["support_class_ids"]]
    tokens = torch.cat([support, text[:, None]], 1)
    merged = torch.stack([tokens[inputs["support_labels"] == c].mean(0) for c in range(2)])
    torch.testing.assert_close(out.prototype_embeds, model.temporal_transformer(merged)[:, :4], atol=1e-5, rtol=1e-5)
    model.config.merge_support_before = False
    after = model(**inputs).prototype_embeds
    per_video = model.temporal_transformer(tokens)[:, :4]
    expected = torch.stack([per_video[inputs["support_labels"] == c].mean(0) for c in range(2)])
    torch.testing.assert_close(after, expected, atol=1e-5, rtol=1e-5)


def test_ablations_run_and_differ():
    inputs = ROW.tiny_inputs(ROW.tiny_config(), 0)
    full = _model()(**inputs).logits_per_video
    plain = _model(use_prototype_modulation=False)(**inputs)
    frames = _model().get_video_features(inputs["pixel_values"])
    torch.testing.assert_close(plain.video_embeds, frames)  # plain OTAM on raw CLIP frames
    assert not torch.allclose(full, plain.logits_per_video)
    cosine = _model(metric="frame_mean_cosine", use_prototype_modulation=False)(**inputs)
    support = _model().get_video_features(inputs["support_pixel_values"])
    expected = 8 * _cos_eps(frames.mean(1), support.mean(1))
    torch.testing.assert_close(cosine.logits_per_video, expected, atol=1e-5, rtol=1e-5)
    no_text = _model(video_text_loss_weight=0.0)(**inputs)
    assert no_text.video_text_loss is None and torch.allclose(no_text.loss, no_text.episode_loss)


def test_text_paths_agree_and_text_tower_is_frozen():
    model = _model()
    inputs = ROW.tiny_inputs(model.config, 0)
    class_input_ids = torch.tensor([[0, 5, 6, 1], [0, 7, 8, 1]])
    text = model.get_text_features(class_input_ids)
    by_embeds = model(**{**inputs, "support_text_embeds": text[inputs["support_labels"]]}).logits_per_video
    by_ids = model(**{**inputs, "class_input_ids": class_input_ids}).logits_per_video
    torch.testing.assert_close(by_embeds, by_ids)
    model.train()
    assert not model.text_model.training
    model(**inputs).loss.backward()
    assert all(p.grad is None for p in model.text_model.parameters())
    assert model.scale.grad is not None and model.vision_model.visual_projection.weight.grad is not None
    assert model.temporal_transformer.layers[0].attention.to_q.weight.grad is not None


def test_class_text_embeds_are_saved(tmp_path):
    model = _model()
    model.set_class_text_embeds(torch.randn(3, 16), ["a", "b", "c"])
    model.save_pretrained(tmp_path)
    reloaded = ClipzooCLIPFSARModel.from_pretrained(tmp_path)
    torch.testing.assert_close(reloaded.class_text_embeds, model.class_text_embeds)
    assert reloaded.config.class_names == ["a", "b", "c"]
    with pytest.raises(ValueError, match="shape"):
        model.set_class_text_embeds(torch.randn(2, 16), ["a", "b", "c"])


def test_bad_episodes_are_clear_errors():
    model = _model()
    inputs = ROW.tiny_inputs(model.config, 0)
    with pytest.raises(ValueError, match=r"outside the episode's classes 0..1"):
        model(**{**inputs, "labels": torch.tensor([0, 0, 1, 2])})
    with pytest.raises(ValueError, match="outside the class list of 3 classes"):
        model(**{**inputs, "support_class_ids": torch.tensor([2, 5])})
    with pytest.raises(ValueError, match="same number of frames"):
        model(**{**inputs, "pixel_values": torch.randn(4, 3, 3, 16, 16)})
    with pytest.raises(ValueError, match="cover 0..N-1"):
        model(**{**inputs, "support_labels": torch.tensor([0, 2])})
    with pytest.raises(ValueError, match="needs the support classes' text"):
        model(**{k: v for k, v in inputs.items() if k != "support_class_ids"})
    with pytest.raises(ValueError, match="needs labels"):
        model(**{k: v for k, v in inputs.items() if k != "labels"})


def test_otam_compile_config_routes_through_the_compiled_kernels(monkeypatch):
    from clipzoo.modeling import alignment

    calls = []
    kernels = (
        lambda *a: calls.append("forward") or alignment._row_forward(*a),
        lambda *a: calls.append("backward") or alignment._row_backward(*a),
    )
    monkeypatch.setattr(alignment, "_compiled_row_kernels", lambda: kernels)
    inputs = ROW.tiny_inputs(ROW.tiny_config(), 0)
    eager, compiled = _model(), _model()  # eval mode: no dropout, so the losses must agree
    compiled.otam_compile = True
    eager_loss = eager(**inputs).loss
    eager_loss.backward()
    assert calls == []
    compiled_loss = compiled(**inputs).loss
    compiled_loss.backward()
    assert calls == ["forward", "backward"]
    torch.testing.assert_close(compiled_loss, eager_loss)
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, msg=name)
    assert ClipzooCLIPFSARModel(ROW.tiny_config()).otam_compile is False
    assert "otam_compile" not in compiled.config.to_dict()  # a runtime switch, never saved
