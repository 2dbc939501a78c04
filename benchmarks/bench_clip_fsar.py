"""ShapesWorld-Actions benchmark: CLIP-FSAR against its ablations at equal training.

Variants (same backbone, episodes, optimiser, steps and seeds):
  clip_fsar            prototype modulation + video-text loss + OTAM (the method)
  no_video_text        CLIP-FSAR without the video-text loss
  otam_no_modulation   OTAM on CLIP frame features with the video-text loss, no prototype modulation
  frame_mean_cosine    order-blind baseline: cosine between frame-averaged query and class prototype, no text

Each is trained 5-way 1-shot on the seen actions and tested 5-way 1-shot and 5-shot (1 query per class) on the
held-out actions over seeded episodes; selection on validation episodes of the seen actions. Writes a JSON file and
prints a Markdown table.

    python benchmarks/bench_clip_fsar.py [--backbone DIR] [--max-steps 60] [--accumulation 4] [--test-episodes 2000]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from clipzoo.training import clip_fsar


VARIANTS = {
    "clip_fsar": {},
    "no_video_text": {"video_text_loss_weight": 0.0},
    "otam_no_modulation": {"use_prototype_modulation": False},
    "frame_mean_cosine": {"metric": "frame_mean_cosine", "use_prototype_modulation": False,
                          "video_text_loss_weight": 0.0},
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default=None, help="HF CLIP folder; default: the cached ShapesWorld backbone")
    parser.add_argument("--image-size", type=int, default=None, help="default: the backbone's image size")
    parser.add_argument("--max-steps", type=int, default=60)
    parser.add_argument("--accumulation", type=int, default=4)
    parser.add_argument("--queries", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--test-episodes", type=int, default=2000)
    parser.add_argument("--val-episodes", type=int, default=50)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--retrain", action="store_true", help="retrain variants already trained in --out")
    parser.add_argument("--out", default="benchmarks/results/clip_fsar_shapesworld")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids spin-wait on busy machines)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    if args.backbone is None:
        from clipzoo.backbone import ensure_backbone

        args.backbone = str(ensure_backbone())
    from transformers import AutoConfig

    size = args.image_size or AutoConfig.from_pretrained(args.backbone).vision_config.image_size
    for name in args.variants:
        steps = args.max_steps
        overrides = {
            "model": {"backbone": args.backbone, **VARIANTS[name]},
            "data": {"image_size": size, "shortest_edge": size, "crop_size": size, "q_query": args.queries,
                     "val_episodes": args.val_episodes},
            "optim": {"lr_decay_steps": [int(steps * 0.6), int(steps * 0.9)]},
            "training": {"max_steps": steps, "gradient_accumulation_steps": args.accumulation,
                         "learning_rate": args.learning_rate, "warmup_steps": max(1, steps // 10),
                         "eval_steps": max(1, steps // 3), "save_steps": max(1, steps // 3), "logging_steps": 5},
        }  # fmt: skip
        start = time.time()
        if (out / name / "model.safetensors").is_file() and not args.retrain:
            model_dir, train_s = out / name, None  # trained by an earlier run of this script
        else:
            model_dir = clip_fsar.train("clip_fsar_shapesworld", out / name, overrides)
            train_s = round(time.time() - start)
        evaluation = clip_fsar.evaluate(model_dir, num_samples=args.test_episodes, k_shots=[1, 5])
        seen = clip_fsar.evaluate(model_dir, num_samples=args.test_episodes, k_shots=[1, 5], split="seen_test")
        evaluation.update({f"seen {k}": seen[k] for k in ("1-shot", "5-shot")})
        if train_s is None and name in results:
            train_s = results[name].get("train_seconds")
        results[name] = {**evaluation, "train_seconds": train_s, "overrides": overrides}
        results_file.write_text(json.dumps(results, indent=2))
        print(
            name,
            json.dumps({k: evaluation[k] for k in ("1-shot", "5-shot", "seen 1-shot", "seen 5-shot")}),
            flush=True,
        )
    columns = ("1-shot", "5-shot", "seen 1-shot", "seen 5-shot")
    print("\n| variant | held-out 1-shot | held-out 5-shot | seen-class 1-shot | seen-class 5-shot | train s |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        cells = [f"{100 * r[c]['accuracy']:.1f} ± {100 * r[c]['ci95']:.1f}" if c in r else "-" for c in columns]
        print(f"| {name} | {' | '.join(cells)} | {r['train_seconds']} |")


if __name__ == "__main__":
    main()
