"""Where a CLIP-FSAR training step (one episode) spends its time: backbone, prototype modulation, OTAM.

Each part is timed forward + backward on its own inputs (median of --repeats), for clipzoo's OTAM and for the slow
transcription of the official loops. Default shapes: 5-way 1-shot, 5 queries per class, 8 frames, the tiny ShapesWorld
backbone geometry (ViT 3 x 64 wide, 32 px or --image-size), projection 64, FFN 2048 (official width).

    python benchmarks/bench_clip_fsar_step.py [--image-size 64] [--repeats 5] [--shots 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from clipzoo.configuration.configuration_clip_fsar import ClipzooCLIPFSARConfig
from clipzoo.modeling.alignment import frame_distances, otam_cumulative_distance_reference, otam_distance
from clipzoo.modeling.modeling_clip_fsar import ClipzooCLIPFSARModel


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids spin-wait on busy machines)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tower = {"hidden_size": 64, "intermediate_size": 256, "num_attention_heads": 4, "num_hidden_layers": 3}
    config = ClipzooCLIPFSARConfig(
        vision_config={**tower, "image_size": args.image_size, "patch_size": 8, "projection_dim": 64},
        text_config={**tower, "vocab_size": 1024, "max_position_embeddings": 32, "projection_dim": 64},
        projection_dim=64, class_names=[f"c{i}" for i in range(7)],
    )  # fmt: skip
    model = ClipzooCLIPFSARModel(config).train()
    way, frames = 5, 8
    n_support, n_query = way * args.shots, way * args.queries
    pixels = torch.randn(n_support + n_query, frames, 3, args.image_size, args.image_size)
    labels = torch.arange(way).repeat_interleave(args.shots)
    text = torch.randn(n_support, 64)

    def backbone():
        model.get_video_features(pixels).sum().backward()

    features = torch.randn(n_support + n_query, frames, 64)

    def modulation():
        x = features.clone().requires_grad_(True)
        protos, _ = model.prototypes(x[:n_support], text, labels, way)
        (protos.sum() + model.temporal_transformer(x[n_support:]).sum()).backward()

    queries, prototypes = torch.randn(n_query, frames, 64), torch.randn(way, frames, 64)

    def otam(reference: bool):
        def run():
            q, p = queries.clone().requires_grad_(True), prototypes.clone().requires_grad_(True)
            dists = frame_distances(q, p)
            if reference:
                out = otam_cumulative_distance_reference(dists, 0.5) + otam_cumulative_distance_reference(
                    dists.transpose(-1, -2), 0.5
                )
            else:
                out = otam_distance(dists, 0.5, max_distance=2.0)  # as the model calls it
            out.sum().backward()

        return run

    parts = {
        f"backbone ({(n_support + n_query) * frames} frames, {args.image_size}px)": _median_ms(backbone, args.repeats),
        "prototype modulation": _median_ms(modulation, args.repeats),
        "OTAM (clipzoo)": _median_ms(otam(False), args.repeats),
    }
    reference_ms = _median_ms(otam(True), args.repeats)
    total = sum(parts.values())
    print(
        f"torch={torch.__version__} threads={torch.get_num_threads()} 5-way {args.shots}-shot {args.queries} queries"
    )
    print(f"{'part':<36} {'ms':>9} {'share':>7}")
    for name, ms in parts.items():
        print(f"{name:<36} {ms:>9.1f} {ms / total:>6.1%}")
    print(f"{'total (sum)':<36} {total:>9.1f}")
    share = reference_ms / (total - parts["OTAM (clipzoo)"] + reference_ms)
    print(f"{'OTAM (official loops), for scale':<36} {reference_ms:>9.1f} {share:>6.1%} of a step that used it")


if __name__ == "__main__":
    main()
