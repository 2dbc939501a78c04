"""Fashion-MNIST from the Debian package `dataset-fashion-mnist` (MIT licence), read from its gzip IDX files."""

import gzip
import io
import os
from pathlib import Path

import datasets
import numpy as np
from PIL import Image
from transformers.utils import logging


logger = logging.get_logger(__name__)

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_ROOT",
    "load_fashion_mnist",
    "load_fashion_mnist_arrays",
    "read_idx",
]

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# IDX header: two zero bytes, a type code, the number of dimensions, then one big-endian uint32 per dimension.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_INSTALL_HINT = "install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or pass root=<folder>"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an IDX file (the MNIST format), gzip-compressed or not, into a numpy array.

    Args:
        path (`str` or `os.PathLike`): the `.gz` or raw IDX file.

    Returns:
        `np.ndarray`: array of the dtype and shape stored in the header (native byte order).

    Raises:
        ValueError: if the file is not valid gzip, the magic number is wrong or the payload size does not match the
            header.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: cannot decompress IDX file ({error})") from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{path}: bad IDX magic number {raw[:4].hex() or '(empty file)'}; expected 0000<type><ndim> with type in "
            f"{sorted(hex(code) for code in _IDX_DTYPES)}"
        )
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, {ndim} dimensions declared)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header_size != expected:
        raise ValueError(
            f"{path}: IDX payload has {len(raw) - header_size} bytes but the header declares shape {shape} of "
            f"{dtype} ({expected} bytes); the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape).astype(dtype.newbyteorder("="))


def _find_split_files(root: Path, split: str) -> tuple[Path, Path]:
    found = []
    for name in _SPLIT_FILES[split]:
        candidates = [root / name, root / name.removesuffix(".gz")]
        existing = [path for path in candidates if path.is_file()]
        if not existing:
            raise FileNotFoundError(f"Fashion-MNIST file {candidates[0]} not found; {_INSTALL_HINT}")
        found.append(existing[0])
    return found[0], found[1]


def _png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def load_fashion_mnist_arrays(
    split: str = "train", root: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST as arrays: `(images uint8 (N, 28, 28), labels int (N,))`, validated as in `load_fashion_mnist`.

    Use it when only some rows are needed: building the full `datasets.Dataset` encodes every image.
    """
    if split not in _SPLIT_FILES:
        raise ValueError(f"split must be one of {sorted(_SPLIT_FILES)}, got {split!r}")
    root = Path(root if root is not None else FASHION_MNIST_ROOT)
    if not root.is_dir():
        raise FileNotFoundError(f"Fashion-MNIST folder {root} not found; {_INSTALL_HINT}")
    images_path, labels_path = _find_split_files(root, split)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{images_path}: expected uint8 images of shape (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{labels_path}: expected one label per image ({len(images)}), got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(FASHION_MNIST_CLASSES)):
        raise ValueError(
            f"{labels_path}: labels must lie in [0, {len(FASHION_MNIST_CLASSES)}), got max {labels.max()}"
        )
    return images, labels


def load_fashion_mnist(
    split: str = "train", root: str | os.PathLike | None = None, max_samples: int | None = None
) -> datasets.Dataset:
    """Load a Fashion-MNIST split as a `datasets.Dataset` of 28x28 grayscale images.

    Images are mode "L" PIL images (`Image()` feature); processors convert them with
    `clipzoo.processing.image_utils.to_rgb`. Labels are a `ClassLabel` with the 10 class names of
    `FASHION_MNIST_CLASSES`.

    Args:
        split (`str`, *optional*, defaults to `"train"`): `"train"` (60,000 images) or `"test"` (10,000).
        root (`str` or `os.PathLike`, *optional*): folder holding the IDX files (gzip or raw), defaults to the
            Debian package's `/usr/share/datasets/fashion-mnist`.
        max_samples (`int`, *optional*): keep only the first `max_samples` images (quick runs).

    Returns:
        `datasets.Dataset` with columns `image` and `label`.

    Raises:
        FileNotFoundError: if the files are absent (the message names `apt-get install dataset-fashion-mnist`).
        ValueError: for an unknown split or corrupt/inconsistent files.
    """
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be a positive integer or None, got {max_samples!r}")
    images, labels = load_fashion_mnist_arrays(split, root)
    if max_samples is not None:
        images, labels = images[:max_samples], labels[:max_samples]
    logger.info(f"Fashion-MNIST {split}: {len(images)} images")
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=list(FASHION_MNIST_CLASSES))}
    )
    data = {
        "image": [{"bytes": _png_bytes(pixels), "path": None} for pixels in images],
        "label": labels.astype(np.int64).tolist(),
    }
    return datasets.Dataset.from_dict(data, features=features, split=datasets.Split(split))
