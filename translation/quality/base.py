"""What a quality flag is: one declaration (`Flag`) holding its per-row detector and its vectorised pre-filter.

`detect(row, thresholds)` is the reference: it returns ``None`` (clean) or a reason string that starts with
the flag's name and a colon and carries the evidence.  `candidates(cols, thresholds)` is a polars condition
over the distinct rows of a table (`Columns`) that is true wherever `detect` could fire: a superset, cheap to
compute, so `flag_table` runs the per-row detectors only on the rows some pre-filter could not rule out.  The
two live side by side in the flag's module and the equivalence tests (tests/test_quality_equivalence.py) hold
them to it for every registered flag.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import polars as pl

from translation.quality.text import WORD
from translation.quality.thresholds import QualityThresholds


class Row(NamedTuple):
    """One (source, output, score) row as the per-row detectors see it.  `text_pt` is None or blank only
    for exclusive flags (`empty`): every other detector runs on a non-empty output."""

    text_en: str
    text_pt: str | None
    score: float | None


class Case(NamedTuple):
    """A labelled row declared with a flag: whether its detector `fires` on it.  Exact flags (`Flag.exact`)
    have no labelled cases in data_manifests/gold/ and declare theirs here instead."""

    text_en: str
    text_pt: str | None
    score: float | None
    fires: bool


# --- the text polars sees: the characters on which its regex engine and lower-casing agree with Python's ---
#
# The superset argument needs Python's casefold, NFC, NFKC and \w to agree with polars' lowercase and (Rust)
# \w; they do on the characters below, and a row with any other character (combining marks, 'ß', 'º', '²',
# emoji, control characters) is a candidate of every flag (`flag_table` sends it to every detector).
SAFE_CHARS = ("^[\t\n\r -~\u00a0\u00c0-\u00d6\u00d8-\u00de\u00e0-\u00f6\u00f8-\u00ff"
              "\u2013\u2014\u2018\u2019\u201c\u201d\u2026\u00ab\u00bb\u20ac]*$")
# \\w restricted to the safe characters, where it equals Python's \\w: the Unicode classes make the Rust engine's
# DFA blow up on a big alternation (350x slower on the brazilian superset pattern, measured).
W_LATIN = "[0-9A-Za-z_\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u00ff]"
# A run of non-word characters, in the same terms.
NON_WORD_LATIN = "[^" + W_LATIN[1:] + "+"


def latin(pattern: str) -> str:
    """`pattern` for polars on safe-character text: \\w and \\W as explicit Latin-1 classes."""
    return pattern.replace(r"\W", "[^" + W_LATIN[1:]).replace(r"\w", W_LATIN)


def without_word_boundaries(pattern: str) -> str:
    """A pattern matching wherever `pattern` matches, without Unicode \\b (which makes the Rust regex engine
    fall back to its slowest matcher): a leading/trailing \\b next to a word character becomes a consumed
    non-word character or the text's edge, and any inner \\b is dropped (dropping only widens the match)."""
    head = pattern.startswith(r"\b")
    tail = pattern.endswith(r"\b") and not pattern.endswith(r"\\b")
    core = pattern[2 if head else 0:len(pattern) - 2 if tail else len(pattern)].replace(r"\b", "")
    return ("(?:^|\\W)" if head else "") + f"(?:{core})" + ("(?:\\W|$)" if tail else "")


class Columns:
    """The distinct rows of one `flag_table` slice as the pre-filters see them: the raw columns and the
    columns several flags share (lengths, word tokens), the latter computed once for all flags.

    Every attribute is a polars expression over `frame`.  A pre-filter that needs a data-dependent step
    (a list computed in Python from the column, then used in the condition) stores the column it reads with
    `materialise` and reads it back with `values`.
    """

    # The source (null read as ''), the output and the engine score.
    en = pl.col("_en").fill_null("")
    pt = pl.col("_pt")
    score = pl.col("_score")
    en_low = en.str.to_lowercase()
    pt_low = pt.str.to_lowercase()
    # chars of the stripped source and output (Python's len(text.strip()) on safe text)
    src_len = pl.col("_src_len")
    out_len = pl.col("_out_len")
    # `words()` of the output and of the source, lower-cased
    tokens_pt = pl.col("_tokens_pt")
    tokens_en = pl.col("_tokens_en")
    n_tokens = tokens_pt.list.len()
    # True where the row has a character outside SAFE_CHARS (or a null output): every flag's candidate
    unsafe = pl.col("_unsafe")

    def __init__(self, uniq: pl.DataFrame, text_en: str, text_pt: str, score: str):
        self._raw = uniq.select(pl.col(text_en).alias("_en"), pl.col(text_pt).alias("_pt"),
                                pl.col(score).alias("_score"))  # renamed, not copied
        self._frame: pl.DataFrame | None = None
        # computed in one parallel step with the columns flags `materialise` before `frame` is first read
        en, pt, word = self.en, self.pt, latin(WORD.pattern)
        self._pending: dict[str, pl.Expr] = {
            "_unsafe": (pt.is_null() | ~pt.str.contains(SAFE_CHARS) | ~en.str.contains(SAFE_CHARS)).fill_null(True),
            "_src_len": en.str.strip_chars().str.len_chars(),
            "_out_len": pt.str.strip_chars().str.len_chars(),
            "_tokens_pt": self.pt_low.str.extract_all(word),
            "_tokens_en": self.en_low.str.extract_all(word),
        }

    @property
    def frame(self) -> pl.DataFrame:
        """The distinct rows with every column above and the materialised ones."""
        if self._frame is None:
            self._frame = self._raw.with_columns(expr.alias(name) for name, expr in self._pending.items())
        return self._frame

    def materialise(self, name: str, expr: pl.Expr) -> pl.Expr:
        """Compute `expr` once into `frame` under `name` (a name no other flag uses); its column expression."""
        column = f"__{name}"
        if column in self._pending or (self._frame is not None and column in self._frame.columns):
            raise ValueError(f"Columns.materialise: {name!r} is already taken")
        if self._frame is None:
            self._pending[column] = expr
        else:
            self._frame = self._frame.with_columns(expr.alias(column))
        return pl.col(column)

    def values(self, expr: pl.Expr) -> pl.Series:
        """`expr` evaluated on every distinct row (for a materialised column: no copy)."""
        return self.frame.select(expr).to_series()


_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class Flag:
    """One quality flag, declared once in its own module and listed in `registry.FLAGS`.

    name: the flag's name (the `flags` column value, the reason's prefix, the report's CSS class).
    detect: `detect(row, thresholds) -> reason | None`, the per-row reference; a reason starts with
        f"{name}: ".
    candidates: `candidates(cols, thresholds) -> pl.Expr`, true on every distinct row where `detect` could
        fire (a superset; null counts as true).  It need not handle rows with characters outside SAFE_CHARS:
        those are every flag's candidates.
    doc: one line saying what the flag catches.
    colour: the CSS colour of the flag's badge in the comparison report.
    suppresses: flags (registered after this one) not reported when this one fires, because their
        heuristics misfire on the same cause (English text trips the PT-PT checks).
    exclusive: checked first on every row, whatever `only` says, and when it fires it is the only flag
        reported and no other detector runs (`empty`: nothing else is meaningful, and the other detectors
        may assume a non-empty output).
    exact: an exact check with nothing to estimate (`empty`, `low_score`), so it has no labelled cases in
        data_manifests/gold/flags_*.tsv; it declares `cases` instead.  Every other flag must have held-out
        cases (tests/test_quality_registry.py).
    cases: labelled rows of the flag (both labels for an exact flag); they seed the randomised equivalence
        test with the labelled TSV cases.
    """

    name: str
    detect: Callable[[Row, QualityThresholds], str | None]
    candidates: Callable[[Columns, QualityThresholds], pl.Expr]
    doc: str
    colour: str
    suppresses: tuple[str, ...] = ()
    exclusive: bool = False
    exact: bool = False
    cases: tuple[Case, ...] = ()

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"Flag name {self.name!r}: lower-case letters, digits and '_' only")
        if not self.colour or not self.doc:
            raise ValueError(f"Flag {self.name!r} needs a badge colour and a doc line")
