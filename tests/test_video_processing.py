"""The shared video processor: segment sampling, resize/crop, normalisation, real-file decoding, bad input."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipzoo.data.video import decode_video
from clipzoo.processing import video_processing
from clipzoo.processing.video_processing import ClipzooVideoProcessor, segment_frame_indices


REAL_VIDEO = Path(__file__).parent / "data" / "bigbuckbunny_24f.mp4"


def test_segment_centres_and_random_frames_stay_in_their_segment():
    np.testing.assert_array_equal(segment_frame_indices(20, 4), [2, 7, 12, 17])
    rng = np.random.default_rng(0)
    for _ in range(50):
        indices = segment_frame_indices(23, 4, "random", rng)  # segments of 23 // 4 = 5 frames
        assert all(5 * i <= index < 5 * i + 5 for i, index in enumerate(indices))
    draws = {tuple(segment_frame_indices(40, 8, "random", np.random.default_rng(s))) for s in range(5)}
    assert len(draws) > 1


def test_short_video_repeats_frames_and_says_so():
    from transformers.testing_utils import CaptureLogger

    with CaptureLogger(video_processing.logger) as captured:
        indices = segment_frame_indices(3, 8)
    np.testing.assert_array_equal(indices, [0, 0, 0, 1, 1, 1, 2, 2])
    assert "3 frames, fewer than num_frames=8: repeating frames" in captured.out


def test_bad_sampling_arguments():
    with pytest.raises(ValueError, match="'random' or 'center'"):
        segment_frame_indices(10, 4, "uniform")
    with pytest.raises(ValueError, match="at least one frame"):
        segment_frame_indices(0, 4)
    with pytest.raises(ValueError, match="eval_sampling"):
        ClipzooVideoProcessor(eval_sampling="uniform")
    with pytest.raises(ValueError, match="shortest_edge >= crop_size"):
        ClipzooVideoProcessor(shortest_edge=16, crop_size=32)


def test_eval_pipeline_matches_a_hand_computation():
    processor = ClipzooVideoProcessor(num_frames=2, shortest_edge=8, crop_size=4)
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (6, 8, 16, 3), dtype=np.uint8)  # short side already 8: resize is (16, 8)
    out = processor(video, return_tensors="np")["pixel_values"]
    assert out.shape == (1, 2, 3, 4, 4)
    mean, std = np.asarray(processor.image_mean), np.asarray(processor.image_std)
    for t, index in enumerate([1, 4]):  # centres of segments [0, 3) and [3, 6)
        crop = video[index, 2:6, 6:10].astype(np.float32) / 255.0
        np.testing.assert_allclose(out[0, t], ((crop - mean) / std).transpose(2, 0, 1), atol=1e-5)


def test_training_crop_is_shared_by_all_frames_and_no_flip_by_default():
    processor = ClipzooVideoProcessor(num_frames=4, shortest_edge=16, crop_size=8)
    frame = np.arange(16 * 24 * 3, dtype=np.int64).reshape(16, 24, 3) % 251
    video = np.repeat(frame[None].astype(np.uint8), 8, axis=0)
    clip = processor.process_video(video, training=True, rng=np.random.default_rng(3))
    assert all(np.array_equal(clip[0], clip[t]) for t in range(4))
    unflipped = [processor.process_video(video, True, np.random.default_rng(s)) for s in range(8)]
    flipping = ClipzooVideoProcessor(num_frames=4, shortest_edge=16, crop_size=8, flip_probability=1.0)
    flipped = flipping.process_video(video, True, np.random.default_rng(0))
    assert any(np.array_equal(flipped[0], u[0][..., ::-1]) for u in unflipped)


def test_pil_frames_and_save_load(tmp_path):
    processor = ClipzooVideoProcessor(num_frames=3, shortest_edge=16, crop_size=16, eval_sampling="random")
    frames = [Image.new("RGB", (20, 16), (10 * i, 0, 0)) for i in range(6)]
    assert processor(frames)["pixel_values"].shape == (1, 3, 3, 16, 16)
    processor.save_pretrained(tmp_path)
    loaded = ClipzooVideoProcessor.from_pretrained(tmp_path)
    assert (loaded.num_frames, loaded.crop_size, loaded.eval_sampling) == (3, 16, "random")


def test_real_video_file_is_decoded_and_processed():
    frames = decode_video(REAL_VIDEO)
    assert frames.shape == (24, 90, 160, 3) and frames.dtype == np.uint8
    processor = ClipzooVideoProcessor(num_frames=8, shortest_edge=32, crop_size=32)
    pixel_values = processor(frames)["pixel_values"]
    assert pixel_values.shape == (1, 8, 3, 32, 32)
    assert pixel_values.std() > 0.1  # real content, not a blank frame


def test_unreadable_file_and_bad_inputs(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    with pytest.raises(ValueError, match="decode"):
        decode_video(broken)
    processor = ClipzooVideoProcessor(num_frames=2, shortest_edge=8, crop_size=8)
    with pytest.raises(TypeError, match="decode_video"):
        processor(str(broken))
    with pytest.raises(ValueError, match="frames, height, width, 3"):
        processor(np.zeros((4, 8, 8), dtype=np.uint8))
    with pytest.raises(TypeError, match="PIL"):
        processor([[1, 2, 3]])
