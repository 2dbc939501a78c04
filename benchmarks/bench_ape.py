"""APE hot paths: closed-form criterion vs the loop definition, vectorised grid search vs the official triple loop,
and the fit time of a 16-shot cache. Both sides of every ratio run in this process and must give equal results.

  1. criterion S at C = 100, K = 16, D = 512 (goal >= 1000x): `ape_math.inter_class_similarity` vs the official
     quadruple loop over (i, j, m, n) (utils.py `cal_criterion`, full mode).
  2. (β, α, γ) search on the full official grid 200 x 20 x 20 (goal >= 50x): `ape_math.grid_search` vs the official
     triple loop (main.py `APE()`), C = 10 classes, K = 16, 500 validation features, D = 512, Q = 358.
  3. fit time of a 16-shot, 10-class cache (10 augmented views per image) on the tiny backbone architecture
     (random weights unless --backbone DIR is given; the time does not depend on the weights).

    python benchmarks/bench_ape.py [--quick] [--backbone DIR]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from clipzoo.modeling import ape_math


def _unit(*shape, generator):
    return F.normalize(torch.randn(*shape, generator=generator), dim=-1)


def similarity_loop(text: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """The official definition: stack {w_i, f_i1..f_iK} per class, sum x_{i,m} * x_{j,n} over i != j and all m, n."""
    feats = torch.cat([text[:, None], keys], dim=1)  # (C, K + 1, D)
    num_classes, per_class, dim = feats.shape
    total, count = torch.zeros(dim, dtype=feats.dtype), 0
    for i in range(num_classes):
        for j in range(num_classes):
            if i == j:
                continue
            for m in range(per_class):
                for n in range(per_class):
                    total += feats[i, m] * feats[j, n]
                    count += 1
    return total / count


def bench_criterion(num_classes: int, shots: int, dim: int) -> dict:
    g = torch.Generator().manual_seed(0)
    text = _unit(num_classes, dim, generator=g).double()
    keys = _unit(num_classes, shots, dim, generator=g).double()
    labels = torch.arange(num_classes).repeat_interleave(shots)
    start = time.perf_counter()
    closed = ape_math.inter_class_similarity(text, keys.reshape(-1, dim), labels)
    closed_s = time.perf_counter() - start
    repeats = max(1, int(0.2 / max(closed_s, 1e-6)))
    start = time.perf_counter()
    for _ in range(repeats):
        ape_math.inter_class_similarity(text, keys.reshape(-1, dim), labels)
    closed_s = (time.perf_counter() - start) / repeats
    start = time.perf_counter()
    loop = similarity_loop(text, keys)
    loop_s = time.perf_counter() - start
    max_err = float((closed - loop).abs().max())
    return {"loop_s": loop_s, "closed_s": closed_s, "ratio": loop_s / closed_s, "max_abs_diff": max_err}


def naive_search(text_logits, affinity, onehot, kl, labels, betas, alphas, gammas):
    """The official triple loop: recompute values, affinity and logits per grid point; strict `acc > best`."""
    best, best_acc = (0, 0, 0), 0
    for bi, beta in enumerate(betas):
        for ai, alpha in enumerate(alphas):
            for gi, gamma in enumerate(gammas):
                values = onehot * torch.exp(gamma * kl)[:, None]
                logits = text_logits + alpha * (torch.exp(-(beta - beta * affinity)) @ values)
                acc = int((logits.argmax(1) == labels).sum())  # a count: monotone in the official float acc
                if acc > best_acc:
                    best, best_acc = (bi, ai, gi), acc
    return best, best_acc


def bench_search(num_classes: int, shots: int, num_val: int, dim: int, steps: tuple[int, int, int]) -> dict:
    g = torch.Generator().manual_seed(1)
    text = _unit(num_classes, dim, generator=g)
    cache_labels = torch.arange(num_classes).repeat_interleave(shots)
    keys = F.normalize(text[cache_labels] + 4.0 * _unit(len(cache_labels), dim, generator=g), dim=-1)
    val_labels = torch.arange(num_val) % num_classes
    val = F.normalize(text[val_labels] + 9.0 * _unit(num_val, dim, generator=g), dim=-1)
    idx = ape_math.select_channels(ape_math.ape_criterion(text, keys, cache_labels, (0.5, 0.5)), round(0.7 * dim))
    rk, rt, rv = ape_math.refine(keys, idx), ape_math.refine(text, idx), ape_math.refine(val, idx)
    kl = ape_math.cache_divergence_bits(rk, rt, cache_labels)
    onehot = F.one_hot(cache_labels, num_classes).float()
    affinity, text_logits = rv @ rk.t(), 100 * val @ text.t()
    betas = ape_math.official_grid(7, steps[0])
    alphas = ape_math.official_grid(7, steps[1])
    gammas = ape_math.official_grid(1, steps[2], start=0.0)
    start = time.perf_counter()
    values = torch.stack([onehot * torch.exp(gm * kl)[:, None] for gm in gammas])
    index, correct = ape_math.grid_search(text_logits, affinity, values, val_labels, betas, alphas)
    fast_s = time.perf_counter() - start
    start = time.perf_counter()
    ref_index, ref_acc = naive_search(text_logits, affinity, onehot, kl, val_labels, betas, alphas, gammas)
    naive_s = time.perf_counter() - start
    fast_acc = int(correct[index])
    return {
        "grid": f"{steps[0]}x{steps[1]}x{steps[2]}",
        "naive_s": naive_s,
        "vectorised_s": fast_s,
        "ratio": naive_s / fast_s,
        "same_best": index == ref_index and fast_acc == ref_acc,
        "best_val_acc": 100 * fast_acc / num_val,
    }


def bench_fit(backbone_dir: str | None, num_classes: int = 10, shots: int = 16, views: int = 10) -> dict:
    from PIL import Image

    from clipzoo.backbone import BackboneModelArguments, build_backbone, load_backbone
    from clipzoo.processing.tokenization_offline import build_offline_tokenizer
    from clipzoo.training import ape

    if backbone_dir:
        backbone, processor = load_backbone(backbone_dir)
    else:
        tokenizer = build_offline_tokenizer([f"a photo of a class {c}." for c in range(num_classes)], 300, 32)
        backbone, processor = build_backbone(BackboneModelArguments(vocab_size=300), tokenizer)
    backbone.eval()
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)) for _ in range(num_classes * shots)]
    labels = [c for c in range(num_classes) for _ in range(shots)]
    names = [f"class {c}" for c in range(num_classes)]
    start = time.perf_counter()
    feats = ape.extract_features(
        backbone,
        processor,
        images,
        labels,
        names,
        images[:num_classes],
        labels[:num_classes],
        shots,
        augment_epochs=views,
    )
    total = time.perf_counter() - start
    start = time.perf_counter()
    ape.build_adapter(feats, "ape", backbone)
    search_s = time.perf_counter() - start
    return {"cache_images": len(images), "views": views, "extract_s": total, "ape_criterion_and_search_s": search_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Smaller sizes (C = 20 criterion, 50x10x10 grid).")
    parser.add_argument("--backbone", default=None, help="Backbone folder for the fit timing.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    crit = bench_criterion(20 if args.quick else 100, 16, 512)
    print(
        f"criterion S, C={20 if args.quick else 100} K=16 D=512: loop {crit['loop_s']:.2f} s, closed form "
        f"{crit['closed_s'] * 1e3:.3f} ms, ratio {crit['ratio']:.0f}x, max |diff| {crit['max_abs_diff']:.1e}"
    )
    steps = (50, 10, 10) if args.quick else (200, 20, 20)
    search = bench_search(10, 16, 500, 512, steps)
    print(
        f"grid search {search['grid']}: naive {search['naive_s']:.2f} s, vectorised {search['vectorised_s']:.3f} s, "
        f"ratio {search['ratio']:.0f}x, same best point: {search['same_best']} (val acc {search['best_val_acc']:.1f})"
    )
    fit = bench_fit(args.backbone)
    print(
        f"fit: {fit['cache_images']} images x {fit['views']} views cache + text + val features "
        f"{fit['extract_s']:.2f} s; APE criterion + full grid search {fit['ape_criterion_and_search_s']:.2f} s"
    )


if __name__ == "__main__":
    main()
