"""Throughput of the ShapesWorld generator (images/s), per task and for raw rendering.

Run: `python benchmarks/bench_shapesworld.py [--num-samples 10000] [--image-size 64]`.
"""

import argparse
import time

import numpy as np

from clipzoo.data.shapesworld import encode_png, render_scene, sample_scene, shapesworld


def _timed(fn) -> tuple[float, float]:
    """Wall and CPU seconds; CPU time is the fairer number on a shared machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--num-samples", type=int, default=10_000)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument(
        "--tasks", nargs="*", default=["captions", "segmentation", "classification", "pairs", "actions"]
    )
    args = parser.parse_args()
    n, size = args.num_samples, args.image_size
    shapesworld("captions", 8, image_size=size)  # warm-up: imports and first-call caches

    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng) for _ in range(n)]
    arrays = []
    seconds = {
        "sample_scene": _timed(lambda: [sample_scene(rng) for _ in range(n)]),
        "render_scene": _timed(lambda: arrays.extend(render_scene(s, size)[0] for s in scenes)),
        "png encode": _timed(lambda: [encode_png(a) for a in arrays]),
    }
    print(f"{'stage / task':<28}{'samples':>9}{'wall s':>9}{'cpu s':>9}{'samples/s (cpu)':>17}")
    for name, (wall, cpu) in seconds.items():
        print(f"{name:<28}{n:>9}{wall:>9.2f}{cpu:>9.2f}{n / cpu:>17.0f}")
    for task in args.tasks:
        # Videos hold 8 frames each; time a tenth as many so the run stays short.
        count = n // 10 if task == "actions" else n
        wall, cpu = _timed(lambda task=task, count=count: shapesworld(task, count, seed=1, image_size=size))
        print(f"{'shapesworld ' + task:<28}{count:>9}{wall:>9.2f}{cpu:>9.2f}{count / cpu:>17.0f}")


if __name__ == "__main__":
    main()
