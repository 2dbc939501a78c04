"""The `clipzoo` command: bad input gives one clear line and exit status 2."""

import json
import subprocess
import sys

import pytest

from clipzoo.cli import build_parser, main


def _run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_unknown_slug(capsys, tmp_path):
    code, _, err = _run(["train", "nope", "--output-dir", str(tmp_path)], capsys)
    assert code == 2 and "Unknown variant 'nope'" in err


def test_unknown_slug_for_evaluate(capsys):
    code, _, err = _run(["evaluate", "nope"], capsys)
    assert code == 2 and "Unknown variant 'nope'" in err


def test_unknown_recipe_for_backbone(capsys, tmp_path):
    code, _, err = _run(["pretrain-backbone", "--out", str(tmp_path), "--recipe", "nope"], capsys)
    assert code == 2 and "Unknown recipe 'nope'" in err


def test_missing_backbone_names_the_command(capsys, tmp_path):
    code, _, err = _run(["evaluate", "backbone", "--model", str(tmp_path / "none")], capsys)
    assert code == 2 and "clipzoo pretrain-backbone" in err


def test_unknown_task_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["data", "shapesworld", "--task", "nope", "--out", "x"])
    assert exc.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_data_command_writes_a_dataset(capsys, tmp_path):
    from datasets import load_from_disk

    code, out, _ = _run(
        ["data", "shapesworld", "--task", "captions", "--out", str(tmp_path / "d"), "--num-samples", "12"], capsys
    )
    assert code == 0 and json.loads(out)["num_samples"] == 12
    assert len(load_from_disk(str(tmp_path / "d"))) == 12


def test_console_script_help_runs():
    proc = subprocess.run([sys.executable, "-m", "clipzoo.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "pretrain-backbone" in proc.stdout


def test_export_into_non_empty_folder_needs_overwrite(capsys, tmp_path, tiny_backbone_dir):
    out = tmp_path / "export"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    code, _, err = _run(["export", "--model", str(tiny_backbone_dir), "--out", str(out), "--slug", "backbone"], capsys)
    assert code == 2 and "--overwrite" in err
    assert (out / "keep.txt").read_text() == "user data"


def test_push_offline_fails_fast_with_a_clear_message(capsys, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    code, _, err = _run(["push", "--folder", str(tmp_path), "--repo-id", "me/x"], capsys)
    assert code == 2 and "offline" in err.lower()


def test_train_and_evaluate_ape_with_a_backbone_flag(capsys, tmp_path, tiny_backbone_dir):
    code, out, err = _run(["train", "ape", "--recipe", "ape_shapesworld", "--backbone", str(tiny_backbone_dir),
                           "--output-dir", str(tmp_path / "ape")], capsys)  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["model"] == str(tmp_path / "ape")
    code, out, err = _run(["evaluate", "ape", "--model", str(tmp_path / "ape"), "--num-samples", "50"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["num_samples"] == 50 and result["num_classes"] == 14 and 0.0 <= result["accuracy"] <= 1.0


def test_segment_writes_an_overlay_and_rejects_bad_labels(capsys, tmp_path, monkeypatch):
    from PIL import Image

    from clipzoo.training.groupvit import GroupViTModelArguments, build_model_and_processor

    tiny = {
        "image_size": 32, "patch_size": 8, "hidden_size": 32, "depths": [1, 1, 1], "num_group_tokens": [8, 4, 0],
        "num_output_groups": [8, 4, 4], "num_attention_heads": 2, "text_hidden_size": 32, "text_layers": 1,
        "text_heads": 2, "projection_dim": 16, "projection_intermediate_dim": 32, "vocab_size": 300,
        "max_text_length": 16,
    }  # fmt: skip
    model, processor = build_model_and_processor(GroupViTModelArguments(**tiny))
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    image = tmp_path / "in.png"
    Image.new("RGB", (50, 40), (200, 20, 20)).save(image)
    out = tmp_path / "overlay.png"
    argv = ["segment", str(image), "--model", str(tmp_path / "model"), "--labels", "circle,square", "--out", str(out)]
    code, stdout, _ = _run(
        [*argv, "--short-side", "64", "--crop-size", "32", "--stride", "16", "--assignment", "hard"], capsys
    )
    assert code == 0 and json.loads(stdout) == str(out)
    assert Image.open(out).size == (50, 40)
    code, _, err = _run([*argv[:-3], "circle,circle", "--out", str(out)], capsys)
    assert code == 2 and "duplicates" in err
    # --no-background-threshold: the labels are all prompted (background included) and no threshold applies.
    import clipzoo.training.groupvit as groupvit

    seen, real = {}, groupvit.segment
    monkeypatch.setattr(groupvit, "segment", lambda *a, **kw: seen.update(kw) or real(*a, **kw))
    code, _, _ = _run([*argv[:-3], "background,circle", "--out", str(out), "--no-background-threshold"], capsys)
    assert code == 0 and seen["with_background"] is False and Image.open(out).size == (50, 40)
    code, _, err = _run([*argv[:1], str(tmp_path / "missing.png"), *argv[2:]], capsys)
    assert code == 2 and "missing.png" in err
