"""clipzoo.processing.augmentation: GroupViT's DeiT-style training transform (crop, flip, RandAugment, erasing)."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance

from clipzoo.processing import augmentation
from clipzoo.processing.augmentation import (
    DEFAULT_FILL,
    RAND_AUGMENT_OPS,
    RAND_INCREASING_OPS,
    RAND_OPS,
    DeiTTrainTransform,
    RandAugment,
    RandAugmentSettings,
    parse_rand_augment,
    random_erase,
    sample_crop_box,
)
from clipzoo.processing.segmentation_groupvit import IMAGENET_MEAN, IMAGENET_STD


def _image(width=64, height=48, seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _identity(size, **overrides):
    kwargs = dict(scale=(1.0, 1.0), hflip=0.0, rand_augment=None, random_erasing=0.0, seed=0)
    kwargs.update(overrides)
    return DeiTTrainTransform(size, **kwargs)


def _rounded_box_possible(width, height, area, scale, ratio):
    """Could (width, height) be round(sqrt(a * r)), round(sqrt(a / r)) with a / area in scale, r in ratio?"""
    fits_area = (width - 0.5) * (height - 0.5) <= scale[1] * area + 1e-9 and (width + 0.5) * (height + 0.5) >= (
        scale[0] * area - 1e-9
    )
    fits_ratio = (width - 0.5) / (height + 0.5) <= ratio[1] + 1e-9 and (width + 0.5) / (height - 0.5) >= ratio[
        0
    ] - 1e-9
    return fits_area and fits_ratio


def _fallback_box(width, height, ratio):
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


# ---------------------------------------------------------------------------------------------------------- transform


def test_output_shape_and_dtype():
    transform = DeiTTrainTransform(32, seed=0)
    for seed, (width, height) in enumerate([(64, 48), (20, 90), (32, 32)]):
        out = transform(_image(width, height, seed))
        assert out.shape == (3, 32, 32) and out.dtype == torch.float32
        assert torch.isfinite(out).all()
    # non-RGB inputs are converted
    assert transform(_image().convert("L")).shape == (3, 32, 32)
    assert transform(_image().convert("RGBA")).shape == (3, 32, 32)


def test_same_seed_is_reproducible_and_different_seeds_differ():
    images = [_image(seed=s) for s in range(4)]
    first = [DeiTTrainTransform(32, seed=7)(image) for image in images]
    run_a = DeiTTrainTransform(32, seed=7)
    run_b = DeiTTrainTransform(32, seed=7)
    a = [run_a(image) for image in images]
    b = [run_b(image) for image in images]
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert torch.equal(first[0], a[0])
    other = DeiTTrainTransform(32, seed=8)
    assert any(not torch.equal(x, other(image)) for x, image in zip(a, images))
    # set_seed restarts the stream
    run_a.set_seed(7)
    assert all(torch.equal(run_a(image), x) for image, x in zip(images, a))
    # successive calls draw fresh randomness
    assert not torch.equal(run_a(images[0]), a[0])


def test_identity_configuration_is_plain_resize_and_normalise():
    for width, height in [(64, 48), (100, 30), (17, 61)]:
        image = _image(width, height, seed=width)
        expected = np.asarray(image.resize((24, 24), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
        expected = (expected - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
        expected = torch.from_numpy(expected).permute(2, 0, 1)
        for seed in range(3):
            torch.testing.assert_close(_identity(24, seed=seed)(image), expected)


def test_flip_probability_one_mirrors_the_image():
    image = _image(40, 30)
    plain = _identity(16)(image)
    flipped = _identity(16, hflip=1.0)(image)
    torch.testing.assert_close(flipped, plain.flip(-1))


def test_default_pipeline_actually_augments():
    image = _image(64, 48)
    plain = _identity(32)(image)
    transform = DeiTTrainTransform(32, seed=0)
    outputs = [transform(image) for _ in range(8)]
    assert all(not torch.allclose(out, plain) for out in outputs)
    assert len({out.sum().item() for out in outputs}) == len(outputs)


def test_dataloader_workers_get_distinct_reproducible_streams(monkeypatch):
    image = _image()
    worker = {"info": None}
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: worker["info"])
    transform = DeiTTrainTransform(16, seed=3)  # built in the main process
    outputs = {}
    for worker_seed in (100, 101, 100):
        worker["info"] = None  # each worker receives a copy of the transform built in the main process
        copy = DeiTTrainTransform(16, seed=3)
        worker["info"] = SimpleNamespace(id=worker_seed - 100, seed=worker_seed)
        outputs.setdefault(worker_seed, []).append(torch.stack([copy(image) for _ in range(3)]))
    assert torch.equal(outputs[100][0], outputs[100][1])  # same worker seed: same stream
    assert not torch.equal(outputs[100][0], outputs[101][0])  # other worker (or epoch): other stream
    worker["info"] = None
    main = torch.stack([transform(image) for _ in range(3)])
    assert not torch.equal(main, outputs[100][0])


def test_processes_draw_different_streams_from_one_seed(monkeypatch):
    # Every training process seeds torch (so the loaders' worker seeds) alike: process_index must separate them, in
    # the main process and inside workers, while each process stays reproducible.
    image = _image()
    worker = {"info": None}
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: worker["info"])

    def draws(process_index, worker_seed=None):
        worker["info"] = None
        transform = DeiTTrainTransform(16, seed=3, process_index=process_index)
        if worker_seed is not None:
            worker["info"] = SimpleNamespace(id=0, seed=worker_seed)
        return torch.stack([transform(image) for _ in range(3)])

    for worker_seed in (None, 100):
        assert torch.equal(draws(1, worker_seed), draws(1, worker_seed))
        assert not torch.equal(draws(0, worker_seed), draws(1, worker_seed))
    plain = DeiTTrainTransform(16, seed=3)  # process 0 keeps the single-process stream
    assert torch.equal(draws(0), torch.stack([plain(image) for _ in range(3)]))
    with pytest.raises(ValueError, match="process_index"):
        DeiTTrainTransform(16, process_index=-1)


# ------------------------------------------------------------------------------------------------ random resized crop


def test_crop_boxes_respect_scale_and_ratio_bounds():
    rng = np.random.default_rng(0)
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    fractions, ratios, corners = [], [], set()
    for _ in range(3000):
        width, height = int(rng.integers(8, 200)), int(rng.integers(8, 200))
        left, top, w, h = sample_crop_box(width, height, scale, ratio, rng)
        assert 1 <= w <= width and 1 <= h <= height
        assert 0 <= left <= width - w and 0 <= top <= height - h
        if (left, top, w, h) != _fallback_box(width, height, ratio):
            assert _rounded_box_possible(w, h, width * height, scale, ratio), (width, height, left, top, w, h)
        fractions.append(w * h / (width * height))
        ratios.append(w / h)
        corners.add((left > 0, top > 0))
    fractions = np.array(fractions)
    assert fractions.min() < 0.12 and fractions.max() > 0.9  # the whole scale range is used
    assert np.mean(np.array(ratios) < 0.85) > 0.05 and np.mean(np.array(ratios) > 1.2) > 0.05
    assert corners == {(False, False), (False, True), (True, False), (True, True)}


def test_crop_boxes_with_narrow_bounds():
    rng = np.random.default_rng(1)
    for _ in range(500):
        left, top, w, h = sample_crop_box(300, 200, (0.25, 0.3), (1.0, 1.2), rng)
        assert _rounded_box_possible(w, h, 300 * 200, (0.25, 0.3), (1.0, 1.2))
        assert not _rounded_box_possible(w, h, 300 * 200, (0.5, 1.0), (1.0, 1.2))


def test_crop_fallback_clamps_the_aspect_ratio():
    rng = np.random.default_rng(0)
    # no box of area >= 0.9 with a ratio in [3/4, 4/3] fits in a 1000 x 10 strip: centre crop 13 x 10
    assert sample_crop_box(1000, 10, (0.9, 1.0), (3 / 4, 4 / 3), rng) == (493, 0, 13, 10)
    assert sample_crop_box(10, 1000, (0.9, 1.0), (3 / 4, 4 / 3), rng) == (0, 493, 10, 13)


def test_crop_fallback_in_range_is_the_whole_image():
    class AlwaysHigh:  # every attempt draws area = whole image and ratio = 4/3, which never fits a square
        def uniform(self, low, high):
            return high

        def integers(self, low, high):
            raise AssertionError("no attempt should fit")

    assert sample_crop_box(100, 100, (0.5, 1.0), (3 / 4, 4 / 3), AlwaysHigh()) == (0, 0, 100, 100)


def test_full_scale_keeps_the_whole_image():
    rng = np.random.default_rng(0)
    for width, height in [(400, 300), (1000, 10), (33, 33)]:
        assert sample_crop_box(width, height, (1.0, 1.0), (3 / 4, 4 / 3), rng) == (0, 0, width, height)


# -------------------------------------------------------------------------------------------------------- RandAugment


def test_parse_rand_augment():
    assert parse_rand_augment("rand-m9-mstd0.5-inc1") == RandAugmentSettings(9.0, 2, 0.5, True)
    assert parse_rand_augment("rand-n3-m7") == RandAugmentSettings(7.0, 3, 0.0, False)
    assert parse_rand_augment("rand") == RandAugmentSettings(10.0, 2, 0.0, False)
    assert parse_rand_augment("rand-mstd101").magnitude_std == math.inf
    assert RandAugment("rand-m9-mstd0.5-inc1").op_names == RAND_INCREASING_OPS
    assert RandAugment("rand-m9-inc0").op_names == RAND_OPS
    assert len(RAND_INCREASING_OPS) == len(RAND_OPS) == 15


@pytest.mark.parametrize(
    "config, fragment",
    [
        ("rand-m9-w0", "'w'"),
        ("rand-m9-foo", "foo"),
        ("rand-mmax12", "'mmax'"),
        ("augmix-m3", "rand_augment"),
        ("rand-m11", "'m'"),
        ("rand-inc2", "'inc'"),
        ("rand-mabc1", "'mabc'"),
        ("rand-n2x", "'n'"),
    ],
)
def test_parse_rand_augment_rejects_bad_strings(config, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_rand_augment(config)
    with pytest.raises(ValueError, match=fragment):
        DeiTTrainTransform(32, rand_augment=config)


@pytest.mark.parametrize("name", sorted(RAND_AUGMENT_OPS))
def test_every_op_keeps_size_and_mode(name):
    image = _image(37, 29)
    rng = np.random.default_rng(0)
    for magnitude in (0.0, 4.5, 9.0, 10.0):
        out = RAND_AUGMENT_OPS[name](image, magnitude, rng)
        assert isinstance(out, Image.Image)
        assert out.size == image.size and out.mode == "RGB"
    assert np.asarray(image).shape == (29, 37, 3)  # the input is not modified in place


def test_op_semantics():
    image = _image(40, 30)
    pixels = np.asarray(image).astype(int)
    rng = np.random.default_rng(0)
    ops = RAND_AUGMENT_OPS
    np.testing.assert_array_equal(np.asarray(ops["Invert"](image, 9, rng)), 255 - pixels)
    # PosterizeIncreasing at 9 keeps 4 - int(3.6) = 1 bit
    assert set(np.unique(np.asarray(ops["PosterizeIncreasing"](image, 9, rng)))) == {0, 128}
    np.testing.assert_array_equal(np.asarray(ops["PosterizeIncreasing"](image, 10, rng)), 0)  # 0 bits: black
    np.testing.assert_array_equal(np.asarray(ops["PosterizeIncreasing"](image, 5, rng)), pixels & 0b11000000)
    np.testing.assert_array_equal(np.asarray(ops["Posterize"](image, 10, rng)), pixels & 0b11110000)
    # SolarizeIncreasing at 5: threshold 128
    expected = np.where(pixels >= 128, 255 - pixels, pixels)
    np.testing.assert_array_equal(np.asarray(ops["SolarizeIncreasing"](image, 5, rng)), expected)
    # SolarizeAdd at 10: +110 below 128, clipped to 255
    expected = np.where(pixels < 128, np.minimum(pixels + 110, 255), pixels)
    np.testing.assert_array_equal(np.asarray(ops["SolarizeAdd"](image, 10, rng)), expected)
    # magnitude 0 geometric ops are the identity
    for name in ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"):
        np.testing.assert_array_equal(np.asarray(ops[name](image, 0, rng)), pixels)
    # Brightness increasing at 10: factor 1.9 or 0.1
    candidates = [np.asarray(ImageEnhance.Brightness(image).enhance(f)) for f in (1.9, 0.1)]
    seen = set()
    for _ in range(20):
        out = np.asarray(ops["BrightnessIncreasing"](image, 10, rng))
        matches = [i for i, c in enumerate(candidates) if np.array_equal(out, c)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == {0, 1}  # both signs occur


def test_geometric_ops_fill_with_the_mean_colour():
    assert DEFAULT_FILL == (124, 116, 104)
    image = Image.new("RGB", (40, 20), (255, 255, 255))
    rng = np.random.default_rng(0)
    shifts = set()
    for _ in range(12):
        out = np.asarray(RAND_AUGMENT_OPS["TranslateXRel"](image, 10, rng))  # shift by 0.45 * 40 = 18 pixels
        left_filled = (out[:, :18] == DEFAULT_FILL).all()
        right_filled = (out[:, -18:] == DEFAULT_FILL).all()
        assert left_filled != right_filled
        assert (out[:, 18:22] == 255).all()
        shifts.add(left_filled)
    assert shifts == {True, False}
    custom = np.asarray(RAND_AUGMENT_OPS["Rotate"](image, 10, rng, fill=(1, 2, 3)))
    assert tuple(custom[0, 0]) == (1, 2, 3)
    # the transform derives the fill from its normalisation mean
    assert DeiTTrainTransform(16).rand_augment.fill == (124, 116, 104)
    assert DeiTTrainTransform(16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)).rand_augment.fill == (128, 128, 128)


def test_rand_augment_draws(monkeypatch):
    calls = []

    def recorder(name):
        def op(image, magnitude, rng, fill=DEFAULT_FILL):
            calls[-1].append((name, magnitude, fill))
            return image

        return op

    for name in RAND_AUGMENT_OPS:
        monkeypatch.setitem(augmentation.RAND_AUGMENT_OPS, name, recorder(name))
    augment = RandAugment("rand-m9-mstd0.5-inc1", fill=(1, 2, 3))
    rng = np.random.default_rng(0)
    image = _image(8, 8)
    for _ in range(3000):
        calls.append([])
        assert augment(image, rng) is image
    per_image = np.array([len(c) for c in calls])
    assert per_image.max() == 2 and abs(per_image.mean() - 1.0) < 0.05  # 2 ops, each with probability 0.5
    applied = [call for c in calls for call in c]
    magnitudes = np.array([m for _, m, _ in applied])
    assert magnitudes.min() >= 0 and magnitudes.max() <= 10
    assert abs(magnitudes.mean() - 9.0) < 0.05 and 0.4 < magnitudes.std() < 0.55
    assert {name for name, _, _ in applied} == set(RAND_INCREASING_OPS)
    assert {fill for _, _, fill in applied} == {(1, 2, 3)}
    # no noise: the magnitude is exactly M; mstd > 100: uniform in [0, M]
    assert {RandAugment("rand-m7").sample_magnitude(rng) for _ in range(10)} == {7.0}
    uniform = np.array([RandAugment("rand-m8-mstd200").sample_magnitude(rng) for _ in range(2000)])
    assert uniform.min() >= 0 and uniform.max() <= 8 and abs(uniform.mean() - 4) < 0.2


# ----------------------------------------------------------------------------------------------------- random erasing


def _erased_box(before, after):
    changed = (before != after).any(dim=0)
    rows, cols = torch.nonzero(changed.any(dim=1)).flatten(), torch.nonzero(changed.any(dim=0)).flatten()
    top, bottom, left, right = rows.min().item(), rows.max().item() + 1, cols.min().item(), cols.max().item() + 1
    assert changed[top:bottom, left:right].all() and changed.sum() == (bottom - top) * (right - left)  # a rectangle
    return top, left, bottom - top, right - left


def test_random_erasing_changes_one_bounded_rectangle():
    height, width = 60, 80
    area = height * width
    base = torch.full((3, height, width), 5.0)
    rng = np.random.default_rng(0)
    fractions = []
    for _ in range(300):
        out = random_erase(base, rng, probability=1.0)
        assert torch.equal(base, torch.full((3, height, width), 5.0))  # input untouched
        top, left, h, w = _erased_box(base, out)
        assert h < height and w < width
        # h = round(sqrt(a * r)), w = round(sqrt(a / r)), a / area in [0.02, 1/3], r = h / w in [0.3, 1/0.3]
        assert _rounded_box_possible(h, w, area, (0.02, 1 / 3), (0.3, 1 / 0.3))
        fractions.append(h * w / area)
        noise = out[:, top : top + h, left : left + w]
        assert not torch.equal(noise[0], noise[1])  # per-pixel, per-channel values
    assert min(fractions) < 0.05 and max(fractions) > 0.25
    assert all(0.02 - 0.01 <= f <= 1 / 3 + 0.01 for f in fractions)
    big = random_erase(torch.zeros(3, 200, 200), np.random.default_rng(1), probability=1.0)
    values = big[big != 0]
    assert values.numel() > 2000 and abs(values.mean().item()) < 0.1 and abs(values.std().item() - 1) < 0.1


def test_random_erasing_probability():
    rng = np.random.default_rng(0)
    base = torch.zeros(3, 16, 16)
    assert all(torch.equal(random_erase(base, rng, probability=0.0), base) for _ in range(50))
    erased = np.mean([not torch.equal(random_erase(base, rng, probability=0.25), base) for _ in range(1000)])
    assert abs(erased - 0.25) < 0.05


def test_transform_random_erasing_region():
    image = _image(64, 48)
    plain = _identity(40)(image)
    for seed in range(5):
        erased = _identity(40, random_erasing=1.0, seed=seed)(image)
        _, _, h, w = _erased_box(plain, erased)
        assert 0.02 - 0.01 <= h * w / 1600 <= 1 / 3 + 0.01
        assert _rounded_box_possible(h, w, 1600, (0.02, 1 / 3), (0.3, 1 / 0.3))


# --------------------------------------------------------------------------------------------------------- bad inputs


def test_non_pil_input_is_a_type_error():
    transform = DeiTTrainTransform(16, seed=0)
    with pytest.raises(TypeError, match="ndarray"):
        transform(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(TypeError, match="Tensor"):
        transform(torch.zeros(3, 8, 8))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"size": 0}, "size"),
        ({"size": -3}, "size"),
        ({"size": 2.5}, "size"),
        ({"scale": (0.0, 1.0)}, "scale"),
        ({"scale": (0.5, 0.2)}, "scale"),
        ({"scale": (0.1, 1.5)}, "scale"),
        ({"scale": (0.1,)}, "scale"),
        ({"ratio": (0.0, 1.0)}, "ratio"),
        ({"ratio": (2.0, 1.0)}, "ratio"),
        ({"hflip": 1.5}, "hflip"),
        ({"hflip": -0.1}, "hflip"),
        ({"random_erasing": 2}, "random_erasing"),
        ({"random_erasing": -0.5}, "random_erasing"),
        ({"std": (0.2, 0.0, 0.2)}, "std"),
    ],
)
def test_bad_arguments_are_value_errors(kwargs, name):
    kwargs = {"size": 16, **kwargs}
    with pytest.raises(ValueError, match=name):
        DeiTTrainTransform(**kwargs)
