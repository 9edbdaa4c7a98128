"""Write CLIP features once per image (fp16, atomically) and read them back lazily by image id.

Layout of a cache folder (written to a hidden staging sibling, then renamed into place: ptvl_io.atomic_dir):

    index.parquet        image_id (string), row (int64): row of each image in the arrays
    cls.npy              (N, n_layers, m) float16: CLS of each cached layer, in meta["layers"] order
    tokens_<layer>.npy   (N, 1 + P, m) float16: all tokens of <layer>, only when tokens="all" was asked
    failed.parquet       image_id, reason: images that could not be decoded (skipped, not fatal)
    meta.json            clip, layers, token_layers, width, n_tokens, n_layers, grid, count, ...

The CLS and token conventions are VisualEncoder's (last-layer CLS after ln_post, others raw).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from ptvl_io import atomic_dir, atomic_path
from training.features.encoder import Features, Needs, VisualEncoder, decode_image

log = logging.getLogger(__name__)

FP16_BYTES = 2
INDEX_SCHEMA = pa.schema([("image_id", pa.string()), ("row", pa.int64())])
FAILED_SCHEMA = pa.schema([("image_id", pa.string()), ("reason", pa.string())])
SPILL_ROWS_BYTES = 256 * 2**20  # rows of unknown total count are spilled to disk in chunks of about this


class FeatureCacheError(RuntimeError):
    """A feature cache is missing, incomplete, or lacks what was asked of it."""


def all_token_cache_size(n_images: int, n_tokens: int = 257, width: int = 1024, n_layers: int = 1) -> int:
    """Bytes of an fp16 all-token cache: 526,336 per image for one ViT-L/14 layer, ~1.42 TB for CC3M's 2.7M."""
    return n_images * n_tokens * width * n_layers * FP16_BYTES


class _RowWriter:
    """Appends fp16 rows to `<dir>/<name>.npy`: straight into a memmap when the count is known up front,
    otherwise into spill chunks that `finish` assembles (deleting each chunk as it is copied)."""

    def __init__(self, folder: Path, name: str, row_shape: tuple[int, ...], capacity: int | None) -> None:
        self.path = folder / f"{name}.npy"
        self.folder, self.name, self.row_shape = folder, name, row_shape
        self.count = 0
        self.array = (np.lib.format.open_memmap(self.path, mode="w+", dtype=np.float16,
                                                shape=(capacity, *row_shape)) if capacity is not None else None)
        self.pending: list[np.ndarray] = []
        self.pending_rows = 0
        self.chunks: list[Path] = []
        self.spill_rows = max(1, SPILL_ROWS_BYTES // (int(np.prod(row_shape)) * FP16_BYTES))

    def append(self, rows: np.ndarray) -> None:
        if self.array is not None:
            if self.count + len(rows) > len(self.array):
                raise FeatureCacheError(
                    f"more distinct images than n_images={len(self.array)}; pass the number of distinct ids")
            self.array[self.count:self.count + len(rows)] = rows
        else:
            self.pending.append(rows)
            self.pending_rows += len(rows)
            if self.pending_rows >= self.spill_rows:
                self._spill()
        self.count += len(rows)

    def _spill(self) -> None:
        if self.pending:
            chunk = self.folder / f".{self.name}-{len(self.chunks):06d}.npy"
            np.save(chunk, np.concatenate(self.pending))
            self.chunks.append(chunk)
            self.pending, self.pending_rows = [], 0

    def finish(self) -> None:
        if self.array is not None:
            self.array.flush()
            if self.count < len(self.array):  # fewer distinct images than announced: shrink by copying
                log.warning("%s: %d rows announced, %d written; rewriting at the right size",
                            self.path.name, len(self.array), self.count)
                old, self.array = self.array, None
                with atomic_path(self.path) as tmp:
                    new = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16,
                                                    shape=(self.count, *self.row_shape))
                    for start in range(0, self.count, self.spill_rows):
                        stop = min(start + self.spill_rows, self.count)
                        new[start:stop] = old[start:stop]
                    new.flush()
                    del old, new
            return
        self._spill()
        out = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.float16, shape=(self.count, *self.row_shape))
        start = 0
        for chunk in self.chunks:
            rows = np.load(chunk)
            out[start:start + len(rows)] = rows
            start += len(rows)
            chunk.unlink()
        out.flush()


def _prepare(item: tuple[str, Image.Image | bytes], preprocess: Callable) -> tuple[str, torch.Tensor | str]:
    image_id, image = item
    try:
        return image_id, preprocess(decode_image(image))
    except Exception as e:  # a bad image becomes a failed row with its reason, never a dead run
        return image_id, f"{type(e).__name__}: {e}"


def _batches(items: Iterable, size: int) -> Iterable[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def cache_features(
    image_iter: Iterable[tuple[str, Image.Image | bytes]],
    encoder: VisualEncoder,
    preprocess: Callable[[Image.Image], torch.Tensor],
    out_dir: Path,
    layers: Sequence[int],
    tokens: Literal["cls", "all"] = "cls",
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
    *,
    n_images: int | None = None,
    workers: int = 4,
    overwrite: bool = False,
) -> Path:
    """Encode every distinct image once and write its features (fp16) to the cache folder `out_dir`.

    `image_iter` yields (image_id, PIL image or encoded bytes); repeated ids (one row per caption) are
    encoded once. CLS of all `layers` always goes to cls.npy; tokens="all" also writes tokens_<layer>.npy
    for each layer (526 KB per image per layer for ViT-L/14: see `all_token_cache_size`).
    `n_images` (number of DISTINCT ids, if known) lets arrays be written in place; without it rows are
    spilled in chunks and assembled at the end (one extra sequential copy).
    Images that fail to decode are skipped and listed in failed.parquet. `progress(n)` gets the number
    of rows consumed so far after each batch. Decoding and preprocessing run in `workers` threads.
    The folder appears atomically when complete; an existing one raises unless `overwrite`.
    """
    out_dir = Path(out_dir)
    layers = [int(layer) for layer in layers]
    if not layers or len(set(layers)) != len(layers):
        raise ValueError(f"layers must be distinct and non-empty, got {layers}")
    for layer in layers:
        encoder.resolve(layer)
    if tokens not in ("cls", "all"):
        raise ValueError(f"tokens must be 'cls' or 'all', not {tokens!r}")
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir}: feature cache exists (pass overwrite=True to rebuild it)")
    needs: Needs = {"cls": layers, "tokens": layers if tokens == "all" else []}
    # overwrite: the old cache is moved aside only once the new one is complete
    with atomic_dir(out_dir, replace=overwrite) as tmp:
        m, t = encoder.width, encoder.n_tokens
        cls_writer = _RowWriter(tmp, "cls", (len(layers), m), n_images)
        token_writers = {layer: _RowWriter(tmp, f"tokens_{layer}", (t, m), n_images) for layer in needs["tokens"]}
        ids: list[str] = []
        failed: list[tuple[str, str]] = []
        seen: set[str] = set()
        consumed = duplicates = 0
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for batch in _batches(image_iter, batch_size):
                consumed += len(batch)
                fresh = []
                for image_id, image in batch:
                    if image_id in seen:
                        duplicates += 1
                        continue
                    seen.add(image_id)
                    fresh.append((image_id, image))
                good_ids, pixels = [], []
                for image_id, result in pool.map(lambda item: _prepare(item, preprocess), fresh):
                    if isinstance(result, str):
                        failed.append((image_id, result))
                    else:
                        good_ids.append(image_id)
                        pixels.append(result)
                if pixels:
                    feats = encoder.features(torch.stack(pixels), needs)
                    cls_writer.append(torch.stack([feats["cls"][layer] for layer in layers], dim=1)
                                      .to(torch.float16).cpu().numpy())
                    for layer, writer in token_writers.items():
                        writer.append(feats["tokens"][layer].to(torch.float16).cpu().numpy())
                    ids.extend(good_ids)
                if progress is not None:
                    progress(consumed)
        for writer in (cls_writer, *token_writers.values()):
            writer.finish()
        pq.write_table(pa.table({"image_id": ids, "row": np.arange(len(ids), dtype=np.int64)}, schema=INDEX_SCHEMA),
                       tmp / "index.parquet")
        pq.write_table(pa.table({"image_id": [f[0] for f in failed], "reason": [f[1] for f in failed]},
                                schema=FAILED_SCHEMA), tmp / "failed.parquet")
        meta = {**encoder.describe(), "layers": layers, "token_layers": needs["tokens"], "count": len(ids),
                "failed": len(failed), "duplicates_skipped": duplicates, "dtype": "float16",
                "cls_convention": "last layer: ln_post(CLS) without proj; earlier layers: raw residual CLS",
                "tokens_convention": "raw residual stream (1 + P tokens, CLS first) for every layer"}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    if failed:
        log.warning("%s: %d images could not be decoded (see failed.parquet)", out_dir, len(failed))
    return out_dir


class FeatureStore:
    """Lazy (memory-mapped) reader of a cache folder written by `cache_features`.

    `get(ids)` returns {layer: (B, m)} CLS (or {layer: (B, 1+P, m)} tokens with tokens="all"), the same
    form `VisualEncoder.encode` gives; `features(ids, bridge.needs())` returns the nested dict bridges
    take. Layers may be asked for as cached (e.g. -1) or by the equivalent absolute index (23).
    """

    def __init__(self, out_dir: Path) -> None:
        self.dir = Path(out_dir)
        meta_path = self.dir / "meta.json"
        if not meta_path.is_file():
            raise FeatureCacheError(f"{self.dir}: not a feature cache (no meta.json; incomplete or wrong path)")
        self.meta = json.loads(meta_path.read_text())
        self.layers: list[int] = self.meta["layers"]
        self.token_layers: list[int] = self.meta["token_layers"]
        self.n_layers_vit: int = self.meta["n_layers"]
        self.width: int = self.meta["width"]
        self.n_tokens: int = self.meta["n_tokens"]
        index = pq.read_table(self.dir / "index.parquet")
        self.ids: list[str] = index.column("image_id").to_pylist()
        self._row = dict(zip(self.ids, index.column("row").to_pylist(), strict=True))
        self._cls = np.load(self.dir / "cls.npy", mmap_mode="r")
        self._tokens = {layer: np.load(self.dir / f"tokens_{layer}.npy", mmap_mode="r")
                        for layer in self.token_layers}
        if len(self._cls) != len(self.ids):
            raise FeatureCacheError(f"{self.dir}: cls.npy has {len(self._cls)} rows, index has {len(self.ids)}")

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._row

    def _abs(self, layer: int) -> int:
        return layer + self.n_layers_vit if layer < 0 else layer

    def _find(self, layer: int, available: list[int], what: str) -> int:
        for cached in available:
            if self._abs(cached) == self._abs(layer):
                return cached
        raise FeatureCacheError(f"{self.dir}: layer {layer} {what} not cached (cached: {available})")

    def has(self, needs: Needs) -> bool:
        """Whether this cache alone serves a bridge's `needs()` (else run the encoder online)."""
        want = [(layer, self.layers) for layer in needs.get("cls", [])]
        want += [(layer, self.token_layers) for layer in needs.get("tokens", [])]
        return all(any(self._abs(c) == self._abs(layer) for c in avail) for layer, avail in want)

    def rows(self, image_ids: Sequence[str]) -> np.ndarray:
        missing = [i for i in image_ids if i not in self._row]
        if missing:
            raise FeatureCacheError(f"{self.dir}: {len(missing)} image ids not cached, e.g. {missing[:5]}")
        return np.fromiter((self._row[i] for i in image_ids), dtype=np.int64, count=len(image_ids))

    def get(self, image_ids: Sequence[str], layers: Sequence[int] | None = None,
            tokens: Literal["cls", "all"] = "cls", dtype: torch.dtype = torch.float32) -> dict[int, torch.Tensor]:
        """Features of `image_ids` per layer (all cached layers if None), as `VisualEncoder.encode` gives."""
        rows = self.rows(image_ids)
        if tokens == "cls":
            layers = self.layers if layers is None else list(layers)
            block = self._cls[rows]  # (B, n_layers, m); fancy indexing copies out of the memmap
            return {layer: torch.from_numpy(block[:, self.layers.index(self._find(layer, self.layers, "CLS"))])
                    .to(dtype) for layer in layers}
        if tokens == "all":
            layers = self.token_layers if layers is None else list(layers)
            return {layer: torch.from_numpy(self._tokens[self._find(layer, self.token_layers, "tokens")][rows])
                    .to(dtype) for layer in layers}
        raise ValueError(f"tokens must be 'cls' or 'all', not {tokens!r}")

    def features(self, image_ids: Sequence[str], needs: Needs, dtype: torch.dtype = torch.float32) -> Features:
        """The nested {"cls": {...}, "tokens": {...}} dict a bridge's forward takes, for its `needs()`."""
        out: Features = {"cls": {}, "tokens": {}}
        if needs.get("cls"):
            out["cls"] = self.get(image_ids, needs["cls"], "cls", dtype)
        if needs.get("tokens"):
            out["tokens"] = self.get(image_ids, needs["tokens"], "all", dtype)
        return out
