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
