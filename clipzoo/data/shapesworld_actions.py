"""ShapesWorld scene edits: MMVP-style pairs and ShapesWorld-Actions videos.

Both change a sampled scene: a pair changes exactly one attribute of one object (or the count of a group) between
two images; an action video changes one object gradually over frames. `shapesworld("pairs" | "actions", ...)` in
`clipzoo.data.shapesworld` builds datasets from the functions here.

Most actions interpolate linearly from a start state to an end state, and each action in `REVERSED_ACTIONS` undoes
its partner: `action_states(REVERSED_ACTIONS[a], action_states(a, start)[-1])` is `action_states(a, start)` played
backwards. Frame order therefore matters: a model that pools frames without order cannot tell "move left" from
"move right".
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import datasets
import numpy as np

from clipzoo.data.shapesworld import (
    _BOUND,
    _MARGIN,
    _NUMBER_WORDS,
    _OBJECT_FEATURES,
    ACTION_DESCRIPTIONS,
    ACTIONS,
    BACKGROUND,
    COLOURS,
    ORIENTATIONS,
    ORIENTED_SHAPES,
    PAIR_ATTRIBUTES,
    REVERSED_ACTIONS,
    SHAPES,
    ShapeObject,
    _article,
    _background,
    _encode_png,
    _fits,
    _place,
    _plural,
    _random_object,
    _render,
    _sample_rngs,
    class_names,
    render_scene,
)


__all__ = [
    "GROW_FACTOR",
    "JUMP_HEIGHT",
    "MOVE_DISTANCE",
    "ROTATION_DEGREES",
    "action_caption",
    "action_columns",
    "action_states",
    "pair_columns",
    "render_video",
    "sample_action",
    "sample_pair",
]

# ---------------------------------------------------------------------------------------------------- pairs


def _pair_target(rng: np.random.Generator, attribute: str) -> ShapeObject:
    shapes = ORIENTED_SHAPES if attribute == "orientation" else SHAPES
    target = _random_object(rng, shapes)
    if attribute == "count":
        target = dataclasses.replace(target, size="small")
    return target


def _modify(rng: np.random.Generator, target: ShapeObject, attribute: str) -> tuple[ShapeObject, str, str]:
    """The target changed in one attribute, and the statements for the original and the changed target."""
    name = f"the {target.colour} {target.shape}"
    if attribute == "orientation":
        new = str(rng.choice([o for o in ORIENTATIONS if o != target.orientation]))
        return (
            dataclasses.replace(target, orientation=new),
            f"{name} points {target.orientation}",
            f"{name} points {new}",
        )
    if attribute == "colour":
        new = str(rng.choice([c for c in COLOURS if c != target.colour]))
        changed = dataclasses.replace(target, colour=new)
        return changed, f"the {target.shape} is {target.colour}", f"the {target.shape} is {new}"
    if attribute == "size":
        new = "large" if target.size == "small" else "small"
        return dataclasses.replace(target, size=new), f"{name} is {target.size}", f"{name} is {new}"
    # position: mirror across the image centre along one axis.
    if rng.random() < 0.5:
        words = ("left", "right") if target.x < 0.5 else ("right", "left")
        return (
            dataclasses.replace(target, x=1.0 - target.x),
            f"{name} is on the {words[0]}",
            f"{name} is on the {words[1]}",
        )
    words = ("top", "bottom") if target.y < 0.5 else ("bottom", "top")
    return (
        dataclasses.replace(target, y=1.0 - target.y),
        f"{name} is at the {words[0]}",
        f"{name} is at the {words[1]}",
    )


def _count_statement(count: int, target: ShapeObject) -> str:
    noun = target.shape if count == 1 else _plural(target.shape)
    return f"there {'is' if count == 1 else 'are'} {_NUMBER_WORDS[count]} {target.colour} {noun}"


def _try_pair(rng: np.random.Generator, attribute: str, max_distractors: int, min_gap: float):
    target = _pair_target(rng, attribute)
    # Distractors never share the target's shape, so "the red triangle" / "the triangle" name one object.
    others = [s for s in SHAPES if s != target.shape]
    distractors: list[ShapeObject] = []
    for _ in range(int(rng.integers(0, max_distractors + 1))):
        placed = _place(rng, _random_object(rng, others), distractors, min_gap)
        if placed is not None:
            distractors.append(placed)
    if attribute == "count":
        count_a = int(rng.integers(1, 4))
        count_b = count_a + 1 if count_a == 1 or rng.random() < 0.5 else count_a - 1
        copies: list[ShapeObject] = []
        for _ in range(max(count_a, count_b)):
            placed = _place(rng, target, distractors + copies, min_gap)
            if placed is None:
                return None
            copies.append(placed)
        scene_a, scene_b = distractors + copies[:count_a], distractors + copies[:count_b]
        return scene_a, scene_b, _count_statement(count_a, target), _count_statement(count_b, target)
    if attribute == "position":
        # Start clearly on one side so that the mirrored position is clearly on the other.
        reach = _BOUND * target.radius + _MARGIN
        target = dataclasses.replace(target, x=float(rng.uniform(reach, 0.38)), y=float(rng.uniform(reach, 0.38)))
        target = dataclasses.replace(target, x=1.0 - target.x) if rng.random() < 0.5 else target
        target = dataclasses.replace(target, y=1.0 - target.y) if rng.random() < 0.5 else target
        if not _fits(target, distractors, min_gap):
            return None
    else:
        target = _place(rng, target, distractors, min_gap)
        if target is None:
            return None
    changed, statement_a, statement_b = _modify(rng, target, attribute)
    if not _fits(changed, distractors, min_gap):
        return None
    return distractors + [target], distractors + [changed], statement_a, statement_b


def sample_pair(
    rng: np.random.Generator, attribute: str, max_distractors: int = 2, min_gap: float = 0.9, max_tries: int = 100
) -> tuple[list[ShapeObject], list[ShapeObject], str, str]:
    """
    Sample two scenes that differ in exactly one attribute of one target object (or in the count of a group).

    Args:
        rng (`np.random.Generator`): Source of randomness.
        attribute (`str`): One of `PAIR_ATTRIBUTES`: `"orientation"`, `"count"`, `"colour"`, `"position"`, `"size"`.
        max_distractors (`int`, defaults to 2): Up to this many other objects (never of the target's shape).
        min_gap (`float`, defaults to 0.9): See `sample_scene`.
        max_tries (`int`, defaults to 100): Restarts before giving up.

    Returns:
        `tuple`: `(objects_a, objects_b, statement_a, statement_b)`, e.g. statements `"the red triangle points up"` /
        `"the red triangle points down"`. The target is drawn last (unoccluded); for `"count"` scene b adds or drops
        the last copy.
    """
    if attribute not in PAIR_ATTRIBUTES:
        raise ValueError(f"attribute={attribute!r} is not one of {PAIR_ATTRIBUTES}")
    for _ in range(max_tries):
        pair = _try_pair(rng, attribute, max_distractors, min_gap)
        if pair is not None:
            return pair
    raise RuntimeError(f"could not sample a {attribute!r} pair in {max_tries} tries; lower min_gap")


def pair_columns(
    num_samples: int,
    seed: int,
    image_size: int,
    attributes: Sequence[str] = PAIR_ATTRIBUTES,
    max_distractors: int = 2,
    noise: float = 0.0,
    min_gap: float = 0.9,
) -> tuple[dict[str, list], dict]:
    """Columns and features of `shapesworld("pairs", ...)`; attributes cycle through `attributes`."""
    unknown = [a for a in attributes if a not in PAIR_ATTRIBUTES]
    if unknown or not attributes:
        raise ValueError(f"attributes={attributes!r} must be a non-empty subset of {PAIR_ATTRIBUTES}")
    keys = ("image_a", "image_b", "statement_a", "statement_b", "attribute", "objects_a", "objects_b")
    columns: dict[str, list] = {key: [] for key in keys}
    for index, rng in enumerate(_sample_rngs(seed, "pairs", num_samples)):
        attribute = attributes[index % len(attributes)]
        scene_a, scene_b, statement_a, statement_b = sample_pair(rng, attribute, max_distractors, min_gap)
        background = _background(rng, image_size, noise)
        for key, scene in (("a", scene_a), ("b", scene_b)):
            image, _, bboxes = _render(scene, image_size, background)
            columns[f"image_{key}"].append(_encode_png(image))
            columns[f"objects_{key}"].append([o.to_dict(image_size, bbox) for o, bbox in zip(scene, bboxes)])
        columns["statement_a"].append(statement_a)
        columns["statement_b"].append(statement_b)
        columns["attribute"].append(attribute)
    features = {
        "image_a": datasets.Image(),
        "image_b": datasets.Image(),
        "statement_a": datasets.Value("string"),
        "statement_b": datasets.Value("string"),
        "attribute": datasets.Value("string"),
        "objects_a": datasets.List(_OBJECT_FEATURES),
        "objects_b": datasets.List(_OBJECT_FEATURES),
    }
    return columns, features


# ---------------------------------------------------------------------------------------------------- actions

MOVE_DISTANCE = 0.35  # fraction of the image side
ROTATION_DEGREES = 90.0
GROW_FACTOR = 1.8
JUMP_HEIGHT = 0.3

_VERBS = {
    "move left": "moves to the left",
    "move right": "moves to the right",
    "move up": "moves up",
    "move down": "moves down",
    "grow": "grows",
    "shrink": "shrinks",
    "rotate clockwise": "rotates clockwise",
    "rotate counter-clockwise": "rotates counter-clockwise",
    "appear": "appears",
    "disappear": "disappears",
    "change colour": "changes colour",
    "jump": "jumps",
}


def _action_end(
    action: str, start: ShapeObject, distance: float, rotation: float, factor: float, colour: str | None
) -> ShapeObject:
    replace = dataclasses.replace
    if action in ("move left", "move right"):
        return replace(start, x=start.x + (distance if action == "move right" else -distance))
    if action in ("move up", "move down"):
        return replace(start, y=start.y + (distance if action == "move down" else -distance))
    if action in ("grow", "shrink"):
        return replace(start, scale=start.scale * factor if action == "grow" else start.scale / factor)
    if action in ("rotate clockwise", "rotate counter-clockwise"):
        # Headings are clockwise on screen, so clockwise turning adds degrees.
        turn = rotation if action == "rotate clockwise" else -rotation
        return replace(start, angle=start.heading + turn)
    if action in ("appear", "disappear"):
        return replace(start, alpha=1.0 if action == "appear" else 0.0)
    if colour is None or colour == start.colour or colour not in COLOURS:
        raise ValueError(f"'change colour' needs colour= one of {tuple(COLOURS)} other than {start.colour!r}")
    return replace(start, colour=colour)


def _interpolate(start: ShapeObject, end: ShapeObject, t: float) -> ShapeObject:
    rgb = start.rgb
    if start.colour != end.colour:
        mixed = (1.0 - t) * np.asarray(COLOURS[start.colour]) + t * np.asarray(COLOURS[end.colour])
        rgb = tuple(int(c) for c in np.rint(mixed))
    angle = None if start.angle is None and end.angle is None else start.heading + (end.heading - start.heading) * t
    return dataclasses.replace(
        start,
        colour=start.colour if t < 0.5 else end.colour,
        x=start.x + (end.x - start.x) * t,
        y=start.y + (end.y - start.y) * t,
        angle=angle,
        scale=start.scale + (end.scale - start.scale) * t,
        alpha=start.alpha + (end.alpha - start.alpha) * t,
        rgb=rgb,
    )


def action_states(
    action: str,
    start: ShapeObject,
    num_frames: int = 8,
    *,
    distance: float = MOVE_DISTANCE,
    rotation: float = ROTATION_DEGREES,
    factor: float = GROW_FACTOR,
    colour: str | None = None,
    jump_height: float = JUMP_HEIGHT,
) -> list[ShapeObject]:
    """
    The object's state in each frame of an action.

    Args:
        action (`str`): One of `ACTIONS`.
        start (`ShapeObject`): State in the first frame. `"appear"` fades from `start.alpha` to 1 (start it at 0).
        num_frames (`int`, defaults to 8): Frames, at least 2.
        distance (`float`): Travel of the move actions, a fraction of the image side.
        rotation (`float`): Degrees turned by the rotate actions.
        factor (`float`): Scale factor of `"grow"` (and `1 / factor` of `"shrink"`).
        colour (`str`, *optional*): End colour of `"change colour"` (required for it).
        jump_height (`float`): Peak height of `"jump"` (a half sine), a fraction of the image side.

    Returns:
        `list[ShapeObject]`: `num_frames` states, the first equal to `start` in position, size, heading and opacity.
    """
    if action not in ACTIONS:
        raise ValueError(f"action={action!r} is not one of {ACTIONS}")
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2, got {num_frames}")
    times = [k / (num_frames - 1) for k in range(num_frames)]
    if action == "jump":
        return [dataclasses.replace(start, y=start.y - jump_height * math.sin(math.pi * t)) for t in times]
    end = _action_end(action, start, distance, rotation, factor, colour)
    return [_interpolate(start, end, t) for t in times]


def sample_action(
    rng: np.random.Generator,
    action: str,
    num_frames: int = 8,
    num_distractors: int = 0,
    min_gap: float = 0.9,
    max_tries: int = 100,
) -> tuple[list[ShapeObject], list[ShapeObject]]:
    """
    Sample a random actor (shape, colour, size, start position) doing `action`, plus static distractors.

    Rotations use oriented shapes only (a circle, square or cross turned by 90 degrees looks the same either way);
    grow/shrink use a small object scaled between 1 and `GROW_FACTOR`. Distractors keep `min_gap` from every state of
    the actor and never share its shape and colour.

    Returns:
        `tuple(list[ShapeObject], list[ShapeObject])`: the actor's per-frame states and the distractors.
    """
    shapes = ORIENTED_SHAPES if action.startswith("rotate") else SHAPES
    for _ in range(max_tries):
        actor = _random_object(rng, shapes)
        if action in ("grow", "shrink"):
            actor = dataclasses.replace(actor, size="small", scale=GROW_FACTOR if action == "shrink" else 1.0)
        if action == "appear":
            actor = dataclasses.replace(actor, alpha=0.0)
        colour = str(rng.choice([c for c in COLOURS if c != actor.colour])) if action == "change colour" else None
        reach = _BOUND * actor.radius + _MARGIN
        x, y = rng.uniform(reach, 1 - reach, size=2)
        states = action_states(action, dataclasses.replace(actor, x=float(x), y=float(y)), num_frames, colour=colour)
        if not all(_fits(state, [], min_gap) for state in states):
            continue
        distractors: list[ShapeObject] = []
        for _ in range(10 * num_distractors):
            if len(distractors) == num_distractors:
                break
            candidate = _random_object(rng)
            if (candidate.shape, candidate.colour) != (actor.shape, actor.colour):
                placed = _place(rng, candidate, distractors + states, min_gap)
                distractors += [placed] if placed is not None else []
        if len(distractors) == num_distractors:
            return states, distractors
    raise RuntimeError(f"could not sample {action!r} with {num_distractors} distractors in {max_tries} tries")


def render_video(
    states: Sequence[ShapeObject],
    distractors: Sequence[ShapeObject] = (),
    image_size: int = 64,
    background: tuple[int, int, int] | np.ndarray = BACKGROUND,
) -> np.ndarray:
    """
    Render an action: static distractors behind the actor in every frame.

    Returns:
        `np.ndarray`: `(num_frames, image_size, image_size, 3)` uint8 RGB frames.
    """
    return np.stack([render_scene([*distractors, state], image_size, background)[0] for state in states])


def action_caption(action: str, states: Sequence[ShapeObject]) -> str:
    """A one-sentence caption of a sampled action, e.g. `"a red triangle moves to the left"`."""
    first, last = states[0], states[-1]
    verb = _VERBS[action] + (f" to {last.colour}" if action == "change colour" else "")
    return f"{_article(first.colour)} {first.colour} {first.shape} {verb}"


def action_columns(
    num_samples: int,
    seed: int,
    image_size: int,
    num_frames: int = 8,
    split: str = "all",
    num_distractors: int = 0,
    noise: float = 0.0,
    min_gap: float = 0.9,
) -> tuple[dict[str, list], dict]:
    """Columns and features of `shapesworld("actions", ...)`; labels cycle through `class_names("actions", split)`."""
    names = class_names("actions", split)
    columns: dict[str, list] = {"frames": [], "label": [], "caption": [], "description": [], "reversed_label": []}
    for index, rng in enumerate(_sample_rngs(seed, "actions", num_samples)):
        label = index % len(names)
        action = names[label]
        states, distractors = sample_action(rng, action, num_frames, num_distractors, min_gap)
        frames = render_video(states, distractors, image_size, _background(rng, image_size, noise))
        columns["frames"].append([_encode_png(frame) for frame in frames])
        columns["label"].append(label)
        columns["caption"].append(action_caption(action, states))
        columns["description"].append(ACTION_DESCRIPTIONS[action])
        reverse = REVERSED_ACTIONS.get(action)
        columns["reversed_label"].append(names.index(reverse) if reverse in names else -1)
    features = {
        "frames": datasets.List(datasets.Image()),
        "label": datasets.ClassLabel(names=names),
        "caption": datasets.Value("string"),
        "description": datasets.Value("string"),
        "reversed_label": datasets.Value("int32"),
    }
    return columns, features
