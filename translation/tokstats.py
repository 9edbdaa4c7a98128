"""Token statistics of translated datasets (thesis Table 5.2): samples, tokens, tokens/sample per column.

Word level by default: a token is a maximal run of non-whitespace, so "plenty of space : at" is 5 tokens,
the convention behind the thesis' 10.30 tokens per CC3M caption.  Any Hugging Face tokenizer can be used
instead (name or local path), to see the sequence length the trainer pays for.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl

from ptvl_io.formatting import md_cell

ENGLISH = "English"
KEYS = ("dataset", "split")
_INPUT_COLUMNS = ("segment_id", "dataset", "split", "engine", "text_en", "text_pt")


def _scan(source: str | Path | pl.LazyFrame) -> pl.LazyFrame:
    return source if isinstance(source, pl.LazyFrame) else pl.scan_parquet(source)


def _hf_counter(tokenizer: str | Path, batch_size: int) -> Callable[[pl.Series], pl.Series]:
    from transformers import (
        AutoTokenizer,  # deferred: transformers loads only when a tokenizer or model is needed
    )

    tok = AutoTokenizer.from_pretrained(str(tokenizer))

    def count(texts: pl.Series) -> pl.Series:
        out: list[int | None] = []
        values = texts.to_list()
        for i in range(0, len(values), batch_size):
            batch = values[i:i + batch_size]
            present = [t for t in batch if t is not None]
            ids = tok(present, add_special_tokens=False)["input_ids"] if present else []
            it = iter(ids)
            out.extend(None if t is None else len(next(it)) for t in batch)
        return pl.Series(out, dtype=pl.Int64)

    return count


def token_stats(
    sources: Sequence[str | Path | pl.LazyFrame],
    tokenizer: str | Path | None = None,
    *,
    drop_flags: Sequence[str] = (),
    batch_size: int = 4096,
) -> pl.DataFrame:
    """Samples, tokens and tokens/sample per (dataset, split, column), `column` being "English" or an engine.

    sources: translated parquet files (or LazyFrames) with the TRANSLATED columns, any engines mixed.
    English is counted once per distinct segment_id across all sources.  Null outputs are not samples.
    drop_flags: rows of an engine whose `flags` list holds one of these are left out of that engine's
    column (e.g. ("untranslated",) reproduces the thesis' lower Narrativa count); English keeps them.
    tokenizer: None for word level (polars, vectorised), else a Hugging Face tokenizer name or path
    (AutoTokenizer, batched, no special tokens).
    Returns columns dataset, split, column, samples, tokens, tokens_per_sample, sorted.
    """
    if not sources:
        raise ValueError("token_stats: no sources given")
    count = _hf_counter(tokenizer, batch_size) if tokenizer is not None else None
    per_source = []
    for src in sources:
        lf = _scan(src)
        names = lf.collect_schema().names()
        missing = [c for c in _INPUT_COLUMNS if c not in names]
        if missing:
            raise ValueError(f"token_stats: {src!r} lacks columns {missing}")
        keep = pl.lit(True)
        if drop_flags and "flags" in names:
            keep = ~pl.col("flags").fill_null([]).list.eval(pl.element().is_in(list(drop_flags))).list.any()
        per_source.append(lf.select("segment_id", *KEYS, "engine", "text_en", "text_pt", keep.alias("_keep")))
    # Both text columns are counted in one pass (polars runs the two expressions in parallel); the strings
    # are dropped right after, so only small integer columns are deduplicated and grouped.
    rows = pl.concat(per_source, how="vertical_relaxed")
    if tokenizer is None:
        counted = rows.select(
            "segment_id", *KEYS, "engine", "_keep",
            _word_count(pl.col("text_en")).alias("en_tokens"), _word_count(pl.col("text_pt")).alias("pt_tokens"),
        ).collect()
    else:
        eager = rows.collect()
        counted = eager.select(
            "segment_id", *KEYS, "engine", "_keep",
            count(eager["text_en"]).alias("en_tokens"), count(eager["text_pt"]).alias("pt_tokens"),
        )
    english = counted.filter(pl.col("en_tokens").is_not_null())
    if len(sources) > 1:  # the same segment appears once per engine: English counts it once
        english = english.unique(subset=["segment_id"], keep="any", maintain_order=False)
    english_stats = english.group_by(*KEYS).agg(
        pl.len().alias("samples"), pl.col("en_tokens").sum().alias("tokens"), pl.lit(ENGLISH).alias("column"))
    engine_stats = (
        counted.filter(pl.col("_keep") & pl.col("pt_tokens").is_not_null())
        .group_by(*KEYS, pl.col("engine").alias("column"))
        .agg(pl.len().alias("samples"), pl.col("pt_tokens").sum().alias("tokens"))
    )
    return (
        pl.concat([english_stats.select(*KEYS, "column", "samples", "tokens"), engine_stats], how="vertical_relaxed")
        .with_columns(pl.col("samples").cast(pl.Int64), pl.col("tokens").cast(pl.Int64))
        .with_columns((pl.col("tokens") / pl.col("samples")).alias("tokens_per_sample"))
        .with_columns(pl.col("column").eq(ENGLISH).alias("_en"))
        .sort(*KEYS, "_en", "column", descending=[False, False, True, False])
        .drop("_en")
    )


def _word_count(texts: pl.Expr) -> pl.Expr:
    # A token is a maximal run of non-whitespace; null stays null (not a sample).
    return texts.str.count_matches(r"\S+").cast(pl.Int64)


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def render_table_5_2(df: pl.DataFrame, *, merge_splits: bool = False) -> str:
    """Markdown in the thesis layout: rows dataset x statistic, columns English then the engines.

    merge_splits=True sums the splits of a dataset (the thesis reports CC3M and COCO as one block each);
    otherwise each block is labelled "dataset / split".
    """
    if df.is_empty():
        return "_no token statistics_\n"
    if merge_splits:
        df = (
            df.group_by("dataset", "column")
            .agg(pl.col("samples").sum(), pl.col("tokens").sum())
            .with_columns((pl.col("tokens") / pl.col("samples")).alias("tokens_per_sample"), pl.lit("").alias("split"))
        )
    engines = sorted(c for c in df["column"].unique().to_list() if c != ENGLISH)
    columns = ([ENGLISH] if ENGLISH in df["column"].to_list() else []) + engines
    lines = ["| | statistic | " + " | ".join(md_cell(c) for c in columns) + " |", "|---|---|" + "---|" * len(columns)]
    blocks = df.select("dataset", "split").unique().sort("dataset", "split").rows()
    for dataset, split in blocks:
        part = df.filter((pl.col("dataset") == dataset) & (pl.col("split") == split))
        by_col = {r["column"]: r for r in part.iter_rows(named=True)}
        label = dataset if merge_splits else f"{dataset} / {split}"
        for i, (name, key, fmt) in enumerate([
            ("samples", "samples", _fmt_int), ("tokens", "tokens", _fmt_int),
            ("tokens/sample", "tokens_per_sample", lambda x: f"{x:.2f}"),
        ]):
            cells = [fmt(by_col[c][key]) if c in by_col else "–" for c in columns]
            lines.append(f"| {md_cell(label) if i == 0 else ''} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
