"""GroupViT on ShapesWorld: trained model vs trivial baselines, with vs without the multi-label loss, same steps.

    python benchmarks/bench_groupvit.py [--max-steps N] [--batch-size 64] [--eval-samples 200] [--out DIR]
        [--seed S] [--model-overrides JSON]

Trains `groupvit_shapesworld` twice from the same seed (multi_label K=3 and K=0), then runs `clipzoo evaluate
groupvit` on each: zero-shot segmentation mIoU on the ShapesWorld segmentation split (generator masks), the two trivial
baselines (all background; every pixel = the image's top-1 class), the foreground IoU (background vs any object),
the mIoU with "background" prompted as a label instead of the threshold ("bg-prompt"), and zero-shot classification
accuracy. `--recipe groupvit_shapesworld_background` runs the recipe with the clipzoo per-group background loss. Prints a table and writes `results.json` in the output folder.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

from clipzoo.training.groupvit import evaluate, train


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-steps", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--eval-samples", type=int, default=200)
    parser.add_argument("--recipe", default="groupvit_shapesworld")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "clipzoo_bench_groupvit")
    parser.add_argument("--runs", default="multi_label_K3,no_multi_label", help="comma-separated subset of the runs")
    parser.add_argument(
        "--seed", type=int, default=None, help="training, data-order and data seed (default: recipe's)"
    )
    parser.add_argument(
        "--model-overrides",
        type=json.loads,
        default={},
        help="JSON merged into the recipe's model section, e.g. '{\"depths\": [2, 0]}'",
    )
    args = parser.parse_args()
    results = {}
    wanted = args.runs.split(",")
    for name, k in (("multi_label_K3", 3), ("no_multi_label", 0)):
        if name not in wanted:
            continue
        start = time.perf_counter()
        training = {"save_steps": 10**9}
        if args.max_steps:
            training["max_steps"] = args.max_steps
        if args.batch_size:
            training["per_device_train_batch_size"] = args.batch_size
        overrides = {"model": {**args.model_overrides, "multi_label": k}, "training": training}
        if args.seed is not None:
            training.update(seed=args.seed, data_seed=args.seed)
            overrides["data"] = {"seed": args.seed}
        model_dir = train(args.recipe, args.out / name, overrides)
        train_seconds = time.perf_counter() - start
        results[name] = {**evaluate(model_dir, num_samples=args.eval_samples), "train_seconds": train_seconds}
        metadata = json.loads((model_dir / "clipzoo_groupvit_training.json").read_text())
        results[name]["final_train_loss"] = metadata["final_loss"]
        results[name]["steps"] = metadata["global_step"]
        (args.out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    print(f"recipe={args.recipe} eval_images={args.eval_samples}")
    print(
        f"{'run':<16} {'steps':>6} {'mIoU':>7} {'hard':>7} {'bg-prompt':>9} {'all-bg':>7} {'top1-cls':>8} {'fg IoU':>7} "
        f"{'zs-acc':>7} "
        f"{'train s':>8}"
    )
    for name, r in results.items():
        print(
            f"{name:<16} {r['steps']:>6} {r['segmentation']['mean_iou']:7.4f} "
            f"{r['segmentation_hard_assignment']['mean_iou']:7.4f} "
            f"{r['segmentation_background_prompt']['mean_iou']:9.4f} {r['baseline_all_background']['mean_iou']:7.4f} "
            f"{r['baseline_top1_class']['mean_iou']:8.4f} {r['segmentation_foreground']['iou']:7.4f} "
            f"{r['zero_shot_classification_accuracy']:7.4f} "
            f"{r['train_seconds']:8.0f}"
        )


if __name__ == "__main__":
    main()
