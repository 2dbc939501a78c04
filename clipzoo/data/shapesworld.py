"""ShapesWorld: the embedded, deterministic default dataset of clipzoo.

Images of 1-4 coloured shapes on a plain background, rasterised with numpy boolean masks (no files, no downloads).
Five tasks share one renderer:

- `"captions"`: image, short caption (small vocabulary, so many images share one), long multi-sentence caption,
  object list.
- `"segmentation"`: image and a per-pixel mask of shape classes (`SEGMENTATION_CLASSES`, 0 = background).
- `"classification"`: one object per image labelled by shape+colour (or shape), with seen / held-out class splits.
- `"pairs"`: MMVP-style image pairs that differ in exactly one attribute, with a statement for each image.
- `"actions"`: ShapesWorld-Actions, short videos of one object doing one of `ACTIONS`.

Pairs and videos are sampled in `clipzoo.data.shapesworld_actions` (`sample_pair`, `sample_action`, `render_video`).

Coordinates of a `ShapeObject` are fractions of the image side (x to the right, y down), so one scene renders at any
`image_size`. Sample `i` of a dataset depends only on `(seed, task, i)`: a smaller dataset is a prefix of a larger one.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import struct
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import datasets
import numpy as np
from transformers.utils import logging


logger = logging.get_logger(__name__)

__all__ = [
    "ACTIONS",
    "ACTION_DESCRIPTIONS",
    "BACKGROUND",
    "BACKGROUND_COLOURS",
    "COLOURS",
    "HELDOUT_ACTIONS",
    "HELDOUT_SHAPES",
    "ORIENTATIONS",
    "ORIENTED_SHAPES",
    "PAIR_ATTRIBUTES",
    "REVERSED_ACTIONS",
    "SEGMENTATION_CLASSES",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "TASKS",
    "ShapeObject",
    "class_names",
    "encode_png",
    "is_heldout_class",
    "long_caption",
    "make_background",
    "object_mask",
    "render_scene",
    "sample_scene",
    "save_shapesworld",
    "shapesworld",
    "shapesworld_captions",
    "short_caption",
]

SHAPES: tuple[str, ...] = ("circle", "square", "cross", "triangle", "arrow", "half-disc")
ORIENTED_SHAPES: tuple[str, ...] = ("triangle", "arrow", "half-disc")
ORIENTATIONS: tuple[str, ...] = ("up", "right", "down", "left")
# Degrees clockwise on screen from "up"; the renderer turns the shape's local "up" axis by this angle.
ORIENTATION_ANGLES: dict[str, float] = {"up": 0.0, "right": 90.0, "down": 180.0, "left": 270.0}
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 135, 20),
    "yellow": (240, 205, 25),
    "green": (40, 165, 60),
    "blue": (40, 80, 220),
    "purple": (140, 60, 185),
    "black": (25, 25, 25),
}
# Radius as a fraction of the image side; shapes span about 2 * 1.1 radii.
SIZES: dict[str, float] = {"small": 0.085, "large": 0.145}
BACKGROUND: tuple[int, int, int] = (235, 235, 235)
# Named plain backgrounds of the `named_backgrounds` option (captions then end with "on a {name} background").
BACKGROUND_COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (250, 250, 250),
    "grey": (150, 150, 150),
    "beige": (225, 205, 165),
    "pink": (250, 190, 210),
}
SEGMENTATION_CLASSES: tuple[str, ...] = ("background", *SHAPES)
TASKS: tuple[str, ...] = ("captions", "segmentation", "classification", "pairs", "actions")
SPLITS: tuple[str, ...] = ("all", "seen", "heldout")
PAIR_ATTRIBUTES: tuple[str, ...] = ("orientation", "count", "colour", "position", "size")
HELDOUT_SHAPES: tuple[str, ...] = ("cross", "half-disc")

ACTIONS: tuple[str, ...] = (
    "move left",
    "move right",
    "move up",
    "move down",
    "grow",
    "shrink",
    "rotate clockwise",
    "rotate counter-clockwise",
    "appear",
    "disappear",
    "change colour",
    "jump",
)
_ACTION_PAIRS = (
    ("move left", "move right"),
    ("move up", "move down"),
    ("grow", "shrink"),
    ("rotate clockwise", "rotate counter-clockwise"),
    ("appear", "disappear"),
)
# Playing a video of one action backwards shows its partner; "change colour" and "jump" have no partner class.
REVERSED_ACTIONS: dict[str, str] = {**dict(_ACTION_PAIRS), **{b: a for a, b in _ACTION_PAIRS}}
ACTION_DESCRIPTIONS: dict[str, str] = {
    "move left": "An object moves from the right to the left.",
    "move right": "An object moves from the left to the right.",
    "move up": "An object moves from the bottom to the top.",
    "move down": "An object moves from the top to the bottom.",
    "grow": "An object grows from small to large.",
    "shrink": "An object shrinks from large to small.",
    "rotate clockwise": "An object turns clockwise.",
    "rotate counter-clockwise": "An object turns counter-clockwise.",
    "appear": "An object fades in and appears.",
    "disappear": "An object fades out and disappears.",
    "change colour": "An object changes its colour.",
    "jump": "An object jumps up and lands again.",
}
HELDOUT_ACTIONS: tuple[str, ...] = ("move up", "move down", "rotate clockwise", "rotate counter-clockwise", "jump")

_TASK_IDS = {task: index for index, task in enumerate(TASKS)}
_MARGIN = 0.02
# Every shape lies inside this many radii of its centre (square corner: 0.85 * sqrt(2) = 1.2).
_BOUND = 1.25
_NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


@dataclasses.dataclass(frozen=True)
class ShapeObject:
    """
    One object of a ShapesWorld scene.

    Args:
        shape (`str`): One of `SHAPES`.
        colour (`str`): One of `COLOURS`.
        size (`str`): `"small"` or `"large"` (see `SIZES`).
        x (`float`): Centre, fraction of the image width from the left.
        y (`float`): Centre, fraction of the image height from the top.
        orientation (`str`, *optional*): One of `ORIENTATIONS` for shapes in `ORIENTED_SHAPES`, else `None`.
        angle (`float`, *optional*): Heading in degrees clockwise from up; overrides `orientation` (used by videos).
        scale (`float`, defaults to 1.0): Multiplies the radius of `size`.
        alpha (`float`, defaults to 1.0): Opacity; the mask marks the object where `alpha >= 0.5`.
        rgb (`tuple[int, int, int]`, *optional*): Colour override (used while a video changes colour).

    Examples:

    ```python
    >>> from clipzoo.data.shapesworld import ShapeObject, render_scene
    >>> image, mask = render_scene([ShapeObject("triangle", "red", "large", 0.5, 0.5, orientation="up")], 64)
    >>> image.shape, int(mask.max())
    ((64, 64, 3), 4)
    ```
    """

    shape: str
    colour: str
    size: str
    x: float
    y: float
    orientation: str | None = None
    angle: float | None = None
    scale: float = 1.0
    alpha: float = 1.0
    rgb: tuple[int, int, int] | None = None

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise ValueError(f"shape={self.shape!r} is not one of {SHAPES}")
        if self.colour not in COLOURS:
            raise ValueError(f"colour={self.colour!r} is not one of {tuple(COLOURS)}")
        if self.size not in SIZES:
            raise ValueError(f"size={self.size!r} is not one of {tuple(SIZES)}")
        if self.orientation is not None and self.orientation not in ORIENTATIONS:
            raise ValueError(f"orientation={self.orientation!r} is not one of {ORIENTATIONS} or None")

    @property
    def radius(self) -> float:
        return SIZES[self.size] * self.scale

    @property
    def heading(self) -> float:
        if self.angle is not None:
            return self.angle
        return ORIENTATION_ANGLES.get(self.orientation, 0.0)

    @property
    def class_id(self) -> int:
        """Segmentation id: index of the shape in `SEGMENTATION_CLASSES`."""
        return SHAPES.index(self.shape) + 1

    def to_dict(self, image_size: int, bbox: list[int] | None = None) -> dict:
        """
        The row form stored in datasets; `bbox` is `[x0, y0, x1, y1]` in pixels (exclusive end) of the whole
        (unoccluded) object, computed from its mask unless given.
        """
        if bbox is None:
            inside, window, bbox = _window(self, image_size)
            bbox = _bbox(inside, window) if bbox is None else bbox
        return {
            "shape": self.shape,
            "colour": self.colour,
            "size": self.size,
            "orientation": self.orientation,
            "x": float(self.x),
            "y": float(self.y),
            "bbox": bbox,
            "class_id": self.class_id,
        }


# Each test takes local coordinates in radii: u across, v along the heading (v > 0 is where the shape points).
def _triangle(u, v):
    return (v >= -0.575) & (np.abs(u) <= (1.15 - v) / math.sqrt(3.0))


def _arrow(u, v):
    head = (v >= 0.05) & (np.abs(u) <= (1.1 - v) * 0.85)
    shaft = (v >= -1.0) & (v < 0.05) & (np.abs(u) <= 0.3)
    return head | shaft


def _half_disc(u, v):
    return (v >= -0.45) & (u * u + (v + 0.45) ** 2 <= 1.21)


def _cross(u, v):
    au, av = np.abs(u), np.abs(v)
    return ((au <= 0.33) & (av <= 1.0)) | ((av <= 0.33) & (au <= 1.0))


_SHAPE_TESTS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "circle": lambda u, v: u * u + v * v <= 1.0,
    "square": lambda u, v: (np.abs(u) <= 0.85) & (np.abs(v) <= 0.85),
    "cross": _cross,
    "triangle": _triangle,
    "arrow": _arrow,
    "half-disc": _half_disc,
}


# Centres snap to 1/8 pixel so that objects reuse cached rasters; the shift is invisible at this resolution.
_SUBPIXEL = 8


@functools.lru_cache(maxsize=8192)
def _stamp(shape: str, radius: float, heading: float, frac_x: int, frac_y: int) -> tuple[np.ndarray, int, int, tuple]:
    """
    Raster of a shape centred `frac / _SUBPIXEL` pixels right of / below the top-left corner of pixel (0, 0).

    Returns the read-only boolean stamp, the pixel offsets (row, column) of its top-left corner relative to that pixel,
    and its bbox `(x0, y0, x1, y1)` within the stamp.
    """
    cx, cy = frac_x / _SUBPIXEL, frac_y / _SUBPIXEL
    x0, y0 = math.floor(cx - _BOUND * radius), math.floor(cy - _BOUND * radius)
    dx = (np.arange(x0, math.ceil(cx + _BOUND * radius) + 1) + 0.5 - cx)[None, :]  # (1, w)
    dy = (np.arange(y0, math.ceil(cy + _BOUND * radius) + 1) + 0.5 - cy)[:, None]  # (h, 1)
    theta = math.radians(heading)
    sin, cos = math.sin(theta), math.cos(theta)
    # Heading (sin, -cos) in image coordinates (y down): v projects onto it, u onto its clockwise normal.
    v = (dx * sin - dy * cos) / radius
    u = (dx * cos + dy * sin) / radius
    inside = _SHAPE_TESTS[shape](u, v)
    inside.flags.writeable = False
    return inside, y0, x0, tuple(_bbox(inside, (slice(0, 0), slice(0, 0))))


def _window(obj: ShapeObject, image_size: int) -> tuple[np.ndarray, tuple[slice, slice], list[int] | None]:
    """Mask, window and (when the object is not clipped by the image border) bbox of an object."""
    qx, qy = round(obj.x * image_size * _SUBPIXEL), round(obj.y * image_size * _SUBPIXEL)
    stamp, oy, ox, box = _stamp(obj.shape, obj.radius * image_size, obj.heading, qx % _SUBPIXEL, qy % _SUBPIXEL)
    y0, x0 = qy // _SUBPIXEL + oy, qx // _SUBPIXEL + ox
    y1, x1 = y0 + stamp.shape[0], x0 + stamp.shape[1]
    if y0 >= 0 and x0 >= 0 and y1 <= image_size and x1 <= image_size:
        return stamp, (slice(y0, y1), slice(x0, x1)), [x0 + box[0], y0 + box[1], x0 + box[2], y0 + box[3]]
    cy0, cx0 = min(max(y0, 0), image_size), min(max(x0, 0), image_size)
    cy1, cx1 = max(min(y1, image_size), cy0), max(min(x1, image_size), cx0)
    return stamp[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0], (slice(cy0, cy1), slice(cx0, cx1)), None


def object_mask(obj: ShapeObject, image_size: int) -> tuple[np.ndarray, tuple[slice, slice]]:
    """
    Rasterise one object as a boolean mask over its bounding window (pixel centres inside the shape).

    Args:
        obj (`ShapeObject`): The object.
        image_size (`int`): Side of the square image in pixels.

    Returns:
        `tuple(np.ndarray, tuple(slice, slice))`: the `(h, w)` read-only boolean mask and the `(rows, cols)` window
        it covers, so `image[rows, cols][mask]` are the object's pixels. Parts outside the image are cut off.
    """
    inside, window, _ = _window(obj, image_size)
    return inside, window


def _bbox(inside: np.ndarray, window: tuple[slice, slice]) -> list[int]:
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    if rows.size == 0:
        return [0, 0, 0, 0]
    y0, x0 = window[0].start, window[1].start
    return [x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1]


def make_background(
    image_size: int,
    colour: tuple[int, int, int] = BACKGROUND,
    noise: float = 0.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """A `(image_size, image_size, 3)` uint8 background: `colour` plus Gaussian noise of std `noise` (0-255 scale)."""
    background = np.empty((image_size, image_size, 3), dtype=np.uint8)
    background[:] = colour
    if noise > 0:
        if rng is None:
            raise ValueError("noise > 0 needs an `rng` (np.random.Generator) so the result is deterministic")
        noisy = background + rng.normal(0.0, noise, size=background.shape)
        background = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return background


def render_scene(
    objects: Sequence[ShapeObject],
    image_size: int = 64,
    background: tuple[int, int, int] | np.ndarray = BACKGROUND,
) -> tuple[np.ndarray, np.ndarray]:
    """
    Draw objects in order (later ones occlude earlier ones in both the image and the mask).

    Args:
        objects (`Sequence[ShapeObject]`): The scene, back to front.
        image_size (`int`, defaults to 64): Side of the square image in pixels.
        background (`tuple` or `np.ndarray`): An RGB colour or a ready `(image_size, image_size, 3)` uint8 image
            (see `make_background`), which is copied.

    Returns:
        `tuple(np.ndarray, np.ndarray)`: the `(H, W, 3)` uint8 RGB image and the `(H, W)` uint8 mask holding
        `ShapeObject.class_id` (0 = background).
    """
    image, mask, _ = _render(objects, image_size, background)
    return image, mask


def _render(objects, image_size, background) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """`render_scene` plus each object's unoccluded bbox."""
    if isinstance(background, np.ndarray):
        if background.shape != (image_size, image_size, 3):
            raise ValueError(f"background has shape {background.shape}, expected {(image_size, image_size, 3)}")
        image = background.astype(np.uint8, copy=True)
    else:
        image = make_background(image_size, tuple(background))
    mask = np.zeros((image_size, image_size), dtype=np.uint8)
    bboxes = []
    for obj in objects:
        inside, window, bbox = _window(obj, image_size)
        bboxes.append(_bbox(inside, window) if bbox is None else bbox)
        rgb = np.asarray(obj.rgb if obj.rgb is not None else COLOURS[obj.colour], dtype=np.float64)
        region = image[window]
        if obj.alpha >= 1.0:
            np.copyto(region, rgb.astype(np.uint8), where=inside[:, :, None])
        elif obj.alpha > 0.0:
            blended = obj.alpha * rgb + (1.0 - obj.alpha) * region[inside]
            region[inside] = np.rint(blended).astype(np.uint8)
        if obj.alpha >= 0.5:
            np.copyto(mask[window], obj.class_id, where=inside)
    return image, mask, bboxes


def _fits(obj: ShapeObject, others: Sequence[ShapeObject], min_gap: float) -> bool:
    """Inside the image (with margin) and centres at least `min_gap * (r1 + r2)` away from every other object."""
    return _fits_at(obj.x, obj.y, obj.radius, others, min_gap)


def _fits_at(x: float, y: float, radius: float, others: Sequence[ShapeObject], min_gap: float) -> bool:
    reach = _BOUND * radius + _MARGIN
    if not (reach <= x <= 1 - reach and reach <= y <= 1 - reach):
        return False
    return all(math.hypot(x - o.x, y - o.y) >= min_gap * (radius + o.radius) for o in others)


def _place(
    rng: np.random.Generator, obj: ShapeObject, others: Sequence[ShapeObject], min_gap: float, max_tries: int = 50
) -> ShapeObject | None:
    """Rejection-sample a position for `obj` among `others`; `None` after `max_tries` failures."""
    reach = _BOUND * obj.radius + _MARGIN
    candidates = rng.uniform(reach, 1 - reach, size=(max_tries, 2))  # (tries, 2), inside the image by construction
    if others:
        centres = np.array([(o.x, o.y) for o in others])  # (n, 2)
        gaps = min_gap * (obj.radius + np.array([o.radius for o in others]))  # (n,)
        distances = np.hypot(*(candidates[:, None, :] - centres[None, :, :]).transpose(2, 0, 1))  # (tries, n)
        valid = np.flatnonzero((distances >= gaps).all(axis=1))
        if valid.size == 0:
            return None
        candidates = candidates[valid[:1]]
    x, y = candidates[0].tolist()
    return dataclasses.replace(obj, x=x, y=y)


def _random_object(
    rng: np.random.Generator,
    shapes: Sequence[str] = SHAPES,
    colours: Sequence[str] = tuple(COLOURS),
    sizes: Sequence[str] = tuple(SIZES),
    scale: float = 1.0,
) -> ShapeObject:
    """Random attributes (position 0.5, 0.5 until placed); oriented shapes get a random orientation."""
    # Indexing with integers() is several times faster than Generator.choice on small sequences.
    shape = shapes[rng.integers(len(shapes))]
    orientation = ORIENTATIONS[rng.integers(4)] if shape in ORIENTED_SHAPES else None
    colour, size = colours[rng.integers(len(colours))], sizes[rng.integers(len(sizes))]
    return ShapeObject(str(shape), str(colour), str(size), 0.5, 0.5, orientation=orientation, scale=scale)


def sample_scene(
    rng: np.random.Generator,
    num_objects: int | None = None,
    min_objects: int = 1,
    max_objects: int = 4,
    shapes: Sequence[str] = SHAPES,
    colours: Sequence[str] = tuple(COLOURS),
    min_gap: float = 0.9,
    max_tries: int = 100,
    object_scale: float = 1.0,
) -> list[ShapeObject]:
    """
    Sample a scene of non-overlapping (up to corners) random objects.

    Args:
        rng (`np.random.Generator`): Source of randomness.
        num_objects (`int`, *optional*): Exact count; else uniform in `[min_objects, max_objects]`.
        min_objects (`int`, defaults to 1) / max_objects (`int`, defaults to 4): Count range.
        shapes (`Sequence[str]`) / colours (`Sequence[str]`): Allowed attribute values.
        min_gap (`float`, defaults to 0.9): Centres are at least `min_gap * (r1 + r2)` apart.
        max_tries (`int`, defaults to 100): Scene restarts before giving up.
        object_scale (`float`, defaults to 1.0): Multiplies every object's radius (see `ShapeObject.scale`). A scene
            that cannot be placed is redrawn whole, so above 1 large objects become rarer: at 2.0 two large objects
            never fit together, and with 1-2 objects 28 % of objects are large instead of 50 %.

    Returns:
        `list[ShapeObject]`: the scene, back to front.
    """
    count = int(num_objects) if num_objects is not None else int(rng.integers(min_objects, max_objects + 1))
    if count < 1:
        raise ValueError(f"a scene needs at least one object, got num_objects={count}")
    for _ in range(max_tries):
        scene: list[ShapeObject] = []
        for _ in range(count):
            placed = _place(rng, _random_object(rng, shapes, colours, scale=object_scale), scene, min_gap)
            if placed is None:
                break
            scene.append(placed)
        if len(scene) == count:
            return scene
    raise RuntimeError(
        f"could not place {count} objects at object_scale={object_scale} without overlap in {max_tries} tries; "
        "lower the object count (max_objects), object_scale or min_gap"
    )


# ---------------------------------------------------------------------------------------------------- captions


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("s") else "s")


def _counted(count: int, colour: str, shape: str) -> str:
    if count == 1:
        return f"{_article(colour)} {colour} {shape}"
    return f"{_NUMBER_WORDS.get(count, str(count))} {colour} {_plural(shape)}"


def _join(phrases: Sequence[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def short_caption(objects: Sequence[ShapeObject]) -> str:
    """
    Colour + shape groups with counts, in a canonical order so that many scenes share a caption.

    Examples: `"a red triangle"`, `"two blue circles"`, `"a red triangle and a green square"`.
    """
    colour_order = list(COLOURS)
    groups: dict[tuple[str, str], int] = {}
    for obj in objects:
        groups[obj.shape, obj.colour] = groups.get((obj.shape, obj.colour), 0) + 1
    keys = sorted(groups, key=lambda k: (SHAPES.index(k[0]), colour_order.index(k[1])))
    return _join([_counted(groups[k], k[1], k[0]) for k in keys])


def _region(obj: ShapeObject) -> str:
    row = "top" if obj.y < 1 / 3 else ("bottom" if obj.y > 2 / 3 else "middle")
    col = "left" if obj.x < 1 / 3 else ("right" if obj.x > 2 / 3 else "centre")
    if row == "middle":
        return "in the centre" if col == "centre" else f"on the {col}"
    return f"at the {row}" if col == "centre" else f"in the {row} {col}"


def _relation(obj: ShapeObject, ref: ShapeObject) -> str:
    dx, dy = obj.x - ref.x, obj.y - ref.y
    if abs(dx) >= abs(dy):
        return "to the right of" if dx > 0 else "to the left of"
    return "below" if dy > 0 else "above"


def _described(obj: ShapeObject) -> str:
    pointing = f" pointing {obj.orientation}" if obj.orientation else ""
    return f"{obj.size} {obj.colour} {obj.shape}{pointing}"


def long_caption(objects: Sequence[ShapeObject]) -> str:
    """
    One sentence per object: attributes, then the region (first object) or the position relative to the previous one.

    Example: `"There is a large red triangle pointing up in the top left. A small green square is to the right of
    the red triangle."`
    """
    if not objects:
        return "There is nothing in the picture."
    sentences = []
    for index, obj in enumerate(objects):
        if index == 0:
            sentences.append(f"There is a {_described(obj)} {_region(obj)}.")
        else:
            ref = objects[index - 1]
            sentences.append(f"A {_described(obj)} is {_relation(obj, ref)} the {ref.colour} {ref.shape}.")
    return " ".join(sentences)


# ---------------------------------------------------------------------------------------------------- classes


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {SPLITS}")


def is_heldout_class(name: str, label_by: str = "shape_colour") -> bool:
    """
    Whether a classification class is held out (for few-shot evaluation on unseen classes).

    With `label_by="shape_colour"`, class (shape i, colour j) is held out when `(i + j) % 3 == 0`, so every shape
    and every colour still occurs among the seen classes (14 of 42 held out). With `label_by="shape"`, the shapes in
    `HELDOUT_SHAPES` are held out.
    """
    if label_by == "shape":
        return name in HELDOUT_SHAPES
    colour, shape = name.split(" ", 1)
    return (SHAPES.index(shape) + list(COLOURS).index(colour)) % 3 == 0


def class_names(task: str, split: str = "all", label_by: str = "shape_colour") -> list[str]:
    """
    Class names of a task's labels, in label order.

    Args:
        task (`str`): `"classification"` (names like `"red triangle"` or `"triangle"`), `"actions"` (`ACTIONS`) or
            `"segmentation"` (`SEGMENTATION_CLASSES`, mask ids; only `split="all"`).
        split (`str`, defaults to `"all"`): `"all"`, `"seen"` or `"heldout"`; seen and held-out classes are disjoint.
        label_by (`str`, defaults to `"shape_colour"`): Classification labels by `"shape_colour"` or `"shape"`.

    Returns:
        `list[str]`: the names; label `k` of a dataset built with the same arguments is `names[k]`.
    """
    _check_split(split)
    if task == "segmentation":
        if split != "all":
            raise ValueError(f"segmentation classes have no split, got split={split!r}")
        return list(SEGMENTATION_CLASSES)
    if task == "actions":
        names = list(ACTIONS)
        heldout = [name in HELDOUT_ACTIONS for name in names]
    elif task == "classification":
        if label_by == "shape":
            names = list(SHAPES)
        elif label_by == "shape_colour":
            names = [f"{colour} {shape}" for shape in SHAPES for colour in COLOURS]
        else:
            raise ValueError(f"label_by={label_by!r} is not one of ('shape_colour', 'shape')")
        heldout = [is_heldout_class(name, label_by) for name in names]
    else:
        raise ValueError(f"task={task!r} has no classes; use 'classification', 'actions' or 'segmentation'")
    if split == "all":
        return names
    return [name for name, held in zip(names, heldout) if held == (split == "heldout")]


# ---------------------------------------------------------------------------------------------------- datasets


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(tag)))


def encode_png(array: np.ndarray) -> bytes:
    """
    PNG bytes of a `(H, W, 3)` RGB or `(H, W)` grayscale uint8 array.

    A minimal writer (no row filters, zlib level 1) is about 10x faster than `PIL.Image.save` on 64-px images, which
    makes it the fastest route into `datasets.Image()` features; PIL reads the result back losslessly.
    """
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ValueError(f"expected a (H, W, 3) or (H, W) uint8 array, got {array.dtype} {array.shape}")
    height, width = array.shape[:2]
    rows = np.zeros((height, 1 + array[0].size), dtype=np.uint8)  # leading 0 per row: filter type "None"
    rows[:, 1:] = array.reshape(height, -1)
    header = struct.pack(">IIBBBBB", width, height, 8, 2 if array.ndim == 3 else 0, 0, 0, 0)
    idat = zlib.compress(rows.tobytes(), 1)
    return _PNG_SIGNATURE + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _encode_png(array: np.ndarray) -> dict:
    return {"bytes": encode_png(array), "path": None}


_OBJECT_FEATURES = {
    "shape": datasets.Value("string"),
    "colour": datasets.Value("string"),
    "size": datasets.Value("string"),
    "orientation": datasets.Value("string"),
    "x": datasets.Value("float32"),
    "y": datasets.Value("float32"),
    "bbox": datasets.List(datasets.Value("int32"), length=4),
    "class_id": datasets.Value("int32"),
}


def _sample_rngs(seed: int, task: str, num_samples: int):
    # One generator per sample keyed by (seed, task, index): datasets of different lengths agree on shared rows.
    return (np.random.default_rng([seed, _TASK_IDS[task], index]) for index in range(num_samples))


_PLAIN_BACKGROUNDS: dict[int, np.ndarray] = {}


def _background(rng: np.random.Generator, image_size: int, noise: float) -> np.ndarray:
    # The renderer copies its background, so one plain background per size is shared read-only.
    if noise > 0:
        return make_background(image_size, BACKGROUND, noise, rng)
    if image_size not in _PLAIN_BACKGROUNDS:
        _PLAIN_BACKGROUNDS[image_size] = make_background(image_size, BACKGROUND)
        _PLAIN_BACKGROUNDS[image_size].flags.writeable = False
    return _PLAIN_BACKGROUNDS[image_size]


def _captioned_scene(
    rng: np.random.Generator,
    min_objects: int,
    max_objects: int,
    min_gap: float,
    object_scale: float,
    named_backgrounds: bool,
    empty_fraction: float = 0.0,
) -> tuple[list[ShapeObject], str | None, str]:
    """A scene, its background name (`None` for the default background) and its short caption; draws from `rng` in
    the order the renderer expects (scene, then background). With `empty_fraction > 0` one more draw first decides
    whether the scene is empty (so the default stream of scenes is unchanged)."""
    if empty_fraction > 0 and rng.random() < empty_fraction:
        scene: list[ShapeObject] = []
    else:
        scene = sample_scene(
            rng, min_objects=min_objects, max_objects=max_objects, min_gap=min_gap, object_scale=object_scale
        )
    if not named_backgrounds:
        return scene, None, short_caption(scene) if scene else "an empty background"
    names = list(BACKGROUND_COLOURS)
    name = names[rng.integers(len(names))]
    return scene, name, f"{short_caption(scene)} on a {name} background" if scene else f"an empty {name} background"


def shapesworld_captions(
    num_samples: int,
    seed: int = 0,
    min_objects: int = 1,
    max_objects: int = 4,
    min_gap: float = 0.9,
    object_scale: float = 1.0,
    named_backgrounds: bool = False,
    empty_fraction: float = 0.0,
) -> list[str]:
    """The `caption` column of `shapesworld("captions", num_samples, seed=seed, ...)` without rendering any image
    (e.g. to build a tokenizer's corpus). Same rows as the dataset, whatever its image size or noise."""
    _check_scene_options(min_objects, max_objects, min_gap, object_scale, empty_fraction)
    return [
        _captioned_scene(rng, min_objects, max_objects, min_gap, object_scale, named_backgrounds, empty_fraction)[2]
        for rng in _sample_rngs(seed, "captions", num_samples)
    ]


def _check_scene_options(
    min_objects: int, max_objects: int, min_gap: float, object_scale: float, empty_fraction: float = 0.0
) -> None:
    if not 0 <= empty_fraction < 1:
        raise ValueError(f"empty_fraction must be in [0, 1), got {empty_fraction}")
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    if not 0 < object_scale <= 2.5:
        raise ValueError(f"object_scale must be in (0, 2.5] (larger objects cannot fit the image), got {object_scale}")
    _check_scenes_fit(max_objects, min_gap, object_scale)


@functools.lru_cache(maxsize=32)
def _check_scenes_fit(max_objects: int, min_gap: float, object_scale: float, probes: int = 20) -> None:
    """Fails early, naming the options, when scenes of `max_objects` objects at `object_scale` cannot be placed
    reliably (e.g. 4 objects at scale 2), instead of a `sample_scene` error deep into generation. Seeded probes, so
    the verdict is the same on every run."""
    rng = np.random.default_rng(0)
    failures = 0
    for _ in range(probes):
        try:
            sample_scene(rng, num_objects=max_objects, min_gap=min_gap, object_scale=object_scale)
        except RuntimeError:
            failures += 1
    if failures:
        raise ValueError(
            f"max_objects={max_objects} objects at object_scale={object_scale} (min_gap={min_gap}) do not fit the "
            f"image reliably: {failures} of {probes} probe scenes could not be placed. Lower max_objects or "
            "object_scale."
        )


def _scene_columns(
    task: str,
    num_samples: int,
    seed: int,
    image_size: int,
    min_objects: int = 1,
    max_objects: int = 4,
    noise: float = 0.0,
    min_gap: float = 0.9,
    object_scale: float = 1.0,
    named_backgrounds: bool = False,
    empty_fraction: float = 0.0,
) -> tuple[dict[str, list], dict]:
    _check_scene_options(min_objects, max_objects, min_gap, object_scale, empty_fraction)
    columns: dict[str, list] = {"image": [], "caption": [], "long_caption": [], "objects": [], "num_objects": []}
    if task == "segmentation":
        columns["mask"] = []
    for rng in _sample_rngs(seed, task, num_samples):
        scene, background_name, caption = _captioned_scene(
            rng, min_objects, max_objects, min_gap, object_scale, named_backgrounds, empty_fraction
        )
        if background_name is not None:
            background = make_background(image_size, BACKGROUND_COLOURS[background_name], noise, rng)
        else:
            background = _background(rng, image_size, noise)
        image, mask, bboxes = _render(scene, image_size, background)
        columns["image"].append(_encode_png(image))
        columns["caption"].append(caption)
        columns["long_caption"].append(long_caption(scene))
        columns["objects"].append([o.to_dict(image_size, bbox) for o, bbox in zip(scene, bboxes)])
        columns["num_objects"].append(len(scene))
        if task == "segmentation":
            columns["mask"].append(_encode_png(mask))
    features = {
        "image": datasets.Image(),
        "caption": datasets.Value("string"),
        "long_caption": datasets.Value("string"),
        "objects": datasets.List(_OBJECT_FEATURES),
        "num_objects": datasets.Value("int32"),
    }
    if task == "segmentation":
        features["mask"] = datasets.Image(mode="L")
    return columns, features


def _classification_columns(
    num_samples: int,
    seed: int,
    image_size: int,
    split: str = "all",
    label_by: str = "shape_colour",
    num_distractors: int = 0,
    noise: float = 0.0,
    min_gap: float = 0.9,
    object_scale: float = 1.0,
    named_backgrounds: bool = False,
) -> tuple[dict[str, list], dict]:
    if not 0 < object_scale <= 2.5:
        raise ValueError(f"object_scale must be in (0, 2.5] (larger objects cannot fit the image), got {object_scale}")
    names = class_names("classification", split, label_by)
    background_names = list(BACKGROUND_COLOURS)
    columns: dict[str, list] = {"image": [], "label": [], "caption": [], "objects": []}
    for index, rng in enumerate(_sample_rngs(seed, "classification", num_samples)):
        # Labels cycle through the classes, so every class has num_samples // num_classes (+1) images.
        label = index % len(names)
        colour, shape = names[label].split(" ") if label_by == "shape_colour" else (None, names[label])
        target = _random_object(rng, [shape], [colour] if colour else tuple(COLOURS), scale=object_scale)
        if num_distractors:
            target = dataclasses.replace(target, size="large")
        scene = [_place(rng, target, [], min_gap)]
        for _ in range(100 * (num_distractors + 1)):
            if len(scene) == num_distractors + 1:
                break
            candidate = _random_object(rng, sizes=["small"], scale=object_scale)
            clash = candidate.shape == shape and (label_by == "shape" or candidate.colour == colour)
            placed = None if clash else _place(rng, candidate, scene, min_gap)
            if placed is not None:
                scene.append(placed)
        if len(scene) != num_distractors + 1:
            raise RuntimeError(f"could not place num_distractors={num_distractors} objects; use fewer")
        # The class object is drawn last so distractors never occlude it.
        scene = scene[1:] + scene[:1]
        caption = short_caption(scene)
        if named_backgrounds:
            name = background_names[rng.integers(len(background_names))]
            background = make_background(image_size, BACKGROUND_COLOURS[name], noise, rng)
            caption += f" on a {name} background"
        else:
            background = _background(rng, image_size, noise)
        image, _, bboxes = _render(scene, image_size, background)
        columns["image"].append(_encode_png(image))
        columns["label"].append(label)
        columns["caption"].append(caption)
        columns["objects"].append([o.to_dict(image_size, bbox) for o, bbox in zip(scene, bboxes)])
    features = {
        "image": datasets.Image(),
        "label": datasets.ClassLabel(names=names),
        "caption": datasets.Value("string"),
        "objects": datasets.List(_OBJECT_FEATURES),
    }
    return columns, features


def shapesworld(task: str, num_samples: int, seed: int = 0, image_size: int = 64, **kwargs) -> datasets.Dataset:
    """
    Generate a ShapesWorld dataset in memory, deterministically from `seed`.

    Args:
        task (`str`): One of `TASKS`:
            - `"captions"`: columns `image`, `caption`, `long_caption`, `objects`, `num_objects`.
              kwargs: `min_objects=1`, `max_objects=4`, `noise=0.0`, `min_gap=0.9`, `object_scale=1.0`,
              `named_backgrounds=False` (a random plain background of `BACKGROUND_COLOURS`, named at the end of
              `caption`: "... on a grey background"), `empty_fraction=0.0` (the share of scenes with no object,
              captioned "an empty grey background", or "an empty background" without named backgrounds).
            - `"segmentation"`: the captions columns plus `mask` (`Image(mode="L")`, ids of `SEGMENTATION_CLASSES`).
            - `"classification"`: `image`, `label` (`ClassLabel` of `class_names("classification", split,
              label_by)`), `caption`, `objects`. kwargs: `split="all"`, `label_by="shape_colour"`,
              `num_distractors=0` (small objects of other classes; the class object is then large), `noise`, `min_gap`,
              `object_scale`, `named_backgrounds`.
            - `"pairs"`: `image_a`, `image_b`, `statement_a`, `statement_b`, `attribute`, `objects_a`, `objects_b`.
              kwargs: `attributes=PAIR_ATTRIBUTES` (cycled), `max_distractors=2`, `noise`, `min_gap`.
            - `"actions"`: `frames` (list of `Image`), `label` (`ClassLabel` of `class_names("actions", split)`),
              `caption`, `description`, `reversed_label` (label of the time-reversed action, -1 if none).
              kwargs: `num_frames=8`, `split="all"`, `num_distractors=0`, `noise`, `min_gap`.
        num_samples (`int`): Rows to generate.
        seed (`int`, defaults to 0): Non-negative seed; use different seeds for train and test sets.
        image_size (`int`, defaults to 64): Side of the square RGB images in pixels.

    Returns:
        `datasets.Dataset`: images stored as PNG in `Image()` features. Each object dict has `shape`, `colour`,
        `size`, `orientation` (None if unoriented), `x`, `y` (centre, fractions of the side), `bbox` (`[x0, y0, x1,
        y1]` pixels) and `class_id` (mask id).

    Examples:

    ```python
    >>> from clipzoo.data.shapesworld import shapesworld
    >>> ds = shapesworld("captions", num_samples=4, seed=0)
    >>> sorted(ds.column_names)
    ['caption', 'image', 'long_caption', 'num_objects', 'objects']
    >>> ds[0]["image"].size
    (64, 64)
    ```
    """
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not one of {TASKS}")
    if not isinstance(num_samples, int) or num_samples < 0:
        raise ValueError(f"num_samples must be a non-negative int, got {num_samples!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8, got {image_size!r}")
    if task in ("captions", "segmentation"):
        columns, features = _scene_columns(task, num_samples, seed, image_size, **kwargs)
    elif task == "classification":
        columns, features = _classification_columns(num_samples, seed, image_size, **kwargs)
    else:
        # Imported here: pairs and videos build on this module.
        from clipzoo.data.shapesworld_actions import action_columns, pair_columns

        builder = pair_columns if task == "pairs" else action_columns
        columns, features = builder(num_samples, seed, image_size, **kwargs)
    features = datasets.Features(features)
    description = f"ShapesWorld {task} (seed={seed}, image_size={image_size}, options={kwargs})"
    info = datasets.DatasetInfo(description=description, features=features)
    return datasets.Dataset.from_dict(columns, features=features, info=info)


def save_shapesworld(
    task: str, out_dir: str | Path, num_samples: int, seed: int = 0, image_size: int = 64, **kwargs
) -> datasets.Dataset:
    """
    Generate a ShapesWorld dataset (see `shapesworld`) and `save_to_disk` it under `out_dir`.

    Returns:
        `datasets.Dataset`: the saved dataset; reload it with `datasets.load_from_disk(out_dir)`.
    """
    dataset = shapesworld(task, num_samples, seed=seed, image_size=image_size, **kwargs)
    dataset.save_to_disk(str(out_dir))
    logger.info("saved %d ShapesWorld %r rows to %s", len(dataset), task, out_dir)
    return dataset
