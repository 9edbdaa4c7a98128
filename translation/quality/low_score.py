"""The `low_score` flag: the engine's mean token log-probability below a threshold (only when a score is given)."""
from __future__ import annotations

import polars as pl

from translation.quality.base import Case, Columns, Flag, Row
from translation.quality.thresholds import DEFAULT_THRESHOLDS, QualityThresholds

LOW_SCORE = "low_score"


def detect_low_score(score: float | None, th: QualityThresholds = DEFAULT_THRESHOLDS) -> str | None:
    """Engine mean log-probability below `min_score` (engines without scores are never flagged)."""
    if score is None or th.min_score is None or score != score:  # NaN counts as no score
        return None
    if score < th.min_score:
        return f"{LOW_SCORE}: score {score:.2f} < {th.min_score:g}"
    return None


def _detect(row: Row, th: QualityThresholds) -> str | None:
    return detect_low_score(row.score, th)


def _candidates(c: Columns, th: QualityThresholds) -> pl.Expr:
    if th.min_score is None:
        return pl.lit(False)
    # compared as float64, as the detector compares a Python float: a float32 score column compared with the
    # threshold rounded to float32 misses f32(-1.1) < -1.1
    score = c.score.cast(pl.Float64)
    return ((score < th.min_score) & score.is_not_nan()).fill_null(False)


FLAG = Flag(
    LOW_SCORE, _detect, _candidates, doc="the engine's mean log-probability below `min_score`",
    colour="#566573", exact=True,
    cases=(Case("a dog", "um cão", -2.3, True), Case("a dog", "um cão", -1.5001, True),
           Case("a dog", "um cão", -1.5, False), Case("a dog", "um cão", -0.4, False),
           Case("a dog", "um cão", None, False), Case("a dog", "um cão", float("nan"), False)),
)
