"""The neural-score cache: one COMET/CometKiwi score per (engine id, text_hash, model id), computed once.

A QE pass over CC3M is 3.3M strings, hours of GPU: each batch's scores are committed (fsync'd, see
`translation.sqlite_store`) before the next batch runs, so a killed run resumes where it stopped and a
rerun computes nothing.  The same file caches the reference-based COMET scores of the gold set (its
rows are keyed like any other string: the gold sentence's text_hash).

Each row also stores `pair_hash`, a hash of the exact (source, translation[, reference]) scored: a
memory re-imported with another translation for the same key is scored again instead of reusing a
score of a text that is no longer there.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import polars as pl

from translation.sqlite_store import DEFAULT_BUSY_TIMEOUT_S, SQLiteFile

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS neural_scores (
        engine_id TEXT NOT NULL,
        text_hash TEXT NOT NULL,
        model_id  TEXT NOT NULL,
        pair_hash TEXT NOT NULL,
        score     REAL NOT NULL,
        PRIMARY KEY (engine_id, text_hash, model_id)
    ) WITHOUT ROWID""",
)
SCORE_FRAME_SCHEMA = {"text_hash": pl.String, "pair_hash": pl.String, "score": pl.Float64}


def pair_hash(*texts: str | None) -> str:
    """A hash of the exact texts a score was computed on (None and '' differ)."""
    h = hashlib.blake2b(digest_size=12)
    for t in texts:
        h.update(b"\x00" if t is None else b"\x01" + t.encode("utf-8"))
        h.update(b"\x1e")
    return h.hexdigest()


class NeuralScoreStore(SQLiteFile):
    """Scores keyed by (engine_id, text_hash, model_id); one writer process per file."""

    what = "neural score cache"

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False,
                 busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> None:
        super().__init__(path, schema=_SCHEMA, read_only=read_only, busy_timeout_s=busy_timeout_s)

    def frame(self, engine_id: str, model_id: str) -> pl.DataFrame:
        """Every stored score of (engine_id, model_id): text_hash, pair_hash, score (one query, one scan of
        the key range: at 3.3M strings a join in polars beats millions of point look-ups)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT text_hash, pair_hash, score FROM neural_scores WHERE engine_id = ? AND model_id = ?",
                (engine_id, model_id)).fetchall()
        return pl.DataFrame(rows, schema=SCORE_FRAME_SCHEMA, orient="row")

    def put(self, engine_id: str, model_id: str, rows: Sequence[tuple[str, str, float]]) -> int:
        """Store (text_hash, pair_hash, score) rows in one durable transaction; a row for a key already
        stored replaces it (it was scored on other texts, see `pair_hash`).  Returns the rows written."""
        if self.read_only:
            raise PermissionError(f"{self.path} is open read-only")
        values = [(engine_id, h, model_id, p, float(s)) for h, p, s in rows]
        with self._write() as db:
            db.executemany("INSERT OR REPLACE INTO neural_scores VALUES (?, ?, ?, ?, ?)", values)
        return len(values)

    def count(self, engine_id: str | None = None, model_id: str | None = None) -> int:
        """Stored scores, optionally of one engine id and/or model id."""
        where, args = [], []
        for column, value in (("engine_id", engine_id), ("model_id", model_id)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "SELECT COUNT(*) FROM neural_scores" + (" WHERE " + " AND ".join(where) if where else "")
        with self._lock:
            return int(self._db.execute(sql, args).fetchone()[0])


def to_score(want: pl.DataFrame, store: NeuralScoreStore, engine_id: str, model_id: str) -> pl.DataFrame:
    """The rows of `want` (text_hash, pair_hash, ...) with no stored score for exactly those texts."""
    have = store.frame(engine_id, model_id).select("text_hash", "pair_hash")
    return want.join(have, on=["text_hash", "pair_hash"], how="anti", maintain_order="left")
