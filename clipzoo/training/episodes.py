"""Episodic few-shot data for video methods (CLIP-FSAR, MA-FSAR): split files, an N-way K-shot Q-query sampler, an
episodic video dataset and its collator.

Split files. The official format (CLIP-FSAR `configs/projects/CLIPFSAR/<dataset>/{train,val,test}_few_shot.txt`) has
one video per line, `{split}{class_id}/{video_id}` (SSv2, video at `<root>/<video_id>.mp4`) or
`{split}{class_id}//{relative path}` (Kinetics, UCF101, HMDB51); `class_id` indexes the config's ordered class-name
list. clipzoo's own format is `{class name}<TAB>{relative path}`. Both may contain blank lines and `#` comments.

Episodes are a pure function of `(seed, index)`: class order (= episode label), support and query videos, and the
random frame/crop choices of the video processor. A class with fewer than K + Q videos is an error at construction.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.utils import logging

from clipzoo.data.folders import SkippedSamples


logger = logging.get_logger(__name__)

__all__ = [
    "Episode",
    "EpisodeSampler",
    "EpisodicVideoDataset",
    "SplitEntry",
    "episode_collator",
    "read_split_file",
    "resolve_video_path",
]

_OFFICIAL_LINE = re.compile(r"^(?P<split>[A-Za-z_]+?)(?P<class_id>\d+)/(?P<video>.+)$")


@dataclasses.dataclass(frozen=True)
class SplitEntry:
    """One line of a split file: the class (index into the class-name list) and the video's path or id."""

    class_id: int
    video: str


def read_split_file(path: str | os.PathLike, class_names: Sequence[str] | None = None) -> list[SplitEntry]:
    """Reads an official (`{split}{class_id}/{video}`) or clipzoo (`{class name}<TAB>{path}`) split file.

    Args:
        path (`str` or `os.PathLike`): the split file.
        class_names (`Sequence[str]`, *optional*): ordered class names. Required for the clipzoo format (names are
            mapped to their index); for the official format, ids must be < `len(class_names)` when given.

    Returns:
        `list[SplitEntry]` in file order.
    """
    names = list(class_names) if class_names is not None else None
    entries = []
    for number, raw in enumerate(Path(path).read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "\t" in raw:
            name, _, video = raw.strip("\n").partition("\t")
            if names is None:
                raise ValueError(f"{path}:{number}: a '<class name>\\t<path>' split file needs class_names.")
            if name.strip() not in names:
                raise ValueError(f"{path}:{number}: class {name.strip()!r} is not in class_names {names}.")
            entries.append(SplitEntry(names.index(name.strip()), video.strip()))
            continue
        match = _OFFICIAL_LINE.match(line)
        if match is None:
            raise ValueError(
                f"{path}:{number}: cannot parse {line!r}; expected '{{split}}{{class_id}}/{{video}}' (official) or "
                f"'<class name>\\t<path>' (clipzoo)."
            )
        class_id = int(match["class_id"])
        if names is not None and class_id >= len(names):
            raise ValueError(f"{path}:{number}: class id {class_id} is outside the {len(names)} class names.")
        entries.append(SplitEntry(class_id, match["video"].lstrip("/")))
    if not entries:
        raise ValueError(f"Split file {path} lists no videos.")
    return entries


def resolve_video_path(root: str | os.PathLike, video: str, extension: str = ".mp4") -> Path:
    """`<root>/<video>`, adding `extension` to bare ids (the SSv2 lines name `<id>` for `<root>/<id>.mp4`)."""
    path = Path(root) / video
    return path if path.suffix else path.with_name(path.name + extension)


@dataclasses.dataclass(frozen=True)
class Episode:
    """Indices and labels of one episode. Episode labels are positions in `classes`; class ids are global."""

    classes: tuple[int, ...]
    support_indices: tuple[int, ...]
    support_labels: tuple[int, ...]
    query_indices: tuple[int, ...]
    query_labels: tuple[int, ...]

    @property
    def support_class_ids(self) -> tuple[int, ...]:
        return tuple(self.classes[label] for label in self.support_labels)

    @property
    def query_class_ids(self) -> tuple[int, ...]:
        return tuple(self.classes[label] for label in self.query_labels)


class EpisodeSampler:
    """Seeded N-way K-shot Q-query episodes over a labelled pool of videos.

    Args:
        labels (`Sequence[int]`): the class id of every video in the pool.
        n_way / k_shot / q_query (`int`): classes per episode, support and query videos per class.
        seed (`int`, *optional*, defaults to 0): episode `i` depends only on `(seed, i)`.
        class_names (`Sequence[str]`, *optional*): used in error messages.

    Examples:

    ```python
    >>> from clipzoo.training.episodes import EpisodeSampler
    >>> sampler = EpisodeSampler([0, 0, 1, 1, 2, 2], n_way=2, k_shot=1, q_query=1, seed=0)
    >>> episode = sampler.episode(0)
    >>> len(episode.support_indices), len(episode.query_indices)
    (2, 2)
    ```
    """

    def __init__(
        self,
        labels: Sequence[int],
        n_way: int,
        k_shot: int,
        q_query: int,
        seed: int = 0,
        class_names: Sequence[str] | None = None,
    ):
        if min(n_way, k_shot, q_query) < 1:
            raise ValueError(f"n_way, k_shot and q_query must be >= 1; got {n_way}, {k_shot}, {q_query}.")
        self.n_way, self.k_shot, self.q_query, self.seed = n_way, k_shot, q_query, seed
        by_class: dict[int, list[int]] = {}
        for index, label in enumerate(labels):
            by_class.setdefault(int(label), []).append(index)
        self.videos_by_class = {c: np.asarray(v) for c, v in sorted(by_class.items())}
        self.classes = np.asarray(list(self.videos_by_class))
        if len(self.classes) < n_way:
            raise ValueError(f"A {n_way}-way episode needs {n_way} classes; the pool has {len(self.classes)}.")
        need = k_shot + q_query
        small = {c: len(v) for c, v in self.videos_by_class.items() if len(v) < need}
        if small:
            named = {(class_names[c] if class_names is not None else c): n for c, n in small.items()}
            raise ValueError(
                f"Every class needs at least k_shot + q_query = {need} videos; these have fewer: {named}."
            )

    def episode(self, index: int) -> Episode:
        rng = np.random.default_rng([self.seed, index])
        classes = rng.choice(self.classes, self.n_way, replace=False)
        support, query = [], []
        for cls in classes:
            chosen = rng.choice(self.videos_by_class[int(cls)], self.k_shot + self.q_query, replace=False)
            support.extend(int(i) for i in chosen[: self.k_shot])
            query.extend(int(i) for i in chosen[self.k_shot :])
        return Episode(
            classes=tuple(int(c) for c in classes),
            support_indices=tuple(support),
            support_labels=tuple(label for label in range(self.n_way) for _ in range(self.k_shot)),
            query_indices=tuple(query),
            query_labels=tuple(label for label in range(self.n_way) for _ in range(self.q_query)),
        )


class EpisodicVideoDataset(torch.utils.data.Dataset):
    """`num_episodes` seeded episodes; item `i` is the model input of episode `i`.

    Args:
        videos (`Sequence`): the pool; `videos[i]` is a file path, a `(T, H, W, 3)` array or a list of PIL frames.
        labels (`Sequence[int]`): class id of every video.
        processor: a [`ClipzooVideoProcessor`] (anything with `process_video(video, training, rng)`).
        n_way / k_shot / q_query (`int`): episode shape.
        num_episodes (`int`): dataset length.
        seed (`int`, *optional*, defaults to 0): episodes and frame sampling depend only on `(seed, index)`.
        training (`bool`, *optional*, defaults to `False`): random frames and crops (train) or the processor's
            evaluation sampling.
        class_names (`Sequence[str]`, *optional*): names of the class ids (error messages, `class_names` attribute).
        verify (`bool`, *optional*, defaults to `False`): decode every file-path video once up front; unreadable
            files are skipped and counted in `skipped` (the class-size check then runs on what is left).
        loader (`Callable`, *optional*): reads a path into frames; `clipzoo.data.video.decode_video` by default.

    Items: `support_pixel_values` `(N*K, T, 3, H, W)`, `support_labels` (episode labels), `support_class_ids`,
    `pixel_values` `(N*Q, T, 3, H, W)` (queries), `labels`, `query_class_ids`.
    """

    def __init__(
        self,
        videos: Sequence[Any],
        labels: Sequence[int],
        processor,
        n_way: int = 5,
        k_shot: int = 1,
        q_query: int = 1,
        num_episodes: int = 10_000,
        seed: int = 0,
        training: bool = False,
        class_names: Sequence[str] | None = None,
        verify: bool = False,
        loader: Callable[[Any], Any] | None = None,
    ):
        if len(videos) != len(labels):
            raise ValueError(f"Got {len(videos)} videos but {len(labels)} labels.")
        self.skipped = SkippedSamples()
        self.loader = loader
        videos, labels = list(videos), [int(label) for label in labels]
        if verify:
            videos, labels = self._drop_unreadable(videos, labels)
        self.videos, self.labels = videos, labels
        self.class_names = list(class_names) if class_names is not None else None
        self.sampler = EpisodeSampler(labels, n_way, k_shot, q_query, seed=seed, class_names=self.class_names)
        self.processor, self.num_episodes, self.seed, self.training = processor, num_episodes, seed, training

    def _read(self, video: Any) -> Any:
        if isinstance(video, str | os.PathLike):
            if self.loader is not None:
                return self.loader(video)
            from clipzoo.data.video import decode_video

            return decode_video(video)
        return video

    def _drop_unreadable(self, videos: list, labels: list[int]) -> tuple[list, list[int]]:
        kept_videos, kept_labels = [], []
        for video, label in zip(videos, labels):
            if isinstance(video, str | os.PathLike):
                try:
                    self._read(video)
                except (ValueError, OSError) as error:
                    self.skipped.add(os.fspath(video), str(error))
                    continue
            kept_videos.append(video)
            kept_labels.append(label)
        if self.skipped.count:
            logger.warning(f"Skipped {self.skipped.count} unreadable video(s) of {len(videos)}.")
        return kept_videos, kept_labels

    @classmethod
    def from_split_file(
        cls,
        split_file: str | os.PathLike,
        video_root: str | os.PathLike,
        class_names: Sequence[str],
        processor,
        **kwargs,
    ) -> EpisodicVideoDataset:
        """Episodes over the videos listed in a split file (see [`read_split_file`]), read from `video_root`."""
        entries = read_split_file(split_file, class_names)
        videos = [resolve_video_path(video_root, entry.video) for entry in entries]
        kwargs.setdefault("verify", True)
        return cls(videos, [e.class_id for e in entries], processor, class_names=class_names, **kwargs)

    @classmethod
    def from_shapesworld(
        cls,
        processor,
        split: str = "seen",
        videos_per_class: int = 20,
        data_seed: int = 0,
        image_size: int = 64,
        num_distractors: int = 0,
        noise: float = 0.0,
        **kwargs,
    ) -> EpisodicVideoDataset:
        """Episodes over generated ShapesWorld-Actions videos (the embedded default; no files).

        `split` picks the classes (`"seen"` for training, `"heldout"` for novel-class testing, see
        `clipzoo.data.shapesworld.class_names("actions", split)`); `data_seed` the videos; `processor.num_frames`
        frames are rendered per video. Class ids index `class_names`.
        """
        from clipzoo.data.shapesworld import class_names as shapesworld_class_names
        from clipzoo.data.shapesworld import shapesworld

        names = shapesworld_class_names("actions", split)
        data = shapesworld(
            "actions",
            num_samples=videos_per_class * len(names),
            seed=data_seed,
            image_size=image_size,
            num_frames=processor.num_frames,
            split=split,
            num_distractors=num_distractors,
            noise=noise,
        )
        return cls(list(data["frames"]), list(data["label"]), processor, class_names=names, **kwargs)

    def __len__(self) -> int:
        return self.num_episodes

    def episode(self, index: int) -> Episode:
        return self.sampler.episode(index)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.num_episodes:
            raise IndexError(f"Episode index {index} is outside [0, {self.num_episodes}).")
        episode = self.sampler.episode(index)
        rng = np.random.default_rng([self.seed, index, 1])

        def clips(indices: Sequence[int]) -> torch.Tensor:
            processed = [self.processor.process_video(self._read(self.videos[i]), self.training, rng) for i in indices]
            return torch.from_numpy(np.stack(processed))

        return {
            "support_pixel_values": clips(episode.support_indices),
            "support_labels": torch.tensor(episode.support_labels),
            "support_class_ids": torch.tensor(episode.support_class_ids),
            "pixel_values": clips(episode.query_indices),
            "labels": torch.tensor(episode.query_labels),
            "query_class_ids": torch.tensor(episode.query_class_ids),
        }


def episode_collator(features: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """Collator for one episode per batch (episodes carry their own support/query batch); sets `return_loss`.

    Use `per_device_train_batch_size=1` and reach the official 16 episodes per optimiser step with
    `gradient_accumulation_steps`.
    """
    if len(features) != 1:
        raise ValueError(
            f"An episodic batch holds exactly one episode; got {len(features)}. Set per_device_train_batch_size=1 "
            "and use gradient_accumulation_steps for more episodes per step."
        )
    return {**features[0], "return_loss": True}
