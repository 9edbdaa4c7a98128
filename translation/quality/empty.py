"""The `empty` flag: the output is empty or whitespace only.  Checked first; nothing else is reported then."""
from __future__ import annotations

import polars as pl

from translation.quality.base import Case, Columns, Flag, Row
from translation.quality.thresholds import QualityThresholds

EMPTY = "empty"


def detect_empty(text_pt: str | None) -> str | None:
    """Empty or whitespace-only output."""
    if text_pt is None or not text_pt.strip():
        return f"{EMPTY}: output is {'null' if text_pt is None else 'blank'}"
    return None


def _detect(row: Row, th: QualityThresholds) -> str | None:
    return detect_empty(row.text_pt)


def _candidates(c: Columns, th: QualityThresholds) -> pl.Expr:
    return c.out_len == 0


FLAG = Flag(
    EMPTY, _detect, _candidates, doc="the output is empty or whitespace only", colour="#000", exclusive=True,
    exact=True,
    cases=(Case("a dog", "", None, True), Case("a dog", None, None, True), Case("a dog", " \n\t\u00a0", None, True),
           Case("a dog", "um cão", None, False), Case("", ".", None, False)),
)
