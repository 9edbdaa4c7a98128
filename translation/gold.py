"""Loader of the gold PT-PT reference set (data_manifests/gold/gold_ptpt.tsv), validated on load."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import polars as pl

from translation.quality import FLAGS

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


# --- labelled flag cases (data_manifests/gold/flags_tuning.tsv and flags_heldout.tsv) ---------------------

FLAG_CASE_COLUMNS = ("id", "flag", "label", "en", "pt", "kind")
# The flags the case files measure, in registry order: every registered flag but the exact checks with
# nothing to estimate (Flag.exact: empty, low_score).
FLAG_CASE_FLAGS: tuple[str, ...] = tuple(f.name for f in FLAGS if not f.exact)
GOLD_DIR = DEFAULT_GOLD_PATH.parent
FLAG_TUNING_PATH = GOLD_DIR / "flags_tuning.tsv"
FLAG_HELDOUT_PATH = GOLD_DIR / "flags_heldout.tsv"


_ESCAPES = {"\\n": "\n", "\\r": "\r", "\\t": "\t", "\\\\": "\\"}


def _unescape(text: str) -> str:
    r"""A case's text with \n, \r, \t and \\ read as a line break, carriage return, tab and backslash (a TSV
    line holds none of them; the overgeneration cases need line breaks)."""
    return re.sub(r"\\[nrt\\]", lambda m: _ESCAPES[m.group(0)], text) if "\\" in text else text


def load_flag_cases(path: str | Path | None = None) -> pl.DataFrame:
    """Labelled (en, pt) cases for one flag each: columns id, flag, label (bool: the flag should fire), en,
    pt, kind.  Default: the held-out part.  Raises GoldFormatError naming the file and line on a wrong
    header, field count, empty id/en/pt, unknown flag, label other than 0/1 or a duplicate id."""
    path = Path(path) if path is not None else FLAG_HELDOUT_PATH
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or tuple(header) != FLAG_CASE_COLUMNS:
            raise GoldFormatError(f"{path}:1: header must be {'<TAB>'.join(FLAG_CASE_COLUMNS)}, got {header!r}")
        rows: list[tuple] = []
        seen: set[str] = set()
        for lineno, fields in enumerate(reader, start=2):
            if not fields:
                continue
            if len(fields) != len(FLAG_CASE_COLUMNS):
                raise GoldFormatError(f"{path}:{lineno}: expected {len(FLAG_CASE_COLUMNS)} fields, got {len(fields)}")
            case_id, flag, label, en, pt, kind = (x.strip() for x in fields)
            en, pt = _unescape(en), _unescape(pt)
            empty = [c for c, x in (("id", case_id), ("en", en), ("pt", pt)) if not x]
            if empty:
                raise GoldFormatError(f"{path}:{lineno}: empty field(s) {', '.join(empty)}")
            if flag not in FLAG_CASE_FLAGS:
                raise GoldFormatError(f"{path}:{lineno}: unknown flag {flag!r} (expected one of {FLAG_CASE_FLAGS})")
            if label not in ("0", "1"):
                raise GoldFormatError(f"{path}:{lineno}: label must be 0 or 1, got {label!r}")
            if case_id in seen:
                raise GoldFormatError(f"{path}:{lineno}: duplicate id {case_id!r}")
            seen.add(case_id)
            rows.append((case_id, flag, label == "1", en, pt, kind))
    schema = {"id": pl.String, "flag": pl.String, "label": pl.Boolean, "en": pl.String, "pt": pl.String,
              "kind": pl.String}
    return pl.DataFrame(rows, schema=schema, orient="row")
