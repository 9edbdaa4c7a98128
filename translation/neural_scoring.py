"""Neural scores of translations, computed once: COMET on the gold set, QE on every translated string.

`score_cached` is the resumable loop both use: it scores only the (source, translation[, reference])
triples the cache (`translation.qe_store`) lacks, longest first (similar lengths pad little), and commits
each batch's scores before the next, so a killed run loses at most one batch and
a rerun scores nothing (the model is not even loaded then).  `corpus_comet` is the system-level figure:
the mean segment score with sacrebleu's bootstrap 95% interval (the resampling sacrebleu uses for chrF and
BLEU, same seed).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import polars as pl
from sacrebleu.significance import _bootstrap_resample, estimate_ci

from translation.qe_store import NeuralScoreStore, pair_hash, to_score


class Scorer(Protocol):
    def score(self, src: list[str], mt: list[str], ref: list[str] | None = None, *, batch_size: int = 32,
              progress: Callable[[int], None] | None = None) -> list[float]: ...


@dataclass(frozen=True)
class ScoreRun:
    """What `score_cached` did: the scores of every row asked for, and how many were computed now."""

    scores: pl.DataFrame  # text_hash, score (one row per distinct text_hash asked for)
    computed: int
    cached: int


def score_cached(rows: pl.DataFrame, store: NeuralScoreStore, engine_id: str, model_id: str,
                 load: Callable[[], Scorer], *, batch_size: int = 32,
                 progress: Callable[[int, int], Any] | None = None) -> ScoreRun:
    """Scores of `rows` (text_hash, src, mt, and ref for a reference-based model; distinct text_hash) under
    `model_id`, from `store` where it has them, else computed with `load()`'s model and stored batch by
    batch.  progress(done, total) after each batch, counting the rows still to score."""
    has_ref = "ref" in rows.columns
    rows = rows.unique("text_hash", keep="first", maintain_order=True)
    texts = rows.select("src", "mt", *(["ref"] if has_ref else [])).rows()
    want = rows.with_columns(pl.Series("pair_hash", [pair_hash(*t) for t in texts], dtype=pl.String))
    todo = to_score(want, store, engine_id, model_id)
    if todo.height:
        # Longest first: the first batches show the worst-case memory at once, and similar lengths pad little.
        todo = todo.sort(pl.col("src").str.len_chars() + pl.col("mt").str.len_chars(), descending=True,
                         maintain_order=True)
        model = load()
        done = 0
        for start in range(0, todo.height, batch_size):
            chunk = todo.slice(start, batch_size)
            ref = chunk["ref"].to_list() if has_ref else None
            scores = model.score(chunk["src"].to_list(), chunk["mt"].to_list(), ref, batch_size=batch_size)
            store.put(engine_id, model_id, list(zip(chunk["text_hash"], chunk["pair_hash"], scores, strict=True)))
            done += chunk.height
            if progress is not None:
                progress(done, todo.height)
    stored = store.frame(engine_id, model_id)
    scores = want.join(stored, on=["text_hash", "pair_hash"], how="left", maintain_order="left")
    missing = scores.filter(pl.col("score").is_null()).height
    if missing:  # the store lost rows it had just committed: never report partial scores as complete
        raise RuntimeError(f"{store.path}: {missing} scores missing after scoring {model_id}")
    return ScoreRun(scores.select("text_hash", "score"), computed=todo.height, cached=want.height - todo.height)


class _MeanOfSegments:
    """The 'metric' sacrebleu's bootstrap resamples: per-segment stats (score, 1) summed, then divided."""

    def _compute_score_from_stats(self, stats: np.ndarray) -> float:
        return float(stats[0] / stats[1])


def corpus_comet(scores: list[float], n_bootstrap: int = 1000) -> dict:
    """System COMET: {"comet": mean, "ci": half-width of the bootstrap 95% interval, "low", "high", "n"}.

    Resampled with sacrebleu's `_bootstrap_resample` and `estimate_ci`, so the interval is built as chrF's
    and BLEU's are with `--confidence` (seed SACREBLEU_SEED, default 12345)."""
    if not scores:
        raise ValueError("corpus_comet: no segment scores")
    mean = float(np.mean(scores))
    _, resampled = _bootstrap_resample([[s, 1.0] for s in scores], _MeanOfSegments(), n_bootstrap)
    _, ci = estimate_ci(np.asarray(resampled, dtype=np.float64))
    return {"comet": mean, "ci": float(ci), "low": mean - float(ci), "high": mean + float(ci), "n": len(scores)}
