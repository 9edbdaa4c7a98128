"""The run's translated tables as the review app reads them: per engine, one row per distinct source
string (text_hash), because a correction is stored per (engine id, text_hash) and so fixes every place
the string occurs.

Read once at start-up with polars (a few columns of translated/<engine>/<dataset>/<split>.parquet,
the TRANSLATED contract); the occurrences of one string are looked up lazily in the same files.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipeline.layout import RunLayout

# The columns a queue or a row page needs, per distinct string.
_DISTINCT = ("text_en", "text_pt", "score", "flags", "flag_reasons", "engine_id", "dataset", "split", "field")


class NoTranslations(RuntimeError):
    """The run root has no translated table for the engine: nothing to review yet."""

    @classmethod
    def for_engine(cls, root: Path, engine: str) -> NoTranslations:
        return cls(f"no translated tables for engine {engine!r} under {RunLayout(root).translated_dir(engine)} "
                   "(expected <dataset>/<split>.parquet): run the translation first "
                   "(`ptvl run --config ... --until translate`)")


@dataclass
class EngineTable:
    name: str  # the config's short engine name (translated/<name>/...)
    engine_id: str  # the full id keying the memory and the human overlay
    files: list[Path]
    rows: pl.DataFrame  # one row per text_hash; `uses` = how many segments carry the string

    def row(self, text_hash: str) -> dict | None:
        found = self.rows.filter(pl.col("text_hash") == text_hash)
        return found.row(0, named=True) if found.height else None


def translated_files(root: Path, engine: str, splits: list[tuple[str, str]]) -> list[Path]:
    """The engine's translated tables that exist, in the profile's dataset/split order."""
    layout = RunLayout(root)
    return [p for d, sp in splits if (p := layout.translated(engine, d, sp)).is_file()]


def load_engine(root: Path, engine: str, splits: list[tuple[str, str]]) -> EngineTable | None:
    files = translated_files(root, engine, splits)
    if not files:
        return None
    scan = pl.scan_parquet(files).select("text_hash", *_DISTINCT)
    # Every occurrence of a string carries the same memory translation and flags (both depend on the
    # text alone), so the first occurrence speaks for all.
    # (unique + a separate count: a group_by taking the first of nine columns is 20x slower at 1M rows)
    uses = pl.scan_parquet(files).group_by("text_hash").agg(pl.len().alias("uses"))
    rows = (scan.unique("text_hash", keep="first", maintain_order=True)
            .join(uses, on="text_hash", how="left", maintain_order="left")
            .collect())
    engine_id = rows["engine_id"][0] if rows.height else engine
    return EngineTable(engine, engine_id, files, rows)


class RunTables:
    """Every configured engine's distinct strings; `chosen` is the engine being reviewed."""

    def __init__(self, root: Path, engines: list[str], splits: list[tuple[str, str]], chosen: str):
        self.root, self.splits = root, splits
        self.engines: dict[str, EngineTable] = {}
        for name in engines:
            table = load_engine(root, name, splits)
            if table is not None:
                self.engines[name] = table
        if chosen not in self.engines:
            raise NoTranslations.for_engine(root, chosen)
        self.chosen = self.engines[chosen]

    def occurrences(self, text_hash: str, limit: int = 12) -> list[dict]:
        """Where the chosen engine's string occurs: dataset, split, field, item and segment ids."""
        found = (pl.scan_parquet(self.chosen.files)
                 .filter(pl.col("text_hash") == text_hash)
                 .select("dataset", "split", "field", "item_id", "segment_id")
                 .head(limit).collect())
        return found.to_dicts()

    def by_segment(self, engine: str, dataset: str, split: str, segment_ids: list[str]) -> dict[str, dict]:
        """segment_id -> {text_en, text_pt, text_hash} for the engine's rows of one dataset/split."""
        path = RunLayout(self.root).translated(engine, dataset, split)
        if not path.is_file() or not segment_ids:
            return {}
        found = (pl.scan_parquet(path).filter(pl.col("segment_id").is_in(segment_ids))
                 .select("segment_id", "text_en", "text_pt", "text_hash").collect())
        return {r["segment_id"]: r for r in found.iter_rows(named=True)}
