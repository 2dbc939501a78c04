"""clipzoo.data.fashion_mnist: the IDX parser on files written here, errors, and the real Debian files when installed."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from clipzoo.data.fashion_mnist import FASHION_MNIST_CLASSES, FASHION_MNIST_ROOT, load_fashion_mnist, read_idx


def _idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(struct.pack(">I", size) for size in array.shape)
    return header + array.tobytes()


def _write_split(root: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    suffix = "-idx3-ubyte.gz", "-idx1-ubyte.gz"
    (root / f"{prefix}-images{suffix[0]}").write_bytes(gzip.compress(_idx_bytes(images)))
    (root / f"{prefix}-labels{suffix[1]}").write_bytes(gzip.compress(_idx_bytes(labels)))


@pytest.fixture
def tiny_root(tmp_path):
    rng = np.random.default_rng(0)
    _write_split(
        tmp_path, "train", rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), np.array([0, 9, 3, 3, 1], np.uint8)
    )
    _write_split(tmp_path, "t10k", rng.integers(0, 256, (2, 28, 28), dtype=np.uint8), np.array([9, 2], np.uint8))
    return tmp_path


def test_read_idx_round_trip_types(tmp_path):
    ubyte = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.gz").write_bytes(gzip.compress(_idx_bytes(ubyte)))
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), ubyte)
    big_endian_ints = np.array([1, -2, 70000], dtype=">i4")
    (tmp_path / "b").write_bytes(_idx_bytes(big_endian_ints, type_code=0x0C))  # uncompressed works too
    parsed = read_idx(tmp_path / "b")
    assert parsed.dtype == np.int32 and parsed.tolist() == [1, -2, 70000]


def test_read_idx_rejects_corrupt_files(tmp_path):
    good = _idx_bytes(np.zeros((2, 3), np.uint8))
    (tmp_path / "magic").write_bytes(b"\x12\x34" + good[2:])
    with pytest.raises(ValueError, match="bad IDX magic number 1234"):
        read_idx(tmp_path / "magic")
    (tmp_path / "short").write_bytes(good[:-1])
    with pytest.raises(ValueError, match=r"payload has 5 bytes but the header declares shape \(2, 3\)"):
        read_idx(tmp_path / "short")
    (tmp_path / "gz").write_bytes(gzip.compress(good)[:-6])
    with pytest.raises(ValueError, match="cannot decompress"):
        read_idx(tmp_path / "gz")


def test_load_fashion_mnist_from_tiny_files(tiny_root):
    train = load_fashion_mnist("train", root=tiny_root)
    assert len(train) == 5
    assert train.features["label"].names == list(FASHION_MNIST_CLASSES)
    image = train[1]["image"]
    assert image.mode == "L" and image.size == (28, 28)
    expected = read_idx(tiny_root / "train-images-idx3-ubyte.gz")[1]
    np.testing.assert_array_equal(np.asarray(image), expected)
    assert train.features["label"].int2str(train[1]["label"]) == "ankle boot"
    test = load_fashion_mnist("test", root=tiny_root, max_samples=1)
    assert len(test) == 1 and test[0]["label"] == 9


def test_load_fashion_mnist_errors(tiny_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(root=tmp_path / "missing")
    (tiny_root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.gz.*apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("test", root=tiny_root)
    with pytest.raises(ValueError, match="split must be one of"):
        load_fashion_mnist("validation", root=tiny_root)
    (tiny_root / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(np.zeros(4, np.uint8))))
    with pytest.raises(ValueError, match=r"one label per image \(5\)"):
        load_fashion_mnist("train", root=tiny_root)


@pytest.mark.skipif(not Path(FASHION_MNIST_ROOT).is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist_test_split():
    test = load_fashion_mnist("test")
    assert len(test) == 10_000
    assert np.bincount(test["label"]).tolist() == [1000] * 10
    assert test.features["label"].int2str(test[0]["label"]) == "ankle boot"  # first test image of Fashion-MNIST
    assert test[0]["image"].size == (28, 28)
