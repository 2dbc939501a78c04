"""`clipzoo demo`, backbone stage: data -> backbone -> evaluate -> export -> reload (in-process and remote code)."""

import json

from clipzoo.demo import run_demo


def test_demo_backbone_stage_end_to_end(tmp_path, tiny_backbone_dir, capsys):
    summary = run_demo(tmp_path / "demo", backbone=tiny_backbone_dir, only=["backbone"])
    stage = summary["backbone"]
    assert 0.0 <= stage["zero_shot_accuracy"] <= 1.0 and stage["num_classes"] > 1
    assert stage["reload_max_abs_diff"] <= 1e-5
    assert stage["remote_class"].startswith("transformers.")
    assert (tmp_path / "demo" / "export" / "backbone" / "README.md").is_file()
    assert json.loads((tmp_path / "demo" / "summary.json").read_text())["backbone"]["num_classes"] > 1
    assert "clipzoo demo summary" in capsys.readouterr().out


def test_backbone_eval_via_cli(tiny_backbone_dir, capsys):
    from clipzoo.cli import main

    assert main(["evaluate", "backbone", "--model", str(tiny_backbone_dir), "--num-samples", "42"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_samples"] == 42 and abs(result["chance"] - 1 / result["num_classes"]) < 1e-9


def test_remote_check_accepts_a_relative_folder(tmp_path, tiny_backbone_dir, monkeypatch):
    """`clipzoo demo` writes to the relative `demo_out/`; the clean subprocess runs elsewhere."""
    import shutil

    import torch

    from clipzoo.remote_check import remote_code_outputs

    shutil.copytree(tiny_backbone_dir, tmp_path / "bb", ignore=shutil.ignore_patterns("trainer"))
    monkeypatch.chdir(tmp_path)
    inputs = {"input_ids": torch.tensor([[0, 5, 1]]), "pixel_values": torch.zeros(1, 3, 32, 32)}
    outputs, class_path = remote_code_outputs("bb", inputs, ["logits_per_image"])
    assert outputs["logits_per_image"].shape == (1, 1) and class_path.startswith("transformers.")
