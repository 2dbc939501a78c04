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

    out = Path(out)
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
