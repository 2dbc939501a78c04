"""The `clipzoo` command.

```
clipzoo data shapesworld --task captions --out DIR       generate the embedded dataset
clipzoo pretrain-backbone --out DIR                      the tiny pretrained CLIP (cached by default)
clipzoo train <slug> --recipe NAME|FILE --output-dir DIR
clipzoo evaluate <slug>|backbone --model DIR             metrics as JSON on stdout
clipzoo export --model DIR --out DIR [--overwrite]       Hub-ready folder (weights, card, remote code)
clipzoo push --folder DIR --repo-id ID
clipzoo segment IMAGE --model DIR --labels a,b,c --out overlay.png      (GroupViT)
clipzoo classify-video VIDEO --support DIR --model DIR                  (CLIP-FSAR)
clipzoo demo                                             the main job on the embedded default
```
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


__all__ = ["build_parser", "main"]

TASKS = ("captions", "segmentation", "classification", "pairs", "actions")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipzoo", description="CLIP upgrades as Hugging Face transformers models.")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="Generate or prepare datasets.")
    data_sub = data.add_subparsers(dest="dataset", required=True)
    sw = data_sub.add_parser("shapesworld", help="Generate ShapesWorld and save it with `save_to_disk`.")
    sw.add_argument("--task", required=True, choices=TASKS)
    sw.add_argument("--out", required=True, type=Path)
    sw.add_argument("--num-samples", type=int, default=1000)
    sw.add_argument("--seed", type=int, default=0)
    sw.add_argument("--image-size", type=int, default=64)

    pre = sub.add_parser("pretrain-backbone", help="Pretrain the tiny CLIP backbone on ShapesWorld.")
    pre.add_argument("--out", type=Path, default=None, help="Default: $CLIPZOO_CACHE/backbone-shapesworld.")
    pre.add_argument("--recipe", default="backbone_shapesworld")
    pre.add_argument("--max-steps", type=int, default=None)

    train = sub.add_parser("train", help="Train a variant with a recipe.")
    train.add_argument("slug")
    train.add_argument("--recipe", default=None, help="Recipe name or YAML file (default: the variant's).")
    train.add_argument("--output-dir", required=True, type=Path)
    train.add_argument("--max-steps", type=int, default=None)
    train.add_argument("--backbone", default=None, help="Pretrained CLIP id/folder, for variants that start from one.")

    ev = sub.add_parser("evaluate", help="Evaluate a trained model; prints JSON.")
    ev.add_argument("slug", help="A variant slug, or 'backbone'.")
    ev.add_argument("--model", type=Path, default=None)
    ev.add_argument("--num-samples", type=int, default=None)

    ex = sub.add_parser("export", help="Write a Hub-ready folder.")
    ex.add_argument("--model", required=True, type=Path)
    ex.add_argument("--out", required=True, type=Path)
    ex.add_argument("--slug", default=None, help="Default: read from the model's config.")
    ex.add_argument("--overwrite", action="store_true")

    push = sub.add_parser("push", help="Upload an exported folder to the Hugging Face Hub.")
    push.add_argument("--folder", required=True, type=Path)
    push.add_argument("--repo-id", required=True)
    push.add_argument("--private", action="store_true")

    seg = sub.add_parser("segment", help="Zero-shot segmentation with a GroupViT model; writes an overlay PNG.")
    seg.add_argument("image", type=Path)
    seg.add_argument("--model", required=True, type=Path)
    seg.add_argument("--labels", required=True, help="Comma-separated class names.")
    seg.add_argument("--out", required=True, type=Path)
    seg.add_argument("--background-threshold", type=float, default=0.95, help="0.95 VOC/COCO, 0.35 Context.")
    seg.add_argument("--short-side", type=int, default=448, help="Resize the short side to this (0: keep the size).")
    seg.add_argument("--crop-size", type=int, default=448, help="Sliding-window size (0: one window).")
    seg.add_argument("--stride", type=int, default=224, help="Sliding-window stride.")
    seg.add_argument("--assignment", choices=("soft", "hard"), default="soft", help="Chain soft (official) or hard.")
    seg.add_argument(
        "--no-background-threshold",
        action="store_true",
        help="Every pixel gets one of --labels and no threshold applies; prompt the background yourself, e.g. "
        "--labels background,circle,square (for models trained on captions that name it).",
    )

    cv = sub.add_parser("classify-video", help="Few-shot classify one video against a labelled support folder.")
    cv.add_argument("video", type=Path)
    cv.add_argument("--support", required=True, type=Path, help="Folder of class subfolders of support videos.")
    cv.add_argument("--model", required=True, type=Path)

    demo = sub.add_parser("demo", help="Data -> train -> evaluate -> export -> reload, for every landed variant.")
    demo.add_argument("--out", type=Path, default=Path("demo_out"))
    demo.add_argument("--backbone", type=Path, default=None, help="Reuse this backbone instead of the cache.")
    demo.add_argument("--only", default=None, help="Comma-separated stages (backbone and/or variant slugs).")
    return parser


def _hook(slug: str, name: str):
    from clipzoo.variants import get_variant, resolve_hook

    row = get_variant(slug)
    spec = getattr(row, name)
    if spec is None:
        raise ValueError(f"Variant {slug!r} has no {name!r} entry point yet.")
    return resolve_hook(spec)


def _run(args: argparse.Namespace) -> int:
    if args.command == "data":
        from clipzoo.data.shapesworld import save_shapesworld

        save_shapesworld(args.task, args.out, args.num_samples, seed=args.seed, image_size=args.image_size)
        print(json.dumps({"task": args.task, "out": str(args.out), "num_samples": args.num_samples}))
    elif args.command == "pretrain-backbone":
        from clipzoo.backbone import default_backbone_dir, pretrain_backbone

        overrides = {"training": {"max_steps": args.max_steps}} if args.max_steps else None
        out = pretrain_backbone(args.out or default_backbone_dir(), args.recipe, overrides)
        print(json.dumps({"backbone": str(out)}))
    elif args.command == "train":
        from clipzoo.variants import get_variant

        row = get_variant(args.slug)
        overrides = {"training": {"max_steps": args.max_steps}} if args.max_steps else {}
        if args.backbone:
            overrides["model"] = {"backbone": args.backbone}
        out = _hook(args.slug, "train")(
            args.recipe or row.default_recipe, output_dir=args.output_dir, overrides=overrides
        )
        print(json.dumps({"model": str(out)}))
    elif args.command == "evaluate":
        kwargs = {"num_samples": args.num_samples} if args.num_samples else {}
        if args.slug == "backbone":
            from clipzoo.backbone import evaluate_backbone

            result = evaluate_backbone(args.model, **kwargs)
        else:
            result = _hook(args.slug, "evaluate")(args.model, **kwargs)
        print(json.dumps(result, indent=2, default=float))
    elif args.command == "export":
        from clipzoo.hub import export

        card = None
        if args.slug == "backbone":
            from clipzoo.backbone import BACKBONE_CARD as card
        out = export(args.model, args.out, slug=args.slug, card=card, overwrite=args.overwrite)
        print(json.dumps({"exported": str(out)}))
    elif args.command == "push":
        from clipzoo.hub import push

        print(json.dumps({"url": str(push(args.folder, args.repo_id, private=args.private))}))
    elif args.command == "segment":
        from clipzoo.training.groupvit import segment

        labels = [label.strip() for label in args.labels.split(",")]
        settings = {
            "background_threshold": args.background_threshold, "short_side": args.short_side or None,
            "crop_size": args.crop_size or None, "stride": args.stride, "assignment": args.assignment,
            "with_background": not args.no_background_threshold,
        }  # fmt: skip
        print(json.dumps(segment(args.image, args.model, labels, args.out, **settings), default=str))
    elif args.command == "classify-video":
        from clipzoo.training.clip_fsar import classify_video

        print(json.dumps(classify_video(args.video, args.support, args.model), indent=2, default=float))
    elif args.command == "demo":
        from clipzoo.demo import run_demo

        only = args.only.split(",") if args.only else None
        run_demo(args.out, backbone=args.backbone, only=only)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `clipzoo` console script. User errors print one line and exit with status 2."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, KeyError, RuntimeError) as err:
        if os.environ.get("CLIPZOO_DEBUG"):
            raise
        print(f"clipzoo {args.command}: error: {err} (set CLIPZOO_DEBUG=1 for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
