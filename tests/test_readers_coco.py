"""COCO readers: Karpathy dataset_coco.json and official captions_*.json, good and bad inputs."""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest

from pipeline.contracts import ITEMS, QUARANTINE, SEGMENTS
from pipeline.readers.coco import coco_urls_by_id, read_coco_captions, read_karpathy
from pipeline.readers.common import SourceFormatError
from translation.textkey import text_hash


def _image(cocoid: int, split: str, sentences: list, filepath: str = "val2014") -> dict:
    return {
        "filepath": filepath,
        "filename": f"COCO_{filepath}_{cocoid:012d}.jpg",
        "cocoid": cocoid,
        "imgid": 0,
        "split": split,
        "sentids": list(range(len(sentences))),
        "sentences": [{"raw": s, "tokens": str(s).lower().split(), "sentid": i} for i, s in enumerate(sentences)],
    }


def _write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def test_karpathy_sample(sample):
    r = read_karpathy(sample.coco_karpathy_json, splits=("val", "test"), url_base=sample.coco_url_base)
    assert r.segments.schema == SEGMENTS and r.items.schema == ITEMS and r.quarantine.schema == QUARANTINE
    doc = json.loads(sample.coco_karpathy_json.read_text())
    assert r.items.num_rows == 10 and r.segments.num_rows == 50 and r.quarantine.num_rows == 0
    seg = {s["segment_id"]: s for s in r.segments.to_pylist()}
    for img in doc["images"]:
        for n, sent in enumerate(img["sentences"]):
            s = seg[f"coco/{img['cocoid']}/{n}"]
            assert s["text_en"] == sent["raw"] and s["split"] == img["split"] and s["item_id"] == f"coco/{img['cocoid']}"
            assert s["text_hash"] == text_hash(sent["raw"])
    assert sorted(set(r.segments["split"].to_pylist())) == ["test", "val"]
    for item in r.items.to_pylist():  # the file:// URLs resolve to the JPEGs the sample wrote
        assert Path(url2pathname(urlparse(item["url"]).path)).is_file()
        assert item["url"].endswith(item["source_path"]) and item["source_path"].startswith("val2014/")
    only_test = read_karpathy(sample.coco_karpathy_json, splits=("test",), url_base=sample.coco_url_base)
    assert set(only_test.segments["split"].to_pylist()) == {"test"} and only_test.items.num_rows == 5
    assert only_test.stats["records_other_splits"] == 5


def test_karpathy_bad_records_are_quarantined_and_the_rest_kept(tmp_path):
    images = [
        _image(1, "val", ["a cat", "a dog"]),
        {"filepath": "val2014", "filename": "x.jpg", "split": "val", "sentences": []},  # no cocoid
        _image(2, "test", ["  ", "a bird", 7]),  # empty and non-string sentences
        _image(1, "val", ["again"]),  # duplicate cocoid
        _image(3, "nonsense", ["odd split"]),  # unknown split: quarantined in every read
        "not an object",
        _image(4, "train", ["a train image"]),
    ]
    path = _write(tmp_path / "dataset_coco.json", {"images": images, "dataset": "coco"})
    r = read_karpathy(path, splits=("val", "test"), url_base="file:///mirror/coco/")
    assert r.segments["segment_id"].to_pylist() == ["coco/1/0", "coco/1/1", "coco/2/1"]
    assert r.items["url"].to_pylist() == [
        "file:///mirror/coco/val2014/COCO_val2014_000000000001.jpg",
        "file:///mirror/coco/val2014/COCO_val2014_000000000002.jpg",
    ]
    got = [(q["line"], q["reason"]) for q in r.quarantine.to_pylist()]
    assert got == [(1, "bad_record"), (2, "empty_caption"), (2, "bad_caption"), (3, "duplicate_id"),
                   (4, "unknown_split"), (5, "bad_record")]
    assert "missing key 'cocoid'" in r.quarantine["detail"][0].as_py()
    # Table 4.1: val/test records (the object without a split and "nonsense" belong to no split)
    assert (r.original, r.lost) == (4, {"bad_record": 1, "duplicate_id": 1})
    assert r.original == r.items.num_rows + sum(r.lost.values())


def test_truncated_json_names_the_file_and_position(tmp_path):
    full = json.dumps({"images": [_image(1, "val", ["a cat"])]})
    path = tmp_path / "dataset_coco.json"
    path.write_text(full[: len(full) // 2])
    with pytest.raises(SourceFormatError) as e:
        read_karpathy(path)
    msg = str(e.value)
    assert str(path) in msg and "line 1 column" in msg and "truncated" in msg


def test_wrong_schema_names_the_missing_key(tmp_path):
    path = _write(tmp_path / "dataset_coco.json", {"annotations": []})
    with pytest.raises(SourceFormatError, match=r"missing key 'images' in the top level"):
        read_karpathy(path)
    _write(path, [1, 2, 3])
    with pytest.raises(SourceFormatError, match="should be a JSON object, found list"):
        read_karpathy(path)
    _write(path, {"images": {"not": "a list"}})
    with pytest.raises(SourceFormatError, match=r"\['images'\] should be list"):
        read_karpathy(path)
    with pytest.raises(ValueError, match="unknown Karpathy split"):
        read_karpathy(path, splits=("validation",))


def test_official_captions(tmp_path):
    doc = {
        "images": [
            {"id": 42, "file_name": "COCO_val2014_000000000042.jpg",
             "coco_url": "http://images.cocodataset.org/val2014/COCO_val2014_000000000042.jpg"},
            {"id": 7, "file_name": "000000000007.jpg", "coco_url": "http://images.cocodataset.org/val2017/000000000007.jpg"},
            {"file_name": "no_id.jpg"},
        ],
        "annotations": [
            {"id": 1, "image_id": 42, "caption": "A man riding a horse. "},
            {"id": 2, "image_id": 7, "caption": "a bowl of fruit"},
            {"id": 3, "image_id": 42, "caption": "a rider on a brown horse"},
            {"id": 4, "image_id": 999, "caption": "orphan"},
            {"id": 5, "image_id": 42},
        ],
    }
    path = _write(tmp_path / "captions_val2014.json", doc)
    r = read_coco_captions(path, "val")
    assert r.segments.schema == SEGMENTS and r.items.schema == ITEMS
    assert dict(zip(r.segments["segment_id"].to_pylist(), r.segments["text_en"].to_pylist(), strict=True)) == {
        "coco/42/0": "A man riding a horse.", "coco/42/1": "a rider on a brown horse", "coco/7/0": "a bowl of fruit",
    }
    assert r.items["url"].to_pylist() == [doc["images"][0]["coco_url"], doc["images"][1]["coco_url"]]
    assert [(q["line"], q["reason"]) for q in r.quarantine.to_pylist()] == [
        (2, "bad_record"), (3, "bad_annotation"), (4, "bad_annotation"),
    ]
    mirrored = read_coco_captions(path, "val", url_base="file:///m")
    assert mirrored.items["url"].to_pylist() == [
        "file:///m/val2014/COCO_val2014_000000000042.jpg", "file:///m/val2017/000000000007.jpg",
    ]
    assert mirrored.items["source_path"].to_pylist() == ["val2014/COCO_val2014_000000000042.jpg", "val2017/000000000007.jpg"]
    assert coco_urls_by_id([path]) == {42: doc["images"][0]["coco_url"], 7: doc["images"][1]["coco_url"]}
    _write(path, {"images": []})
    with pytest.raises(SourceFormatError, match="missing key 'annotations'"):
        read_coco_captions(path, "val")


def test_karpathy_train_is_train_plus_restval(tmp_path):
    """FROMAGe and the thesis train on train + restval (113,287 images in the real file)."""
    images = [_image(i, "train", [f"train {i}"], "train2014") for i in range(1, 6)]
    images += [_image(i, "restval", [f"restval {i}", f"again {i}"]) for i in range(10, 13)]
    images += [_image(20, "val", ["val"]), _image(30, "test", ["test"])]
    path = _write(tmp_path / "dataset_coco.json", {"images": images})
    only_train = read_karpathy(path, splits=("train",), fold_restval=False)
    restval = read_karpathy(path, splits=("restval",), fold_restval=False)
    folded = read_karpathy(path, splits=("train",))
    assert (only_train.items.num_rows, restval.items.num_rows) == (5, 3)
    assert folded.items.num_rows == only_train.items.num_rows + restval.items.num_rows == 8
    assert folded.segments.num_rows == 5 + 6 and set(folded.segments["split"].to_pylist()) == {"train"}
    assert set(folded.items["split"].to_pylist()) == {"train"} and folded.stats["records_restval_in_train"] == 3
    assert folded.original == 8 and folded.quarantine.num_rows == 0
    # restval URLs keep their own folder (restval images are COCO val2014 images)
    assert "val2014/COCO_val2014_000000000010.jpg" in folded.items["url"].to_pylist()[5]
    with pytest.raises(ValueError, match="restval is read as part of train"):
        read_karpathy(path, splits=("restval",))


def test_restval_setting_is_checked_and_said_in_the_card(tmp_path):
    from pipeline.cards import split_note, write_dataset_card
    from pipeline.settings import Settings

    with pytest.raises(ValueError, match="fold_restval = true reads restval as part of train"):
        Settings.model_validate({"datasets": {"coco": {"splits": ["train", "restval"]}}})
    apart = Settings.model_validate({"datasets": {"coco": {"splits": ["train", "restval"], "fold_restval": False}}})
    assert apart.datasets.splits()[2:4] == [("coco", "train"), ("coco", "restval")]
    card = write_dataset_card(tmp_path, dataset="coco", split="train", engine="deepl", engine_id="deepl:x",
                              layout="caption rows", policy=None, stats={}, availability_md=None,
                              source_note=split_note("coco", "train", fold_restval=True))
    assert "Karpathy `train` **plus `restval`** (113,287 images" in card.read_text()
    assert "restval is kept apart" in split_note("coco", "train", fold_restval=False)
    assert split_note("coco", "val", fold_restval=True) is None and split_note("cc3m", "train", True) is None
