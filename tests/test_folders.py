"""clipzoo.data.folders: imagefolder and local webdataset shards, with corrupt samples skipped and counted."""

import io
import json
import logging
import tarfile

import datasets
import numpy as np
import pytest
from datasets.distributed import split_dataset_by_node
from PIL import Image

from clipzoo.data.folders import SkippedSamples, load_image_folder, load_webdataset


def _encoded(value: int, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def image_tree(tmp_path):
    for class_name, value in (("cat", 40), ("dog", 200)):
        (tmp_path / class_name).mkdir()
        for index in range(2):
            (tmp_path / class_name / f"{index}.jpg").write_bytes(_encoded(value, "JPEG"))
    (tmp_path / "dog" / "corrupt.jpg").write_bytes(b"this is not a jpeg")
    (tmp_path / "cat" / "truncated.jpg").write_bytes(_encoded(90, "JPEG")[:120])
    return tmp_path


def test_image_folder_skips_and_counts_corrupt_images(image_tree, caplog):
    skipped = SkippedSamples()
    with caplog.at_level(logging.WARNING):
        dataset = load_image_folder(image_tree, split="train", skipped=skipped)
    assert len(dataset) == 4
    assert dataset.features["label"].names == ["cat", "dog"]
    assert sorted(dataset["label"]) == [0, 0, 1, 1]
    assert all(np.asarray(row["image"]).shape == (8, 8, 3) for row in dataset)
    assert skipped.count == 2
    assert sorted(name.rsplit("/", 2)[-2] + "/" + name.rsplit("/", 1)[-1] for name in skipped.names) == [
        "cat/truncated.jpg",
        "dog/corrupt.jpg",
    ]
    assert "2 unreadable sample(s) skipped" in caplog.text and "corrupt.jpg" in caplog.text


def test_image_folder_dataset_dict_and_missing_dir(image_tree, tmp_path):
    loaded = load_image_folder(image_tree)
    assert isinstance(loaded, datasets.DatasetDict) and len(loaded["train"]) == 4
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "nope")


def _add_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


@pytest.fixture
def shards(tmp_path):
    for shard in range(2):
        with tarfile.open(tmp_path / f"data-{shard}.tar", "w") as archive:
            for index in range(3):
                key = f"sample{shard}{index}"
                image = _encoded(10 * index, "PNG" if index % 2 else "JPEG")
                if (shard, index) == (1, 2):
                    image = b"garbage bytes"
                _add_member(archive, f"{key}.{'png' if index % 2 else 'jpg'}", image)
                _add_member(archive, f"{key}.txt", f"caption {key}".encode())
                _add_member(archive, f"{key}.json", json.dumps({"index": index}).encode())
            _add_member(archive, "badjson.jpg", _encoded(5, "JPEG"))
            _add_member(archive, "badjson.json", b"{not json")
    return tmp_path


def test_webdataset_streaming_skips_and_counts(shards):
    skipped = SkippedSamples()
    stream = load_webdataset(str(shards / "data-*.tar"), skipped=skipped)
    assert isinstance(stream, datasets.IterableDataset)
    assert stream.num_shards == 2
    rows = list(stream)
    assert [row["__key__"] for row in rows] == ["sample00", "sample01", "sample02", "sample10", "sample11"]
    assert rows[1]["text"] == "caption sample01" and rows[1]["json"] == {"index": 1}
    assert rows[1]["image"].size == (8, 8)
    # the corrupt image of sample12 and the bad JSON in both shards
    assert skipped.count == 3
    assert any(name.endswith("data-1.tar:sample12") for name in skipped.names)
    assert sum("JSONDecodeError" in reason for reason in skipped.reasons.values()) == 2


def test_webdataset_non_streaming_and_split_by_node(shards):
    dataset = load_webdataset([shards / "data-0.tar", shards / "data-1.tar"], streaming=False)
    assert isinstance(dataset, datasets.Dataset) and len(dataset) == 5
    assert isinstance(dataset.features["image"], datasets.Image)
    stream = load_webdataset(str(shards / "data-*.tar"))
    first = split_dataset_by_node(stream, rank=0, world_size=2)
    assert [row["__key__"] for row in first] == ["sample00", "sample01", "sample02"]
    with pytest.raises(FileNotFoundError, match="no webdataset shard matches"):
        load_webdataset(str(shards / "other-*.tar"))


def test_webdataset_truncated_shard_is_counted(tmp_path):
    with tarfile.open(tmp_path / "whole.tar", "w") as archive:
        for index in range(4):
            _add_member(archive, f"k{index}.png", _encoded(index, "PNG"))
    with tarfile.open(tmp_path / "whole.tar") as archive:
        cut_at = archive.getmember("k2.png").offset_data + 10  # inside the third image
    (tmp_path / "cut.tar").write_bytes((tmp_path / "whole.tar").read_bytes()[:cut_at])
    skipped = SkippedSamples()
    rows = list(load_webdataset(tmp_path / "cut.tar", skipped=skipped))
    assert [row["__key__"] for row in rows] == ["k0", "k1"]
    assert skipped.count == 1 and "truncated" in next(iter(skipped.reasons.values()))
