"""Segmentation quality along a GroupViT training run: every saved checkpoint on a validation and a test split.

    python benchmarks/groupvit_checkpoint_trace.py OUTPUT_DIR [--val-samples 100] [--test-samples 200]

`OUTPUT_DIR` is a finished `clipzoo train groupvit` folder trained with `training.save_steps` set (and
`training.save_total_limit: null` to keep every checkpoint). Each `trainer/checkpoint-N` is evaluated with `clipzoo
evaluate groupvit` on the validation images (seed 2000) and the test images (seed 1000, the default of `evaluate`).
Prints one row per checkpoint and writes `checkpoint_trace.json` in `OUTPUT_DIR`. Choosing a checkpoint must use the
validation column only.
"""

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from clipzoo.training.groupvit import evaluate


PROCESSOR_FILES = (
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "clipzoo_groupvit_training.json",
)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--val-samples", type=int, default=100)
    parser.add_argument("--test-samples", type=int, default=200)
    args = parser.parse_args()
    checkpoints = sorted((args.output_dir / "trainer").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    if not checkpoints:
        raise SystemExit(f"no trainer/checkpoint-* in {args.output_dir}; train with training.save_steps set.")
    missing = [name for name in PROCESSOR_FILES if not (args.output_dir / name).is_file()]
    if missing:
        raise SystemExit(f"{args.output_dir} lacks {missing}: pass a finished training folder.")
    rows = []
    print(
        f"{'step':>6} {'val mIoU':>8} {'test mIoU':>9} {'all-bg':>7} {'zs-acc':>7} {'fg IoU':>7} {'fg prec':>7} {'fg rec':>7}"
    )
    for checkpoint in checkpoints:
        with tempfile.TemporaryDirectory() as folder:
            for name in PROCESSOR_FILES:
                shutil.copy(args.output_dir / name, folder)
            for name in ("config.json", "model.safetensors"):
                shutil.copy(checkpoint / name, folder)
            val = evaluate(folder, num_samples=args.val_samples, seed=2000)
            test = evaluate(folder, num_samples=args.test_samples)
        fg = test["segmentation_foreground"]
        row = {
            "step": int(checkpoint.name.split("-")[1]),
            "val_miou": val["segmentation"]["mean_iou"],
            "test_miou": test["segmentation"]["mean_iou"],
            "test_all_background": test["baseline_all_background"]["mean_iou"],
            "test_top1_class": test["baseline_top1_class"]["mean_iou"],
            "test_zero_shot_accuracy": test["zero_shot_classification_accuracy"],
            "test_foreground": fg,
        }
        rows.append(row)
        print(
            f"{row['step']:>6} {row['val_miou']:8.4f} {row['test_miou']:9.4f} {row['test_all_background']:7.4f} "
            f"{row['test_zero_shot_accuracy']:7.3f} {fg['iou']:7.3f} {fg['precision']:7.3f} {fg['recall']:7.3f}",
            flush=True,
        )
        (args.output_dir / "checkpoint_trace.json").write_text(json.dumps(rows, indent=2, default=float))


if __name__ == "__main__":
    main()
