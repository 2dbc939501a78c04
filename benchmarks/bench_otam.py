"""OTAM forward + backward: clipzoo's `otam_distance` vs the slow transcription of the official loops.

clipzoo runs the float64 row recurrence in the exponential domain (`_OTAMRowFunction`, both directions in one call),
with the bound `max_distance=2` that CLIP-FSAR passes for its `1 - cos` distances. The reference is
`otam_cumulative_distance_reference` (the official loops over rows and columns) run once per direction.

Settings: 5-way, 8 frames, 5 queries per class (the training episode), bidirectional, lambda 0.5 by default.
  1-shot and 5-shot merged: 25 queries x 5 supports (merge-before, the official 5-shot configs, compares each query
  with 5 class prototypes, the same shape as 1-shot); 5-shot per video: 25 queries x 25 supports (no merge-before).
Prints a ratio table (median of alternating rounds) and checks that both give equal results (values and gradients).

    python benchmarks/bench_otam.py [--repeats 20] [--device cpu] [--lbda 0.5]
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


def _compare(reference, ours, dists: torch.Tensor, repeats: int) -> tuple[float, float, float]:
    """Median ms of each, measured in alternating rounds (robust to other processes sharing the cores)."""
    _once(reference, dists), _once(ours, dists)  # warm-up
    ref_times, our_times = [], []
    for _ in range(repeats):
        ref_s, ref_out, ref_grad = _once(reference, dists)
        our_s, our_out, our_grad = _once(ours, dists)
        ref_times.append(ref_s)
        our_times.append(our_s)
    diff = max((ref_out - our_out).abs().max().item(), (ref_grad - our_grad).abs().max().item())
    median = lambda t: sorted(t)[len(t) // 2] * 1e3  # noqa: E731
    return median(ref_times), median(our_times), diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lbda", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids spin-wait on busy machines)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} lambda={args.lbda}")
    print(f"{'setting':<14} {'pairs':>6} {'reference ms':>13} {'clipzoo ms':>11} {'speed-up':>9} {'max |diff|':>11}")
    for name, num_support in [("1-shot/merged", 5), ("5-shot/video", 25)]:
        dists = torch.rand(25, num_support, 8, 8, device=args.device) * 2
        ref_ms, our_ms, diff = _compare(
            lambda x: _reference_bidirectional(x, args.lbda),
            lambda x: otam_distance(x, args.lbda, max_distance=2.0),
            dists,
            args.repeats,
        )
        print(
            f"{name:<14} {25 * num_support:>6} {ref_ms:>13.2f} {our_ms:>11.2f} {ref_ms / our_ms:>8.1f}x {diff:>11.2e}"
        )


if __name__ == "__main__":
    main()
