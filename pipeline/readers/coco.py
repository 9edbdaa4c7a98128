"""COCO readers: the Karpathy split file (`dataset_coco.json`) and the official `captions_*.json`.

Ids: image ``coco/<cocoid>``, caption segment ``coco/<cocoid>/<n>`` with n the caption's position in
the image's sentence list (Karpathy) or among the image's annotations in file order (official).
A malformed record is quarantined with its 0-based index in the JSON array as `line`.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pipeline.readers.common import (
    Quarantine,
    ReadResult,
    SourceFormatError,
    is_fetchable_url,
    items_table,
    load_json,
    require,
    segments_table,
)

KARPATHY_SPLITS = ("train", "restval", "val", "test")
COCO_HOST = "http://images.cocodataset.org"


class _Collector:
    """Rows for the segments and items tables, gathered record by record."""

    def __init__(self) -> None:
        self.seg: dict[str, list[str]] = {"id": [], "split": [], "item": [], "text": []}
        self.items: dict[str, list[Any]] = {"id": [], "split": [], "url": [], "source_path": []}

    def item(self, image_id: str, split: str, url: str, source_path: str | None) -> None:
        for key, value in zip(self.items, (image_id, split, url, source_path), strict=True):
            self.items[key].append(value)

    def segment(self, segment_id: str, split: str, item_id: str, text: str) -> None:
        for key, value in zip(self.seg, (segment_id, split, item_id, text), strict=True):
            self.seg[key].append(value)

    def result(self, quarantine: Quarantine, stats: dict[str, int]) -> ReadResult:
        s, i = self.seg, self.items
        segments = segments_table(s["id"], "coco", s["split"], s["item"], "caption", s["text"])
        items = items_table(i["id"], "coco", i["split"], i["url"], i["source_path"])
        stats = {**stats, "segments": segments.num_rows, "items": items.num_rows,
                 "quarantined": len(quarantine.rows), **quarantine.counts()}
        return ReadResult(segments, items, quarantine.table(), None, stats)


def _missing(record: Any, keys: dict[str, type | tuple[type, ...]]) -> str | None:
    """What is wrong with a record's required keys, or None when all are there with the right type."""
    if not isinstance(record, dict):
        return f"record is {type(record).__name__}, not an object"
    for key, kind in keys.items():
        if key not in record:
            return f"missing key {key!r}"
        if not isinstance(record[key], kind) or isinstance(record[key], bool):
            return f"key {key!r} is {type(record[key]).__name__}"
    return None


def _add_captions(
    out: _Collector, q: Quarantine, index: int, cocoid: int, split: str, captions: Iterable[tuple[int, Any]]
) -> None:
    for n, raw in captions:
        if not isinstance(raw, str):
            q.add(index, "bad_caption", f"image {cocoid}: caption {n} is {type(raw).__name__}", raw, split=split)
            continue
        text = raw.strip()
        if not text:
            q.add(index, "empty_caption", f"image {cocoid}: caption {n} is empty", raw, split=split)
            continue
        out.segment(f"coco/{cocoid}/{n}", split, f"coco/{cocoid}", text)


def read_karpathy(
    path: str | Path, splits: Sequence[str] = ("val", "test"), url_base: str = COCO_HOST
) -> ReadResult:
    """Read the Karpathy `dataset_coco.json` for the given splits (of train, restval, val, test).

    Image URLs are ``{url_base}/{filepath}/{filename}``; url_base may be the COCO host or a local
    mirror such as ``file:///data/coco``.  Segment `split` is the Karpathy split name.
    """
    path = Path(path)
    unknown = set(splits) - set(KARPATHY_SPLITS)
    if unknown:
        raise ValueError(f"unknown Karpathy split(s) {sorted(unknown)}: expected some of {KARPATHY_SPLITS}")
    doc = load_json(path)
    images = require(doc, "images", list, path, "the top level")
    q = Quarantine("coco", ",".join(splits), path)
    out = _Collector()
    seen: set[int] = set()
    skipped = 0
    base = url_base.rstrip("/")
    for index, rec in enumerate(images):
        split = rec.get("split") if isinstance(rec, dict) else None
        if isinstance(split, str) and split not in splits:
            skipped += 1  # another split's record: not ours to check or report
            continue
        problem = _missing(rec, {"split": str, "filepath": str, "filename": str, "cocoid": int, "sentences": list})
        if problem is None and split not in KARPATHY_SPLITS:
            problem = f"unknown split {split!r}"
        if problem is not None:
            q.add(index, "bad_record", f"images[{index}]: {problem}", rec, split=split if isinstance(split, str) else None)
            continue
        cocoid = rec["cocoid"]
        if cocoid in seen:
            q.add(index, "duplicate_id", f"images[{index}]: cocoid {cocoid} seen before", rec, split=split)
            continue
        seen.add(cocoid)
        source_path = f"{rec['filepath']}/{rec['filename']}"
        out.item(f"coco/{cocoid}", split, f"{base}/{source_path}", source_path)
        sentences = rec["sentences"]
        _add_captions(
            out, q, index, cocoid, split,
            ((n, s.get("raw") if isinstance(s, dict) else s) for n, s in enumerate(sentences)),
        )
    return out.result(q, {"records": len(images), "records_other_splits": skipped})


def _image_folder(image: dict[str, Any]) -> str | None:
    """The image's folder on the COCO host (train2014, val2017 ...), from coco_url or the file name."""
    url = image.get("coco_url")
    if isinstance(url, str) and url.count("/") >= 1:
        folder = url.rstrip("/").rsplit("/", 2)[-2]
        if folder:
            return folder
    name = image.get("file_name", "")
    if name.startswith("COCO_") and name.count("_") >= 2:
        return name.split("_")[1]
    return None


def read_coco_captions(path: str | Path, split: str, url_base: str | None = None) -> ReadResult:
    """Read an official COCO `captions_*.json` (images[] and annotations[]) as one split.

    Image URLs are the file's own `coco_url`, or ``{url_base}/{folder}/{file_name}`` when url_base is
    given (a local mirror laid out like the COCO host).
    """
    path = Path(path)
    doc = load_json(path)
    images = require(doc, "images", list, path, "the top level")
    annotations = require(doc, "annotations", list, path, "the top level")
    q = Quarantine("coco", split, path)
    out = _Collector()
    known: dict[int, int] = {}  # cocoid -> record index
    for index, img in enumerate(images):
        problem = _missing(img, {"id": int, "file_name": str})
        if problem is None and img["id"] in known:
            problem = f"image id {img['id']} seen before"
        if problem is not None:
            q.add(index, "bad_record", f"images[{index}]: {problem}", img)
            continue
        folder = _image_folder(img)
        url = img.get("coco_url") if url_base is None else (
            f"{url_base.rstrip('/')}/{folder}/{img['file_name']}" if folder else None
        )
        if not isinstance(url, str) or not is_fetchable_url(url):
            q.add(index, "bad_url", f"images[{index}]: no usable image URL ({url!r})", img)
            continue
        known[img["id"]] = index
        out.item(f"coco/{img['id']}", split, url, f"{folder}/{img['file_name']}" if folder else img["file_name"])
    per_image: dict[int, list[Any]] = {}
    for index, ann in enumerate(annotations):
        problem = _missing(ann, {"image_id": int, "caption": str})
        if problem is None and ann["image_id"] not in known:
            problem = f"image_id {ann['image_id']} is not in images[]"
        if problem is not None:
            q.add(index, "bad_annotation", f"annotations[{index}]: {problem}", ann)
            continue
        per_image.setdefault(ann["image_id"], []).append(ann["caption"])
    for cocoid, caps in per_image.items():
        _add_captions(out, q, known[cocoid], cocoid, split, enumerate(caps))
    return out.result(q, {"records": len(images), "annotations": len(annotations)})


def coco_urls_by_id(paths: Iterable[str | Path]) -> dict[int, str]:
    """cocoid -> coco_url from official COCO annotation files (any of captions/instances, 2014 train and
    val): VisDial train images are COCO 2014 images from both folders, so a single URL template
    cannot name them."""
    paths = list(paths)
    urls: dict[int, str] = {}
    for p in paths:
        images = require(load_json(p), "images", list, p, "the top level")
        for img in images:
            if isinstance(img, dict) and isinstance(img.get("id"), int) and isinstance(img.get("coco_url"), str):
                urls[img["id"]] = img["coco_url"]
    if not urls:
        raise SourceFormatError(", ".join(map(str, paths)), "no images with id and coco_url found")
    return urls
