"""The one reader of img2dataset's output: which shards are complete, and image bytes by img2dataset key,
whatever output format the download used, with the corrected bytes of pipeline/images/fixes.py winning.

img2dataset writes, per shard, `<shard>_stats.json` once the shard is closed (so a shard counts as
complete only then), a metadata `<shard>.parquet`, and the bytes: in that parquet's `jpg` column
(output_format="parquet"), as `<key>.jpg` members of `<shard>.tar` ("webdataset"), or as
`<shard>/<key>.jpg` files ("files").

Two kinds of reader use it: shard building and fixes stream every image one img2dataset shard at a time
(`iter_image_batches`, `iter_stored_images`: memory bounded by one shard whatever the dataset size);
the review app looks single images up (`index_images`, then `read_image`).  Both walk the same files in
the same order, so an address resolves to the same bytes in either.
"""
from __future__ import annotations

import json
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow.parquet as pq

from pipeline.images.layout import fixes_for

Accept = Callable[[Path], bool]  # whether a file may be opened at all (the review app's run-root check)


def _any(_: Path) -> bool:
    return True


def image_address(shards_dir: str, key: str) -> str:
    """Where an image lives: keys restart at 0 in every retry round, so the folder is part of the address."""
    return f"{shards_dir}/{key}"


# ------------------------------------------------------------------------------ shards and their stats


@dataclass(frozen=True)
class Shard:
    """A complete img2dataset shard: its name, its stats and its metadata parquet (one row per URL)."""

    name: str
    stats_file: Path
    stats: dict[str, Any]
    metadata: Path


def complete_shards(shards_dir: Path) -> list[Shard]:
    """The shards of one img2dataset output folder whose `_stats.json` exists, by name."""
    shards = []
    for stats_file in sorted(shards_dir.glob("*_stats.json")):
        name = stats_file.name[: -len("_stats.json")]
        shards.append(Shard(name, stats_file, json.loads(stats_file.read_text()), shards_dir / f"{name}.parquet"))
    return shards


def covered_urls(shards_dir: Path) -> int:
    """URLs covered by complete shards, from the stats files alone (cheap; what a resume counts)."""
    return sum(json.loads(p.read_text())["count"] for p in shards_dir.glob("*_stats.json"))


# ------------------------------------------------------------------------------ where the bytes are


@dataclass(frozen=True)
class ImageLocation:
    """Where one image's bytes are: a parquet row, a tar member or a file, by img2dataset key."""

    kind: Literal["parquet", "tar", "file"]
    path: Path  # the file that holds the bytes
    key: str


@dataclass(frozen=True)
class _Container:
    kind: Literal["parquet", "tar", "folder"]  # folder: one shard of output_format="files"
    path: Path
    shards_dir: Path  # the img2dataset output folder it belongs to


def _containers(images_dir: Path) -> Iterator[_Container]:
    """Every place under `images_dir` img2dataset may have put image bytes: tars, then parquet files,
    then folders (a fixed order: the first place that holds an address wins)."""
    for tar in sorted(images_dir.rglob("*.tar")):
        yield _Container("tar", tar, tar.parent)
    for pf in sorted(images_dir.rglob("*.parquet")):
        # the stage's own tables and hidden or "_" files (fixes, temporaries) are never shards
        if pf.name == "availability.parquet" or pf.name.startswith(("_", ".")):
            continue
        yield _Container("parquet", pf, pf.parent)
    for folder in sorted(p for p in images_dir.rglob("*") if p.is_dir()):
        yield _Container("folder", folder, folder.parent)  # output_format="files": <shards_dir>/<shard>/<key>.jpg


# One Parquet file is read with pq.ParquetFile, never pq.read_table: read_table goes through pyarrow.dataset,
# whose import alone adds ~50 MB to a process (the review server reads single images and stays light).
def _read(path: Path, columns: list[str]):
    """The columns of one Parquet file (a pyarrow Table)."""
    return pq.ParquetFile(path).read(columns=columns)


def _jpg_of(path: Path, key: str) -> bytes | None:
    """The `jpg` of the first row whose `key` is `key`, reading only the row group that holds it."""
    f = pq.ParquetFile(path)
    for i in range(f.num_row_groups):
        keys = f.read_row_group(i, columns=["key"]).column("key").to_pylist()
        if key in keys:
            return f.read_row_group(i, columns=["jpg"]).column("jpg")[keys.index(key)].as_py()
    return None


def _holds_images(pf: Path) -> bool:
    """Parquet output carries key and jpg; webdataset metadata, URL lists and tables do not."""
    return {"jpg", "key"} <= set(pq.read_schema(pf).names)


def _jpg_members(tf: tarfile.TarFile) -> Iterator[tuple[str, tarfile.TarInfo]]:
    for member in tf:
        stem, _, ext = member.name.rpartition(".")
        if ext == "jpg" and member.isfile():
            yield stem, member


def _locations(c: _Container, accept: Accept) -> Iterator[ImageLocation]:
    if c.kind == "folder":
        for jpg in sorted(c.path.glob("*.jpg")):
            if accept(jpg):
                yield ImageLocation("file", jpg, jpg.stem)
        return
    if not accept(c.path):
        return
    if c.kind == "tar":
        with tarfile.open(c.path) as tf:
            for stem, _ in _jpg_members(tf):
                yield ImageLocation("tar", c.path, stem)
    elif _holds_images(c.path):
        for key in _read(c.path, ["key"]).column("key").to_pylist():
            yield ImageLocation("parquet", c.path, key)


def _read_container(c: _Container) -> dict[str, bytes]:
    """{key: bytes} of one container (rows without bytes, i.e. failed URLs, left out)."""
    if c.kind == "folder":
        return {jpg.stem: jpg.read_bytes() for jpg in sorted(c.path.glob("*.jpg"))}
    if c.kind == "tar":
        with tarfile.open(c.path) as tf:
            return {stem: f.read() for stem, member in _jpg_members(tf) if (f := tf.extractfile(member)) is not None}
    if not _holds_images(c.path):
        return {}
    table = _read(c.path, ["key", "jpg"])
    return {k: v for k, v in zip(table.column("key").to_pylist(), table.column("jpg").to_pylist(), strict=False)
            if v is not None}


# ------------------------------------------------------------------------------ corrected bytes


def fixed_images(shards_dir: Path) -> dict[str, bytes]:
    """key -> corrected bytes for the img2dataset output folder `shards_dir` (empty when none)."""
    path = fixes_for(shards_dir)
    if not path.exists():
        return {}
    t = _read(path, ["key", "jpg"])
    return dict(zip(t.column("key").to_pylist(), t.column("jpg").to_pylist(), strict=True))


def fixed_image(shards_dir: Path, key: str) -> bytes | None:
    """The corrected bytes of one image, or None when it was not corrected (reads one row, not all)."""
    path = fixes_for(shards_dir)
    if not path.exists():
        return None
    return _jpg_of(path, key)


# ------------------------------------------------------------------------------ readers


def iter_stored_images(images_dir: str | Path) -> Iterator[tuple[Path, dict[str, bytes]]]:
    """(img2dataset output folder, {key: bytes as img2dataset stored them}) per shard under `images_dir`;
    empty batches are skipped."""
    for c in _containers(Path(images_dir)):
        batch = _read_container(c)
        if batch:
            yield c.shards_dir, batch


def iter_image_batches(images_dir: str | Path, fixed: bool = True) -> Iterator[dict[str, bytes]]:
    """Yield {image_address: JPEG bytes} per img2dataset output shard under `images_dir` (retry rounds
    included); addresses match AVAILABILITY's (shards_dir, key).  `fixed`: corrected bytes replace
    img2dataset's where pipeline/images/fixes.py wrote them."""
    images_dir = Path(images_dir)
    fixes: dict[Path, dict[str, bytes]] = {}
    for shards_dir, batch in iter_stored_images(images_dir):
        where = str(shards_dir.relative_to(images_dir))
        if fixed and shards_dir not in fixes:
            fixes[shards_dir] = fixed_images(shards_dir)
        override = fixes.get(shards_dir, {})
        yield {image_address(where, k): override.get(k, v) for k, v in batch.items()}


def index_images(images_dir: Path, accept: Accept = _any) -> dict[str, ImageLocation]:
    """image_address -> where its bytes are, for every image under `images_dir` (the first place wins,
    as in `iter_image_batches`).  `accept(path)` is asked before any file is opened; refused files are
    left out."""
    out: dict[str, ImageLocation] = {}
    for c in _containers(images_dir):
        where = str(c.shards_dir.relative_to(images_dir))
        for loc in _locations(c, accept):
            out.setdefault(image_address(where, loc.key), loc)
    return out


def read_image(loc: ImageLocation) -> bytes | None:
    """The bytes img2dataset stored at `loc` (not the corrected ones: see `fixed_image`), or None when
    there are none (a row of a failed URL, a missing member)."""
    if loc.kind == "parquet":
        return _jpg_of(loc.path, loc.key)
    if loc.kind == "tar":
        with tarfile.open(loc.path) as tf:
            try:
                member = tf.getmember(f"{loc.key}.jpg")
            except KeyError:
                return None
            f = tf.extractfile(member) if member.isfile() else None
            return f.read() if f is not None else None
    return loc.path.read_bytes()
