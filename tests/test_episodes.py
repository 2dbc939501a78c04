"""Episodic sampler, split-file reader and episodic video dataset (shared by CLIP-FSAR and MA-FSAR)."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from clipzoo.processing.video_processing import ClipzooVideoProcessor
from clipzoo.training.episodes import (
    EpisodeSampler,
    EpisodicVideoDataset,
    episode_collator,
    read_split_file,
    resolve_video_path,
)


REAL_VIDEO = Path(__file__).parent / "data" / "bigbuckbunny_24f.mp4"


def test_episode_shape_labels_and_determinism():
    labels = [c for c in range(7) for _ in range(6)]
    sampler = EpisodeSampler(labels, n_way=5, k_shot=2, q_query=3, seed=4)
    episode = sampler.episode(11)
    assert len(set(episode.classes)) == 5
    assert len(episode.support_indices) == 10 and len(episode.query_indices) == 15
    assert not set(episode.support_indices) & set(episode.query_indices)
    for index, label in zip(
        episode.support_indices + episode.query_indices, episode.support_labels + episode.query_labels
    ):
        assert labels[index] == episode.classes[label]
    assert Counter(episode.support_labels) == {label: 2 for label in range(5)}
    assert episode == EpisodeSampler(labels, 5, 2, 3, seed=4).episode(11)
    assert episode != sampler.episode(12)
    assert episode.support_class_ids == tuple(labels[i] for i in episode.support_indices)


def test_class_with_too_few_videos_is_an_error():
    labels = [0] * 5 + [1] * 5 + [2] * 3
    with pytest.raises(ValueError, match=r"k_shot \+ q_query = 4.*'c': 3"):
        EpisodeSampler(labels, n_way=2, k_shot=1, q_query=3, class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="needs 5 classes"):
        EpisodeSampler([0, 0, 1, 1], n_way=5, k_shot=1, q_query=1)


def test_official_and_clipzoo_split_files(tmp_path):
    official = tmp_path / "test_few_shot.txt"
    official.write_text("test3/12345\n# comment\n\ntest0//brush_hair/clip_1.avi\n")
    entries = read_split_file(official, class_names=["a", "b", "c", "d"])
    assert [(e.class_id, e.video) for e in entries] == [(3, "12345"), (0, "brush_hair/clip_1.avi")]
    assert resolve_video_path("/root", "12345") == Path("/root/12345.mp4")
    assert resolve_video_path("/root", "brush_hair/clip_1.avi") == Path("/root/brush_hair/clip_1.avi")
    ours = tmp_path / "ours.txt"
    ours.write_text("jump\tvideos/j1.mp4\nmove up\tvideos/u1.mp4\n")
    assert [(e.class_id, e.video) for e in read_split_file(ours, ["move up", "jump"])] == [
        (1, "videos/j1.mp4"),
        (0, "videos/u1.mp4"),
    ]


def test_bad_split_files(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("no-class-here\n")
    with pytest.raises(ValueError, match="cannot parse"):
        read_split_file(path)
    path.write_text("train7/abc\n")
    with pytest.raises(ValueError, match="class id 7 is outside"):
        read_split_file(path, ["a", "b"])
    path.write_text("walk\tw.mp4\n")
    with pytest.raises(ValueError, match="not in class_names"):
        read_split_file(path, ["run"])


def _tiny_processor():
    return ClipzooVideoProcessor(num_frames=4, shortest_edge=8, crop_size=8)


def test_dataset_items_and_collator():
    rng = np.random.default_rng(0)
    videos = [rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8) for _ in range(12)]
    labels = [i % 3 for i in range(12)]
    dataset = EpisodicVideoDataset(videos, labels, _tiny_processor(), n_way=3, k_shot=1, q_query=2, num_episodes=4)
    item = dataset[1]
    assert item["support_pixel_values"].shape == (3, 4, 3, 8, 8)
    assert item["pixel_values"].shape == (6, 4, 3, 8, 8)
    assert item["labels"].tolist() == [0, 0, 1, 1, 2, 2]
    torch.testing.assert_close(item["pixel_values"], dataset[1]["pixel_values"])  # seeded
    batch = episode_collator([item])
    assert batch["return_loss"] is True
    with pytest.raises(ValueError, match="exactly one episode"):
        episode_collator([item, item])
    with pytest.raises(IndexError):
        dataset[4]


def test_unreadable_files_are_skipped_and_counted(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"garbage")
    split = tmp_path / "test.txt"
    lines = [f"test{c}//{REAL_VIDEO.name}" for c in (0, 0, 1, 1)] + ["test1//broken.mp4"]
    split.write_text("\n".join(lines) + "\n")
    import shutil

    shutil.copy(REAL_VIDEO, tmp_path / REAL_VIDEO.name)
    dataset = EpisodicVideoDataset.from_split_file(
        split, tmp_path, ["a", "b"], _tiny_processor(), n_way=2, k_shot=1, q_query=1, num_episodes=2
    )
    assert dataset.skipped.count == 1 and dataset.skipped.names == [str(broken)]
    assert dataset[0]["support_pixel_values"].shape == (2, 4, 3, 8, 8)
