"""Read downloaded image bytes back by img2dataset key, whatever output format the download used.

img2dataset writes `<shard>.parquet` with the bytes in a `jpg` column (output_format="parquet"),
`<shard>.tar` members `<key>.jpg` next to a metadata parquet ("webdataset"), or `<shard>/<key>.jpg`
("files").  Shard building streams them one img2dataset shard at a time, so memory stays bounded by
one shard whatever the dataset size.
"""
from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq


def image_address(shards_dir: str, key: str) -> str:
    """Where an image lives: keys restart at 0 in every retry round, so the folder is part of the address."""
    return f"{shards_dir}/{key}"


def iter_image_batches(images_dir: str | Path, fixed: bool = True) -> Iterator[dict[str, bytes]]:
    """Yield {image_address: JPEG bytes} per img2dataset output shard under `images_dir` (retry rounds
    included); addresses match AVAILABILITY's (shards_dir, key).  `fixed`: corrected bytes replace
    img2dataset's where pipeline.image_fixes wrote them."""
    from pipeline.image_fixes import overrides

    images_dir = Path(images_dir)
    cache: dict[Path, dict[str, bytes]] = {}

    def rel(folder: Path) -> str:
        return str(folder.relative_to(images_dir))

    def patch(folder: Path, batch: dict[str, bytes]) -> dict[str, bytes]:
        if not fixed:
            return batch
        if folder not in cache:
            cache[folder] = {image_address(rel(folder), k): v for k, v in overrides(folder).items()}
        return {a: cache[folder].get(a, v) for a, v in batch.items()}

    for tar in sorted(images_dir.rglob("*.tar")):
        batch: dict[str, bytes] = {}
        with tarfile.open(tar) as tf:
            for member in tf:
                stem, _, ext = member.name.rpartition(".")
                if ext == "jpg":
                    f = tf.extractfile(member)
                    if f is not None:
                        batch[image_address(rel(tar.parent), stem)] = f.read()
        yield patch(tar.parent, batch)
    for pf in sorted(images_dir.rglob("*.parquet")):
        if pf.name == "availability.parquet" or pf.name.startswith(("_", ".")):
            continue
        names = pq.read_schema(pf).names
        if "jpg" not in names or "key" not in names:
            continue  # webdataset metadata, url lists, ...
        table = pq.read_table(pf, columns=["key", "jpg"])
        where = rel(pf.parent)
        yield patch(pf.parent, {
            image_address(where, k): v
            for k, v in zip(table.column("key").to_pylist(), table.column("jpg").to_pylist(), strict=False)
            if v is not None
        })
    for folder in sorted(p for p in images_dir.rglob("*") if p.is_dir()):
        # output_format="files" writes <shards_dir>/<shard>/<key>.jpg
        batch = {image_address(rel(folder.parent), jpg.stem): jpg.read_bytes() for jpg in sorted(folder.glob("*.jpg"))}
        if batch:
            yield patch(folder.parent, batch)
