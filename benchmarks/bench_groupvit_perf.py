"""GroupViT hot paths: our training step vs transformers' GroupViTModel (same config, same weights), the multi-label
loss's extra cost, and zero-shot segmentation throughput at 448 with the sliding window.

    python benchmarks/bench_groupvit_perf.py [--repeats 10] [--width 128] [--batch 16]

Ratios are measured in one process, alternating the contenders each repeat and taking medians, so machine load
affects both sides alike. The training step is forward + backward + AdamW step in train mode.
"""

import argparse
import statistics
import time

import torch
from PIL import Image
from transformers import GroupViTConfig, GroupViTModel

from clipzoo.configuration.configuration_groupvit import ClipzooGroupViTConfig
from clipzoo.modeling.modeling_groupvit import ClipzooGroupViTModel
from clipzoo.processing.segmentation_groupvit import SegmentationSettings, segment_images


def _configs(width: int):
    text = {
        "hidden_size": width,
        "intermediate_size": 4 * width,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "vocab_size": 1000,
        "max_position_embeddings": 32,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 2,
    }
    vision = {"hidden_size": width, "intermediate_size": 4 * width, "num_hidden_layers": 6, "depths": [3, 2, 1],
              "num_group_tokens": [64, 8, 0], "num_output_groups": [64, 8, 8], "num_attention_heads": 4,
              "image_size": 224, "patch_size": 16}  # fmt: skip
    common = {"text_config": text, "vision_config": vision, "projection_dim": 128, "projection_intermediate_dim": 512}
    return GroupViTConfig(**common), common


def _step(model, optimizer, batch):
    optimizer.zero_grad(set_to_none=True)
    start = time.perf_counter()
    model(**batch, return_loss=True).loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seg-images", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    hf_config, common = _configs(args.width)
    reference = GroupViTModel(hf_config).train()
    ours = ClipzooGroupViTModel(ClipzooGroupViTConfig(**common, multi_label=0, drop_path_rate=0.0)).train()
    ours.load_state_dict(reference.state_dict(), strict=False)
    ours_ml = ClipzooGroupViTModel(ClipzooGroupViTConfig(**common, multi_label=3, drop_path_rate=0.0)).train()
    ours_ml.load_state_dict(reference.state_dict(), strict=False)
    ids = torch.randint(3, 1000, (args.batch, 16))
    ids[:, -1] = 1
    pixels = torch.randn(args.batch, 3, 224, 224)
    batch = {"input_ids": ids, "pixel_values": pixels}
    batch_ml = {"input_ids": ids[:, None].repeat(1, 4, 1), "pixel_values": pixels}
    runs = {"transformers": (reference, batch), "clipzoo": (ours, batch), "clipzoo+multi_label": (ours_ml, batch_ml)}
    optimizers = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, (m, _) in runs.items()}
    times = {k: [] for k in runs}
    for _ in range(2):  # warm-up
        for k, (m, b) in runs.items():
            _step(m, optimizers[k], b)
    for _ in range(args.repeats):
        for k, (m, b) in runs.items():
            times[k].append(_step(m, optimizers[k], b))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"training step, width {args.width}, batch {args.batch}, 224 px, median of {args.repeats}")
    for k, v in med.items():
        print(f"  {k:<22} {v * 1000:8.1f} ms   ratio vs transformers {v / med['transformers']:.3f}")

    ours.eval()
    images = [Image.new("RGB", (640, 480), (30 * i, 100, 200)) for i in range(args.seg_images)]
    tokenizer = _IdTokenizer()
    segment_images(ours, tokenizer, images[:1], ["a", "b", "c"], SegmentationSettings())  # warm-up
    start = time.perf_counter()
    segment_images(ours, tokenizer, images, ["a", "b", "c"], SegmentationSettings())
    seconds = time.perf_counter() - start
    print(
        f"segmentation 640x480 -> short side 448, 448/224 sliding window (2 windows per image): "
        f"{args.seg_images / seconds:.3f} images/s"
    )


class _IdTokenizer:
    """Stands in for a tokenizer: each text becomes bos, a few ids, eos."""

    def __call__(self, texts, padding=True, return_tensors="pt", **kwargs):
        ids = torch.tensor([[0, 3 + i, 4 + i, 1] for i in range(len(texts))])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


if __name__ == "__main__":
    main()
