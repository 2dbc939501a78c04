"""GroupViT training hook, collator, evaluate/segment hooks and the LoRA preset."""

import json

import numpy as np
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from PIL import Image

from clipzoo.modeling.modeling_groupvit import ClipzooGroupViTModel
from clipzoo.training.groupvit import (
    GroupViTCollator,
    GroupViTModelArguments,
    build_model_and_processor,
    evaluate,
    needs_prompt_ids,
    segment,
    train,
)
from clipzoo.variants import get_variant


TINY_MODEL = {
    "image_size": 32, "patch_size": 8, "hidden_size": 32, "depths": [1, 1, 1], "num_group_tokens": [8, 4, 0],
    "num_output_groups": [8, 4, 4], "num_attention_heads": 2, "text_hidden_size": 32, "text_layers": 1,
    "text_heads": 2, "projection_dim": 16, "projection_intermediate_dim": 32, "vocab_size": 300, "max_text_length": 16,
}  # fmt: skip


def test_collator_expands_prompts():
    model, processor = build_model_and_processor(GroupViTModelArguments(**TINY_MODEL))
    rows = [{"image": Image.new("RGB", (32, 32)), "caption": "a red circle and a blue square"}] * 3
    batch = GroupViTCollator(processor, num_prompts=3, seed=0)(rows)
    assert batch["input_ids"].shape == (3, 4, 16) and batch["return_loss"] is True
    assert torch.isfinite(model(**batch).loss)
    # The opt-in extensions pass from the recipe's model arguments to the config and train through the collator.
    extended = GroupViTModelArguments(
        **TINY_MODEL, multi_label_pooling="max", within_group_layers=1, group_token_residual=False,
        local_attention_radius=0,
    )  # fmt: skip
    ext_model, _ = build_model_and_processor(extended)
    config = ext_model.config
    assert (config.multi_label_pooling, config.within_group_layers, config.local_attention_radius) == ("max", 1, 0)
    # A per-layer radius passes through the recipe parser too (TINY_MODEL has one first-stage layer).
    from clipzoo.training.recipes import _parse_section

    parsed = _parse_section("t", "model", {**TINY_MODEL, "local_attention_radius": [1]}, GroupViTModelArguments)
    assert build_model_and_processor(parsed)[0].config.local_attention_radius == [1]
    assert (
        _parse_section("t", "model", {"local_attention_radius": 2}, GroupViTModelArguments).local_attention_radius == 2
    )
    out = ext_model(**batch)
    assert out.group_embeds is not None and torch.isfinite(out.loss)
    plain = GroupViTCollator(processor, num_prompts=0)(rows)
    assert plain["input_ids"].shape == (3, 16)
    with pytest.raises(ValueError, match="non-empty caption"):
        GroupViTCollator(processor, 3)([{"image": Image.new("RGB", (32, 32)), "caption": ""}])
    with pytest.raises(ValueError, match="no nouns or verbs"):
        GroupViTCollator(processor, 3, no_word_policy="error")(
            [{"image": Image.new("RGB", (32, 32)), "caption": "two"}]
        )


def test_collator_prompt_ids_for_word_targets():
    args = GroupViTModelArguments(**TINY_MODEL, multi_label_targets="word")
    model, processor = build_model_and_processor(args)
    assert model.config.multi_label_targets == "word"
    rows = [
        {"image": Image.new("RGB", (32, 32)), "caption": "a red circle"},
        {"image": Image.new("RGB", (32, 32), "white"), "caption": "a blue circle"},
        {"image": Image.new("RGB", (32, 32), "red"), "caption": "two of them"},
    ]
    batch = GroupViTCollator(processor, num_prompts=2, seed=0, prompt_ids=True)(rows)
    ids = batch["prompt_ids"]
    assert ids.shape == (3, 2) and ids.dtype == torch.long
    # "circle" is the only word of the first two captions, so their first prompts share an id; the rest are fills.
    assert ids[0, 0] == ids[1, 0] and ids[0, 1] != ids[1, 1] and ids[2, 0] == ids[2, 1]
    model.train()
    loss = model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    # The same draws as without ids (the default collator's batches are unchanged).
    plain = GroupViTCollator(processor, num_prompts=2, seed=0)(rows)
    assert torch.equal(plain["input_ids"], batch["input_ids"]) and "prompt_ids" not in plain
    with pytest.raises(ValueError, match="prompt_ids=True needs num_prompts"):
        GroupViTCollator(processor, num_prompts=0, prompt_ids=True)
    with pytest.raises(ValueError, match="return_prompt_ids=True needs expand_prompts"):
        processor(text=["a red circle"], return_prompt_ids=True)


def test_group_background_loss_trains_from_collated_batches():
    args = GroupViTModelArguments(**TINY_MODEL, group_background_loss_weight=0.5)
    assert needs_prompt_ids(args) and not needs_prompt_ids(GroupViTModelArguments(**TINY_MODEL))
    assert not needs_prompt_ids(GroupViTModelArguments(**{**TINY_MODEL, "multi_label": 0}, multi_label_targets="word"))
    model, processor = build_model_and_processor(args)
    assert model.config.group_background_loss_weight == 0.5 and model.config.background_word == "background"
    rows = [
        {"image": Image.new("RGB", (32, 32)), "caption": "a red circle on a grey background"},
        {"image": Image.new("RGB", (32, 32), "white"), "caption": "a blue square on a pink background"},
        {"image": Image.new("RGB", (32, 32), "red"), "caption": "two of them"},
    ]
    batch = GroupViTCollator(processor, num_prompts=2, seed=0, prompt_ids=True)(rows)
    model.train()
    out = model(**batch)
    assert torch.isfinite(out.group_background_loss) and out.group_background_loss > 0
    torch.testing.assert_close(out.loss, out.contrastive_loss + out.multi_label_loss + 0.5 * out.group_background_loss)
    out.loss.backward()
    assert model.vision_model.embeddings.patch_embeddings.projection.weight.grad.abs().sum() > 0


@pytest.mark.slow
def test_train_evaluate_segment(tmp_path):
    overrides = {
        "model": TINY_MODEL,
        "data": {"num_train": 16},
        "training": {"max_steps": 2, "per_device_train_batch_size": 8, "save_steps": 1000, "logging_steps": 1},
    }
    out = train("groupvit_shapesworld", tmp_path / "model", overrides)
    metadata = json.loads((out / "clipzoo_groupvit_training.json").read_text())
    assert metadata["global_step"] == 2 and np.isfinite(metadata["final_loss"])
    result = evaluate(out, num_samples=2, short_side=None, crop_size=None)
    assert 0.0 <= result["segmentation"]["mean_iou"] <= 1.0
    assert {"baseline_all_background", "baseline_top1_class", "zero_shot_classification_accuracy"} <= set(result)
    assert 0.0 <= result["zero_shot_classification_accuracy_group_max"] <= 1.0
    assert set(result["segmentation_foreground"]) == {"iou", "precision", "recall"}
    image = tmp_path / "in.png"
    Image.new("RGB", (40, 36), (200, 20, 20)).save(image)
    assert segment(image, out, ["circle", "square"], tmp_path / "overlay.png") == tmp_path / "overlay.png"
    assert Image.open(tmp_path / "overlay.png").size == (40, 36)
    with pytest.raises(ValueError, match="duplicates"):
        segment(image, out, ["circle", "circle"], tmp_path / "x.png")


def test_lora_preset_wraps_trains_saves_reloads(tmp_path):
    row = get_variant("groupvit")
    config = row.tiny_config()
    torch.manual_seed(0)
    model = get_peft_model(ClipzooGroupViTModel(config), LoraConfig(r=4, target_modules=row.lora_target_modules))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert any("text_model" in n for n in trainable) and any("vision_model" in n for n in trainable)
    assert not any("downsample" in n for n in trainable)  # grouping blocks untouched
    inputs = row.tiny_inputs(config, 0)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.eval()  # deterministic grouping for a comparable loss
    first = model(**inputs, return_loss=True).loss
    for _ in range(3):
        optimizer.zero_grad()
        model(**inputs, return_loss=True).loss.backward()
        optimizer.step()
    assert model(**inputs, return_loss=True).loss < first
    model.save_pretrained(tmp_path)
    torch.manual_seed(0)
    reloaded = PeftModel.from_pretrained(ClipzooGroupViTModel(config), tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits_per_image, model(**inputs).logits_per_image)


def test_nltk_extractor_needs_nltk():
    try:
        import nltk  # noqa: F401
    except ImportError:
        from clipzoo.training.groupvit import NLTKWordExtractor

        with pytest.raises(ImportError, match="LexiconWordExtractor"):
            NLTKWordExtractor()
    else:
        pytest.skip("nltk is installed")


def test_official_weight_decay_grouping(tmp_path):
    from transformers import TrainingArguments

    from clipzoo.training.trainer import ClipzooTrainer

    model, _ = build_model_and_processor(GroupViTModelArguments(**TINY_MODEL))
    args = TrainingArguments(str(tmp_path), weight_decay=0.05, report_to=[], use_cpu=True)
    trainer = ClipzooTrainer(model=model, args=args)
    trainer.create_optimizer()
    decayed = {id(p) for g in trainer.optimizer.param_groups if g["weight_decay"] == 0.05 for p in g["params"]}
    params = dict(model.named_parameters())
    expected = {n for n, p in params.items() if p.ndim != 1 and not n.endswith(".bias")}
    assert {n for n, p in params.items() if id(p) in decayed} == expected
    # The official pitfall: 0-D logit scales and 3-D group tokens are decayed; LayerNorm/BatchNorm weights are not.
    assert {"logit_scale", "multi_label_logit_scale"} <= expected
    assert any("group_token" in n for n in expected)
    assert not any(n.endswith("layer_norm1.weight") or n.endswith("layernorm.weight") for n in expected)
    batchnorm = [n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert batchnorm and not any(n.startswith(tuple(batchnorm)) for n in expected)
    # Through a peft wrapper the rule still applies (names carry the wrapper's prefix).
    lora = get_peft_model(model, LoraConfig(r=2, target_modules=get_variant("groupvit").lora_target_modules))
    names = ClipzooTrainer.get_decay_parameter_names(trainer, lora)
    assert names and all(p.ndim != 1 for n, p in lora.named_parameters() if n in names)


def test_weight_decay_grouping_survives_flat_shards(tmp_path):
    """Under FSDP / ZeRO-3 every parameter is a flat 1-D shard: the official grouping must not depend on shapes."""
    from transformers import TrainingArguments

    from clipzoo.training.trainer import ClipzooTrainer

    model, _ = build_model_and_processor(GroupViTModelArguments(**TINY_MODEL))
    # The official rule (utils/optimizer.py), applied to the unsharded shapes, written out independently of the code.
    expected = {n for n, p in model.named_parameters() if not (p.ndim == 1 or n.endswith(".bias"))}
    trainer = ClipzooTrainer(model=model, args=TrainingArguments(str(tmp_path), report_to=[], use_cpu=True))
    assert set(trainer.get_decay_parameter_names(model)) == expected
    original_shapes = {}
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is not None:
                original_shapes[id(module), name] = param.shape
                module._parameters[name] = torch.nn.Parameter(param.detach().reshape(-1))
    assert all(p.ndim == 1 for p in model.parameters())
    assert set(trainer.get_decay_parameter_names(model)) == expected
    # DeepSpeed ZeRO-3 keeps the original shapes in `ds_shape`.
    for module in model.modules():
        for name, param in module._parameters.items():
            if param is not None:
                param.ds_shape = original_shapes[id(module), name]
    assert set(trainer.get_decay_parameter_names(model)) == expected


def test_weight_decay_grouping_excludes_other_1d_parameters_where_shapes_are_known(tmp_path):
    from transformers import TrainingArguments

    from clipzoo.training.trainer import ClipzooTrainer

    model, _ = build_model_and_processor(GroupViTModelArguments(**TINY_MODEL))
    model.text_model.extra_gain = torch.nn.Parameter(torch.ones(4))  # 1-D, neither a norm weight nor a bias
    trainer = ClipzooTrainer(model=model, args=TrainingArguments(str(tmp_path), report_to=[], use_cpu=True))
    names = trainer.get_decay_parameter_names(model)
    assert "text_model.extra_gain" in dict(model.named_parameters())
    assert "text_model.extra_gain" not in names and "logit_scale" in names


def test_sync_batchnorm_conversion(caplog):
    from clipzoo.training.trainer import sync_batchnorm

    model, _ = build_model_and_processor(GroupViTModelArguments(**TINY_MODEL))
    keys = set(model.state_dict())
    assert sync_batchnorm(model, 1, "cuda") is model
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    for device_type in ("cpu", "mps"):
        caplog.clear()
        with caplog.at_level("WARNING"):
            assert sync_batchnorm(model, 2, device_type) is model
        assert "per process" in caplog.text and f"{device_type} processes" in caplog.text
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    converted = sync_batchnorm(model, 2, "cuda")
    synced = [m for m in converted.modules() if isinstance(m, torch.nn.SyncBatchNorm)]
    assert len(synced) == 2 and not any(type(m) is torch.nn.BatchNorm1d for m in converted.modules())
    assert set(converted.state_dict()) == keys


def test_collator_with_deit_augmentation():
    from clipzoo.processing.augmentation import DeiTTrainTransform

    _, processor = build_model_and_processor(GroupViTModelArguments(**TINY_MODEL))
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)) for _ in range(3)]
    rows = [{"image": image, "caption": "a red circle"} for image in images]
    plain = GroupViTCollator(processor, num_prompts=3, seed=0)(rows)
    augmented = GroupViTCollator(processor, 3, seed=0, image_transform=DeiTTrainTransform(32, seed=0))(rows)
    # The collator applies the transform to each image, in order, instead of the processor's resize.
    twin = DeiTTrainTransform(32, seed=0)
    torch.testing.assert_close(
        augmented["pixel_values"], torch.stack([twin(image) for image in images]), rtol=0, atol=0
    )
    assert augmented["pixel_values"].shape == plain["pixel_values"].shape == (3, 3, 32, 32)
    torch.testing.assert_close(augmented["input_ids"], plain["input_ids"])


def test_train_rejects_unknown_augmentation(tmp_path):
    with pytest.raises(ValueError, match="augmentation"):
        train("groupvit_shapesworld", tmp_path, {"model": TINY_MODEL, "data": {"augmentation": "mixup"}})


def test_collator_prompt_stopwords():
    from clipzoo.processing.text_groupvit import LexiconWordExtractor, build_prompt_texts

    _, processor = build_model_and_processor(GroupViTModelArguments(**TINY_MODEL))
    caption = "a red circle and a blue square on a grey background"
    rows = [{"image": Image.new("RGB", (32, 32)), "caption": caption}] * 4
    extractor = LexiconWordExtractor(extra_stopwords=["background"])
    batch = GroupViTCollator(processor, num_prompts=3, seed=5, word_extractor=extractor)(rows)
    rng = np.random.default_rng(5)
    expected = [build_prompt_texts(caption, 3, extractor, rng=rng) for _ in rows]
    for texts in expected:  # two shape prompts, then the caption fills the third slot
        assert [("background" in t) for t in texts] == [True, False, False, True]
    tokens = processor.tokenizer([t for g in expected for t in g], padding="max_length", truncation=True,
                                 max_length=16, return_tensors="pt")  # fmt: skip
    assert torch.equal(batch["input_ids"], tokens["input_ids"].reshape(4, 4, 16))
    default = GroupViTCollator(processor, num_prompts=3, seed=5)(rows)
    assert not torch.equal(default["input_ids"], batch["input_ids"])


def test_foreground_stats_counts_pixels():
    from clipzoo.training.groupvit import foreground_stats

    prediction = [np.array([[0, 2, 3], [0, 0, 1]]), np.array([[5]])]
    reference = [np.array([[0, 1, 0], [4, 0, 1]]), np.array([[0]])]
    # foreground predicted at 4 pixels, true at 3, both at 2 (the class does not matter)
    assert foreground_stats(prediction, reference) == {"iou": 2 / 5, "precision": 2 / 4, "recall": 2 / 3}
    assert foreground_stats([np.zeros((2, 2))], [np.zeros((2, 2))]) == {"iou": 0.0, "precision": 0.0, "recall": 0.0}
    with pytest.raises(ValueError, match="pixels"):
        foreground_stats([np.zeros((2, 2))], [np.zeros((2, 3))])


def test_train_with_empty_scenes_keeps_them_out_of_evaluation(tmp_path):
    from clipzoo.training.groupvit import _training_scene_options

    overrides = {
        "model": TINY_MODEL,
        "data": {"num_train": 8, "empty_fraction": 0.5, "named_backgrounds": True},
        "training": {"max_steps": 1, "per_device_train_batch_size": 4, "save_steps": 1000},
    }
    out = train("groupvit_shapesworld", tmp_path / "model", overrides)
    scene = _training_scene_options(out)
    assert scene["named_backgrounds"] is True and "empty_fraction" not in scene


def test_evaluate_background_prompt_labels_background_as_a_class(tmp_path):
    from clipzoo.data.shapesworld import SEGMENTATION_CLASSES, shapesworld
    from clipzoo.processing.segmentation_groupvit import SegmentationSettings, segment_images
    from clipzoo.training.groupvit import _miou

    torch.manual_seed(0)
    model, processor = build_model_and_processor(GroupViTModelArguments(**TINY_MODEL))
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    result = evaluate(tmp_path, num_samples=3, short_side=None, crop_size=None)
    # The same maps as segmenting with "background" as label 0 and no threshold.
    seg = shapesworld("segmentation", 3, seed=1000, image_size=TINY_MODEL["image_size"])
    labels = ["background", *SEGMENTATION_CLASSES[1:]]
    maps = segment_images(model.eval(), processor.tokenizer, [im.convert("RGB") for im in seg["image"]], labels,
                          SegmentationSettings(0.0, False, None, 2048, None, 64))  # fmt: skip
    masks = [np.asarray(m, dtype=np.int64) for m in seg["mask"]]
    expected = _miou([m.numpy() for m in maps], masks, len(labels))
    got = result["segmentation_background_prompt"]
    assert got["mean_iou"] == pytest.approx(expected["mean_iou"])
    np.testing.assert_allclose(got["per_category_iou"], expected["per_category_iou"])  # nan = class absent in both
    assert set(result["segmentation_background_prompt_foreground"]) == {"iou", "precision", "recall"}
    skipped = evaluate(tmp_path, num_samples=3, short_side=None, crop_size=None, background_prompt=None)
    assert "segmentation_background_prompt" not in skipped
    assert skipped["segmentation"] == result["segmentation"]
    with pytest.raises(ValueError, match="duplicates"):
        evaluate(tmp_path, num_samples=1, short_side=None, crop_size=None, background_prompt="circle")


def test_background_recipe_is_the_shipped_recipe_plus_the_two_extensions(tmp_path):
    from dataclasses import asdict

    from transformers import TrainingArguments

    from clipzoo.training.groupvit import GroupViTDataArguments
    from clipzoo.training.recipes import load_recipe

    sections = {"model": GroupViTModelArguments, "data": GroupViTDataArguments, "training": TrainingArguments}
    overrides = {"training": {"output_dir": str(tmp_path)}}
    shipped = load_recipe("groupvit_shapesworld", sections, overrides)
    background = load_recipe("groupvit_shapesworld_background", sections, overrides)
    model, base = asdict(background["model"]), asdict(shipped["model"])
    changed = {key: model[key] for key in model if model[key] != base[key]}
    assert changed == {"multi_label_pooling": "max", "group_background_loss_weight": 1.0}
    assert asdict(background["data"]) == asdict(shipped["data"])
    assert background["training"].to_dict() == shipped["training"].to_dict()
    assert needs_prompt_ids(background["model"])
