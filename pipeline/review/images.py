"""Image bytes for the review page, addressed by (dataset, split, image id), never by a path.

The image id is looked up in images/<dataset>/<split>/availability.parquet (AVAILABILITY: status,
shards_dir, key), and the address in an index of that split's img2dataset output, built the first time
the split is asked for.  Reading is pipeline/images/store.py's, as for shard building (corrected bytes
win); what is specific to serving a web app stays here: the index cache shared by request threads, and
the run-root check.

Every file read is first resolved (symlinks followed) and must lie inside the run root: a symlink
or a crafted `shards_dir` pointing elsewhere is refused, whatever the request looked like.
"""
from __future__ import annotations

import threading
from pathlib import Path

import polars as pl

from pipeline.images.layout import fixes_for
from pipeline.images.store import ImageLocation, fixed_image, image_address, index_images, read_image

DATASETS_WITH_IMAGES = ("cc3m", "coco", "visdial", "vqav2")


class ImageNotFound(LookupError):
    """No downloaded image under that id (unknown dataset/split/id, or a failed download)."""


class OutsideRoot(PermissionError):
    """A file the image would be read from resolves outside the run root."""


def inside(root: Path, path: Path) -> Path:
    """`path` resolved, or OutsideRoot when it (or a symlink on the way) leaves `root`."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise OutsideRoot(f"{path} resolves outside the run root")
    return resolved


class ImageStore:
    """The review app's image lookup: one index per split, built on first use and shared by the
    request threads (hence the lock)."""

    def __init__(self, root: Path, splits: list[tuple[str, str]]) -> None:
        self.root = root.resolve()
        self.splits = set(splits)
        self._lock = threading.Lock()
        self._index: dict[tuple[str, str], tuple[dict[str, tuple[str, str]], dict[str, ImageLocation]]] = {}

    def images_dir(self, dataset: str, split: str) -> Path:
        if (dataset, split) not in self.splits:
            raise ImageNotFound(f"{dataset}/{split} is not a dataset/split of this run")
        return inside(self.root, self.root / "images" / dataset / split)

    def _load(self, dataset: str, split: str) -> tuple[dict[str, tuple[str, str]], dict[str, ImageLocation]]:
        with self._lock:
            if (dataset, split) not in self._index:
                folder = self.images_dir(dataset, split)
                table = folder / "availability.parquet"
                if not table.is_file():
                    raise ImageNotFound(f"{dataset}/{split}: images not downloaded yet (no availability table)")
                ok = pl.read_parquet(inside(self.root, table), columns=["image_id", "status", "key", "shards_dir"]
                                     ).filter(pl.col("status") == "success")
                ids = {i: (d, k) for i, d, k in ok.select("image_id", "shards_dir", "key").iter_rows()}
                self._index[(dataset, split)] = (ids, index_images(folder, accept=self._inside))
            return self._index[(dataset, split)]

    def has(self, dataset: str, split: str, image_id: str) -> bool:
        """Whether the image was downloaded (so a page shows it, not a broken image)."""
        try:
            ids, _ = self._load(dataset, split)
        except (ImageNotFound, OutsideRoot):
            return False
        return image_id in ids

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
        if fixes_for(folder).exists():
            inside(self.root, fixes_for(folder))
            fixed = fixed_image(folder, key)
            if fixed is not None:
                return fixed
        inside(self.root, loc.path)  # checked again: the file may have been swapped since the index was built
        data = read_image(loc)
        if data is None:
            raise ImageNotFound(f"{image_id}: no bytes for key {loc.key} in {loc.path.name}")
        return data

    def _inside(self, path: Path) -> bool:
        """The index's `accept`: files outside the root are never opened, so never indexed."""
        try:
            inside(self.root, path)
            return True
        except OutsideRoot:
            return False
