"""CLIP-FSAR export: weights, processor (video processor + tokenizer) and card; reload with and without clipzoo."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import torch
import transformers
from safetensors.torch import save_file

from clipzoo import hub
from clipzoo.variants import get_variant


ROW = get_variant("clip_fsar")

LOADER = textwrap.dedent(
    """
    import importlib.abc, json, sys
    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "clipzoo" or name.startswith("clipzoo."):
                raise ModuleNotFoundError(name)
    sys.meta_path.insert(0, _Block())
    import numpy as np, torch
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoProcessor
    folder, expected_path = sys.argv[1], sys.argv[2]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    rng = np.random.default_rng(0)
    videos = [rng.integers(0, 256, (6, 20, 20, 3), dtype=np.uint8) for _ in range(3)]
    inputs = processor(videos=videos[:1], support_videos=videos[1:], support_labels=["grow", "move left"])
    inputs.pop("class_names")
    with torch.no_grad():
        logits = model(**inputs).logits_per_video
    torch.testing.assert_close(logits, load_file(expected_path)["logits"])
    print("OK", type(model).__name__, type(processor).__name__)
    """
)


def test_export_and_reload_with_and_without_clipzoo(tmp_path):
    torch.manual_seed(0)
    model = ROW.model_class(ROW.tiny_config()).eval()
    processor = ROW.tiny_processor()
    model.save_pretrained(tmp_path / "trained")
    processor.save_pretrained(tmp_path / "trained")
    eval_rows = [{"task_type": "video-classification", "dataset_type": "shapesworld-actions",
                  "dataset_name": "ShapesWorld-Actions 5-way 1-shot", "dataset_split": "test",
                  "metric_type": "accuracy", "metric_name": "Accuracy", "metric_value": 0.5}]  # fmt: skip
    out = hub.export(tmp_path / "trained", tmp_path / "export", eval_results=eval_rows)
    assert (out / "modeling_clip_fsar.py").is_file() and (out / "alignment.py").is_file()
    card = (out / "README.md").read_text()
    assert "OTAM" in card and "validation" in card and "61.9" in card

    rng = np.random.default_rng(0)
    videos = [rng.integers(0, 256, (6, 20, 20, 3), dtype=np.uint8) for _ in range(3)]
    inputs = processor(videos=videos[:1], support_videos=videos[1:], support_labels=["grow", "move left"])
    inputs.pop("class_names")
    with torch.no_grad():
        expected = model(**inputs).logits_per_video
    save_file({"logits": expected.contiguous()}, tmp_path / "expected.safetensors")

    import clipzoo  # noqa: F401

    reloaded = transformers.AutoModel.from_pretrained(out).eval()
    reloaded_processor = transformers.AutoProcessor.from_pretrained(out)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits_per_video, expected)
    assert type(reloaded_processor).__name__ == "ClipzooCLIPFSARProcessor"

    (tmp_path / "load.py").write_text(LOADER)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(tmp_path / "load.py"), str(out), str(tmp_path / "expected.safetensors")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("OK ClipzooCLIPFSARModel ClipzooCLIPFSARProcessor")
    assert "AutoModel" in json.loads((out / "config.json").read_text())["auto_map"]
