"""CLIP-FSAR training through the Trainer, evaluation over seeded episodes, and single-video classification."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

from clipzoo.data.shapesworld import ACTIONS
from clipzoo.processing.tokenization_offline import build_offline_tokenizer
from clipzoo.training import clip_fsar


REAL_VIDEO = Path(__file__).parent / "data" / "bigbuckbunny_24f.mp4"


@pytest.fixture(scope="module")
def backbone_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("backbone")
    tokenizer = build_offline_tokenizer([f"a photo of {a}" for a in ACTIONS], vocab_size=300, model_max_length=16)
    tower = {"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_hidden_layers": 1}
    config = CLIPConfig(
        text_config={**tower, "vocab_size": len(tokenizer), "max_position_embeddings": 16, "bos_token_id": 0,
                     "eos_token_id": 1, "pad_token_id": 2},
        vision_config={**tower, "image_size": 16, "patch_size": 8}, projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(path)
    CLIPProcessor(image_processor=CLIPImageProcessorPil(), tokenizer=tokenizer).save_pretrained(path)
    return path


RECIPE = """
model: {{backbone: {backbone}, ffn_dim: 32, num_attention_heads: 2, video_text_loss_weight: 1.5}}
data: {{num_frames: 4, shortest_edge: 16, crop_size: 16, image_size: 16, videos_per_class: 3, n_way: 2, k_shot: 1,
        q_query: 1, val_episodes: 2, test_episodes: 4}}
optim: {{official: true, lr_decay_steps: [1]}}
training: {{max_steps: 2, per_device_train_batch_size: 1, per_device_eval_batch_size: 1,
           gradient_accumulation_steps: 2, learning_rate: 1.0e-3, eval_strategy: steps, eval_steps: 2,
           save_strategy: "no", logging_steps: 1, report_to: none, use_cpu: true}}
"""


@pytest.fixture(scope="module")
def trained_dir(backbone_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("train")
    recipe = work / "recipe.yaml"
    recipe.write_text(RECIPE.format(backbone=backbone_dir))
    return clip_fsar.train(recipe, work / "out")


def test_train_saves_model_processor_and_data_args(trained_dir):
    from clipzoo.modeling.modeling_clip_fsar import ClipzooCLIPFSARModel

    assert (trained_dir / "model.safetensors").is_file()
    assert json.loads((trained_dir / clip_fsar.DATA_FILE).read_text())["n_way"] == 2
    model = ClipzooCLIPFSARModel.from_pretrained(trained_dir)
    seen = clip_fsar.build_episodes(clip_fsar.CLIPFSARDataArguments(videos_per_class=2), "val", 1).class_names
    assert model.config.class_names == seen
    assert model.class_text_embeds.abs().sum() > 0


def test_evaluate_reports_mean_and_ci_per_shot(trained_dir):
    result = clip_fsar.evaluate(trained_dir, num_samples=4, k_shots=[1, 2])
    for shot in ("1-shot", "2-shot"):
        assert 0.0 <= result[shot]["accuracy"] <= 1.0 and result[shot]["ci95"] >= 0.0
    assert result["num_episodes"] == 4


def test_cached_features_give_the_per_episode_forward_logits(trained_dir):
    from clipzoo.modeling.modeling_clip_fsar import ClipzooCLIPFSARModel
    from clipzoo.processing.processing_clip_fsar import ClipzooCLIPFSARProcessor

    model = ClipzooCLIPFSARModel.from_pretrained(trained_dir).eval()
    tokenizer = ClipzooCLIPFSARProcessor.from_pretrained(trained_dir).tokenizer
    args = clip_fsar.CLIPFSARDataArguments(**json.loads((trained_dir / clip_fsar.DATA_FILE).read_text()))
    dataset = clip_fsar.build_episodes(args, "test", 3)
    table = clip_fsar.class_table(model, tokenizer, dataset.class_names)
    with torch.no_grad():
        clips = np.stack([dataset.processor.process_video(v, False) for v in dataset.videos])
        features = model.get_video_features(torch.from_numpy(clips))  # what evaluate_episodes caches
        queries = model.temporal_transformer(features)
        for index in range(3):
            episode, item = dataset.episode(index), dataset[index]
            cached, _, _ = model.episode_logits(
                queries[list(episode.query_indices)], features[list(episode.support_indices)],
                item["support_labels"], table[item["support_class_ids"]], 2, query_modulated=True,
            )  # fmt: skip
            torch.testing.assert_close(cached, model(**item, class_text_embeds=table).logits_per_video)
    assert clip_fsar.evaluate_episodes(model, dataset, table)["num_episodes"] == 3


def test_official_optimizer_and_schedule():
    model = torch.nn.Module()
    model.fc = torch.nn.Linear(2, 2)
    model.layer_norm1 = torch.nn.LayerNorm(2)
    model.pre_layrnorm = torch.nn.LayerNorm(2)
    optimizer = clip_fsar.official_optimizer(model, 1e-3, 1e-3)
    assert isinstance(optimizer, torch.optim.Adam) and not isinstance(optimizer, torch.optim.AdamW)
    decayed, exempt = optimizer.param_groups
    assert decayed["weight_decay"] == 1e-3 and len(decayed["params"]) == 2 and len(exempt["params"]) == 4
    schedule = clip_fsar.step_schedule(optimizer, warmup_steps=4, warmup_start_factor=0.2, decay_steps=[6, 8])
    factors = []
    for _ in range(10):
        factors.append(optimizer.param_groups[0]["lr"] / 1e-3)
        optimizer.step()
        schedule.step()
    np.testing.assert_allclose(factors, [0.2, 0.4, 0.6, 0.8, 1, 1, 0.1, 0.1, 0.01, 0.01], rtol=1e-6)


def test_classify_video_with_real_clip(trained_dir, tmp_path):
    for name in ("move left", "grow"):
        (tmp_path / "support" / name).mkdir(parents=True)
        shutil.copy(REAL_VIDEO, tmp_path / "support" / name / "a.mp4")
    (tmp_path / "support" / "grow" / "broken.mp4").write_bytes(b"garbage")
    result = clip_fsar.classify_video(REAL_VIDEO, tmp_path / "support", trained_dir)
    assert result["label"] in ("move left", "grow")
    assert abs(sum(result["scores"].values()) - 1) < 1e-5
    assert result["skipped_support_videos"] == 1
    (tmp_path / "one").mkdir()
    with pytest.raises(ValueError, match="at least 2 classes"):
        clip_fsar.classify_video(REAL_VIDEO, tmp_path / "one", trained_dir)


def test_train_rejects_batched_episodes(backbone_dir, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        RECIPE.format(backbone=backbone_dir).replace(
            "per_device_train_batch_size: 1", "per_device_train_batch_size: 2"
        )
    )
    with pytest.raises(ValueError, match="one episode"):
        clip_fsar.train(recipe, tmp_path / "out")


@pytest.mark.slow
def test_train_with_compiled_otam(backbone_dir, tmp_path):
    # Real torch.compile inside Trainer steps and validation episodes (about a minute of compilation on a CPU).
    from clipzoo.modeling import alignment

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(backbone=backbone_dir))
    before = alignment._compiled_row_kernels.cache_info()
    out = clip_fsar.train(recipe, tmp_path / "out", {"model": {"otam_compile": True}})
    after = alignment._compiled_row_kernels.cache_info()
    assert after.hits + after.misses > before.hits + before.misses  # the compiled kernels ran
    assert "otam_compile" not in json.loads((Path(out) / "config.json").read_text())  # runtime only
    assert 0.0 <= clip_fsar.evaluate(out, num_samples=4)["1-shot"]["accuracy"] <= 1.0
