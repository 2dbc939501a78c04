"""OTAM forward + backward: clipzoo's `otam_distance` vs the slow transcription of the official loops.

clipzoo runs the float64 row recurrence in the exponential domain (`_OTAMRowFunction`, both directions in one call),
with the bound `max_distance=2` that CLIP-FSAR passes for its `1 - cos` distances: eagerly (the default) and through
`torch.compile` (`compiled=True`, CLIP-FSAR's `model.otam_compile`; compiled during the warm-up, not timed). The reference
is `otam_cumulative_distance_reference` (the official loops over rows and columns) run once per direction.

Settings: 5-way, 8 frames, 5 queries per class (the training episode), bidirectional, lambda 0.5 by default.
  1-shot and 5-shot merged: 25 queries x 5 supports (merge-before, the official 5-shot configs, compares each query
  with 5 class prototypes, the same shape as 1-shot); 5-shot per video: 25 queries x 25 supports (no merge-before).
Prints a ratio table (median of alternating rounds) and checks that both give equal results (values and gradients).

    python benchmarks/bench_otam.py [--repeats 20] [--device cpu] [--lbda 0.5] [--no-compile]
"""

from __future__ import annotations

import argparse
import time

import torch

from clipzoo.modeling.alignment import otam_cumulative_distance_reference, otam_distance


def _reference_bidirectional(dists: torch.Tensor, lbda: float) -> torch.Tensor:
    return otam_cumulative_distance_reference(dists, lbda) + otam_cumulative_distance_reference(
        dists.transpose(-1, -2), lbda
    )


def _once(fn, dists: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
    x = dists.detach().clone().requires_grad_(True)
    if x.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn(x)
    out.sum().backward()
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, out.detach(), x.grad


def _compare(candidates: dict, dists: torch.Tensor, repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median ms of each candidate, measured in alternating rounds (A B C A B C ...: robust to drift and to other
    processes sharing the cores), and each one's max |difference| from the first (values and gradients)."""
    for fn in candidates.values():
        _once(fn, dists)  # warm-up (and compilation)
    times: dict[str, list[float]] = {name: [] for name in candidates}
    outputs = {}
    for _ in range(repeats):
        for name, fn in candidates.items():
            seconds, out, grad = _once(fn, dists)
            times[name].append(seconds)
            outputs[name] = (out, grad)
    first_out, first_grad = outputs[next(iter(candidates))]
    diffs = {
        name: max((first_out - out).abs().max().item(), (first_grad - grad).abs().max().item())
        for name, (out, grad) in outputs.items()
    }
    return {name: sorted(t)[len(t) // 2] * 1e3 for name, t in times.items()}, diffs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lbda", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids spin-wait on busy machines)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile'd row path")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} lambda={args.lbda}")
    candidates = {
        "reference": lambda x: _reference_bidirectional(x, args.lbda),
        "eager": lambda x: otam_distance(x, args.lbda, max_distance=2.0),
    }
    if not args.no_compile:
        candidates["compiled"] = lambda x: otam_distance(x, args.lbda, max_distance=2.0, compiled=True)
    header = f"{'setting':<14} {'pairs':>6} {'reference ms':>13}"
    for name in list(candidates)[1:]:
        header += f" {name + ' ms':>12} {'speed-up':>9} {'max |diff|':>10}"
    print(header)
    for name, num_support in [("1-shot/merged", 5), ("5-shot/video", 25)]:
        dists = torch.rand(25, num_support, 8, 8, device=args.device) * 2
        ms, diffs = _compare(candidates, dists, args.repeats)
        line = f"{name:<14} {25 * num_support:>6} {ms['reference']:>13.2f}"
        for candidate in list(candidates)[1:]:
            line += f" {ms[candidate]:>12.2f} {ms['reference'] / ms[candidate]:>8.1f}x {diffs[candidate]:>10.1e}"
        print(line)


if __name__ == "__main__":
    main()
