"""BuildShards: join translations, quality flags and downloaded images into the trainer's Parquet shards.

Contracts are training/shards.py (CAPTION_SHARD, EVAL_CAPTION_SHARD, VISDIAL_SHARD, VQA_SHARD).
Rows leave the training set for a recorded reason only (datatrove style: `total`, `kept`,
`dropped_<reason>`), and those counts go into the dataset card beside the shards.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from pipeline.image_store import image_address, iter_image_batches
from pipeline.io import atomic_path
from training.shards import CAPTION_SHARD, EVAL_CAPTION_SHARD, VISDIAL_SHARD, VQA_SHARD
from translation.textkey import text_hash


class FilterPolicy(BaseModel):
    """Which quality flags keep a caption out of the shards.  The default drops empty and untranslated
    rows: this reproduces the thesis' Narrativa sample drop (SPEC Table 5.2)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    drop: list[str] = ["empty", "untranslated"]


class ShardSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # ~40k rows of 256-px JPEGs is about 1 GB: large enough for fast sequential reads, small enough to
    # shuffle at shard granularity and to resume a failed copy.
    rows_per_shard: int = 40_000
    default_policy: FilterPolicy = FilterPolicy()
    # engine name -> policy overriding the default (e.g. madlad = {drop = ["empty", "untranslated", "brazilian"]})
    policy: dict[str, FilterPolicy] = {}

    def policy_for(self, engine: str) -> FilterPolicy:
        return self.policy.get(engine, self.default_policy)


@dataclass
class ShardStats:
    total: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    files: list[str] = field(default_factory=list)
    images: int = 0

    def as_dict(self) -> dict:
        return {
            "total": self.total,
            "kept": self.kept,
            **{f"dropped_{k}": v for k, v in sorted(self.dropped.items())},
            "images": self.images,
            "files": self.files,
        }


class _RollingWriter:
    """Parquet part files of exactly `rows_per_shard` rows (the last one fewer), each renamed into place
    when complete.  Rows come one dict at a time (`add`) or as Arrow tables (`add_table`, the vectorised
    caption builder); a writer takes one kind only, and both cut the same files."""

    def __init__(self, out_dir: Path, schema: pa.Schema, rows_per_shard: int):
        self.out_dir, self.schema, self.rows_per_shard = out_dir, schema, rows_per_shard
        self.buffer: list[dict] = []
        self.tables: list[pa.Table] = []
        self.buffered = 0
        self.files: list[str] = []

    def add(self, row: dict) -> None:
        self.buffer.append(row)
        if len(self.buffer) >= self.rows_per_shard:
            self.flush()

    def add_table(self, table: pa.Table) -> None:
        self.tables.append(table.select(self.schema.names).cast(self.schema))
        self.buffered += table.num_rows
        while self.buffered >= self.rows_per_shard:
            whole = pa.concat_tables(self.tables)
            self._write(whole.slice(0, self.rows_per_shard))
            rest = whole.slice(self.rows_per_shard)
            self.tables, self.buffered = ([rest] if rest.num_rows else []), rest.num_rows

    def flush(self) -> None:
        if self.buffer:
            self._write(pa.Table.from_pylist(self.buffer, schema=self.schema))
            self.buffer = []
        if self.buffered:
            self._write(pa.concat_tables(self.tables))
            self.tables, self.buffered = [], 0

    def _write(self, table: pa.Table) -> None:
        dest = self.out_dir / f"part-{len(self.files):05d}.parquet"
        with atomic_path(dest) as tmp:
            pq.write_table(table, tmp, compression="zstd")
        self.files.append(dest.name)


def _finish(writer: _RollingWriter, stats: ShardStats, missing_bytes: int) -> ShardStats:
    """Flush the last part and count rows whose image was listed as downloaded but whose bytes are not
    in the img2dataset output (a deleted shard, say)."""
    if missing_bytes:
        stats.dropped["image_bytes_missing"] += missing_bytes
    writer.flush()
    stats.files = writer.files
    return stats


def _in_order(batch: dict[str, bytes]) -> list[tuple[str, bytes]]:
    """One img2dataset shard's images in key order.  Inside a shard img2dataset stores images in the
    order its threads finish them, which changes from run to run; its keys follow the URL list's order
    (shard number, then position), so sorting by them makes every shard file, and everything trained
    on it, the same on every run.  Batches themselves come in shard-file name order."""
    return sorted(batch.items())


def _policy_reason(flags: list[str] | None, policy: FilterPolicy) -> str | None:
    for flag in policy.drop:
        if flags and flag in flags:
            return f"flag_{flag}"
    return None


def _available(availability: pl.DataFrame) -> dict[str, str]:
    """image_id -> image address (shards_dir/key) of every downloaded image."""
    ok = availability.filter(pl.col("status") == "success")
    return {
        i: image_address(d, k)
        for i, d, k in zip(ok["image_id"].to_list(), ok["shards_dir"].to_list(), ok["key"].to_list(), strict=False)
    }


# What Python's str.strip() removes (str.isspace), so "empty" means the same here as in the per-row rule
# `not text_pt.strip()`; polars' own whitespace set leaves out \x1c-\x1f.
_PY_WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())


def build_caption_shards(
    translated: pl.DataFrame,
    availability: pl.DataFrame,
    images_dir: Path,
    out_dir: Path,
    *,
    engine: str,
    policy: FilterPolicy,
    rows_per_shard: int,
    group_by_image: bool,
) -> ShardStats:
    """Write caption shards for one (engine, dataset, split).

    group_by_image=False: training layout, one row per (image, caption) (CAPTION_SHARD).
    group_by_image=True: evaluation layout, one row per image with all its kept references
    (EVAL_CAPTION_SHARD; COCO keeps 5).

    Rows are decided and gathered with polars/Arrow, never one Python dict per caption (3.3M CC3M rows):
    a caption is dropped for the first of: empty output (when the policy drops "empty"), the policy's
    flags in policy order, no downloaded image.  Kept rows go out in image order (img2dataset shards in
    name order, keys sorted inside each), an image's captions in their order in `translated`; an
    image met twice is written once.
    """
    stats = ShardStats()
    captions = translated.filter(pl.col("field") == "caption").with_row_index("_row")
    if "flags" not in captions.columns:
        captions = captions.with_columns(pl.lit(None, pl.List(pl.String)).alias("flags"))
    stats.total = captions.height
    ok = availability.filter(pl.col("status") == "success")
    # image_id -> address; the last row wins when an id repeats, as a dict built from the rows would.
    address = ok.select(pl.col("image_id").alias("item_id"),
                        (pl.col("shards_dir") + "/" + pl.col("key")).alias("_address")
                        ).unique("item_id", keep="last", maintain_order=True)
    reason = pl.lit(None, pl.String)
    for flag in reversed(policy.drop):  # built inside out: the first flag of the policy wins
        reason = pl.when(pl.col("flags").list.contains(flag)).then(pl.lit(f"flag_{flag}")).otherwise(reason)
    if "empty" in policy.drop:
        empty = pl.col("text_pt").fill_null("").str.strip_chars(_PY_WHITESPACE) == ""
        reason = pl.when(empty).then(pl.lit("flag_empty")).otherwise(reason)
    reason = pl.when(reason.is_null() & pl.col("_address").is_null()).then(pl.lit("image_unavailable")).otherwise(reason)
    decided = captions.join(address, on="item_id", how="left", maintain_order="left").with_columns(
        reason.alias("_reason"))
    for r, n in decided.filter(pl.col("_reason").is_not_null()).group_by("_reason").len().iter_rows():
        stats.dropped[r] += n
    # Kept rows sorted by (address, row): an image's captions are one contiguous run, found by binary search.
    kept = decided.filter(pl.col("_reason").is_null()).sort("_address", "_row").select(
        "_address", "segment_id", "item_id", "text_pt", "text_en", "dataset", "split",
        pl.col("flags").fill_null(pl.lit([], pl.List(pl.String))))
    addresses = kept["_address"]
    written = np.zeros(kept.height, dtype=bool)  # rows of an image already written (an image met twice)

    schema = EVAL_CAPTION_SHARD if group_by_image else CAPTION_SHARD
    writer = _RollingWriter(out_dir, schema, rows_per_shard)
    for batch in iter_image_batches(images_dir):
        if not batch or not kept.height:
            continue
        keys, jpgs = zip(*_in_order(batch), strict=True)
        wanted = pl.Series(keys, dtype=pl.String)
        lo = addresses.search_sorted(wanted, "left").to_numpy().astype(np.int64)
        hi = addresses.search_sorted(wanted, "right").to_numpy().astype(np.int64)
        use = (hi > lo) & ~written[np.minimum(lo, kept.height - 1)]
        if not use.any():
            continue
        lo, hi, image = lo[use], hi[use], np.flatnonzero(use)
        lengths = hi - lo
        rows_idx = np.repeat(lo - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths) + np.arange(lengths.sum())
        written[rows_idx] = True
        rows = kept[rows_idx].with_columns(pl.Series("_image", np.repeat(np.arange(len(image)), lengths)))
        images = pa.array(jpgs, pa.binary()).take(pa.array(image))
        stats.images += len(image)
        stats.kept += rows.height
        if group_by_image:
            per_image = rows.group_by("_image", maintain_order=True).agg(
                pl.col("item_id").first().alias("image_id"), pl.col("text_pt").alias("captions"),
                pl.col("text_en").alias("captions_en"), pl.col("dataset").first(), pl.col("split").first())
            table = per_image.with_columns(pl.lit(engine).alias("engine")).to_arrow().append_column("image", images)
        else:
            table = rows.select(
                pl.col("segment_id").alias("sample_id"), pl.col("item_id").alias("image_id"),
                pl.col("text_pt").alias("caption"), pl.col("text_en").alias("caption_en"), "dataset", "split",
                pl.lit(engine).alias("engine"), "flags",
            ).to_arrow().append_column("image", images.take(pa.array(rows["_image"].to_numpy())))
        writer.add_table(table)
    return _finish(writer, stats, int((~written).sum()))


def build_visdial_shards(
    translated: pl.DataFrame,
    dialogs: pl.DataFrame,
    availability: pl.DataFrame,
    images_dir: Path,
    out_dir: Path,
    *,
    engine: str,
    rows_per_shard: int,
    context_translated: pl.DataFrame | None = None,
    empty_segments: frozenset[str] = frozenset(),
) -> ShardStats:
    """Rebuild VisDial dialogs in PT from the translated global question/answer lists.

    empty_segments: ids (``visdial/<split>/<question|answer>/<i>``) of global strings that are empty in
    the source, so never segments: a dialog may still point at them, and they rebuild as "". Any other
    id missing from `translated` is an error naming it (an incomplete translation, never a guess).

    context_translated: None (translate.visdial_context off) rebuilds every string from the
    context-free global lists.  Given (VISDIAL_CONTEXT_TRANSLATED rows), each round's question and
    answer -- the dialog's history -- come from the translations made with the dialog's caption as
    context, while the 100 answer options stay the context-free translations of the global answer
    list.  `gt_index` is unchanged: it points at the option whose EN string is the ground-truth answer,
    and that option's PT text is its context-free translation, which may differ from the round's
    context-translated `answer`.  That is deliberate: replacing only the right option by its context
    translation would make it the one option translated differently from the other 99, a cue a model
    could rank by; every option is translated the same way, so ranking stays fair, and the history
    reads as the dialog's own text.  A dialog text missing from `context_translated` is an error,
    never a silent fall back to the context-free string.

    No quality filter: every round needs its 100 options for the benchmark; flags are counted in the
    comparison report instead.
    """
    stats = ShardStats(total=dialogs.height)
    pt = dict(zip(translated["segment_id"].to_list(), translated["text_pt"].to_list(), strict=False))
    en = dict(zip(translated["segment_id"].to_list(), translated["text_en"].to_list(), strict=False))
    context_pt: dict[tuple[str, int, str], str] | None = None
    if context_translated is not None:
        context_pt = {
            (i, k, f): t
            for i, k, f, t in context_translated.select("image_id", "round", "field", "text_pt").iter_rows()
        }

    def text(segment_id: str) -> str:
        if segment_id in pt:
            return pt[segment_id]
        if segment_id in empty_segments:
            return ""
        raise ValueError(f"{segment_id}: no translation (translated/<engine>/visdial/<split>.parquet is "
                         "incomplete, or the string is not in the source's global lists)")

    def history(image_id: str, k: int, field: str, index: int | None, base: str) -> str | None:
        if index is None:
            return None
        if context_pt is None:
            return text(f"{base}/{field}/{index}")
        try:
            return context_pt[(image_id, k, field)]
        except KeyError:
            raise ValueError(f"{image_id} round {k} {field}: no translation with caption context "
                             "(translated/<engine>/visdial/<split>.context.parquet is incomplete)") from None

    key_of = _available(availability)
    by_key: dict[str, dict] = {}
    for d in dialogs.iter_rows(named=True):
        if d["image_id"] not in key_of:
            stats.dropped["image_unavailable"] += 1
            continue
        base = "visdial/" + d["caption_segment_id"].split("/")[1]
        rounds = [
            {
                "question": history(d["image_id"], k, "question", r["question"], base),
                "answer": history(d["image_id"], k, "answer", r["answer"], base),
                "answer_options": [text(f"{base}/answer/{o}") for o in r["answer_options"]],
                "gt_index": r["gt_index"],
            }
            for k, r in enumerate(d["rounds"], 1)
        ]
        by_key[key_of[d["image_id"]]] = {
            "image_id": d["image_id"],
            "caption": pt[d["caption_segment_id"]],
            "caption_en": en[d["caption_segment_id"]],
            "rounds": rounds,
            "dense_round": d["dense_round"],
            "dense_relevance": d["dense_relevance"],
            "engine": engine,
        }
    writer = _RollingWriter(out_dir, VISDIAL_SHARD, rows_per_shard)
    for batch in iter_image_batches(images_dir):
        for key, jpg in _in_order(batch):
            row = by_key.pop(key, None)
            if row is not None:
                stats.kept += 1
                stats.images += 1
                writer.add({**row, "image": jpg})
    return _finish(writer, stats, len(by_key))


def build_vqa_shards(
    translated: pl.DataFrame,
    questions: pl.DataFrame,
    availability: pl.DataFrame,
    images_dir: Path,
    out_dir: Path,
    *,
    engine: str,
    rows_per_shard: int,
) -> ShardStats:
    """VQAv2 questions in PT, one row per question (VQA_SHARD), from the VQA_QUESTIONS table.

    The question's PT text comes from its segment; each of the 10 answers' PT text from the answer
    segment with the English answer's text_hash (distinct answers are translated once).  An empty
    answer stays empty.  No quality filter, as for VisDial: a benchmark keeps every question it can;
    a question whose question or answer has no translation is dropped as `missing_translation`.
    """
    stats = ShardStats(total=questions.height)
    seg_pt = dict(zip(translated["segment_id"].to_list(), translated["text_pt"].to_list(), strict=False))
    seg_en = dict(zip(translated["segment_id"].to_list(), translated["text_en"].to_list(), strict=False))
    answers = translated.filter(pl.col("field") == "answer")
    answer_pt = dict(zip(answers["text_hash"].to_list(), answers["text_pt"].to_list(), strict=False))
    answer_pt[text_hash("")] = ""
    key_of = _available(availability)
    by_key: dict[str, list[dict]] = {}
    for q in questions.iter_rows(named=True):
        if q["image_id"] not in key_of:
            stats.dropped["image_unavailable"] += 1
            continue
        pt_answers = [answer_pt.get(text_hash(a)) for a in q["answers"]]
        if seg_pt.get(q["question_segment_id"]) is None or any(a is None for a in pt_answers):
            stats.dropped["missing_translation"] += 1
            continue
        by_key.setdefault(key_of[q["image_id"]], []).append(
            {
                "question_id": q["question_id"],
                "image_id": q["image_id"],
                "question": seg_pt[q["question_segment_id"]],
                "question_en": seg_en[q["question_segment_id"]],
                "answers": pt_answers,
                "answers_en": list(q["answers"]),
                "answer_type": q["answer_type"],
                "engine": engine,
            }
        )
    writer = _RollingWriter(out_dir, VQA_SHARD, rows_per_shard)
    for batch in iter_image_batches(images_dir):
        for key, jpg in _in_order(batch):
            rows = by_key.pop(key, None)
            if rows is None:
                continue
            stats.images += 1
            for row in rows:
                stats.kept += 1
                writer.add({**row, "image": jpg})
    return _finish(writer, stats, sum(len(rows) for rows in by_key.values()))
