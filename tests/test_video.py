"""clipzoo.data.video: PyAV decoding of small mp4 files written here, frame sampling, and the class-folder loader."""

import builtins

import datasets
import numpy as np
import pytest

from clipzoo.data.folders import SkippedSamples
from clipzoo.data.video import decode_video, load_video_folder


av = pytest.importorskip("av")

NUM_FRAMES, SIZE = 10, 32


def _write_video(path, codec: str = "mpeg4", num_frames: int = NUM_FRAMES) -> None:
    """Frame i: a white vertical bar at columns [3i, 3i + 3) on black, so the frame index can be read back."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
        for index in range(num_frames):
            pixels = np.zeros((SIZE, SIZE, 3), np.uint8)
            pixels[:, 3 * index : 3 * index + 3] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _bar_position(frame: np.ndarray) -> int:
    return int(frame[SIZE // 2, :, 0].astype(int).argmax()) // 3


@pytest.fixture
def video_tree(tmp_path):
    (tmp_path / "move_left").mkdir()
    (tmp_path / "move_right").mkdir()
    _write_video(tmp_path / "move_left" / "a.mp4")
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    _write_video(tmp_path / "move_right" / "b.mp4", codec=codec)
    (tmp_path / "move_right" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x13" * 64)
    (tmp_path / "move_right" / "notes.txt").write_text("ignored: not a video extension")
    return tmp_path


def test_decode_video_all_frames_and_sampling(video_tree):
    path = video_tree / "move_left" / "a.mp4"
    frames = decode_video(path)
    assert frames.shape == (NUM_FRAMES, SIZE, SIZE, 3) and frames.dtype == np.uint8
    assert [_bar_position(frame) for frame in frames] == list(range(NUM_FRAMES))
    # linspace(0, 9, 4) = 0, 3, 6, 9
    sampled = decode_video(path.read_bytes(), num_frames=4)
    assert [_bar_position(frame) for frame in sampled] == [0, 3, 6, 9]
    # a clip shorter than num_frames repeats frames: round(linspace(0, 9, 12))
    longer = decode_video(str(path), num_frames=12)
    assert [_bar_position(frame) for frame in longer] == np.linspace(0, 9, 12).round().astype(int).tolist()


def test_decode_video_errors(video_tree, monkeypatch):
    with pytest.raises(ValueError, match="cannot decode video .*corrupt.mp4"):
        decode_video(video_tree / "move_right" / "corrupt.mp4")
    with pytest.raises(ValueError, match="num_frames must be a positive integer"):
        decode_video(video_tree / "move_left" / "a.mp4", num_frames=0)
    real_import = builtins.__import__

    def no_av(name, *args, **kwargs):
        if name == "av":
            raise ImportError("No module named 'av'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_av)
    with pytest.raises(ImportError, match=r"pip install 'clipzoo\[video\]'"):
        decode_video(video_tree / "move_left" / "a.mp4")


def test_load_video_folder_skips_and_counts(video_tree):
    skipped = SkippedSamples()
    dataset = load_video_folder(video_tree, num_frames=5, skipped=skipped)
    assert len(dataset) == 2
    assert dataset.features["label"].names == ["move_left", "move_right"]
    assert isinstance(dataset.features["video"], datasets.Video) and not dataset.features["video"].decode
    assert skipped.count == 1 and skipped.names[0].endswith("corrupt.mp4")
    row = dataset[1]
    assert row["label"] == 1 and row["frames"].shape == (5, SIZE, SIZE, 3)
    assert row["path"].endswith("b.mp4")
    batch = dataset[0:2]
    assert [frames.shape[0] for frames in batch["frames"]] == [5, 5]
    # a file that breaks after loading: frames=None on access, counted
    (video_tree / "move_left" / "a.mp4").write_bytes(b"broken")
    assert dataset[0]["frames"] is None
    assert skipped.count == 2
    dataset.reset_format()
    assert set(dataset[0]["video"]) == {"path", "bytes"}


def test_load_video_folder_without_verify_or_decode(video_tree, tmp_path):
    dataset = load_video_folder(video_tree, decode=False, verify=False)
    assert len(dataset) == 3 and dataset[0]["video"]["path"].endswith("a.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class subfolders"):
        load_video_folder(tmp_path / "empty")
