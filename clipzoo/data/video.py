"""Video files decoded with PyAV: a frame decoder and a class-folder loader (`Video(decode=False)` + decode on access).

The `datasets` `Video()` decoder needs torchcodec, which does not load on CPU-only machines here; PyAV bundles FFmpeg in
its wheel, so clipzoo stores videos undecoded and decodes them with PyAV when a row is read.
"""

import io
import os
from pathlib import Path

import datasets
import numpy as np
from transformers.utils import logging

from clipzoo.data.folders import SkippedSamples


logger = logging.get_logger(__name__)

__all__ = ["VIDEO_EXTENSIONS", "VideoDecodeTransform", "decode_video", "load_video_folder"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")


def _import_av():
    try:
        import av
    except ImportError as error:
        raise ImportError(
            "decoding video files needs PyAV: install it with `pip install 'clipzoo[video]'` (or `pip install av`)"
        ) from error
    return av


def _sample_indices(num_available: int, num_frames: int) -> np.ndarray:
    # Evenly spaced over the whole clip (first and last frame included); a clip shorter than num_frames repeats frames.
    return np.linspace(0, num_available - 1, num_frames).round().astype(np.int64)


def decode_video(path_or_bytes: str | os.PathLike | bytes, num_frames: int | None = None) -> np.ndarray:
    """Decode a video file into RGB frames with PyAV.

    Args:
        path_or_bytes (`str`, `os.PathLike` or `bytes`): a video file path or its encoded bytes.
        num_frames (`int`, *optional*): return this many frames evenly spaced over the clip (indices
            `linspace(0, T - 1, num_frames)` rounded; frames repeat when the clip is shorter). All frames by default.

    Returns:
        `np.ndarray` of shape `(T, H, W, 3)` and dtype uint8.

    Raises:
        ImportError: if PyAV is not installed (names `pip install 'clipzoo[video]'`).
        ValueError: if the file cannot be decoded or has no video frame.

    Examples:

    ```python
    >>> from clipzoo.data.video import decode_video

    >>> frames = decode_video("clip.mp4", num_frames=8)  # doctest: +SKIP
    >>> frames.shape  # doctest: +SKIP
    (8, 240, 320, 3)
    ```
    """
    av = _import_av()
    if num_frames is not None and (not isinstance(num_frames, int) or num_frames < 1):
        raise ValueError(f"num_frames must be a positive integer or None, got {num_frames!r}")
    is_bytes = isinstance(path_or_bytes, bytes | bytearray)
    name = f"<{len(path_or_bytes)} bytes>" if is_bytes else os.fspath(path_or_bytes)
    source = io.BytesIO(path_or_bytes) if is_bytes else os.fspath(path_or_bytes)
    try:
        with av.open(source) as container:
            if not container.streams.video:
                raise ValueError(f"{name} has no video stream")
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot decode video {name}: {error}") from error
    if not frames:
        raise ValueError(f"video {name} has no decodable frame")
    video = np.stack(frames)
    if num_frames is not None:
        video = video[_sample_indices(len(video), num_frames)]
    return video


def _probe_video(path: str) -> None:
    """Open the file and decode its first frame; raises ValueError if that fails."""
    av = _import_av()
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            next(container.decode(video=0))
    except StopIteration:
        raise ValueError("no decodable frame") from None
    except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise ValueError(str(error)) from error


class VideoDecodeTransform:
    """`Dataset.set_transform` callable: decode the `video` column (`Video(decode=False)`) into `frames` on access.

    A row that fails to decode gets `frames=None` and is recorded in `skipped`; a map-style dataset cannot drop a row
    at access time, so collators must filter `None` (rows found unreadable by `load_video_folder(verify=True)` are
    already dropped up front).

    Args:
        num_frames (`int`, *optional*): frames sampled per video (see `decode_video`); all frames by default.
        skipped (`SkippedSamples`, *optional*): counter of rows that failed to decode.
    """

    def __init__(self, num_frames: int | None = None, skipped: SkippedSamples | None = None):
        self.num_frames = num_frames
        self.skipped = skipped if skipped is not None else SkippedSamples()

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        frames = []
        for video in batch["video"]:
            source = video["bytes"] if video.get("bytes") is not None else video["path"]
            try:
                frames.append(decode_video(source, num_frames=self.num_frames))
            except ValueError as error:
                self.skipped.add(video.get("path") or "<bytes>", str(error))
                frames.append(None)
        output = {name: values for name, values in batch.items() if name != "video"}
        output["frames"] = frames
        output["path"] = [video.get("path") for video in batch["video"]]
        return output


def load_video_folder(
    root: str | os.PathLike,
    num_frames: int | None = None,
    *,
    decode: bool = True,
    verify: bool = True,
    skipped: SkippedSamples | None = None,
) -> datasets.Dataset:
    """Load `root/<class name>/<video file>` as a dataset of undecoded videos and class labels.

    The `video` column is `datasets.Video(decode=False)` (`{"path", "bytes"}`) and `label` a `ClassLabel` over the
    sorted subfolder names. With `decode=True` a `VideoDecodeTransform` is set, so rows read as
    `{"label", "frames": np.ndarray (T, H, W, 3) uint8, "path"}`; `dataset.reset_format()` gives the raw column back.

    Args:
        root (`str` or `os.PathLike`): folder with one subfolder per class.
        num_frames (`int`, *optional*): frames sampled per video on access; all frames by default.
        decode (`bool`, *optional*, defaults to `True`): set the decoding transform.
        verify (`bool`, *optional*, defaults to `True`): open every file and decode its first frame now; unreadable
            files are dropped and recorded in `skipped` (with one warning giving the count and names).
        skipped (`SkippedSamples`, *optional*): counter to fill, at load time and on access.

    Returns:
        `datasets.Dataset`.

    Examples:

    ```python
    >>> from clipzoo.data.folders import SkippedSamples
    >>> from clipzoo.data.video import load_video_folder

    >>> skipped = SkippedSamples()
    >>> dataset = load_video_folder("actions/", num_frames=8, skipped=skipped)  # doctest: +SKIP
    >>> dataset[0]["frames"].shape, skipped.count  # doctest: +SKIP
    ((8, 240, 320, 3), 1)
    ```
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"video folder {root} does not exist or is not a directory")
    class_names = sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not class_names:
        raise ValueError(f"{root} has no class subfolders (expected root/<class name>/<video file>)")
    counter = skipped if skipped is not None else SkippedSamples()
    before = counter.count
    paths, labels = [], []
    for label, class_name in enumerate(class_names):
        for path in sorted((root / class_name).rglob("*")):
            if not path.is_file() or path.suffix.lower() not in VIDEO_EXTENSIONS:
                continue
            if verify:
                try:
                    _probe_video(str(path))
                except ValueError as error:
                    counter.add(str(path), str(error))
                    continue
            paths.append(str(path))
            labels.append(label)
    if counter.count > before:
        logger.warning(f"load_video_folder({root}): {counter.summary()}")
    if not paths:
        raise ValueError(f"no readable video file ({', '.join(VIDEO_EXTENSIONS)}) under {root}")
    features = datasets.Features(
        {"video": datasets.Video(decode=False), "label": datasets.ClassLabel(names=class_names)}
    )
    dataset = datasets.Dataset.from_dict(
        {"video": [{"path": path, "bytes": None} for path in paths], "label": labels}, features=features
    )
    if decode:
        dataset.set_transform(VideoDecodeTransform(num_frames=num_frames, skipped=counter))
    return dataset
