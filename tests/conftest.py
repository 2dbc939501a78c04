"""Test-wide settings: offline, a private HF_HOME, and a small CPU thread budget."""

import os
import tempfile


_HF_HOME = tempfile.mkdtemp(prefix="clipzoo-hf-home-")
for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_EVALUATE_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HOME": _HF_HOME,
    "HF_DATASETS_CACHE": os.path.join(_HF_HOME, "datasets"),
    "CLIPZOO_CACHE": os.path.join(_HF_HOME, "clipzoo"),
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ[_key] = _value


import pytest  # noqa: E402


TINY_BACKBONE_OVERRIDES = {
    "model": {
        "image_size": 32,
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "projection_dim": 16,
        "vocab_size": 300,
        "max_text_length": 24,
    },
    "data": {"num_train": 128, "num_eval": 16},
    "training": {"max_steps": 8, "save_steps": 100, "per_device_train_batch_size": 16, "disable_tqdm": True},
}


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory):
    """A tiny CLIP pretrained for a few steps with the real harness (`clipzoo.backbone.pretrain_backbone`)."""
    from clipzoo.backbone import pretrain_backbone

    return pretrain_backbone(tmp_path_factory.mktemp("backbone") / "tiny", overrides=TINY_BACKBONE_OVERRIDES)
