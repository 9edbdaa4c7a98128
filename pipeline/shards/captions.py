"""Caption shards (CC3M, COCO): one row per (image, caption) for training, one row per image with all its
kept references for evaluation."""
from __future__ import annotations

from functools import partial
from pathlib import Path

import polars as pl
import pyarrow as pa

from pipeline.shards.common import (
    FilterPolicy,
    RollingWriter,
    ShardStats,
    keep_rows,
    with_address,
    write_parts,
)
from training.shards import CAPTION_SHARD, EVAL_CAPTION_SHARD

# What Python's str.strip() removes (str.isspace), so "empty" means what `not text_pt.strip()` means;
# polars' own whitespace set leaves out \x1c-\x1f.
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
    qe: pl.DataFrame | None = None,
    min_qe: float | None = None,
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

    qe (text_hash, qe) and min_qe: a row whose machine text scores below min_qe is dropped as
    `qe_below_min`, after the flags (a person's text is kept: its QE was the machine's).
    """
    captions = _caption_rows(translated)
    if min_qe is not None:
        if qe is None:
            raise ValueError("build_caption_shards: min_qe needs the QE scores (qe)")
        captions = captions.join(qe.select("text_hash", "qe"), on="text_hash", how="left", maintain_order="left")
    else:
        captions = captions.with_columns(pl.lit(None, pl.Float64).alias("qe"))
    stats = ShardStats(total=captions.height)
    reason = _policy_reason("text_pt", "flags", policy, min_qe, human_text=True)
    reason = pl.when(reason.is_null() & pl.col("_address").is_null()).then(pl.lit("image_unavailable")).otherwise(reason)
    kept = keep_rows(stats, with_address(captions, "item_id", availability), reason)
    kept = kept.sort("_address", "_row").select(
        "_address", "segment_id", "item_id", "text_pt", "text_en", "dataset", "split",
        pl.col("flags").fill_null(pl.lit([], pl.List(pl.String))), "text_source", "text_pt_machine",
        pl.col("flags_machine").fill_null(pl.lit([], pl.List(pl.String))),
        (pl.col("text_source") == "human").alias("_human"), _kept_by(policy, min_qe).alias("_kept_by"))
    schema, to_table = (EVAL_CAPTION_SHARD, _eval_table) if group_by_image else (CAPTION_SHARD, _train_table)
    return write_parts(kept, images_dir, RollingWriter(out_dir, schema, rows_per_shard), stats,
                       partial(to_table, engine=engine))


def _caption_rows(translated: pl.DataFrame) -> pl.DataFrame:
    """The caption rows of `translated` with the review's provenance columns (apply_review; without them
    every text is the machine's) and `_row`, their order.  Only the columns the shards use, selected
    before the filter copies them (3.3M rows: flag_reasons, text_hash and engine_id would be ~0.5 GB for
    nothing)."""
    cols = translated.columns
    flags = pl.col("flags") if "flags" in cols else pl.lit(None, pl.List(pl.String)).alias("flags")
    return translated.select(
        "segment_id", "item_id", "text_pt", "text_en", "text_hash", "dataset", "split", "field", flags,
        pl.col("text_source") if "text_source" in cols else pl.lit("machine").alias("text_source"),
        pl.col("text_pt_machine") if "text_pt_machine" in cols else pl.col("text_pt").alias("text_pt_machine"),
        pl.col("flags_machine") if "flags_machine" in cols else flags.alias("flags_machine"),
    ).filter(pl.col("field") == "caption").drop("field").with_row_index("_row")


def _policy_reason(text: str, flags: str, policy: FilterPolicy, min_qe: float | None = None, *,
                   human_text: bool = False) -> pl.Expr:
    """Why `policy` drops a row with `flags` (and `text`): "flag_empty" for an empty text when the policy
    drops "empty", else the first of the policy's flags the row carries, in policy order, else
    "qe_below_min" when its QE is under `min_qe` (with `human_text`, never for a person's text); null when
    the policy keeps it."""
    reason = pl.lit(None, pl.String)
    if min_qe is not None:
        low = pl.col("qe") < min_qe
        if human_text:
            low = low & (pl.col("text_source") != "human")
        reason = pl.when(low.fill_null(False)).then(pl.lit("qe_below_min")).otherwise(reason)
    for flag in reversed(policy.drop):  # built inside out: the first flag of the policy wins
        reason = pl.when(pl.col(flags).list.contains(flag)).then(pl.lit(f"flag_{flag}")).otherwise(reason)
    if "empty" in policy.drop:
        empty = pl.col(text).fill_null("").str.strip_chars(_PY_WHITESPACE) == ""
        reason = pl.when(empty).then(pl.lit("flag_empty")).otherwise(reason)
    return reason


def _kept_by(policy: FilterPolicy, min_qe: float | None = None) -> pl.Expr:
    """Why a kept row that the policy would have dropped for its machine text alone is kept: a person's
    text ("human_text") or a flag judged a false alarm ("false_alarm"); null otherwise."""
    return (pl.when(_policy_reason("text_pt_machine", "flags_machine", policy, min_qe).is_not_null())
            .then(pl.when(pl.col("text_source") == "human").then(pl.lit("human_text"))
                  .otherwise(pl.lit("false_alarm"))).otherwise(pl.lit(None, pl.String)))


def _train_table(rows: pl.DataFrame, images: pa.Array, *, engine: str) -> pa.Table:
    """CAPTION_SHARD rows: one per caption, each with its image."""
    return rows.select(
        pl.col("segment_id").alias("sample_id"), pl.col("item_id").alias("image_id"),
        pl.col("text_pt").alias("caption"), pl.col("text_en").alias("caption_en"), "dataset", "split",
        pl.lit(engine).alias("engine"), "flags", "text_source",
        pl.col("text_pt_machine").alias("caption_machine"), "flags_machine",
    ).to_arrow().append_column("image", images.take(pa.array(rows["_image"].to_numpy())))


def _eval_table(rows: pl.DataFrame, images: pa.Array, *, engine: str) -> pa.Table:
    """EVAL_CAPTION_SHARD rows: one per image (its rows are one run), its captions as lists."""
    per_image = rows.group_by("_image", maintain_order=True).agg(
        pl.col("item_id").first().alias("image_id"), pl.col("text_pt").alias("captions"),
        pl.col("text_en").alias("captions_en"), pl.col("dataset").first(), pl.col("split").first())
    return per_image.with_columns(pl.lit(engine).alias("engine")).to_arrow().append_column("image", images)
