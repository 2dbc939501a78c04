"""Video processor shared by the few-shot action recognition variants (CLIP-FSAR, MA-FSAR). PIL + numpy.

Frame sampling follows the official CLIP-FSAR code for its SSv2/HMDB51/UCF101 configs (`_interval_based_sampling`
with `SAMPLING_RATE > 40`, research §2.2): the video is cut into `num_frames` equal segments of `len // num_frames`
frames and one frame is drawn uniformly at random from each segment. The official code does this at test time too;
here evaluation takes each segment's centre by default (`eval_sampling="center"`) so that results are reproducible,
and `eval_sampling="random"` restores the official behaviour (seed the generator). Spatially: short side resized to
`shortest_edge`, a random (train) or centre (eval) crop of `crop_size`, CLIP mean/std. No horizontal flip by default:
classes such as "move left" / "move right" swap under a flip.

The processor takes decoded frames (arrays or PIL images). Files are decoded with PyAV by
`clipzoo.data.video.decode_video` (the processing layer imports no decoder, so exported remote code stays light).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.utils import logging


logger = logging.get_logger(__name__)

__all__ = ["ClipzooVideoProcessor", "segment_frame_indices"]


def segment_frame_indices(
    num_available: int, num_frames: int, mode: str = "center", rng: np.random.Generator | None = None
) -> np.ndarray:
    """Indices of `num_frames` frames, one per equal segment of a `num_available`-frame video.

    Args:
        num_available (`int`): frames in the video.
        num_frames (`int`): frames to sample.
        mode (`str`, *optional*, defaults to `"center"`): `"random"` (one uniformly random frame per segment, the
            official train and test sampling) or `"center"` (each segment's centre frame).
        rng (`np.random.Generator`, *optional*): generator for `"random"`.

    Returns:
        `np.ndarray` of `num_frames` int64 indices. A video shorter than `num_frames` repeats frames (evenly spread
        indices), with a warning.
    """
    if num_available < 1:
        raise ValueError(f"A video needs at least one frame; got {num_available}.")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1; got {num_frames}.")
    if mode not in ("random", "center"):
        raise ValueError(f"Frame sampling mode must be 'random' or 'center'; got {mode!r}.")
    if num_available < num_frames:
        logger.warning(
            f"Video has {num_available} frames, fewer than num_frames={num_frames}: repeating frames to fill the clip."
        )
        return np.floor(np.arange(num_frames) * num_available / num_frames).astype(np.int64)
    interval = num_available // num_frames
    starts = np.arange(num_frames) * interval
    if mode == "center":
        return starts + interval // 2
    rng = rng if rng is not None else np.random.default_rng()
    return starts + rng.integers(0, interval, size=num_frames)


def _as_frame_list(video) -> list[Image.Image] | np.ndarray:
    if isinstance(video, str | os.PathLike | bytes):
        raise TypeError(
            f"The video processor takes decoded frames; decode files first, e.g. with "
            f"clipzoo.data.video.decode_video({video!r}) (PyAV)."
        )
    if isinstance(video, np.ndarray):
        if video.ndim != 4 or video.shape[-1] not in (1, 3):
            raise ValueError(f"A video array must have shape (frames, height, width, 3); got {video.shape}.")
        return video
    if isinstance(video, torch.Tensor):
        raise TypeError("Pass videos as uint8 numpy arrays (frames, height, width, 3), PIL frame lists or file paths.")
    frames = list(video)
    if not frames or not all(isinstance(frame, Image.Image) for frame in frames):
        raise TypeError(f"A video must be a file path, an array or a non-empty list of PIL images; got {type(video)}.")
    return frames


class ClipzooVideoProcessor(BaseImageProcessor):
    r"""
    Turns videos into `pixel_values` of shape `(batch, num_frames, 3, crop, crop)` for few-shot action recognition.

    Args:
        num_frames (`int`, *optional*, defaults to 8): frames per clip (`DATA.NUM_INPUT_FRAMES`).
        shortest_edge (`int`, *optional*, defaults to 256): the short side is resized to this.
        crop_size (`int`, *optional*, defaults to 224): square crop (random at train, centre at eval).
        eval_sampling (`str`, *optional*, defaults to `"center"`): `"center"` (deterministic) or `"random"` (the
            official test sampling; seed the generator).
        flip_probability (`float`, *optional*, defaults to 0.0): horizontal flip at train, the same for every frame of
            a clip. Keep 0 for direction-sensitive classes.
        image_mean / image_std (`list[float]`, *optional*): CLIP constants by default.

    Examples:

    ```python
    >>> import numpy as np
    >>> from clipzoo.processing.video_processing import ClipzooVideoProcessor
    >>> processor = ClipzooVideoProcessor(num_frames=4, shortest_edge=32, crop_size=32)
    >>> video = np.zeros((20, 48, 64, 3), dtype=np.uint8)
    >>> processor([video], return_tensors="pt")["pixel_values"].shape
    torch.Size([1, 4, 3, 32, 32])
    ```
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        num_frames: int = 8,
        shortest_edge: int = 256,
        crop_size: int = 224,
        eval_sampling: str = "center",
        flip_probability: float = 0.0,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_frames < 1 or crop_size < 1 or shortest_edge < crop_size:
            raise ValueError(
                f"Need num_frames >= 1 and shortest_edge >= crop_size >= 1; got num_frames={num_frames}, "
                f"shortest_edge={shortest_edge}, crop_size={crop_size}."
            )
        if eval_sampling not in ("center", "random"):
            raise ValueError(f"eval_sampling must be 'center' or 'random'; got {eval_sampling!r}.")
        if not 0.0 <= flip_probability <= 1.0:
            raise ValueError(f"flip_probability must be in [0, 1]; got {flip_probability}.")
        self.num_frames = int(num_frames)
        self.shortest_edge = int(shortest_edge)
        self.crop_size = int(crop_size)
        self.eval_sampling = eval_sampling
        self.flip_probability = float(flip_probability)
        self.image_mean = list(image_mean if image_mean is not None else OPENAI_CLIP_MEAN)
        self.image_std = list(image_std if image_std is not None else OPENAI_CLIP_STD)

    def _frame(self, frame, box: tuple[int, int, int, int], size: tuple[int, int], flip: bool) -> np.ndarray:
        image = frame if isinstance(frame, Image.Image) else Image.fromarray(np.asarray(frame))
        image = image.convert("RGB").resize(size, Image.Resampling.BICUBIC).crop(box)
        if flip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return np.asarray(image, dtype=np.float32) / 255.0

    def process_video(self, video, training: bool = False, rng: np.random.Generator | None = None) -> np.ndarray:
        """One clip as a float32 array `(num_frames, 3, crop, crop)`; `video` is an array or a list of PIL frames."""
        frames = _as_frame_list(video)
        mode = "random" if training else self.eval_sampling
        rng = rng if rng is not None else np.random.default_rng()
        indices = segment_frame_indices(len(frames), self.num_frames, mode, rng)
        first = frames[0] if isinstance(frames[0], Image.Image) else Image.fromarray(np.asarray(frames[0]))
        width, height = first.size
        scale = self.shortest_edge / min(width, height)
        size = (max(self.crop_size, round(width * scale)), max(self.crop_size, round(height * scale)))
        # One crop box and one flip decision per clip: every frame sees the same spatial transform.
        if training:
            left = int(rng.integers(0, size[0] - self.crop_size + 1))
            top = int(rng.integers(0, size[1] - self.crop_size + 1))
        else:
            left, top = (size[0] - self.crop_size) // 2, (size[1] - self.crop_size) // 2
        box = (left, top, left + self.crop_size, top + self.crop_size)
        flip = training and self.flip_probability > 0 and rng.random() < self.flip_probability
        clip = np.stack([self._frame(frames[i], box, size, flip) for i in indices])  # (T, H, W, 3)
        clip = (clip - np.asarray(self.image_mean, np.float32)) / np.asarray(self.image_std, np.float32)
        return clip.transpose(0, 3, 1, 2)

    def preprocess(
        self,
        videos,
        training: bool = False,
        rng: np.random.Generator | None = None,
        return_tensors: str | None = "pt",
        **kwargs,
    ) -> BatchFeature:
        """Processes a video or a list of videos into `pixel_values` `(batch, num_frames, 3, crop, crop)`.

        Args:
            videos: an array `(T, H, W, 3)`, a list of PIL frames, or a list of those.
            training (`bool`, *optional*, defaults to `False`): random segment frames, random crop and flip.
            rng (`np.random.Generator`, *optional*): generator for the random choices.
            return_tensors (`str`, *optional*, defaults to `"pt"`).
        """
        if isinstance(videos, str | os.PathLike | bytes | np.ndarray) or (
            isinstance(videos, Sequence) and videos and isinstance(videos[0], Image.Image)
        ):
            videos = [videos]
        clips = np.stack([self.process_video(video, training=training, rng=rng) for video in videos])
        return BatchFeature({"pixel_values": clips}, tensor_type=return_tensors)
