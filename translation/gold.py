"""Loader of the gold PT-PT reference set (data_manifests/gold/gold_ptpt.tsv), validated on load."""
from __future__ import annotations

import csv
from pathlib import Path

import polars as pl

GOLD_COLUMNS = ("id", "style", "en", "pt_pt", "pt_br")
GOLD_STYLES = frozenset({"cc3m", "coco", "visdial_q", "visdial_a"})
DEFAULT_GOLD_PATH = Path(__file__).resolve().parent.parent / "data_manifests" / "gold" / "gold_ptpt.tsv"


class GoldFormatError(ValueError):
    """The gold TSV is malformed; the message names the file and the line."""


def load_gold(path: str | Path | None = None) -> pl.DataFrame:
    """The gold set as a DataFrame with columns id, style, en, pt_pt, pt_br (all strings, file order).

    Raises GoldFormatError on a wrong header, a wrong field count, an empty field, an unknown style or a
    duplicate id.  Parsed with the csv module (QUOTE_NONE): the sentences hold quotes and apostrophes.
    """
    path = Path(path) if path is not None else DEFAULT_GOLD_PATH
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or tuple(header) != GOLD_COLUMNS:
            raise GoldFormatError(f"{path}:1: header must be {'<TAB>'.join(GOLD_COLUMNS)}, got {header!r}")
        rows: list[list[str]] = []
        seen: set[str] = set()
        for lineno, fields in enumerate(reader, start=2):
            if not fields:
                continue
            if len(fields) != len(GOLD_COLUMNS):
                raise GoldFormatError(f"{path}:{lineno}: expected {len(GOLD_COLUMNS)} fields, got {len(fields)}")
            fields = [x.strip() for x in fields]
            empty = [c for c, x in zip(GOLD_COLUMNS, fields, strict=True) if not x]
            if empty:
                raise GoldFormatError(f"{path}:{lineno}: empty field(s) {', '.join(empty)}")
            if fields[1] not in GOLD_STYLES:
                raise GoldFormatError(f"{path}:{lineno}: unknown style {fields[1]!r} (expected {sorted(GOLD_STYLES)})")
            if fields[0] in seen:
                raise GoldFormatError(f"{path}:{lineno}: duplicate id {fields[0]!r}")
            seen.add(fields[0])
            rows.append(fields)
    return pl.DataFrame(rows, schema=list(GOLD_COLUMNS), orient="row")
