import io
import math
import re

import datasets
import numpy as np
import pytest
from PIL import Image

from clipzoo.data.shapesworld import (
    ACTIONS,
    BACKGROUND,
    COLOURS,
    PAIR_ATTRIBUTES,
    REVERSED_ACTIONS,
    SEGMENTATION_CLASSES,
    SHAPES,
    TASKS,
    ShapeObject,
    class_names,
    encode_png,
    long_caption,
    render_scene,
    sample_scene,
    save_shapesworld,
    shapesworld,
    short_caption,
)
from clipzoo.data.shapesworld_actions import action_states, render_video, sample_action


NUMBER_WORDS = {2: "two", 3: "three", 4: "four"}


def _png_bytes(dataset, column):
    """Raw stored bytes of an Image column (or a list of them for List(Image))."""
    return dataset.data.column(column).to_pylist()


def _objects(row_objects):
    return [
        ShapeObject(o["shape"], o["colour"], o["size"], o["x"], o["y"], orientation=o["orientation"])
        for o in row_objects
    ]


# ---------------------------------------------------------------------------------------------------- determinism


@pytest.mark.parametrize(
    "task, kwargs",
    [("captions", {}), ("segmentation", {}), ("classification", {}), ("pairs", {}), ("actions", {"num_frames": 4})],
)
def test_same_seed_same_bytes_different_seed_different(task, kwargs):
    first = shapesworld(task, 6, seed=3, image_size=32, **kwargs)
    second = shapesworld(task, 6, seed=3, image_size=32, **kwargs)
    other = shapesworld(task, 6, seed=4, image_size=32, **kwargs)
    image_column = {"pairs": "image_a", "actions": "frames"}.get(task, "image")
    assert first.data.equals(second.data)
    assert _png_bytes(first, image_column) == _png_bytes(second, image_column)
    assert _png_bytes(first, image_column) != _png_bytes(other, image_column)


def test_smaller_dataset_is_prefix_of_larger():
    small, large = shapesworld("captions", 3, seed=7), shapesworld("captions", 8, seed=7)
    assert small.data.equals(large.select(range(3)).data)


def test_features_and_sizes():
    captions = shapesworld("captions", 2, image_size=48)
    assert isinstance(captions.features["image"], datasets.Image)
    image = captions[0]["image"]
    assert image.mode == "RGB" and image.size == (48, 48)
    assert set(captions.column_names) == {"image", "caption", "long_caption", "objects", "num_objects"}
    segmentation = shapesworld("segmentation", 2)
    assert segmentation[0]["mask"].mode == "L"
    actions = shapesworld("actions", 2, num_frames=5)
    assert isinstance(actions.features["frames"], datasets.List)
    assert isinstance(actions.features["frames"].feature, datasets.Image)
    assert len(actions[0]["frames"]) == 5 and actions[0]["frames"][0].mode == "RGB"
    assert isinstance(actions.features["label"], datasets.ClassLabel)


def test_unknown_task_raises_listing_valid_tasks():
    with pytest.raises(ValueError, match="captions.*segmentation.*classification.*pairs.*actions"):
        shapesworld("detection", 2)
    assert set(TASKS) == {"captions", "segmentation", "classification", "pairs", "actions"}


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="split"):
        shapesworld("classification", 2, split="test")
    with pytest.raises(TypeError):
        shapesworld("captions", 2, not_an_option=1)
    with pytest.raises(ValueError, match="attributes"):
        shapesworld("pairs", 2, attributes=("texture",))


def test_encode_png_round_trips_through_pil():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(7, 5, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, size=(4, 9), dtype=np.uint8)
    decoded_rgb = Image.open(io.BytesIO(encode_png(rgb)))
    decoded_gray = Image.open(io.BytesIO(encode_png(gray)))
    assert decoded_rgb.mode == "RGB" and np.array_equal(np.asarray(decoded_rgb), rgb)
    assert decoded_gray.mode == "L" and np.array_equal(np.asarray(decoded_gray), gray)


def test_save_shapesworld_round_trip(tmp_path):
    saved = save_shapesworld("classification", tmp_path / "cls", num_samples=4, seed=1)
    loaded = datasets.load_from_disk(str(tmp_path / "cls"))
    assert loaded.data.equals(saved.data)
    assert loaded.features["label"].names == class_names("classification")


# ---------------------------------------------------------------------------------------------------- rendering


def _reference_render(objects, image_size):
    """Slow per-pixel reference: the last object containing a pixel centre owns the pixel."""
    from clipzoo.data.shapesworld import _SHAPE_TESTS

    image = np.empty((image_size, image_size, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    mask = np.zeros((image_size, image_size), dtype=np.uint8)
    for row in range(image_size):
        for col in range(image_size):
            for obj in objects:
                # The renderer snaps centres to 1/8 pixel.
                cx = round(obj.x * image_size * 8) / 8
                cy = round(obj.y * image_size * 8) / 8
                dx, dy, radius = col + 0.5 - cx, row + 0.5 - cy, obj.radius * image_size
                theta = math.radians(obj.heading)
                v = (dx * math.sin(theta) - dy * math.cos(theta)) / radius
                u = (dx * math.cos(theta) + dy * math.sin(theta)) / radius
                if bool(_SHAPE_TESTS[obj.shape](np.float64(u), np.float64(v))):
                    image[row, col] = COLOURS[obj.colour]
                    mask[row, col] = SHAPES.index(obj.shape) + 1
    return image, mask


def test_render_scene_matches_per_pixel_reference():
    rng = np.random.default_rng(0)
    for _ in range(4):
        scene = sample_scene(rng, min_objects=2, max_objects=4, min_gap=0.6)
        image, mask = render_scene(scene, 32)
        ref_image, ref_mask = _reference_render(scene, 32)
        assert np.array_equal(mask, ref_mask)
        assert np.array_equal(image, ref_image)


def test_later_objects_occlude_earlier_ones():
    circle = ShapeObject("circle", "red", "large", 0.5, 0.5)
    square = ShapeObject("square", "blue", "small", 0.5, 0.5)
    image, mask = render_scene([circle, square], 64)
    assert mask[32, 32] == SEGMENTATION_CLASSES.index("square") and tuple(image[32, 32]) == COLOURS["blue"]
    image, mask = render_scene([square, circle], 64)
    assert mask[32, 32] == SEGMENTATION_CLASSES.index("circle") and tuple(image[32, 32]) == COLOURS["red"]
    assert not (mask == SEGMENTATION_CLASSES.index("square")).any()


def test_oriented_shapes_point_where_they_say():
    for orientation, (dy, dx) in {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}.items():
        _, mask = render_scene([ShapeObject("triangle", "red", "large", 0.5, 0.5, orientation=orientation)], 64)
        rows, cols = np.nonzero(mask)
        # A triangle's tip is its farthest pixel along the heading, beyond the centre.
        tip = (rows * dy + cols * dx).max() - (32 * dy + 32 * dx)
        back = (32 * dy + 32 * dx) - (rows * dy + cols * dx).min()
        assert tip > back, orientation


def test_dataset_masks_match_drawn_objects():
    dataset = shapesworld("segmentation", 12, seed=5)
    for row in dataset:
        image, mask = np.asarray(row["image"]), np.asarray(row["mask"])
        assert np.all(image[mask == 0] == BACKGROUND)
        colours_of_class = {}
        for obj in row["objects"]:
            colours_of_class.setdefault(obj["class_id"], set()).add(COLOURS[obj["colour"]])
            assert obj["class_id"] == SEGMENTATION_CLASSES.index(obj["shape"])
        assert set(np.unique(mask)) - {0} <= set(colours_of_class)
        for class_id, colours in colours_of_class.items():
            pixels = {tuple(p) for p in image[mask == class_id]}
            assert pixels <= colours
        # The last object is never occluded, so its whole bbox region of the mask shows it.
        last = row["objects"][-1]
        x0, y0, x1, y1 = last["bbox"]
        assert (mask[y0:y1, x0:x1] == last["class_id"]).any()
        assert np.array_equal(render_scene(_objects(row["objects"]), 64)[1], mask)


def test_noise_changes_background_only():
    plain = shapesworld("captions", 2, seed=1)
    noisy = shapesworld("captions", 2, seed=1, noise=8.0)
    assert plain["caption"] == noisy["caption"]
    a, b = np.asarray(plain[0]["image"]), np.asarray(noisy[0]["image"])
    objects = render_scene(_objects(plain[0]["objects"]), 64)[1] > 0
    assert np.array_equal(a[objects], b[objects]) and not np.array_equal(a[~objects], b[~objects])


# ---------------------------------------------------------------------------------------------------- captions


def test_caption_examples():
    triangle = ShapeObject("triangle", "red", "large", 0.2, 0.2, orientation="up")
    square = ShapeObject("square", "green", "small", 0.7, 0.25)
    assert long_caption([triangle, square]) == (
        "There is a large red triangle pointing up in the top left. "
        "A small green square is to the right of the red triangle."
    )
    assert (
        short_caption([triangle, square]) == short_caption([square, triangle]) == "a green square and a red triangle"
    )
    circles = [ShapeObject("circle", "blue", "small", x, 0.5) for x in (0.2, 0.5, 0.8)]
    assert short_caption(circles[:2]) == "two blue circles"
    assert short_caption([ShapeObject("circle", "orange", "small", 0.5, 0.5)]) == "an orange circle"
    assert long_caption(circles[:2]).endswith("A small blue circle is to the right of the blue circle.")


def test_captions_describe_objects():
    dataset = shapesworld("captions", 40, seed=2)
    counts = [row["num_objects"] for row in dataset]
    assert set(counts) == {1, 2, 3, 4}
    for row in dataset:
        objects = row["objects"]
        assert len(objects) == row["num_objects"]
        groups = {}
        for obj in objects:
            groups[(obj["colour"], obj["shape"])] = groups.get((obj["colour"], obj["shape"]), 0) + 1
            assert f"{obj['size']} {obj['colour']} {obj['shape']}" in row["long_caption"]
        for (colour, shape), count in groups.items():
            if count == 1:
                assert re.search(rf"\ban? {colour} {shape}\b(?!s)", row["caption"]), row["caption"]
            else:
                plural = shape + ("es" if shape.endswith("s") else "s")
                assert f"{NUMBER_WORDS[count]} {colour} {plural}" in row["caption"], row["caption"]
        assert row["long_caption"].count(".") == len(objects)


def test_short_captions_repeat_across_images():
    captions = shapesworld("captions", 200, seed=0, max_objects=1)["caption"]
    assert len(set(captions)) < len(captions) // 2


# ---------------------------------------------------------------------------------------------------- classes


def test_class_splits_are_disjoint_and_cover_all():
    for task, kwargs in [("classification", {}), ("classification", {"label_by": "shape"}), ("actions", {})]:
        seen, heldout = class_names(task, "seen", **kwargs), class_names(task, "heldout", **kwargs)
        assert seen and heldout and not set(seen) & set(heldout)
        assert sorted(seen + heldout) == sorted(class_names(task, "all", **kwargs))
    assert len(class_names("classification")) == len(SHAPES) * len(COLOURS)
    seen_names = class_names("classification", "seen")
    # Held-out classes are new combinations: every shape and colour still occurs among seen classes.
    assert {n.split()[1] for n in seen_names} == set(SHAPES) and {n.split()[0] for n in seen_names} == set(COLOURS)
    assert class_names("segmentation")[0] == "background"
    assert class_names("actions") == list(ACTIONS) and len(ACTIONS) >= 10


@pytest.mark.parametrize("split", ["seen", "heldout"])
def test_classification_rows_show_their_class(split):
    dataset = shapesworld("classification", 20, seed=1, split=split, num_distractors=2)
    names = dataset.features["label"].names
    assert names == class_names("classification", split)
    for row in dataset:
        target = row["objects"][-1]
        assert f"{target['colour']} {target['shape']}" == names[row["label"]]
        assert target["size"] == "large" and len(row["objects"]) == 3
        others = {f"{o['colour']} {o['shape']}" for o in row["objects"][:-1]}
        assert names[row["label"]] not in others


# ---------------------------------------------------------------------------------------------------- pairs


_ATTRIBUTE_FIELDS = {"orientation": {"orientation"}, "colour": {"colour"}, "size": {"size"}, "position": {"x", "y"}}


def test_pairs_differ_in_exactly_one_attribute():
    dataset = shapesworld("pairs", 25, seed=4)
    assert set(dataset["attribute"]) == set(PAIR_ATTRIBUTES)
    for row in dataset:
        a, b = row["objects_a"], row["objects_b"]
        assert not np.array_equal(np.asarray(row["image_a"]), np.asarray(row["image_b"]))
        assert row["statement_a"] != row["statement_b"]
        if row["attribute"] == "count":
            assert abs(len(a) - len(b)) == 1
            shorter, longer = sorted((a, b), key=len)
            assert longer[: len(shorter)] == shorter
            extra = longer[-1]
            assert (extra["shape"], extra["colour"]) == (longer[-2]["shape"], longer[-2]["colour"])
            count_a = sum((o["shape"], o["colour"]) == (extra["shape"], extra["colour"]) for o in a)
            assert NUMBER_WORDS.get(count_a, "one") in row["statement_a"].split()
            continue
        assert len(a) == len(b)
        keys = ("shape", "colour", "size", "orientation", "x", "y")
        changed = [(i, {k for k in keys if a[i][k] != b[i][k]}) for i in range(len(a)) if a[i] != b[i]]
        assert len(changed) == 1, changed
        index, fields = changed[0]
        assert fields and fields <= _ATTRIBUTE_FIELDS[row["attribute"]], (row["attribute"], fields)
        if row["attribute"] in ("orientation", "colour", "size"):
            field = row["attribute"]
            assert row["statement_a"].endswith(a[index][field]) and row["statement_b"].endswith(b[index][field])


# ---------------------------------------------------------------------------------------------------- actions


@pytest.mark.parametrize("action", sorted(REVERSED_ACTIONS))
def test_reversed_action_is_the_video_played_backwards(action):
    rng = np.random.default_rng(ACTIONS.index(action))
    states, distractors = sample_action(rng, action, num_frames=6, num_distractors=1)
    reverse = action_states(REVERSED_ACTIONS[action], states[-1], num_frames=6)
    frames = render_video(states, distractors, 48)
    assert np.array_equal(render_video(reverse, distractors, 48), frames[::-1])
    # Frame order matters: the video is not its own reverse.
    assert not np.array_equal(frames, frames[::-1])


def test_action_directions():
    start = ShapeObject("arrow", "red", "small", 0.5, 0.5, orientation="up")
    assert action_states("move left", start)[-1].x < start.x < action_states("move right", start)[-1].x
    assert action_states("move up", start)[-1].y < start.y < action_states("move down", start)[-1].y
    assert action_states("shrink", start)[-1].radius < start.radius < action_states("grow", start)[-1].radius
    turned = action_states("rotate clockwise", start)[-1]
    pointing_right = ShapeObject("arrow", "red", "small", 0.5, 0.5, orientation="right")
    assert np.array_equal(render_scene([turned], 64)[0], render_scene([pointing_right], 64)[0])
    turned = action_states("rotate counter-clockwise", start)[-1]
    pointing_left = ShapeObject("arrow", "red", "small", 0.5, 0.5, orientation="left")
    assert np.array_equal(render_scene([turned], 64)[0], render_scene([pointing_left], 64)[0])
    jump = render_video(action_states("jump", start, 7), image_size=32)
    assert np.array_equal(jump, jump[::-1]) and not np.array_equal(jump[0], jump[3])
    recoloured = action_states("change colour", start, colour="blue")
    assert recoloured[-1].colour == "blue" and recoloured[0].colour == "red"


def test_actions_dataset_labels_and_reversals():
    dataset = shapesworld("actions", 12, seed=0, num_frames=4, num_distractors=1)
    names = dataset.features["label"].names
    assert names == list(ACTIONS)
    for row in dataset:
        action = names[row["label"]]
        if action in REVERSED_ACTIONS:
            assert names[row["reversed_label"]] == REVERSED_ACTIONS[action]
        else:
            assert row["reversed_label"] == -1
        assert row["caption"].split()[1] in COLOURS and row["description"]
        assert len(row["frames"]) == 4
    seen = shapesworld("actions", 7, split="seen", num_frames=3)
    assert seen.features["label"].names == class_names("actions", "seen")


def test_object_scale_enlarges_objects_and_is_checked():
    import numpy as np

    plain = shapesworld("segmentation", 6, seed=3)
    large = shapesworld("segmentation", 6, seed=3, object_scale=2.0, max_objects=2)
    area = lambda ds: np.mean([(np.asarray(m) > 0).sum() / len(o) for m, o in zip(ds["mask"], ds["objects"])])  # noqa: E731
    assert area(large) > 2.0 * area(plain)  # 4x in expectation; occlusion and the size draws vary
    cls = shapesworld("classification", 4, seed=3, label_by="shape", object_scale=2.0)
    assert all(o[0]["bbox"][2] - o[0]["bbox"][0] > 15 for o in cls["objects"])
    with pytest.raises(ValueError, match="object_scale"):
        shapesworld("captions", 2, object_scale=3.0)
    with pytest.raises(ValueError, match="object_scale"):
        shapesworld("classification", 2, object_scale=0.0)


def test_named_backgrounds_colour_the_image_and_end_the_caption():
    from clipzoo.data.shapesworld import BACKGROUND_COLOURS

    ds = shapesworld("segmentation", 12, seed=5, named_backgrounds=True)
    seen = set()
    for image, mask, caption in zip(ds["image"], ds["mask"], ds["caption"]):
        name = re.fullmatch(r".+ on an? (\w+) background", caption).group(1)
        seen.add(name)
        pixels = np.asarray(image)[np.asarray(mask) == 0]
        assert (pixels == BACKGROUND_COLOURS[name]).all()
    assert len(seen) > 1
    plain = shapesworld("segmentation", 12, seed=5)
    assert not any("background" in c for c in plain["caption"])


def test_named_backgrounds_in_classification_keep_labels_and_objects():
    from clipzoo.data.shapesworld import BACKGROUND_COLOURS

    options = {"label_by": "shape", "object_scale": 2.0}
    named = shapesworld("classification", 12, seed=5, named_backgrounds=True, **options)
    plain = shapesworld("classification", 12, seed=5, **options)
    assert named["label"] == plain["label"] and named["objects"] == plain["objects"]
    seen = set()
    for image, caption, plain_caption in zip(named["image"], named["caption"], plain["caption"]):
        name = re.fullmatch(r".+ on an? (\w+) background", caption).group(1)
        seen.add(name)
        assert caption == f"{plain_caption} on a {name} background"
        assert tuple(np.asarray(image)[0, 0]) == BACKGROUND_COLOURS[name]  # a corner is background
    assert len(seen) > 1


def test_object_scale_that_cannot_fit_max_objects_fails_early_naming_both():
    # Four objects at twice the size do not fit a scene reliably; three do.
    with pytest.raises(ValueError, match=r"max_objects=4 objects at object_scale=2\.0"):
        shapesworld("captions", 2, object_scale=2.0, max_objects=4)
    assert len(shapesworld("captions", 4, seed=1, object_scale=2.0, min_objects=3, max_objects=3)) == 4
    with pytest.raises(RuntimeError, match=r"object_scale=2\.5.*max_objects"):
        sample_scene(np.random.default_rng(0), num_objects=4, object_scale=2.5, max_tries=3)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"named_backgrounds": True, "object_scale": 2.0, "max_objects": 2},
        {"named_backgrounds": True, "empty_fraction": 0.3},
        {"empty_fraction": 0.3},
    ],
)
def test_captions_without_rendering_equal_the_dataset_column(options):
    from clipzoo.data.shapesworld import shapesworld_captions

    dataset = shapesworld("captions", 12, seed=5, image_size=32, noise=0.05, **options)
    assert shapesworld_captions(12, seed=5, **options) == list(dataset["caption"])
    with pytest.raises(ValueError, match="object_scale"):
        shapesworld_captions(2, object_scale=3.0)


def test_empty_scenes():
    from clipzoo.data.shapesworld import BACKGROUND_COLOURS

    dataset = shapesworld("segmentation", 40, seed=3, image_size=32, named_backgrounds=True, empty_fraction=0.5)
    empty = [row for row in dataset if row["num_objects"] == 0]
    assert 8 <= len(empty) <= 32  # about half
    for row in empty:
        name = row["caption"].split()[2]
        assert row["caption"] == f"an empty {name} background" and row["objects"] == []
        assert row["long_caption"] == "There is nothing in the picture."
        assert not np.asarray(row["mask"]).any()
        pixels = np.asarray(row["image"]).reshape(-1, 3)
        assert (pixels == BACKGROUND_COLOURS[name]).all()
    full = [row for row in dataset if row["num_objects"] > 0]
    assert all(np.asarray(row["mask"]).any() and "empty" not in row["caption"] for row in full)
    plain = shapesworld("captions", 20, seed=3, image_size=32, empty_fraction=0.5)
    assert "an empty background" in plain["caption"]
    # the default stream of scenes is unchanged by the option's existence
    assert (
        shapesworld("captions", 5, seed=3, empty_fraction=0.0)["caption"]
        == shapesworld("captions", 5, seed=3)["caption"]
    )
    with pytest.raises(ValueError, match="empty_fraction"):
        shapesworld("captions", 2, empty_fraction=1.0)
