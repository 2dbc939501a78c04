"""`clipzoo demo`: the main job on the embedded default, end to end, offline, on CPU.

Stages: generate ShapesWorld -> pretrain (or reuse) the tiny backbone -> evaluate it -> export it -> reload the export
with `AutoModel` in this process and with `trust_remote_code=True` in a clean process where clipzoo cannot be imported
-> the same for every VARIANTS row that has a `demo` hook -> a summary table.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging

from clipzoo.backbone import BACKBONE_CARD


logger = logging.get_logger(__name__)

__all__ = ["run_demo"]


def _reload_backbone_export(folder: Path, processor) -> dict[str, Any]:
    from PIL import Image
    from transformers import AutoModel

    from clipzoo.remote_check import remote_code_outputs

    image = Image.new("RGB", (64, 64), (200, 30, 30))
    inputs = processor(images=[image], text=["a red circle", "a blue square"], padding=True, return_tensors="pt")
    inputs = {k: v for k, v in inputs.items()}
    model = AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        local = model(**inputs)["logits_per_image"]
    remote, class_path = remote_code_outputs(folder, inputs, ["logits_per_image"])
    diff = float((remote["logits_per_image"] - local).abs().max())
    if diff > 1e-5:
        raise RuntimeError(f"Reloaded export disagrees with the in-process model (max |diff| = {diff}).")
    return {"reload_max_abs_diff": diff, "remote_class": class_path}


def _backbone_stage(out: Path, backbone: Path | None) -> dict[str, Any]:
    from clipzoo.backbone import ensure_backbone, evaluate_backbone, load_backbone
    from clipzoo.data.shapesworld import save_shapesworld
    from clipzoo.hub import export

    save_shapesworld("captions", out / "data" / "shapesworld-captions", 256, seed=0)
    backbone_dir = ensure_backbone(backbone)
    metrics = evaluate_backbone(backbone_dir)
    eval_results = [
        {
            "task_type": "zero-shot-image-classification",
            "dataset_type": "shapesworld",
            "dataset_name": "ShapesWorld classification (generated, seed 12345)",
            "dataset_split": "test",
            "metric_type": "accuracy",
            "metric_name": "Zero-shot top-1 accuracy",
            "metric_value": round(metrics["zero_shot_accuracy"], 4),
        }
    ]
    folder = export(
        backbone_dir,
        out / "export" / "backbone",
        slug="backbone",
        card=BACKBONE_CARD,
        overwrite=True,
        eval_results=eval_results,
    )
    _, processor = load_backbone(backbone_dir)
    return {"model": str(backbone_dir), **metrics, **_reload_backbone_export(folder, processor)}


def run_demo(out: str | Path = "demo_out", backbone: str | Path | None = None, only: list[str] | None = None) -> dict:
    """Runs every stage, prints a summary table, writes `out/summary.json` and returns the summary."""
    from clipzoo.variants import _load, resolve_hook

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, dict[str, Any]] = {}
    start = time.perf_counter()
    stages = ["backbone"] + [slug for slug, row in sorted(_load().items()) if row.demo]
    for stage in stages:
        if only and stage not in only:
            continue
        t0 = time.perf_counter()
        logger.warning(f"clipzoo demo: stage {stage!r}")
        if stage == "backbone":
            result = _backbone_stage(out, Path(backbone) if backbone else None)
        else:
            from clipzoo.backbone import ensure_backbone

            result = resolve_hook(_load()[stage].demo)(out / stage, ensure_backbone(backbone))
        result["seconds"] = round(time.perf_counter() - t0, 1)
        summary[stage] = result
    summary["total_seconds"] = {"seconds": round(time.perf_counter() - start, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    _print_table(summary)
    return summary


def _print_table(summary: dict[str, dict[str, Any]]) -> None:
    lines = ["", "clipzoo demo summary", "=" * 72]
    for stage, result in summary.items():
        shown = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in result.items()
            if isinstance(v, (int, float, str)) and k not in ("model", "remote_class")
        )
        lines.append(f"{stage:<12} {shown}")
    lines.append("=" * 72)
    print("\n".join(lines))


# ---------------------------------------------------------------------------------------------------------------------
# Variant stages: train (shortened recipe) -> evaluate -> export -> reload in-process and as remote code, compared.
# ---------------------------------------------------------------------------------------------------------------------


def _reload_and_compare(folder: Path, inputs: dict, output_key: str, auto_class: str = "AutoModel") -> dict[str, Any]:
    import transformers

    from clipzoo.remote_check import remote_code_outputs

    model = getattr(transformers, auto_class).from_pretrained(folder).eval()
    with torch.no_grad():
        local = model(**inputs)[output_key]
    remote, class_path = remote_code_outputs(folder, inputs, [output_key], auto_class)
    diff = float((remote[output_key] - local).abs().max())
    if diff > 1e-4:
        raise RuntimeError(f"Remote-code reload of {folder} disagrees with the in-process model (|diff| = {diff}).")
    return {"reload_max_abs_diff": diff, "remote_class": class_path}


def _train_evaluate_export(slug: str, work: Path, recipe: str, overrides: dict, eval_kwargs: dict, eval_row: dict):
    from clipzoo.hub import export
    from clipzoo.variants import get_variant, resolve_hook

    row = get_variant(slug)
    model_dir = resolve_hook(row.train)(recipe, output_dir=work / "model", overrides=overrides)
    metrics = resolve_hook(row.evaluate)(model_dir, **eval_kwargs)
    value = metrics
    for key in eval_row.pop("path"):
        value = value[key]
    eval_results = [{**eval_row, "metric_value": round(float(value), 4)}]
    folder = export(model_dir, work / "export", overwrite=True, eval_results=eval_results)
    return Path(model_dir), folder, metrics, float(value)


def demo_ape(work: Path, backbone: Path) -> dict[str, Any]:
    """APE (training-free) on ShapesWorld's held-out classes with the backbone, then export and reload."""
    from transformers import AutoImageProcessor

    from clipzoo.data.shapesworld import shapesworld

    _, folder, metrics, value = _train_evaluate_export(
        "ape",
        work,
        "ape_shapesworld",
        {"model": {"backbone": str(backbone)}},
        {"num_samples": 500},
        {
            "path": ["accuracy"],
            "task_type": "image-classification",
            "dataset_type": "shapesworld",
            "dataset_name": "ShapesWorld held-out classes, 16-shot",
            "dataset_split": "test",
            "metric_type": "accuracy",
            "metric_name": "Top-1 accuracy",
        },
    )
    images = list(shapesworld("classification", 2, seed=7, split="heldout")["image"])
    pixels = AutoImageProcessor.from_pretrained(folder)(images=images, return_tensors="pt")["pixel_values"]
    reload = _reload_and_compare(folder, {"pixel_values": pixels}, "logits", "AutoModelForImageClassification")
    return {"accuracy_16shot": value, "num_classes": metrics["num_classes"], **reload}


def demo_clip_fsar(work: Path, backbone: Path) -> dict[str, Any]:
    """CLIP-FSAR on ShapesWorld-Actions (a few episodic steps), 5-way 1-shot test episodes, export and reload."""
    from transformers import AutoConfig

    overrides = {
        "model": {"backbone": str(backbone), "ffn_dim": 256},
        "data": {"videos_per_class": 12, "val_episodes": 10},
        "training": {"max_steps": 6, "gradient_accumulation_steps": 2, "eval_steps": 6, "save_steps": 6,
                     "logging_steps": 2, "warmup_steps": 1},
    }  # fmt: skip
    _, folder, metrics, value = _train_evaluate_export(
        "clip_fsar",
        work,
        "clip_fsar_shapesworld",
        overrides,
        {"num_samples": 50},
        {
            "path": ["1-shot", "accuracy"],
            "task_type": "video-classification",
            "dataset_type": "shapesworld-actions",
            "dataset_name": "ShapesWorld-Actions held-out actions, 5-way 1-shot",
            "dataset_split": "test",
            "metric_type": "accuracy",
            "metric_name": "Episode accuracy",
        },
    )
    config = AutoConfig.from_pretrained(folder)
    size = config.vision_config.image_size
    g = torch.Generator().manual_seed(0)
    inputs = {
        "support_pixel_values": torch.randn(2, config.num_frames, 3, size, size, generator=g),
        "support_labels": torch.tensor([0, 1]),
        "support_class_ids": torch.tensor([0, 1]),
        "pixel_values": torch.randn(2, config.num_frames, 3, size, size, generator=g),
    }
    reload = _reload_and_compare(folder, inputs, "logits_per_video")
    return {"accuracy_5way_1shot": value, "episodes": metrics["num_episodes"], **reload}


def demo_groupvit(work: Path, backbone: Path) -> dict[str, Any]:
    """GroupViT from scratch on ShapesWorld captions (shortened), zero-shot segmentation, export and reload."""
    from transformers import AutoProcessor

    from clipzoo.data.shapesworld import shapesworld

    overrides = {"data": {"num_train": 2000}, "training": {"max_steps": 150, "logging_steps": 50, "save_steps": 1000}}
    _, folder, metrics, value = _train_evaluate_export(
        "groupvit",
        work,
        "groupvit_shapesworld",
        overrides,
        {"num_samples": 40},
        {
            "path": ["segmentation", "mean_iou"],
            "task_type": "image-segmentation",
            "dataset_type": "shapesworld",
            "dataset_name": "ShapesWorld segmentation (generated)",
            "dataset_split": "test",
            "metric_type": "mean_iou",
            "metric_name": "Zero-shot mIoU",
        },
    )
    processor = AutoProcessor.from_pretrained(folder)
    rows = shapesworld("captions", 2, seed=7)
    inputs = processor(images=list(rows["image"]), text=list(rows["caption"]), padding=True, return_tensors="pt")
    inputs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "pixel_values")}
    reload = _reload_and_compare(folder, inputs, "logits_per_image")
    return {
        "mean_iou": value,
        "mean_iou_all_background": metrics["baseline_all_background"]["mean_iou"],
        "mean_iou_top1_class": metrics["baseline_top1_class"]["mean_iou"],
        "zero_shot_accuracy": metrics["zero_shot_classification_accuracy"],
        **reload,
    }
