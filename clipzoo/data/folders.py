"""Local image datasets: `imagefolder` trees and webdataset `.tar` shards, with unreadable samples skipped AND counted.

Nothing here drops data silently: every skipped file or sample is recorded in a `SkippedSamples` counter the caller can
read, and a warning with the count and the first names is logged.
"""

import glob
import io
import json
import os
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from PIL import Image
from transformers.utils import logging


logger = logging.get_logger(__name__)

__all__ = ["SkippedSamples", "load_image_folder", "load_webdataset"]

WEBDATASET_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
_MAX_NAMES_IN_WARNING = 5


@dataclass
class SkippedSamples:
    """Record of samples skipped because they could not be read: `{name: reason}`, deduplicated by name.

    Examples:

    ```python
    >>> from clipzoo.data.folders import SkippedSamples

    >>> skipped = SkippedSamples()
    >>> skipped.add("cats/broken.jpg", "cannot identify image file")
    >>> skipped.count, skipped.names
    (1, ['cats/broken.jpg'])
    ```
    """

    reasons: dict[str, str] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.reasons)

    @property
    def names(self) -> list[str]:
        return list(self.reasons)

    def __len__(self) -> int:
        return self.count

    def add(self, name: str, reason: str) -> None:
        if name not in self.reasons:
            logger.warning(f"skipping unreadable sample {name}: {reason}")
        self.reasons[name] = reason

    def summary(self) -> str:
        shown = ", ".join(self.names[:_MAX_NAMES_IN_WARNING])
        more = f" and {self.count - _MAX_NAMES_IN_WARNING} more" if self.count > _MAX_NAMES_IN_WARNING else ""
        return f"{self.count} unreadable sample(s) skipped: {shown}{more}"


def _decode_image(source: str | bytes) -> Image.Image:
    """Fully decode an image (not just `verify()`, which accepts truncated JPEGs) and return it loaded in memory."""
    image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    image.load()
    return image


def _drop_unreadable_images(dataset: datasets.Dataset, skipped: SkippedSamples) -> datasets.Dataset:
    image_columns = [name for name, feature in dataset.features.items() if isinstance(feature, datasets.Image)]
    keep = []
    undecoded = dataset
    for column in image_columns:
        undecoded = undecoded.cast_column(column, datasets.Image(decode=False))
    for index in range(len(undecoded)):
        row = undecoded[index]
        readable = True
        for column in image_columns:
            value = row[column]
            if value is None:
                continue
            name = value.get("path") or f"row {index}"
            try:
                _decode_image(value["bytes"] if value.get("bytes") is not None else value["path"])
            except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, ... for corrupt files
                skipped.add(name, f"{type(error).__name__}: {error}")
                readable = False
        if readable:
            keep.append(index)
    return dataset if len(keep) == len(dataset) else dataset.select(keep)


def load_image_folder(
    data_dir: str | os.PathLike,
    split: str | None = None,
    *,
    verify: bool = True,
    skipped: SkippedSamples | None = None,
    **load_kwargs,
) -> datasets.Dataset | datasets.DatasetDict:
    """Load an image tree with `datasets.load_dataset("imagefolder", data_dir=...)`, dropping unreadable images.

    Class subfolders become a `ClassLabel` `label` column, `train/`/`test/` folders become splits and a
    `metadata.jsonl` (`file_name` + e.g. `text`) adds columns, as in `datasets`. With `verify=True` every image is
    decoded once; the unreadable ones are removed, recorded in `skipped` and reported in one warning.

    Args:
        data_dir (`str` or `os.PathLike`): the root folder.
        split (`str`, *optional*): return only this split (a `Dataset`); by default a `DatasetDict`.
        verify (`bool`, *optional*, defaults to `True`): decode every image up front to find unreadable ones. With
            `False` a corrupt image raises when it is accessed.
        skipped (`SkippedSamples`, *optional*): counter to fill; pass one to read the count and file names.
        **load_kwargs: passed to `datasets.load_dataset` (e.g. `drop_labels=True`).

    Returns:
        `datasets.Dataset` if `split` is given, else `datasets.DatasetDict`.

    Examples:

    ```python
    >>> from clipzoo.data.folders import SkippedSamples, load_image_folder

    >>> skipped = SkippedSamples()
    >>> dataset = load_image_folder("pets/", split="train", skipped=skipped)  # doctest: +SKIP
    >>> skipped.count  # doctest: +SKIP
    1
    ```
    """
    if not Path(data_dir).is_dir():
        raise FileNotFoundError(f"image folder {data_dir} does not exist or is not a directory")
    loaded = datasets.load_dataset("imagefolder", data_dir=str(data_dir), split=split, **load_kwargs)
    if not verify:
        return loaded
    counter = skipped if skipped is not None else SkippedSamples()
    before = counter.count
    if isinstance(loaded, datasets.DatasetDict):
        loaded = datasets.DatasetDict({name: _drop_unreadable_images(ds, counter) for name, ds in loaded.items()})
    else:
        loaded = _drop_unreadable_images(loaded, counter)
    if counter.count > before:
        logger.warning(f"load_image_folder({data_dir}): {counter.summary()}")
    return loaded


def _resolve_shards(data_files: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    patterns = [data_files] if isinstance(data_files, str | os.PathLike) else list(data_files)
    shards = []
    for pattern in patterns:
        pattern = os.fspath(pattern)
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern))
            if not matches:
                raise FileNotFoundError(f"no webdataset shard matches {pattern!r}")
            shards.extend(matches)
        elif os.path.isfile(pattern):
            shards.append(pattern)
        else:
            raise FileNotFoundError(f"webdataset shard {pattern!r} does not exist")
    if not shards:
        raise FileNotFoundError(f"no webdataset shards given (data_files={data_files!r})")
    return shards


def _split_member_name(member_name: str) -> tuple[str, str]:
    # webdataset convention: the key is everything before the first dot of the basename, the rest is the field.
    directory, basename = os.path.split(member_name)
    stem, _, extension = basename.partition(".")
    return os.path.join(directory, stem), extension.lower()


def _iter_tar_groups(shard: str, skipped: SkippedSamples) -> Iterator[tuple[str, dict[str, bytes]]]:
    key, fields = None, {}
    try:
        with tarfile.open(shard, mode="r:*") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                member_key, extension = _split_member_name(member.name)
                if key is not None and member_key != key:
                    yield key, fields
                    fields = {}
                key = member_key
                fields[extension] = archive.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as error:
        skipped.add(f"{shard}@{key or 'start'}", f"corrupt or truncated shard, rest of the shard skipped: {error}")
        return
    if key is not None:
        yield key, fields


def _parse_sample(shard: str, key: str, fields: dict[str, bytes]) -> dict:
    image_extension = next((ext for ext in WEBDATASET_IMAGE_EXTENSIONS if ext in fields), None)
    if image_extension is None:
        raise ValueError(f"no image member (expected one of {WEBDATASET_IMAGE_EXTENSIONS}), found {sorted(fields)}")
    return {
        "__key__": key,
        "__url__": shard,
        "image": _decode_image(fields[image_extension]),
        "text": fields["txt"].decode("utf-8") if "txt" in fields else None,
        "json": json.loads(fields["json"]) if "json" in fields else None,
    }


def _generate_webdataset_samples(shards: list[str], skipped: SkippedSamples) -> Iterator[dict]:
    for shard in shards:
        for key, fields in _iter_tar_groups(shard, skipped):
            try:
                yield _parse_sample(shard, key, fields)
            except Exception as error:  # corrupt image, invalid UTF-8 or JSON: skip this sample only
                skipped.add(f"{shard}:{key}", f"{type(error).__name__}: {error}")


def load_webdataset(
    data_files: str | os.PathLike | Sequence[str | os.PathLike],
    streaming: bool = True,
    *,
    skipped: SkippedSamples | None = None,
) -> datasets.IterableDataset | datasets.Dataset:
    """Read local webdataset `.tar` shards, skipping (and counting) corrupt samples.

    Each sample is the group of consecutive members sharing a key (`<key>.jpg`/`.png`/..., `<key>.txt`,
    `<key>.json`); rows are `{"__key__", "__url__", "image": PIL.Image, "text": str | None, "json": dict | None}`;
    other members are ignored. A sample is skipped and recorded in `skipped` when it has no image or its image,
    text (UTF-8) or JSON cannot be decoded; a truncated shard is recorded once and the rest of it skipped. The
    streaming dataset has one shard per tar file, so `datasets.distributed.split_dataset_by_node` and DataLoader
    workers split by file (each worker process then fills its own copy of `skipped`).

    Args:
        data_files (`str`, `os.PathLike` or a list of them): shard paths or glob patterns (`"shards/data-*.tar"`).
        streaming (`bool`, *optional*, defaults to `True`): return a lazy `IterableDataset`; `False` reads every
            shard now into an in-memory `Dataset`.
        skipped (`SkippedSamples`, *optional*): counter filled while iterating; pass one to read the count.

    Returns:
        `datasets.IterableDataset` (streaming) or `datasets.Dataset`.

    Examples:

    ```python
    >>> from clipzoo.data.folders import SkippedSamples, load_webdataset

    >>> skipped = SkippedSamples()
    >>> stream = load_webdataset("shards/data-*.tar", skipped=skipped)  # doctest: +SKIP
    >>> captions = [row["text"] for row in stream]  # doctest: +SKIP
    >>> skipped.count  # doctest: +SKIP
    0
    ```
    """
    shards = _resolve_shards(data_files)
    counter = skipped if skipped is not None else SkippedSamples()
    if streaming:
        return datasets.IterableDataset.from_generator(
            _generate_webdataset_samples, gen_kwargs={"shards": shards, "skipped": counter}
        )
    rows = list(_generate_webdataset_samples(shards, counter))
    if counter.count:
        logger.warning(f"load_webdataset: {counter.summary()}")
    if not rows:
        raise ValueError(f"no readable sample in {shards}")
    return datasets.Dataset.from_list(rows)
