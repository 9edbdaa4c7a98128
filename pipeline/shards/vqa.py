"""VQAv2 shards: one row per question, the question and its 10 answers in PT."""
from __future__ import annotations

from functools import partial
from pathlib import Path

import polars as pl
import pyarrow as pa

from pipeline.shards.common import RollingWriter, ShardStats, human_ids, keep_rows, with_address, write_parts
from training.shards import VQA_SHARD
from translation.textkey import text_hash


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
    Questions go out in image order (see `attach_images`), an image's questions in their order in
    `questions`.
    """
    stats = ShardStats(total=questions.height)
    rows = with_address(questions.with_row_index("_row"), "image_id", availability)
    rows = _with_pt(rows, translated)
    missing = pl.col("question").is_null() | pl.col("answers_pt").list.eval(pl.element().is_null()).list.any()
    reason = (pl.when(pl.col("_address").is_null()).then(pl.lit("image_unavailable"))
              .when(missing).then(pl.lit("missing_translation")).otherwise(pl.lit(None, pl.String)))
    kept = keep_rows(stats, rows, reason).sort("_address", "_row")
    return write_parts(kept, images_dir, RollingWriter(out_dir, VQA_SHARD, rows_per_shard), stats,
                       partial(_table, engine=engine))


def _with_pt(rows: pl.DataFrame, translated: pl.DataFrame) -> pl.DataFrame:
    """`rows` with the PT `question` and `question_en` of their question segment (the last row of a
    repeated segment id), `answers_pt` (each EN answer's PT text by text_hash, null when untranslated)
    and `_human` (the question or one of the answers carries a person's text)."""
    segments = translated.select(
        pl.col("segment_id").alias("question_segment_id"), pl.col("text_pt").alias("question"),
        pl.col("text_en").alias("question_en"),
    ).unique("question_segment_id", keep="last")
    answers = _answer_pt(rows["answers"], translated)
    human_answers = answers.filter(pl.col("human"))["en"].implode()
    return rows.join(segments, on="question_segment_id", how="left", maintain_order="left").with_columns(
        pl.col("answers").list.eval(pl.element().replace_strict(
            answers["en"], answers["pt"], default=None, return_dtype=pl.String)).alias("answers_pt"),
        (pl.col("question_segment_id").is_in(list(human_ids(translated, "segment_id")))
         | pl.col("answers").list.eval(pl.element().is_in(human_answers)).list.any()).alias("_human"),
    )


def _answer_pt(answers: pl.Series, translated: pl.DataFrame) -> pl.DataFrame:
    """Every distinct EN answer (`en`) with its PT text (`pt`: the answer segment of its text_hash, the
    last one when a hash repeats; "" for the empty answer; null when untranslated) and whether a person
    wrote it (`human`).  text_hash runs once per distinct answer, not once per answer."""
    translations = translated.filter(pl.col("field") == "answer")
    human = human_ids(translations, "text_hash")
    en = answers.explode().drop_nulls().unique(maintain_order=True)
    return pl.DataFrame({"en": en, "text_hash": [text_hash(a) for a in en]}, schema={
        "en": pl.String, "text_hash": pl.String,
    }).join(translations.select("text_hash", "text_pt").unique("text_hash", keep="last"), on="text_hash",
            how="left", maintain_order="left").select(
        "en",
        pl.when(pl.col("text_hash") == text_hash("")).then(pl.lit("")).otherwise(pl.col("text_pt")).alias("pt"),
        pl.col("text_hash").is_in(list(human)).alias("human"),
    )


def _table(rows: pl.DataFrame, images: pa.Array, *, engine: str) -> pa.Table:
    """VQA_SHARD rows: one per question, each with its image."""
    return rows.select(
        "question_id", "image_id", "question", "question_en", pl.col("answers_pt").alias("answers"),
        pl.col("answers").alias("answers_en"), "answer_type", pl.lit(engine).alias("engine"),
    ).to_arrow().append_column("image", images.take(pa.array(rows["_image"].to_numpy())))
