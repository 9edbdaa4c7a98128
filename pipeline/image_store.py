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


def iter_image_batches(images_dir: str | Path) -> Iterator[dict[str, bytes]]:
    """Yield {image_address: JPEG bytes} per img2dataset output shard under `images_dir` (retry rounds
    included); addresses match AVAILABILITY's (shards_dir, key)."""
    images_dir = Path(images_dir)

    def rel(folder: Path) -> str:
        return str(folder.relative_to(images_dir))

    for tar in sorted(images_dir.rglob("*.tar")):
        batch: dict[str, bytes] = {}
        with tarfile.open(tar) as tf:
            for member in tf:
                stem, _, ext = member.name.rpartition(".")
                if ext == "jpg":
                    f = tf.extractfile(member)
                    if f is not None:
                        batch[image_address(rel(tar.parent), stem)] = f.read()
        yield batch
    for pf in sorted(images_dir.rglob("*.parquet")):
        if pf.name == "availability.parquet" or pf.name.startswith(("_", ".")):
            continue
        names = pq.read_schema(pf).names
        if "jpg" not in names or "key" not in names:
            continue  # webdataset metadata, url lists, ...
        table = pq.read_table(pf, columns=["key", "jpg"])
        where = rel(pf.parent)
        yield {
            image_address(where, k): v
            for k, v in zip(table.column("key").to_pylist(), table.column("jpg").to_pylist(), strict=False)
            if v is not None
        }
    for folder in sorted(p for p in images_dir.rglob("*") if p.is_dir()):
        # output_format="files" writes <shards_dir>/<shard>/<key>.jpg
        batch = {image_address(rel(folder.parent), jpg.stem): jpg.read_bytes() for jpg in sorted(folder.glob("*.jpg"))}
        if batch:
            yield batch
