"""Image bytes for the review page, addressed by (dataset, split, image id), never by a path.

The image id is looked up in images/<dataset>/<split>/availability.parquet (AVAILABILITY: status,
shards_dir, key), and the key in an index of that split's img2dataset output (parquet shards with a
`jpg` column, webdataset tars, or one file per image; see pipeline/image_store.py), built the first
time the split is asked for.  Corrected bytes (pipeline/image_fixes.py) win, as in the shards.

Every file read is first resolved (symlinks followed) and must lie inside the run root: a symlink
or a crafted `shards_dir` pointing elsewhere is refused, whatever the request looked like.
"""
from __future__ import annotations

import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from pipeline.image_store import image_address

DATASETS_WITH_IMAGES = ("cc3m", "coco", "visdial", "vqav2")


class ImageNotFound(LookupError):
    """No downloaded image under that id (unknown dataset/split/id, or a failed download)."""


class OutsideRoot(PermissionError):
    """A file the image would be read from resolves outside the run root."""


@dataclass(frozen=True)
class _Where:
    kind: str  # parquet | tar | file
    path: Path
    key: str  # the img2dataset key (parquet row / tar member stem)


def inside(root: Path, path: Path) -> Path:
    """`path` resolved, or OutsideRoot when it (or a symlink on the way) leaves `root`."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise OutsideRoot(f"{path} resolves outside the run root")
    return resolved


class ImageStore:
    def __init__(self, root: Path, splits: list[tuple[str, str]]):
        self.root = root.resolve()
        self.splits = set(splits)
        self._lock = threading.Lock()
        self._index: dict[tuple[str, str], tuple[dict[str, tuple[str, str]], dict[str, _Where]]] = {}

    def images_dir(self, dataset: str, split: str) -> Path:
        if (dataset, split) not in self.splits:
            raise ImageNotFound(f"{dataset}/{split} is not a dataset/split of this run")
        return inside(self.root, self.root / "images" / dataset / split)

    def _load(self, dataset: str, split: str):
        with self._lock:
            if (dataset, split) not in self._index:
                folder = self.images_dir(dataset, split)
                table = folder / "availability.parquet"
                if not table.is_file():
                    raise ImageNotFound(f"{dataset}/{split}: images not downloaded yet (no availability table)")
                ok = pl.read_parquet(inside(self.root, table), columns=["image_id", "status", "key", "shards_dir"]
                                     ).filter(pl.col("status") == "success")
                ids = {i: (d, k) for i, d, k in ok.select("image_id", "shards_dir", "key").iter_rows()}
                self._index[(dataset, split)] = (ids, _scan(self.root, folder))
            return self._index[(dataset, split)]

    def read(self, dataset: str, split: str, image_id: str) -> bytes:
        """The image's bytes; ImageNotFound or OutsideRoot otherwise."""
        ids, where = self._load(dataset, split)
        if image_id not in ids:
            raise ImageNotFound(f"no downloaded image {image_id!r} in {dataset}/{split}")
        shards_dir, key = ids[image_id]
        address = image_address(shards_dir, key)
        loc = where.get(address)
        if loc is None:
            raise ImageNotFound(f"{image_id}: listed as downloaded but not in the img2dataset output")
        folder = inside(self.root, self.root / "images" / dataset / split / shards_dir)
        fixed = _fixed(self.root, folder).get(key)
        if fixed is not None:
            return fixed
        path = inside(self.root, loc.path)
        if loc.kind == "parquet":
            t = pq.read_table(path, columns=["key", "jpg"], filters=[("key", "=", loc.key)])
            if not t.num_rows or t.column("jpg")[0].as_py() is None:
                raise ImageNotFound(f"{image_id}: no bytes in {path.name}")
            return t.column("jpg")[0].as_py()
        if loc.kind == "tar":
            with tarfile.open(path) as tf:
                member = tf.getmember(f"{loc.key}.jpg")
                f = tf.extractfile(member) if member.isfile() else None
                if f is None:
                    raise ImageNotFound(f"{image_id}: {loc.key}.jpg is not a file in {path.name}")
                return f.read()
        return path.read_bytes()


def _fixed(root: Path, folder: Path) -> dict[str, bytes]:
    from pipeline.image_fixes import fixes_path, overrides

    path = fixes_path(folder.parent)
    if not path.exists():
        return {}
    inside(root, path)
    return overrides(folder)


def _scan(root: Path, images_dir: Path) -> dict[str, _Where]:
    """address -> where its bytes are, for every image of the split's img2dataset output; files that
    resolve outside the root are left out of the index (and refused again when read)."""
    out: dict[str, _Where] = {}

    def rel(folder: Path) -> str:
        return str(folder.relative_to(images_dir))

    def ok(p: Path) -> bool:
        try:
            inside(root, p)
            return True
        except OutsideRoot:
            return False

    for tar in sorted(images_dir.rglob("*.tar")):
        if not ok(tar):
            continue
        with tarfile.open(tar) as tf:
            for name in tf.getnames():
                stem, _, ext = name.rpartition(".")
                if ext == "jpg":
                    out.setdefault(image_address(rel(tar.parent), stem), _Where("tar", tar, stem))
    for pf in sorted(images_dir.rglob("*.parquet")):
        if pf.name == "availability.parquet" or pf.name.startswith(("_", ".")) or not ok(pf):
            continue
        if not {"jpg", "key"} <= set(pq.read_schema(pf).names):
            continue
        for key in pq.read_table(pf, columns=["key"]).column("key").to_pylist():
            out.setdefault(image_address(rel(pf.parent), key), _Where("parquet", pf, key))
    for jpg in sorted(images_dir.rglob("*.jpg")):
        # output_format="files": <shards_dir>/<shard>/<key>.jpg
        if ok(jpg):
            out.setdefault(image_address(rel(jpg.parent.parent), jpg.stem), _Where("file", jpg, jpg.stem))
    return out
