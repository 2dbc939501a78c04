"""APE adapter: fit on a tiny random CLIP, adapter-only save/load, Auto classes, pipeline, APE-T / Tip-Adapter-F."""

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForImageClassification, CLIPModel, pipeline

import clipzoo  # noqa: F401  (registers the Auto classes)
from clipzoo.backbone import BackboneModelArguments, build_backbone
from clipzoo.configuration.configuration_ape import APEConfig
from clipzoo.modeling import ape_math
from clipzoo.modeling.modeling_ape import APEForImageClassification
from clipzoo.processing.processing_ape import APEImageProcessor, augment_image, random_resized_crop_box
from clipzoo.processing.tokenization_offline import build_offline_tokenizer
from clipzoo.training import ape


CLASSES = ["red square", "green circle", "blue bar"]
COLOURS = [(220, 30, 30), (30, 200, 30), (30, 30, 220)]


def _image(label: int, rng) -> Image.Image:
    arr = rng.integers(0, 40, (24, 24, 3)).astype(np.uint8)
    x, y = rng.integers(0, 10, 2)
    arr[y : y + 12, x : x + 12] = COLOURS[label]
    return Image.fromarray(arr)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    tokenizer = build_offline_tokenizer(
        [f"a photo of a {c}." for c in CLASSES] + ["a photo of a {}."], vocab_size=300, model_max_length=16
    )
    args = BackboneModelArguments(
        image_size=32,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        projection_dim=16,
        vocab_size=300,
        max_text_length=16,
    )
    backbone, processor = build_backbone(args, tokenizer)
    base_dir = tmp_path_factory.mktemp("base")
    backbone.save_pretrained(base_dir)
    processor.save_pretrained(base_dir)
    backbone = CLIPModel.from_pretrained(base_dir).eval()
    rng = np.random.default_rng(0)
    labels = [c for c in range(3) for _ in range(8)]
    images = [_image(c, rng) for c in labels]
    support = ape.sample_few_shot(labels, 2, 3, seed=1)
    val = [i for i in range(len(labels)) if i not in support]
    features = ape.extract_features(
        backbone,
        processor,
        [images[i] for i in support],
        [labels[i] for i in support],
        CLASSES,
        [images[i] for i in val],
        [labels[i] for i in val],
        shots=2,
        augment_epochs=2,
    )
    return {
        "backbone": backbone,
        "processor": processor,
        "base_dir": base_dir,
        "features": features,
        "images": images,
        "labels": labels,
    }


def test_cache_and_text_classifier(tiny):
    f = tiny["features"]
    assert f.cache_keys.shape == (6, 16) and f.text_weights.shape == (3, 16)
    torch.testing.assert_close(f.cache_keys.norm(dim=-1), torch.ones(6))
    assert f.cache_labels.tolist() == [0, 0, 1, 1, 2, 2]  # class-major, as the official cache layout
    # the text row is the normalised mean of the normalised prompt features
    tok = tiny["processor"].tokenizer(["a photo of a blue bar.", "a blue bar"], padding=True, return_tensors="pt")
    feats = torch.nn.functional.normalize(tiny["backbone"].get_text_features(**tok).pooler_output, dim=-1)
    w = ape.build_text_classifier(
        tiny["backbone"], tiny["processor"].tokenizer, ["blue bar"], ["a photo of a {}."], {"blue bar": ["a blue bar"]}
    )
    torch.testing.assert_close(w[0], torch.nn.functional.normalize(feats.mean(0), dim=-1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["zero_shot", "tip_adapter", "ape"])
def test_training_free_methods_match_maths(tiny, method):
    f = tiny["features"]
    model = ape.build_adapter(f, method, tiny["backbone"], feat_num_training_free=8, search_step=[10, 5, 4])
    logits = model.logits_from_features(f.val_features)
    if method == "zero_shot":
        ref = 100 * f.val_features @ f.text_weights.t()
    elif method == "tip_adapter":
        ref = ape_math.tip_adapter_logits(
            f.val_features, f.text_weights, f.cache_keys, f.cache_labels, model.alpha, model.beta
        )
    else:
        crit = ape_math.ape_criterion(f.text_weights, f.cache_keys, f.cache_labels, (0.5, 0.5))
        assert sorted(model.selected_channels.tolist()) == sorted(ape_math.select_channels(crit, 8).tolist())
        ref = ape_math.ape_logits(
            f.val_features,
            f.text_weights,
            f.cache_keys,
            f.cache_labels,
            model.selected_channels,
            model.alpha,
            model.beta,
            model.gamma,
        )
    torch.testing.assert_close(logits, ref)
    assert ape.trainable_parameter_count(model) == 0


def test_save_is_adapter_only_and_reload_reattaches_base(tiny, tmp_path):
    model = ape.build_adapter(
        tiny["features"], "ape", tiny["backbone"], feat_num_training_free=8, search_step=[10, 5, 4]
    )
    assert model.config.base_model_name_or_path == str(tiny["base_dir"])
    model.save_pretrained(tmp_path)
    APEImageProcessor.from_dict(ape.ape_image_processor(tiny["processor"]).to_dict()).save_pretrained(tmp_path)
    keys = set(load_file(tmp_path / "model.safetensors"))
    assert keys == {"text_weights", "cache_keys", "cache_labels", "alpha", "beta", "gamma", "selected_channels"}
    pixels = tiny["processor"](images=tiny["images"][:4], return_tensors="pt")["pixel_values"]
    expected = model(pixel_values=pixels).logits
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path)
    assert isinstance(reloaded, APEForImageClassification)
    torch.testing.assert_close(reloaded(pixel_values=pixels).logits, expected)
    assert float(reloaded.alpha) == float(model.alpha) and float(reloaded.gamma) == float(model.gamma)
    classifier = pipeline("image-classification", model=str(tmp_path))
    out = classifier(tiny["images"][0], top_k=3)
    assert {o["label"] for o in out} == set(CLASSES)
    best = CLASSES[int(expected[0].argmax())]
    assert out[0]["label"] == best


def test_inline_base_config_is_deterministic(tmp_path):
    from clipzoo.variants import get_variant

    row = get_variant("ape")
    config = row.tiny_config()
    inputs = row.tiny_inputs(config, 0)
    torch.manual_seed(1)
    a = APEForImageClassification(config)
    out = a(**inputs).logits
    a.save_pretrained(tmp_path)
    torch.manual_seed(2)
    b = APEForImageClassification.from_pretrained(tmp_path)
    torch.testing.assert_close(b(**inputs).logits, out)
    assert not any(
        k.startswith(("vision_model", "text_model", "backbone", "visual_projection"))
        for k in load_file(tmp_path / "model.safetensors")
    )


@pytest.mark.parametrize("method", ["ape_t", "tip_adapter_f"])
def test_trained_methods(tiny, method, tmp_path):
    f = tiny["features"]
    model = ape.train_adapter(
        f,
        method,
        tiny["backbone"],
        tiny["processor"],
        seed=0,
        feat_num_training=10,
        train_epochs=3,
        search_step=[10, 5, 4],
        learning_rate=1e-2,
    )
    count = ape.trainable_parameter_count(model)
    if method == "ape_t":
        assert count == 3 * 10 + 6  # C x Q_T residual + NK value weights
        assert model.category_residual.abs().sum() > 0 and (model.value_weights != 1).any()
        ref = ape_math.ape_t_logits(
            f.val_features,
            f.text_weights,
            f.cache_keys,
            f.cache_labels,
            model.selected_channels,
            model.category_residual,
            model.value_weights,
            model.alpha,
            model.beta,
        )
    else:
        assert count == 6 * 16  # NK x D keys
        assert not torch.allclose(model.cache_keys, f.cache_keys)
        ref = ape_math.tip_adapter_logits(
            f.val_features, f.text_weights, model.cache_keys, f.cache_labels, model.alpha, model.beta
        )
    torch.testing.assert_close(model.logits_from_features(f.val_features), ref)
    model.save_pretrained(tmp_path)
    reloaded = APEForImageClassification.from_pretrained(tmp_path)
    assert ape.trainable_parameter_count(reloaded) == count
    torch.testing.assert_close(reloaded.logits_from_features(f.val_features), ref)


def test_augmentation_crop_box_and_flip():
    rng = np.random.default_rng(0)
    areas = []
    for _ in range(200):
        left, top, right, bottom = random_resized_crop_box(40, 30, rng)
        assert 0 <= left < right <= 40 and 0 <= top < bottom <= 30
        areas.append((right - left) * (bottom - top) / 1200)
    assert 0.45 <= min(areas) and max(areas) <= 1.0 and np.mean(areas) > 0.6
    arr = np.zeros((10, 10, 3), np.uint8)
    arr[:, :5] = 255
    out = np.asarray(
        augment_image(Image.fromarray(arr), 10, np.random.default_rng(0), scale=(1.0, 1.0), flip_probability=1.0)
    )
    assert out[:, -1].mean() > 200 and out[:, 0].mean() < 50  # flipped left-right


# ---- bad inputs --------------------------------------------------------------------------------------------------


def test_class_with_fewer_than_k_images_samples_with_replacement(caplog):
    labels = [0] * 5 + [1] * 2
    with caplog.at_level(logging.WARNING):
        idx = ape.sample_few_shot(labels, 4, 2, seed=0)
    assert len(idx) == 8 and all(labels[i] == 1 for i in idx[4:])
    assert "with replacement" in caplog.text


def test_empty_class_and_empty_support_set(tiny):
    with pytest.raises(ValueError, match="Class 2 has no image"):
        ape.sample_few_shot([0, 1, 1], 1, 3)
    with pytest.raises(ValueError, match="support set is empty"):
        ape.extract_features(tiny["backbone"], tiny["processor"], [], [], CLASSES, tiny["images"][:2], [0, 1], 2)


def test_label_names_must_match_descriptions(tiny, tmp_path):
    path = tmp_path / "cupl.json"
    path.write_text(json.dumps({"red square": ["a red box"], "green circle": ["a green disc"], "yellow": ["x"]}))
    with pytest.raises(ValueError, match=r"missing \['blue bar'\], unknown \['yellow'\]"):
        ape.build_text_classifier(
            tiny["backbone"], tiny["processor"].tokenizer, CLASSES, descriptions=ape.load_descriptions(path)
        )


def test_base_without_feature_methods():
    config = APEConfig(feature_dim=4, num_cache_entries=0, id2label={0: "a", 1: "b"})
    with pytest.raises(TypeError, match="get_image_features"):
        APEForImageClassification(config, backbone=torch.nn.Linear(3, 4))


def test_q_larger_than_feature_dim(tiny):
    with pytest.raises(ValueError, match="feat_num_training_free"):
        APEConfig(feature_dim=16, feat_num_training_free=17)
    with pytest.raises(ValueError, match=r"\[1, feature_dim = 16\]"):
        ape.build_adapter(tiny["features"], "ape", tiny["backbone"], feat_num_training_free=17)


def test_unknown_method_and_missing_base():
    with pytest.raises(ValueError, match="method must be one of"):
        APEConfig(method="tip")
    model = APEForImageClassification(APEConfig(feature_dim=4, id2label={0: "a", 1: "b"}))
    with pytest.raises(ValueError, match="names no base model"):
        model(pixel_values=torch.zeros(1, 3, 8, 8))


def test_export_reloads_with_and_without_clipzoo(tiny, tmp_path):
    from clipzoo.hub import export
    from clipzoo.remote_check import remote_code_outputs

    model = ape.build_adapter(
        tiny["features"], "ape", tiny["backbone"], feat_num_training_free=8, search_step=[10, 5, 4]
    )
    out = export(model, tmp_path / "export", processor=ape.ape_image_processor(tiny["processor"]))
    card = (out / "README.md").read_text()
    assert "Adaptive Prior Refinement" in card and "2304.01195" in card
    assert not any(k.startswith(("vision_model", "text_model")) for k in load_file(out / "model.safetensors"))
    pixels = tiny["processor"](images=tiny["images"][:3], return_tensors="pt")["pixel_values"]
    expected = model(pixel_values=pixels).logits
    local = AutoModelForImageClassification.from_pretrained(out)
    torch.testing.assert_close(local(pixel_values=pixels).logits, expected)
    remote, class_path = remote_code_outputs(
        out, {"pixel_values": pixels}, ["logits"], "AutoModelForImageClassification"
    )
    assert "APEForImageClassification" in class_path and "clipzoo" not in class_path
    torch.testing.assert_close(remote["logits"], expected)


@pytest.mark.slow
def test_train_and_evaluate_hooks_on_fashion_mnist(tiny, tmp_path):
    from pathlib import Path

    from clipzoo.data.fashion_mnist import FASHION_MNIST_ROOT

    if not Path(FASHION_MNIST_ROOT).is_dir():
        pytest.skip("Fashion-MNIST (dataset-fashion-mnist) is not installed")
    overrides = {
        "model": {"backbone": str(tiny["base_dir"]), "shots": 2, "config": {"augment_epochs": 1, "train_epochs": 2}},
        "data": {"classes": [1, 3], "val_per_class": 4, "test_samples": 20},
    }
    out = ape.train("ape_t_fashion_mnist", tmp_path / "ape_t", overrides)
    result = ape.evaluate(out)
    assert result["method"] == "ape_t" and result["num_samples"] == 20 and 0 <= result["accuracy"] <= 1
    assert result["trainable_parameters"] == 2 * round(0.8 * 16) + 4


def test_best_epoch_is_the_first_best_on_validation():
    model = torch.nn.Linear(2, 1, bias=False)
    keeper = ape._BestEpoch()
    for epoch, accuracy in enumerate([0.5, 0.7, 0.7, 0.6]):
        with torch.no_grad():
            model.weight.fill_(epoch)
        keeper.on_evaluate(None, None, None, metrics={"eval_accuracy": accuracy}, model=model)
    keeper.restore(model)
    assert model.weight.unique().tolist() == [1.0]


def test_siglip_base(tiny):
    from transformers import SiglipConfig, SiglipModel

    tower = {"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_hidden_layers": 1}
    config = SiglipConfig(
        text_config={**tower, "vocab_size": 300, "max_position_embeddings": 16},
        vision_config={**tower, "image_size": 32, "patch_size": 8},
    )
    torch.manual_seed(0)
    siglip = SiglipModel(config).eval()
    images, labels = tiny["images"], tiny["labels"]
    feats = ape.extract_features(
        siglip, tiny["processor"], images[::4], labels[::4], CLASSES, images[1::4], labels[1::4], 2, augment_epochs=1
    )
    model = ape.build_adapter(feats, "ape", siglip, feat_num_training_free=8, search_step=[5, 5, 2])
    pixels = tiny["processor"](images=images[:2], return_tensors="pt")["pixel_values"]
    assert model(pixel_values=pixels).logits.shape == (2, 3)


def test_label_names_must_match_the_adapter(tiny):
    model = ape.build_adapter(tiny["features"], "zero_shot", tiny["backbone"])
    ape.check_label_names(model, CLASSES)
    with pytest.raises(ValueError, match="adapter classifies"):
        ape.check_label_names(model, list(reversed(CLASSES)))
