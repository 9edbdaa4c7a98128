"""COCO readers: the Karpathy split file (`dataset_coco.json`) and the official `captions_*.json`.

Ids: image ``coco/<cocoid>``, caption segment ``coco/<cocoid>/<n>`` with n the caption's position in
the image's sentence list (Karpathy) or among the image's annotations in file order (official).
A malformed record is quarantined with its 0-based index in the JSON array as `line`.

Karpathy's `restval` (30,504 images of COCO val2014 outside the 5k val and 5k test) is folded into
`train` by default: FROMAGe and the thesis train on train + restval = 113,287 images.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pipeline.readers.common import (
    MAX_TEXT_CHARS,
    Quarantine,
    ReadResult,
    SourceFormatError,
    clean_url,
    has_surrogate,
    is_fetchable_url,
    is_local_url,
    items_table,
    load_json,
    log,
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

    def result(self, quarantine: Quarantine, stats: dict[str, int], original: int, lost: Counter) -> ReadResult:
        s, i = self.seg, self.items
        segments = segments_table(s["id"], "coco", s["split"], s["item"], "caption", s["text"])
        items = items_table(i["id"], "coco", i["split"], i["url"], i["source_path"])
        quarantine.log_cleaned()
        stats = {**stats, "segments": segments.num_rows, "items": items.num_rows,
                 "quarantined": len(quarantine.rows), **quarantine.counts()}
        return ReadResult(segments, items, quarantine.table(), None, stats, original=original, lost=dict(lost))


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


def _captions(
    q: Quarantine, index: int, cocoid: int, split: str, captions: Iterable[tuple[int, Any]], max_chars: int
) -> list[tuple[int, str]]:
    """(position, clean text) of an image's usable captions; the others are quarantined."""
    kept = []
    for n, raw in captions:
        if not isinstance(raw, str):
            q.add(index, "bad_caption", f"image {cocoid}: caption {n} is {type(raw).__name__}", raw, split=split)
            continue
        text = q.text(index, raw, f"image {cocoid}: caption {n}", "empty_caption", max_chars, split=split)
        if text is not None:
            kept.append((n, text))
    return kept


def _add_image(
    out: _Collector, q: Quarantine, index: int, cocoid: int, split: str, url: str, source_path: str | None,
    captions: list[tuple[int, str]], record: Any,
) -> bool:
    """The image and its captions, or a `no_captions` quarantine row when none is usable (an image
    without a caption would be downloaded for nothing and silently missing from the shards)."""
    if not captions:
        q.add(index, "no_captions", f"image {cocoid}: no usable caption", record, split=split)
        return False
    out.item(f"coco/{cocoid}", split, url, source_path)
    for n, text in captions:
        out.segment(f"coco/{cocoid}/{n}", split, f"coco/{cocoid}", text)
    return True


def read_karpathy(
    path: str | Path,
    splits: Sequence[str] = ("val", "test"),
    url_base: str = COCO_HOST,
    *,
    fold_restval: bool = True,
    max_chars: int = MAX_TEXT_CHARS,
) -> ReadResult:
    """Read the Karpathy `dataset_coco.json` for the given splits (of train, restval, val, test).

    With `fold_restval` (the default) a `restval` record is read as `train` (asking for `restval` on
    its own is then an error); set it False to keep restval a split of its own.  Image URLs are
    ``{url_base}/{filepath}/{filename}``; url_base may be the COCO host or a local mirror such as
    ``file:///data/coco``.  Segment `split` is the (folded) Karpathy split name.

    Quarantine reasons: unknown_split (a split outside train/restval/val/test, such as `validation`
    or `Test`, reported in every read), bad_record, duplicate_id, split_leakage (a cocoid in two
    splits: dropped from both, and logged with the ids), bad_caption, empty_caption, bad_unicode,
    too_long, no_captions.
    """
    path = Path(path)
    unknown = set(splits) - set(KARPATHY_SPLITS)
    if unknown:
        raise ValueError(f"unknown Karpathy split(s) {sorted(unknown)}: expected some of {KARPATHY_SPLITS}")
    if fold_restval and "restval" in splits:
        raise ValueError("restval is read as part of train (fold_restval=True); ask for 'train', or pass "
                         "fold_restval=False to keep restval a split of its own")
    doc = load_json(path)
    images = require(doc, "images", list, path, "the top level")

    def effective(split: Any) -> Any:
        return "train" if fold_restval and split == "restval" else split

    # cocoid -> the (folded) splits it appears in, over the whole file: an image in two splits is
    # train/test leakage, whichever split this call reads.
    homes: dict[int, set[str]] = {}
    for rec in images:
        if isinstance(rec, dict) and type(rec.get("cocoid")) is int and rec.get("split") in KARPATHY_SPLITS:
            homes.setdefault(rec["cocoid"], set()).add(effective(rec["split"]))
    leaked = sorted(c for c, h in homes.items() if len(h) > 1)
    if leaked:
        log.warning("%s: %d cocoids are in more than one split (leakage; dropped from all): %s%s", path,
                    len(leaked), ", ".join(f"{c} ({'/'.join(sorted(homes[c]))})" for c in leaked[:10]),
                    " ..." if len(leaked) > 10 else "")
    q = Quarantine("coco", ",".join(splits), path)
    out = _Collector()
    seen: set[int] = set()
    skipped = original = folded = 0
    lost: Counter = Counter()
    base = url_base.rstrip("/")
    for index, rec in enumerate(images):
        raw_split = rec.get("split") if isinstance(rec, dict) else None
        if isinstance(raw_split, str) and raw_split not in KARPATHY_SPLITS:
            q.add(index, "unknown_split", f"images[{index}]: split {raw_split!r} is not one of {KARPATHY_SPLITS}",
                  rec, split=raw_split)
            continue
        split = effective(raw_split)
        folded += raw_split == "restval" and split == "train" and "train" in splits
        if isinstance(split, str) and split not in splits:
            skipped += 1  # another split's record: not ours to check or report
            continue
        mine = isinstance(split, str)  # a record without a split string belongs to no split's count
        original += mine
        problem = _missing(rec, {"split": str, "filepath": str, "filename": str, "cocoid": int, "sentences": list})
        reason = "bad_record"
        if problem is None and has_surrogate(rec["filepath"] + rec["filename"]):
            problem = "lone surrogate in filepath / filename"
        if problem is None and rec["cocoid"] in seen:
            problem, reason = f"cocoid {rec['cocoid']} seen before", "duplicate_id"
        if problem is None and rec["cocoid"] in leaked:
            others = sorted(homes[rec["cocoid"]] - {split})
            problem, reason = f"cocoid {rec['cocoid']} is also in split {'/'.join(others)}", "split_leakage"
        if problem is not None:
            q.add(index, reason, f"images[{index}]: {problem}", rec, split=split if mine else None)
            lost[reason] += mine
            continue
        cocoid = rec["cocoid"]
        seen.add(cocoid)
        source_path = f"{rec['filepath']}/{rec['filename']}"
        captions = _captions(
            q, index, cocoid, split,
            ((n, s.get("raw") if isinstance(s, dict) else s) for n, s in enumerate(rec["sentences"])), max_chars,
        )
        if not _add_image(out, q, index, cocoid, split, f"{base}/{source_path}", source_path, captions, rec):
            lost["no_captions"] += 1
    stats = {"records": len(images), "records_other_splits": skipped, "records_restval_in_train": folded}
    return out.result(q, stats, original, +lost)


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


def read_coco_captions(
    path: str | Path,
    split: str,
    url_base: str | None = None,
    *,
    max_chars: int = MAX_TEXT_CHARS,
    allow_local_files: bool = False,
) -> ReadResult:
    """Read an official COCO `captions_*.json` (images[] and annotations[]) as one split.

    Image URLs are the file's own `coco_url` (percent-encoded where needed; a file:// one is refused
    unless `allow_local_files`), or ``{url_base}/{folder}/{file_name}`` when url_base is given (a
    local mirror laid out like the COCO host).
    """
    path = Path(path)
    doc = load_json(path)
    images = require(doc, "images", list, path, "the top level")
    annotations = require(doc, "annotations", list, path, "the top level")
    q = Quarantine("coco", split, path)
    out = _Collector()
    lost: Counter = Counter()
    known: dict[int, int] = {}  # cocoid -> record index
    where: dict[int, tuple[str, str]] = {}  # cocoid -> (url, source path)
    for index, img in enumerate(images):
        problem = _missing(img, {"id": int, "file_name": str})
        if problem is None and has_surrogate(img["file_name"]):
            problem = "lone surrogate in file_name"
        if problem is None and img["id"] in known:
            problem = f"image id {img['id']} seen before"
        if problem is not None:
            q.add(index, "bad_record", f"images[{index}]: {problem}", img)
            lost["bad_record"] += 1
            continue
        folder = _image_folder(img)
        url = img.get("coco_url") if url_base is None else (
            f"{url_base.rstrip('/')}/{folder}/{img['file_name']}" if folder else None
        )
        if isinstance(url, str) and url_base is None:
            url = clean_url(url)
        if not isinstance(url, str) or not is_fetchable_url(url):
            q.add(index, "bad_url", f"images[{index}]: no usable image URL ({url!r})", img)
            lost["bad_url"] += 1
            continue
        if url_base is None and is_local_url(url) and not allow_local_files:
            q.add(index, "local_file_refused", f"images[{index}]: file:// URL refused ({url!r})", img)
            lost["local_file_refused"] += 1
            continue
        known[img["id"]] = index
        where[img["id"]] = (url, f"{folder}/{img['file_name']}" if folder else img["file_name"])
    listed = {img["id"] for img in images if isinstance(img, dict) and type(img.get("id")) is int}
    per_image: dict[int, list[Any]] = {}
    for index, ann in enumerate(annotations):
        problem = _missing(ann, {"image_id": int, "caption": str})
        if problem is None and ann["image_id"] in listed and ann["image_id"] not in known:
            continue  # its image is quarantined already: one row per loss, not one per caption as well
        if problem is None and ann["image_id"] not in known:
            problem = f"image_id {ann['image_id']} is not in images[]"
        if problem is not None:
            q.add(index, "bad_annotation", f"annotations[{index}]: {problem}", ann)
            continue
        per_image.setdefault(ann["image_id"], []).append(ann["caption"])
    for cocoid, index in known.items():
        captions = _captions(q, index, cocoid, split, enumerate(per_image.get(cocoid, [])), max_chars)
        if not _add_image(out, q, index, cocoid, split, *where[cocoid], captions, images[index]):
            lost["no_captions"] += 1
    return out.result(q, {"records": len(images), "annotations": len(annotations)}, len(images), +lost)


def coco_urls_by_id(paths: Iterable[str | Path], allow_local_files: bool = False) -> dict[int, str]:
    """cocoid -> coco_url from official COCO annotation files (any of captions/instances, 2014 train and
    val): VisDial train images are COCO 2014 images from both folders, so a single URL template
    cannot name them.  URLs are percent-encoded where needed; file:// ones are left out unless
    `allow_local_files` (their images then have no URL and are quarantined by the reader)."""
    paths = list(paths)
    urls: dict[int, str] = {}
    for p in paths:
        images = require(load_json(p), "images", list, p, "the top level")
        for img in images:
            if isinstance(img, dict) and type(img.get("id")) is int and isinstance(img.get("coco_url"), str):
                url = clean_url(img["coco_url"])
                if allow_local_files or not is_local_url(url):
                    urls[img["id"]] = url
    if not urls:
        raise SourceFormatError(", ".join(map(str, paths)), "no images with id and coco_url found")
    return urls
