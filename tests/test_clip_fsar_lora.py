"""The CLIP-FSAR LoRA preset (`get_variant("clip_fsar").lora_config()`): what it wraps and trains, a few optimiser
steps on a tiny episode, and the adapter's save / reload on a fresh base model."""

import pytest
import torch
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file

from clipzoo.modeling.modeling_clip_fsar import ClipzooCLIPFSARModel
from clipzoo.variants import get_variant


ROW = get_variant("clip_fsar")
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")


def _base():
    """The same tiny base model on every call (weights and class table), as a fresh process would rebuild it."""
    config = ROW.tiny_config()
    torch.manual_seed(0)
    model = ClipzooCLIPFSARModel(config)
    table = torch.randn(len(config.class_names), config.projection_dim, generator=torch.Generator().manual_seed(1))
    model.set_class_text_embeds(table, config.class_names)
    return model


def _logits(model, inputs):
    with torch.no_grad():
        out = model(**inputs)
    return out.logits_per_video, out.video_text_logits


def test_lora_preset_wraps_trains_saves_reloads(tmp_path):
    config = ROW.tiny_config()
    base = _base()
    frozen_before = {k: v.clone() for k, v in base.state_dict().items()}
    model = get_peft_model(base, ROW.lora_config(r=4))

    # The LoRA factors of the vision encoder's attention projections train, and the modulation Transformer (new on
    # top of a CLIP backbone) trains in full as a module to save. Frozen: the text tower (always), the CLIP vision
    # weights and the bare video-text `scale`.
    layers = range(config.vision_config.num_hidden_layers)
    expected = {
        f"base_model.model.vision_model.vision_model.encoder.layers.{i}.self_attn.{proj}.lora_{ab}.default.weight"
        for i in layers
        for proj in PROJECTIONS
        for ab in "AB"
    }
    head = {
        f"base_model.model.temporal_transformer.modules_to_save.default.{n}"
        for n, _ in base.temporal_transformer.original_module.named_parameters()
    }
    assert head
    assert {n for n, p in model.named_parameters() if p.requires_grad} == expected | head
    wrapped = {n for n, m in model.named_modules() if hasattr(m, "lora_A")}
    assert wrapped and all(".vision_model.vision_model.encoder." in n for n in wrapped)  # text tower, head: none

    inputs = ROW.tiny_inputs(config, 0)
    model.train()
    assert not base.text_model.training  # the frozen tower stays in eval mode through the peft wrapper
    model.eval()  # no dropout in the head: comparable losses
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    first = model(**inputs).loss.detach()
    for _ in range(4):
        optimizer.zero_grad()
        model(**inputs).loss.backward()
        optimizer.step()
    assert model(**inputs).loss < first
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: the adapter did train

    trained_head = [p for n, p in model.named_parameters() if ".modules_to_save." in n]
    original_head = dict(base.temporal_transformer.original_module.named_parameters())
    assert any(not torch.equal(p, original_head[n.split(".modules_to_save.default.")[1]]) for n, p in
               zip([n for n, _ in model.named_parameters() if ".modules_to_save." in n], trained_head))  # fmt: skip

    # Nothing outside the adapter moved: class table, text tower, CLIP vision weights, the original head, scale.
    frozen_after = {
        k.replace(".base_layer", "").replace(".original_module", ""): v
        for k, v in base.state_dict().items()
        if "lora_" not in k and ".modules_to_save." not in k
    }
    assert frozen_after.keys() == frozen_before.keys()
    for key, value in frozen_before.items():
        assert torch.equal(frozen_after[key], value), key

    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "adapter_model.safetensors")
    # The adapter holds the LoRA factors and the trained head only.
    assert saved and all("lora_" in k or "temporal_transformer" in k for k in saved)
    assert any("temporal_transformer" in k for k in saved)
    reloaded = PeftModel.from_pretrained(_base(), tmp_path).eval()
    for got, want in zip(_logits(reloaded, inputs), _logits(model, inputs)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(reloaded.base_model.model.class_text_embeds, frozen_before["class_text_embeds"])
    # Merged into a plain model, the adapter gives the same scores.
    merged = reloaded.merge_and_unload()
    assert type(merged) is ClipzooCLIPFSARModel
    for got, want in zip(_logits(merged, inputs), _logits(model, inputs)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_lora_config_without_a_preset_is_an_error():
    with pytest.raises(ValueError, match="no LoRA preset"):
        get_variant("ape").lora_config()
