"""The per-table path: `flag_table` (vectorised pre-filter, then the per-row detectors on the candidates, on a
process pool when there are many), its plain reference `flag_table_reference`, and `flag_rates`.

polars computes, for every distinct row, each registered flag's `candidates` condition: true whenever its
detector could fire (a superset: lexicon and grammar regexes without their guards, any digit in the source,
any token seen three times, ...).  Each condition is one bit of a mask; only rows with a bit set run
`flag_details`, and only the detectors of their bits, so the result is identical by construction; every
other row is clean.  A row with a character outside `SAFE_CHARS` (where polars' and Python's text handling
may differ) gets every bit.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from functools import cache

import polars as pl

from translation.quality.base import Columns
from translation.quality.details import flag_details
from translation.quality.registry import FLAG_NAMES, FLAGS
from translation.quality.thresholds import DEFAULT_THRESHOLDS, QualityThresholds

# Rows at or above this count of candidates run on a process pool (one worker per core).
PARALLEL_MIN_ROWS = 20_000
_SLICE_ROWS = 1_000_000
# One bit per registered flag, in registry order; an unsafe row gets them all.
_ALL_BITS = (1 << len(FLAGS)) - 1


@cache
def _only(bits: int) -> frozenset[str]:
    """The names of the flags whose bits are set in `bits`: the detectors a candidate row runs."""
    return frozenset(f.name for i, f in enumerate(FLAGS) if bits >> i & 1)


def flag_table_reference(df: pl.DataFrame, thresholds: QualityThresholds | None = None, *,
                         text_en: str = "text_en", text_pt: str = "text_pt", score: str = "score") -> pl.DataFrame:
    """`flag_table` computed the plain way: `flag_details` on every distinct row (the behaviour the
    vectorised path must reproduce exactly; kept for tests and the benchmark)."""
    th = thresholds or DEFAULT_THRESHOLDS
    df, keys = _with_score(df, score), [text_en, text_pt, score]
    uniq = df.select(keys).unique()
    return _join_back(df, uniq, [flag_details(e or "", p, s, th) for e, p, s in uniq.iter_rows()], keys)


def _with_score(df: pl.DataFrame, score: str) -> pl.DataFrame:
    return df if score in df.columns else df.with_columns(pl.lit(None, dtype=pl.Float32).alias(score))


def _join_back(df: pl.DataFrame, uniq: pl.DataFrame, details: list[dict[str, str]], keys: list[str]) -> pl.DataFrame:
    uniq = uniq.with_columns(
        pl.Series("flags", [list(d) for d in details], dtype=pl.List(pl.String)),
        pl.Series("flag_reasons", [list(d.values()) for d in details], dtype=pl.List(pl.String)),
    )
    out = df.drop([c for c in ("flags", "flag_reasons") if c in df.columns])
    return out.join(uniq, on=keys, how="left", nulls_equal=True, maintain_order="left")



def _candidate_bits(uniq: pl.DataFrame, th: QualityThresholds, en: str, pt: str, sc: str) -> pl.Series:
    """Per distinct row, the detectors that could fire on it as a bit mask (0 = certainly clean)."""
    cols = Columns(uniq, en, pt, sc)
    conditions = [f.candidates(cols, th) for f in FLAGS]  # may add columns to cols.frame: build them first
    bits = pl.sum_horizontal(pl.when(cond.fill_null(True)).then(pl.lit(1 << i, dtype=pl.Int64)).otherwise(0)
                             for i, cond in enumerate(conditions))
    return cols.values(pl.when(cols.unsafe).then(pl.lit(_ALL_BITS, dtype=pl.Int64)).otherwise(bits).alias("bits"))


def _details_chunk(args: tuple[list[tuple], QualityThresholds]) -> list[dict[str, str]]:
    rows, th = args
    return [flag_details(e or "", p, s, th, only=_only(b)) for e, p, s, b in rows]


def _details_parallel(rows: list[tuple], th: QualityThresholds, workers: int) -> list[dict[str, str]]:
    """`_details_chunk` over `rows`, on a pool of `workers` processes when there are many rows."""
    if workers <= 1 or len(rows) < PARALLEL_MIN_ROWS:
        return _details_chunk((rows, th))
    size = max(1000, len(rows) // (workers * 8))
    chunks = [(rows[i:i + size], th) for i in range(0, len(rows), size)]
    # fork: the children run only the pure-Python detectors and never call polars, so polars' fork warning
    # (its thread pool's locks are not safe to use in a forked child) does not apply to them.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*fork.*", category=RuntimeWarning)
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork")) as pool:
            return [d for part in pool.map(_details_chunk, chunks) for d in part]


def flag_table(df: pl.DataFrame, thresholds: QualityThresholds | None = None, *,
               text_en: str = "text_en", text_pt: str = "text_pt", score: str = "score",
               workers: int | None = None, timings: dict[str, float] | None = None) -> pl.DataFrame:
    """`df` plus `flags: list[str]` and `flag_reasons: list[str]` columns, row order kept.

    Identical to `flag_table_reference` (flag_details on every distinct (source, output, score) row), but
    only the rows a vectorised polars pre-filter marks as candidates run the per-row detectors, on
    `workers` processes (default: every core) when there are many; language ID thus runs only on
    candidates.  `timings`, when given, receives the seconds of each stage.
    """
    th = thresholds or DEFAULT_THRESHOLDS
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        if timings is not None:
            now = time.perf_counter()
            timings[name] = timings.get(name, 0.0) + now - clock
            clock = now

    df, keys = _with_score(df, score), [text_en, text_pt, score]
    uniq = df.select(keys).unique()
    lap("unique")
    cand_parts = []
    for start in range(0, uniq.height, _SLICE_ROWS):  # slices bound the memory of the token lists
        part = uniq.slice(start, _SLICE_ROWS)
        part = part.with_columns(_candidate_bits(part, th, text_en, text_pt, score).alias("_bits"))
        cand_parts.append(part.filter(pl.col("_bits") > 0))
    cand = pl.concat(cand_parts) if cand_parts else uniq.with_columns(pl.lit(0).alias("_bits")).clear()
    lap("prefilter")
    details = _details_parallel(list(cand.iter_rows()), th, workers or os.cpu_count() or 1)
    cand = cand.drop("_bits")
    lap(f"detectors on {cand.height:,} candidates")
    flagged = [(i, d) for i, d in enumerate(details) if d]
    hit = cand[[i for i, _ in flagged]].with_columns(
        pl.Series("flags", [list(d) for _, d in flagged], dtype=pl.List(pl.String)),
        pl.Series("flag_reasons", [list(d.values()) for _, d in flagged], dtype=pl.List(pl.String)),
    )
    out = df.drop([c for c in ("flags", "flag_reasons") if c in df.columns])
    # Join only the key columns and add the two flag columns: joining `out` itself would copy every column
    # (3.3M rows: ~1.4 GB more peak RSS).  `hit` holds each key once, so the rows stay one to one.
    found = out.select(keys).join(hit, on=keys, how="left", nulls_equal=True, maintain_order="left")
    out = out.hstack(found.select(
        pl.col("flags").fill_null(pl.lit([], dtype=pl.List(pl.String))),
        pl.col("flag_reasons").fill_null(pl.lit([], dtype=pl.List(pl.String))),
    ))
    lap("join")
    return out


def flag_rates(df: pl.DataFrame, *, engine: str = "engine") -> pl.DataFrame:
    """Per engine: `rows`, one rate column per flag (fraction of rows) and `any_flag`; needs a `flags` column."""
    if "flags" not in df.columns:
        raise ValueError("flag_rates needs a 'flags' column: run flag_table first")
    return (
        df.group_by(engine)
        .agg(
            pl.len().alias("rows"),
            *[pl.col("flags").list.contains(f).mean().alias(f) for f in FLAG_NAMES],
            (pl.col("flags").list.len() > 0).mean().alias("any_flag"),
        )
        .sort(engine)
    )
