"""GroupViT zero-shot segmentation (official recipe): each step against a slow reference, plus the processor."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from clipzoo.modeling.modeling_groupvit import ClipzooGroupViTModel
from clipzoo.processing.processing_groupvit import ClipzooGroupViTImageProcessor, ClipzooGroupViTProcessor
from clipzoo.processing.segmentation_groupvit import (
    SegmentationSettings,
    chain_group_attentions,
    check_labels,
    class_scores_from_groups,
    resize_short_side,
    segment_images,
    slide_window_scores,
)
from clipzoo.processing.tokenization_offline import build_offline_tokenizer
from clipzoo.variants import get_variant


def test_chain_matches_loops():
    g = torch.Generator().manual_seed(0)
    a1 = torch.rand(1, 5, 6, generator=g).softmax(1)  # 6 patches (2x3 grid) -> 5 groups
    a2 = torch.rand(1, 3, 5, generator=g).softmax(1)  # 5 groups -> 3 groups
    out = chain_group_attentions([a1, a2], grid=(2, 3), size=(2, 3))[0]
    for n in range(6):
        for group in range(3):
            expected = sum(a1[0, m, n] * a2[0, group, m] for m in range(5))
            assert out[n // 3, n % 3, group].item() == pytest.approx(expected.item(), abs=1e-6)
    upsampled = chain_group_attentions([a1, a2], grid=(2, 3), size=(8, 12))
    assert upsampled.shape == (1, 8, 12, 3)
    torch.testing.assert_close(upsampled.sum(-1), torch.ones(1, 8, 12))  # rows of a soft assignment stay a partition


def test_hard_chain_follows_each_stage_argmax():
    g = torch.Generator().manual_seed(1)
    a1 = torch.rand(2, 5, 6, generator=g).softmax(1)
    a2 = torch.rand(2, 3, 5, generator=g).softmax(1)
    out = chain_group_attentions([a1, a2], grid=(2, 3), size=(2, 3), hard=True)
    for b in range(2):
        for n in range(6):
            final = int(a2[b, :, int(a1[b, :, n].argmax())].argmax())
            expected = torch.zeros(3)
            expected[final] = 1.0
            torch.testing.assert_close(out[b, n // 3, n % 3], expected)
    with pytest.raises(ValueError, match="assignment"):
        SegmentationSettings(assignment="argmax")


def _slow_class_scores(attn_map, groups, image, texts, scale, top_k, threshold):
    """The official encode_decode steps with Python loops."""
    height, width, num_groups = attn_map.shape
    classes = texts.shape[0]

    def softmax(values):
        finite = [v for v in values if v != -math.inf]
        top = max(finite)
        exps = [math.exp(v - top) if v != -math.inf else 0.0 for v in values]
        return [e / sum(exps) for e in exps]

    affinity = [[scale * float(groups[gi] @ texts[c]) for c in range(classes)] for gi in range(num_groups)]
    pre = [softmax(row) for row in affinity]
    image_aff = softmax([scale * float(image @ texts[c]) for c in range(classes)])
    kept = sorted(range(classes), key=lambda c: -image_aff[c])[: min(top_k, classes)]
    masked = [softmax([row[c] if c in kept else -math.inf for c in range(classes)]) for row in affinity]
    final = [[masked[gi][c] * pre[gi][c] for c in range(classes)] for gi in range(num_groups)]
    out = torch.zeros(classes + 1, height, width, dtype=torch.float64)
    bg = min(threshold, max(max(row) for row in final))
    for y in range(height):
        for x in range(width):
            group = max(range(num_groups), key=lambda gi: attn_map[y, x, gi].item())
            for c in range(classes):
                out[c + 1, y, x] = final[group][c]
            out[0, y, x] = 1.0 if max(final[group]) < bg else 0.0
    return out


@pytest.mark.parametrize("top_k, threshold", [(5, 0.95), (2, 0.35), (1, 0.0)])
def test_class_scores_match_slow_reference(top_k, threshold):
    g = torch.Generator().manual_seed(1)
    attn_map = torch.rand(5, 4, 3, generator=g, dtype=torch.float64)
    groups = F.normalize(torch.randn(3, 6, generator=g, dtype=torch.float64), dim=-1)
    image = F.normalize(torch.randn(6, generator=g, dtype=torch.float64), dim=-1)
    texts = F.normalize(torch.randn(7, 6, generator=g, dtype=torch.float64), dim=-1)
    actual = class_scores_from_groups(attn_map, groups, image, texts, 4.0, top_k=top_k, background_threshold=threshold)
    expected = _slow_class_scores(attn_map, groups, image, texts, 4.0, top_k, threshold)
    torch.testing.assert_close(actual, expected)
    assert (actual[1:].gt(0).sum(0) <= top_k).all()  # at most top_k classes survive the filter
    no_bg = class_scores_from_groups(attn_map, groups, image, texts, 4.0, top_k=top_k, background_threshold=None)
    torch.testing.assert_close(no_bg, expected[1:])


def test_sliding_window_grid_and_average():
    image = torch.arange(70, dtype=torch.float64).reshape(1, 1, 10, 7)
    windows = []

    def fn(crop):
        windows.append(tuple(crop.shape[2:]))
        return crop[0]

    # Averaging each window's own pixels gives the image back, whatever the overlaps.
    torch.testing.assert_close(slide_window_scores(fn, image, 1, crop_size=4, stride=3), image[0])
    # mmseg grid, by hand: rows (10-4+2)//3+1 = 3 windows [0,4) [3,7) [6,10); cols (7-4+2)//3+1 = 2: [0,4) [3,7).
    assert windows == [(4, 4)] * 6
    counts = slide_window_scores(lambda crop: torch.ones(1, *crop.shape[2:], dtype=torch.float64), image, 1, 4, 3)
    torch.testing.assert_close(counts, torch.ones(1, 10, 7, dtype=torch.float64))
    windows.clear()
    slide_window_scores(fn, image, 1, crop_size=16, stride=8)  # smaller than the window: one window, the image
    assert windows == [(10, 7)]


def test_short_side_resize_like_mmcv():
    assert resize_short_side(Image.new("RGB", (300, 200)), 448).shape == (1, 3, 448, 672)
    assert resize_short_side(Image.new("RGB", (5000, 100)), 448).shape == (1, 3, 41, 2048)  # long side capped
    flat = resize_short_side(Image.new("RGB", (30, 20), (10, 20, 30)), 448)
    torch.testing.assert_close(flat[0, :, 100, 100], torch.tensor([10.0, 20.0, 30.0]))


class _FakeGroupModel(torch.nn.Module):
    """Two final groups: patches whose mean red value is high go to group 0 ("apple"), the others to group 1
    ("sky"); one grouping stage; texts embed as one-hot vectors of their class."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(vision_config=SimpleNamespace(patch_size=4))
        self.calls = []

    def clamped_logit_scale(self):
        return torch.tensor(50.0)

    def get_text_features(self, input_ids, attention_mask=None):
        return F.one_hot(input_ids[:, 0], 3).float()

    def get_group_features(self, pixel_values):
        self.calls.append(tuple(pixel_values.shape[2:]))
        red = F.avg_pool2d(pixel_values[:, :1], 4).flatten(1)  # (1, patches)
        group0 = (red > 0).float() * 0.8 + 0.1
        attentions = torch.stack([group0, 1 - group0], dim=1)
        groups = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
        return {"group_embeds": groups, "image_embeds": torch.tensor([[1.0, 1.0, 0.0]]), "attentions": (attentions,)}


def _fake_tokenizer(texts, padding=True, return_tensors="pt", **kwargs):
    vocab = {"a photo of a apple.": 0, "a photo of a sky.": 1, "a photo of a grass.": 2}
    return {"input_ids": torch.tensor([[vocab[t]] for t in texts])}


def test_segment_images_recovers_designed_groups():
    array = np.zeros((24, 40, 3), dtype=np.uint8)
    array[:, :16] = (250, 0, 0)  # red left part ("apple"), blue right part ("sky")
    array[:, 16:] = (0, 0, 250)
    model = _FakeGroupModel()
    settings = SegmentationSettings(short_side=None, crop_size=16, stride=8)
    label_map = segment_images(model, _fake_tokenizer, [Image.fromarray(array)], ["apple", "sky", "grass"], settings)[
        0
    ]
    expected = torch.ones(24, 40, dtype=torch.long)
    expected[:, 16:] = 2
    assert torch.equal(label_map, expected)
    assert len(model.calls) == 2 * 4 and set(model.calls) == {(16, 16)}
    # The threshold can only mark pixels background, and with threshold 1.0 the weaker group does become background.
    strict = segment_images(model, _fake_tokenizer, [Image.fromarray(array)], ["apple", "sky", "grass"],
                            SegmentationSettings(background_threshold=1.0, short_side=None, crop_size=None))[0]  # fmt: skip
    assert set(strict.unique().tolist()) <= {0, 1, 2}


def test_label_checks():
    assert check_labels("cat, dog") == ["cat", "dog"]
    with pytest.raises(ValueError, match="labels is empty"):
        check_labels([])
    with pytest.raises(ValueError, match=r"duplicates \['cat'\]"):
        check_labels(["cat", "dog", "cat"])
    with pytest.raises(ValueError, match="non-empty strings"):
        check_labels(["cat", " "])


@pytest.fixture(scope="module")
def model_and_processor():
    torch.manual_seed(0)
    config = get_variant("groupvit").tiny_config()
    config.text_config.vocab_size, config.text_config.max_position_embeddings = 300, 32
    model = ClipzooGroupViTModel(config).eval()
    tokenizer = build_offline_tokenizer(["a photo of a circle.", "a red square", "a blue triangle"], vocab_size=300)
    image_processor = ClipzooGroupViTImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32})
    return model, ClipzooGroupViTProcessor(image_processor, tokenizer)


def test_processor_uses_imagenet_constants_and_bilinear(model_and_processor):
    _, processor = model_and_processor
    image_processor = processor.image_processor
    assert list(image_processor.image_mean) == [0.485, 0.456, 0.406]
    assert list(image_processor.image_std) == [0.229, 0.224, 0.225]
    assert int(image_processor.resample) == int(Image.Resampling.BILINEAR)
    pixels = image_processor(Image.new("RGB", (50, 40), (124, 116, 104)), return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 32, 32)
    expected = (torch.tensor([124, 116, 104]) / 255 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor(
        [0.229, 0.224, 0.225]
    )
    torch.testing.assert_close(pixels[0, :, 5, 5], expected.float(), atol=1e-5, rtol=0)
    default = ClipzooGroupViTImageProcessor()
    assert default.size["shortest_edge"] == 256 and default.crop_size["height"] == 224


def test_processor_expands_prompts_and_round_trips(model_and_processor, tmp_path):
    _, processor = model_and_processor
    batch = processor(
        images=[Image.new("RGB", (40, 40))] * 2, text=["a red square", "a blue triangle"], expand_prompts=True,
        num_prompts=3, rng=np.random.default_rng(0),
    )  # fmt: skip
    assert batch["input_ids"].shape[:2] == (2, 4) and batch["attention_mask"].shape[:2] == (2, 4)
    assert processor.tokenizer.decode(batch["input_ids"][0, 0], skip_special_tokens=True) == "a red square"
    assert "square" in processor.tokenizer.decode(batch["input_ids"][0, 1], skip_special_tokens=True)
    plain = processor(text=["a red square"])
    assert plain["input_ids"].ndim == 2
    processor.save_pretrained(tmp_path)
    reloaded = ClipzooGroupViTProcessor.from_pretrained(tmp_path)
    assert isinstance(reloaded.image_processor, ClipzooGroupViTImageProcessor)
    assert reloaded.image_processor.crop_size["height"] == 32


def test_post_process_semantic_segmentation_end_to_end(model_and_processor):
    model, processor = model_and_processor
    image = Image.new("RGB", (50, 30), (200, 30, 30))
    maps = processor.post_process_semantic_segmentation(
        model, [image, image.resize((20, 20))], ["circle", "square"], short_side=48, crop_size=32, stride=16
    )
    assert [tuple(m.shape) for m in maps] == [(30, 50), (20, 20)]
    assert all(m.dtype == torch.long and m.min() >= 0 and m.max() <= 2 for m in maps)
    no_bg = processor.post_process_semantic_segmentation(
        model, image, ["circle", "square"], with_background=False, short_side=32, crop_size=None
    )[0]
    assert no_bg.max() <= 1
    assert model.training is False


def test_segmentation_bad_inputs(model_and_processor):
    model, processor = model_and_processor
    image = Image.new("RGB", (40, 40))
    with pytest.raises(ValueError, match="labels is empty"):
        processor.post_process_semantic_segmentation(model, image, [])
    with pytest.raises(ValueError, match="duplicates"):
        processor.post_process_semantic_segmentation(model, image, ["circle", "circle"])
    with pytest.raises(ValueError, match="smaller than the 8-pixel patch"):
        processor.post_process_semantic_segmentation(model, Image.new("RGB", (5, 40)), ["circle"])
    with pytest.raises(ValueError, match="stride"):
        SegmentationSettings(crop_size=32, stride=64)


def _segment_one_setting(model, tokenizer, image, labels, settings):
    from clipzoo.processing.segmentation_groupvit import _normalise, encode_class_prompts, window_scores

    text = encode_class_prompts(model, tokenizer, labels, settings.template)
    pixels = _normalise(resize_short_side(image, settings.short_side, settings.max_long_side))
    channels = len(labels) + int(settings.with_background)
    with torch.no_grad():
        scores = slide_window_scores(
            lambda window: window_scores(model, window, text, settings), pixels, channels, settings.crop_size,
            settings.stride,
        )  # fmt: skip
    return F.interpolate(scores[None], size=image.size[::-1], mode="bilinear", align_corners=False)[0].argmax(0)


def test_several_settings_share_one_forward_pass_and_match_separate_runs(model_and_processor):
    from clipzoo.processing.segmentation_groupvit import segment_images_multi

    model, processor = model_and_processor
    rng = np.random.default_rng(3)
    images = [Image.fromarray(rng.integers(0, 256, size=(40, 56, 3), dtype=np.uint8)) for _ in range(2)]
    labels = ["circle", "square", "triangle"]
    base = {"short_side": 48, "crop_size": 32, "stride": 16}
    settings = [
        SegmentationSettings(**base),
        SegmentationSettings(**base, assignment="hard"),
        SegmentationSettings(**base, background_threshold=0.0, top_k=2),
        SegmentationSettings(**base, with_background=False),
    ]
    calls = []
    original = model.get_group_features
    model.get_group_features = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        together = segment_images_multi(model, processor.tokenizer, images, labels, settings)
        shared_calls = len(calls)
        # Independent reference: each setting on its own, through the per-window step `window_scores`.
        separate = [[_segment_one_setting(model, processor.tokenizer, image, labels, s) for image in images]
                    for s in settings]  # fmt: skip
    finally:
        del model.get_group_features
    assert shared_calls * len(settings) == len(calls) - shared_calls  # one forward per window, not one per setting
    for maps, expected in zip(together, separate):
        assert all(torch.equal(a, b) for a, b in zip(maps, expected))
    single = segment_images(model, processor.tokenizer, images, labels, settings[0])
    assert len(single) == len(images) and all(torch.equal(a, b) for a, b in zip(single, together[0]))
    assert not torch.equal(together[0][0], together[3][0])  # the settings do differ here
    with pytest.raises(ValueError, match="must share crop_size"):
        segment_images_multi(
            model, processor.tokenizer, images, labels, [settings[0], SegmentationSettings(short_side=48, stride=16)]
        )
    with pytest.raises(ValueError, match="at least one"):
        segment_images_multi(model, processor.tokenizer, images, labels, [])
