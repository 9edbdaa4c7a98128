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


def iter_image_batches(images_dir: str | Path) -> Iterator[dict[str, bytes]]:
    """Yield {key: JPEG bytes} per img2dataset output shard under `images_dir` (retry rounds included)."""
    images_dir = Path(images_dir)
    for tar in sorted(images_dir.rglob("*.tar")):
        batch: dict[str, bytes] = {}
        with tarfile.open(tar) as tf:
            for member in tf:
                stem, _, ext = member.name.rpartition(".")
                if ext == "jpg":
                    f = tf.extractfile(member)
                    if f is not None:
                        batch[stem] = f.read()
        yield batch
    for pf in sorted(images_dir.rglob("*.parquet")):
        if pf.name == "availability.parquet" or pf.name.startswith(("_", ".")):
            continue
        names = pq.read_schema(pf).names
        if "jpg" not in names or "key" not in names:
            continue  # webdataset metadata, url lists, ...
        table = pq.read_table(pf, columns=["key", "jpg"])
        yield {
            k: v for k, v in zip(table.column("key").to_pylist(), table.column("jpg").to_pylist()) if v is not None
        }
    for folder in sorted(p for p in images_dir.rglob("*") if p.is_dir()):
        batch = {jpg.stem: jpg.read_bytes() for jpg in sorted(folder.glob("*.jpg"))}
        if batch:
            yield batch
