"""The training harness: a 2-step smoke run, and exact resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file


TINY = {
    "model": {
        "image_size": 32,
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "projection_dim": 16,
        "vocab_size": 300,
        "max_text_length": 16,
    },
    "data": {"num_train": 64, "num_eval": 16},
    "training": {
        "max_steps": 12,
        "save_steps": 4,
        "save_total_limit": 5,
        "per_device_train_batch_size": 8,
        "logging_steps": 4,
        "warmup_steps": 0,
        "disable_tqdm": True,
    },
}

SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys
    from transformers import TrainerCallback
    import clipzoo.training.trainer as trainer_module
    from clipzoo.backbone import pretrain_backbone

    kill_at = int(os.environ.get("KILL_AT_STEP", "0"))

    class Killer(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if kill_at and state.global_step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    original_init = trainer_module.ClipzooTrainer.__init__

    def init_with_killer(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.add_callback(Killer())

    trainer_module.ClipzooTrainer.__init__ = init_with_killer
    pretrain_backbone(sys.argv[1], overrides=json.loads(sys.argv[2]))
    """
)


def _train(out_dir, kill_at=0):
    env = {**os.environ, "KILL_AT_STEP": str(kill_at)}
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out_dir), json.dumps(TINY)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_two_step_smoke_run_lowers_nothing_to_nan(tmp_path):
    from clipzoo.backbone import pretrain_backbone

    overrides = {**TINY, "training": {**TINY["training"], "max_steps": 2, "save_steps": 100}}
    out = pretrain_backbone(tmp_path / "bb", overrides=overrides)
    weights = load_file(out / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert json.loads((out / "clipzoo_backbone.json").read_text())["global_step"] == 2


def test_resume_after_sigkill_is_bit_identical(tmp_path):
    straight = _train(tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]

    killed = _train(tmp_path / "resumed", kill_at=6)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    checkpoints = sorted(os.listdir(tmp_path / "resumed" / "trainer"))
    assert checkpoints == ["checkpoint-4"], checkpoints
    assert not (tmp_path / "resumed" / "model.safetensors").exists()

    resumed = _train(tmp_path / "resumed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # The weights did move away from the checkpoint the run resumed from.
    c4 = load_file(tmp_path / "resumed" / "trainer" / "checkpoint-4" / "model.safetensors")
    assert any(not torch.equal(c4[k], b[k]) for k in b)


@pytest.mark.parametrize("caption", ["", "   "])
def test_empty_caption_is_named(caption):
    from PIL import Image

    from clipzoo.training.collators import ImageTextCollator

    collator = ImageTextCollator(processor=None, max_length=8)
    rows = [
        {"image": Image.new("RGB", (8, 8)), "caption": "ok"},
        {"image": Image.new("RGB", (8, 8)), "caption": caption},
    ]
    with pytest.raises(ValueError, match="Caption 1 of the batch is empty"):
        collator(rows)
