"""The steps every shard builder shares: settings and counts, the drop decision, the image join and the
part files.  Internal to pipeline.shards (its API is re-exported by the package).

A builder's rows are a polars frame with an `_address` column (where its image lives, `image_address`).
`keep_rows` drops rows for a recorded reason and counts them; `write_parts` attaches each kept row's image,
one img2dataset batch at a time, and cuts the part files.  The frame handed to `write_parts` carries
`_address` (sorted), `_human` (the row uses a person's text) and, for the builders with a drop policy,
`_kept_by` (why a row the policy would drop is kept).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, field_validator

from pipeline.images.store import iter_image_batches
from pipeline.io import atomic_path
from translation.quality import FLAG_NAMES


class FilterPolicy(BaseModel):
    """Which quality flags keep a caption out of the shards.  The default drops empty and untranslated
    rows (this reproduces the thesis' Narrativa sample drop, SPEC Table 5.2) and an LLM's run-on output
    (`overgeneration`: text that is not the translation; a seq2seq engine never raises it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    drop: list[str] = ["empty", "untranslated", "overgeneration"]

    @field_validator("drop")
    @classmethod
    def _known_flags(cls, value: list[str]) -> list[str]:
        unknown = [f for f in value if f not in FLAG_NAMES]
        if unknown:
            raise ValueError(f"unknown quality flag(s) {', '.join(map(repr, unknown))}; flags: {', '.join(FLAG_NAMES)}")
        return value


class ShardSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # ~40k rows of 256-px JPEGs is about 1 GB: large enough for fast sequential reads, small enough to
    # shuffle at shard granularity and to resume a failed copy.
    rows_per_shard: int = 40_000
    default_policy: FilterPolicy = FilterPolicy()
    # engine name -> policy overriding the default (e.g. madlad = {drop = ["empty", "untranslated", "brazilian"]})
    policy: dict[str, FilterPolicy] = {}
    # Drop caption rows whose QE score ([curate] qe_model, e.g. CometKiwi) is below this, counted as
    # `qe_below_min` like the flags; None keeps every row whatever its QE.
    min_qe: float | None = None

    def policy_for(self, engine: str) -> FilterPolicy:
        return self.policy.get(engine, self.default_policy)


@dataclass
class ShardStats:
    total: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    files: list[str] = field(default_factory=list)
    images: int = 0
    human_corrected: int = 0  # kept rows carrying at least one human-corrected text
    kept_by_review: Counter = field(default_factory=Counter)  # "human_text" | "false_alarm" -> kept rows

    def as_dict(self) -> dict:
        return {
            "total": self.total,
            "kept": self.kept,
            **{f"dropped_{k}": v for k, v in sorted(self.dropped.items())},
            "images": self.images,
            "files": self.files,
            "human_corrected": self.human_corrected,
            "kept_by_human_text": self.kept_by_review["human_text"],
            "kept_by_false_alarm": self.kept_by_review["false_alarm"],
        }


class RollingWriter:
    """Parquet part files of exactly `rows_per_shard` rows (the last one fewer), each renamed into place
    when complete.  Tables of any size come in; the cuts depend only on the row count."""

    def __init__(self, out_dir: Path, schema: pa.Schema, rows_per_shard: int):
        self.out_dir, self.schema, self.rows_per_shard = out_dir, schema, rows_per_shard
        self.tables: list[pa.Table] = []
        self.buffered = 0
        self.files: list[str] = []

    def add_table(self, table: pa.Table) -> None:
        self.tables.append(table.select(self.schema.names).cast(self.schema))
        self.buffered += table.num_rows
        while self.buffered >= self.rows_per_shard:
            whole = pa.concat_tables(self.tables)
            self._write(whole.slice(0, self.rows_per_shard))
            rest = whole.slice(self.rows_per_shard)
            self.tables, self.buffered = ([rest] if rest.num_rows else []), rest.num_rows

    def flush(self) -> None:
        if self.buffered:
            self._write(pa.concat_tables(self.tables))
            self.tables, self.buffered = [], 0

    def _write(self, table: pa.Table) -> None:
        dest = self.out_dir / f"part-{len(self.files):05d}.parquet"
        with atomic_path(dest) as tmp:
            pq.write_table(table, tmp, compression="zstd")
        self.files.append(dest.name)


def with_address(rows: pl.DataFrame, id_column: str, availability: pl.DataFrame) -> pl.DataFrame:
    """`rows` with `_address` (image_address: shards_dir/key) of the downloaded image `id_column` names,
    null when it was not downloaded; the last availability row wins when an id repeats."""
    addresses = availability.filter(pl.col("status") == "success").select(
        pl.col("image_id").alias(id_column), (pl.col("shards_dir") + "/" + pl.col("key")).alias("_address"),
    ).unique(id_column, keep="last", maintain_order=True)
    return rows.join(addresses, on=id_column, how="left", maintain_order="left")


def keep_rows(stats: ShardStats, rows: pl.DataFrame, reason: pl.Expr) -> pl.DataFrame:
    """The rows whose `reason` is null; the others are counted in `stats.dropped` by reason."""
    decided = rows.with_columns(reason.alias("_reason"))
    for r, n in decided.filter(pl.col("_reason").is_not_null()).group_by("_reason").len().iter_rows():
        stats.dropped[r] += n
    return decided.filter(pl.col("_reason").is_null()).drop("_reason")


def human_ids(translated: pl.DataFrame, key: str) -> frozenset[str]:
    """Values of `key` (segment_id or text_hash) of the rows carrying a human text (see apply_review)."""
    if "text_source" not in translated.columns:
        return frozenset()
    return frozenset(translated.filter(pl.col("text_source") == "human")[key].to_list())


def in_order(batch: dict[str, bytes]) -> list[tuple[str, bytes]]:
    """One img2dataset shard's images in key order.  Inside a shard img2dataset stores images in the
    order its threads finish them, which changes from run to run; its keys follow the URL list's order
    (shard number, then position), so sorting by them makes every shard file, and everything trained
    on it, the same on every run.  Batches themselves come in shard-file name order."""
    return sorted(batch.items())


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The concatenated ranges [start, start + length) (numpy, no Python loop)."""
    total = int(lengths.sum())
    if not total:
        return np.zeros(0, dtype=np.int64)
    return np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths) + np.arange(total)


def attach_images(kept: pl.DataFrame, images_dir: Path) -> Iterator[tuple[pl.DataFrame, pa.Array]]:
    """Per img2dataset batch: the rows of `kept` whose image the batch holds, and those images.

    `kept` is sorted by `_address`, so an image's rows are one contiguous run found by binary search.
    Rows come in image order (batches in name order, keys sorted inside each, see `in_order`), an
    image's rows in their order in `kept`; `_image` indexes the yielded images.  An image met in two
    batches is attached once, the first time."""
    if not kept.height:
        return
    addresses = kept["_address"]
    written = np.zeros(kept.height, dtype=bool)  # rows whose image was already attached
    for batch in iter_image_batches(images_dir):
        if not batch:
            continue
        keys, jpgs = zip(*in_order(batch), strict=True)
        wanted = pl.Series(keys, dtype=pl.String)
        lo = addresses.search_sorted(wanted, "left").to_numpy().astype(np.int64)
        hi = addresses.search_sorted(wanted, "right").to_numpy().astype(np.int64)
        use = (hi > lo) & ~written[np.minimum(lo, kept.height - 1)]
        if not use.any():
            continue
        lo, hi, image = lo[use], hi[use], np.flatnonzero(use)
        rows_idx = ranges(lo, hi - lo)
        written[rows_idx] = True
        rows = kept[rows_idx].with_columns(pl.Series("_image", np.repeat(np.arange(len(image)), hi - lo)))
        yield rows, pa.array(jpgs, pa.binary()).take(pa.array(image))


def write_parts(kept: pl.DataFrame, images_dir: Path, writer: RollingWriter, stats: ShardStats,
                to_table: Callable[[pl.DataFrame, pa.Array], pa.Table]) -> ShardStats:
    """Write `kept` with its images (`attach_images`; `to_table(rows, images)` lays out one batch's rows)
    into `writer`'s part files and count them.  A kept row whose image was listed as downloaded but
    whose bytes are not in the img2dataset output (a deleted shard, say) is `image_bytes_missing`."""
    written = 0
    for rows, images in attach_images(kept, images_dir):
        written += rows.height
        stats.images += len(images)
        stats.kept += rows.height
        stats.human_corrected += int(rows["_human"].sum())
        if "_kept_by" in rows.columns:  # only a builder with a drop policy has rows the review kept
            stats.kept_by_review.update(dict(rows["_kept_by"].drop_nulls().value_counts().rows()))
        writer.add_table(to_table(rows, images))
    if missing := kept.height - written:
        stats.dropped["image_bytes_missing"] += missing
    writer.flush()
    stats.files = writer.files
    return stats
