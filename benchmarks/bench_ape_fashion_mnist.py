"""Few-shot Fashion-MNIST: zero-shot CLIP, Tip-Adapter, Tip-Adapter-F, APE and APE-T on identical features.

Protocol (written in model_cards/ape.md): for each shot count K and seed, a K-shot support set per class and a disjoint
validation set (`--val-per-class` images per class) are drawn from Fashion-MNIST's train split; every search (β, α, γ)
and every epoch choice uses the validation set; accuracy is measured on a fixed subset of the test split
(`--test-samples`, seeded). The text classifier uses the prompt ensemble below. Features are computed once per
(K, seed) and shared by the five methods. Reported: mean ± 95% CI (Student t over seeds) and trainable parameters.

The backbone should be one whose pretraining never saw the evaluated classes, e.g. the lead's tiny CLIP pretrained on
ShapesWorld + half of Fashion-MNIST's classes: evaluate on the other half (`--classes`) and on all ten.

    python benchmarks/bench_ape_fashion_mnist.py --backbone DIR [--classes 1,3,5,7,9] [--shots 1,2,4,8,16]
        [--seeds 1,2,3] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import transformers

from clipzoo.backbone import load_backbone
from clipzoo.training import ape


METHODS = ("zero_shot", "tip_adapter", "tip_adapter_f", "ape", "ape_t")
TEMPLATES = ["a photo of a {}.", "a grey photo of a {}.", "a picture of a {}.", "a {}."]


def run_one(backbone, processor, images, labels, names, test_feats, test_labels, shots, seed, args) -> dict:
    support, val = ape.support_and_val(labels, shots, len(names), args.val_per_class, seed)
    feats = ape.extract_features(
        backbone,
        processor,
        [images[i] for i in support],
        labels[support].tolist(),
        names,
        [images[i] for i in val],
        labels[val].tolist(),
        shots=shots,
        templates=TEMPLATES,
        augment_epochs=args.augment_epochs,
        seed=seed,
    )
    row = {}
    for method in args.methods:
        start = time.perf_counter()
        extra = dict(args.config)
        if args.epochs and method in ("ape_t", "tip_adapter_f"):
            extra["train_epochs"] = args.epochs
        if method in ("ape_t", "tip_adapter_f"):
            model = ape.train_adapter(feats, method, backbone, processor, seed=seed, **extra)
        else:
            model = ape.build_adapter(feats, method, backbone, **extra)
        row[method] = {
            "accuracy": 100 * ape.accuracy(model, test_feats, test_labels),
            "trainable_parameters": ape.trainable_parameter_count(model),
            "alpha": float(model.alpha),
            "beta": float(model.beta),
            "gamma": float(model.gamma),
            "seconds": time.perf_counter() - start,
        }
    return row


def run_setting(backbone, processor, classes: list[int], args) -> dict:
    data_args = ape.APEDataArguments(classes=classes)
    images, labels, names = ape.load_task_split(data_args, "train")
    test_images, test_labels, _ = ape.load_task_split(data_args, "test")
    order = np.random.default_rng(12345).permutation(len(test_images))[: args.test_samples]
    image_processor = ape.ape_image_processor(processor)
    test_feats = ape.encode_images(backbone, ape._preprocess(image_processor, [test_images[i] for i in order]))
    test_labels = torch.as_tensor(test_labels[order])
    results = {}
    for shots in args.shots:
        runs = [
            run_one(backbone, processor, images, labels, names, test_feats, test_labels, shots, seed, args)
            for seed in args.seeds
        ]
        summary = {}
        for method in args.methods:
            mean, ci = ape._mean_ci([r[method]["accuracy"] for r in runs])
            summary[method] = {
                "mean": mean,
                "ci95": ci,
                "per_seed": [r[method]["accuracy"] for r in runs],
                "trainable_parameters": runs[0][method]["trainable_parameters"],
                "hparams": [{k: r[method][k] for k in ("alpha", "beta", "gamma")} for r in runs],
                "seconds": float(np.mean([r[method]["seconds"] for r in runs])),
            }
        results[str(shots)] = summary
        print(
            f"[{','.join(map(str, classes))}] {shots}-shot: "
            + ", ".join(f"{m} {summary[m]['mean']:.1f}±{summary[m]['ci95']:.1f}" for m in args.methods),
            flush=True,
        )
    return {"classes": classes, "class_names": names, "test_samples": len(order), "results": results}


def markdown(setting: dict, methods) -> str:
    lines = [
        f"Classes {', '.join(setting['class_names'])} ({setting['test_samples']} test images)",
        "",
        "| shots | " + " | ".join(methods) + " |",
        "| --- | " + " | ".join("---" for _ in methods) + " |",
    ]
    for shots, summary in setting["results"].items():
        cells = [f"{summary[m]['mean']:.1f} ± {summary[m]['ci95']:.1f}" for m in methods]
        lines.append(f"| {shots} | " + " | ".join(cells) + " |")
    last = list(setting["results"])[-1]
    counts = [str(setting["results"][last][m]["trainable_parameters"]) for m in methods]
    lines.append(f"| trainable params ({last}-shot) | " + " | ".join(counts) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default=None, help="Backbone folder (default: clipzoo's cached backbone).")
    parser.add_argument("--classes", default="1,3,5,7,9;all", help="';'-separated class-id lists ('all' = 0..9).")
    parser.add_argument("--shots", default="1,2,4,8,16")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--val-per-class", type=int, default=20)
    parser.add_argument("--test-samples", type=int, default=2000)
    parser.add_argument("--augment-epochs", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=None, help="Override the training epochs of APE-T/Tip-F.")
    parser.add_argument(
        "--config", default="{}", help="APEConfig overrides as JSON, e.g. '{\"search_scale\": [7, 50, 1]}'."
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="Write the full results as JSON.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    args.shots = [int(s) for s in args.shots.split(",")]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.methods = args.methods.split(",")
    args.config = json.loads(args.config)
    if args.backbone is None:
        from clipzoo.backbone import default_backbone_dir

        if not (default_backbone_dir() / "config.json").is_file():
            print("skipped: no backbone; pass --backbone DIR (e.g. one pretrained on half of Fashion-MNIST's classes)")
            return
        args.backbone = str(default_backbone_dir())
    backbone, processor = load_backbone(args.backbone)
    backbone.eval()
    settings = []
    for spec in args.classes.split(";"):
        classes = list(range(10)) if spec == "all" else [int(c) for c in spec.split(",")]
        settings.append(run_setting(backbone, processor, classes, args))
        print()
        print(markdown(settings[-1], args.methods), flush=True)
        if args.out:
            _write(args, settings)


def _write(args, settings) -> None:
    if args.out:
        with open(args.out, "w") as f:
            json.dump(
                {"backbone": args.backbone, "args": {k: v for k, v in vars(args).items()}, "settings": settings},
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
