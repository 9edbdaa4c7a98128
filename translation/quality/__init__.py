"""Quality flags for EN -> PT-PT translations: one small detector per failure mode, each returning a reason.

Flags (thesis §5.2 failure modes, SPEC §2), in registry order (`registry.FLAGS`), one module each:
- ``empty`` (empty.py): the output is empty or whitespace only; then no other flag is reported.
- ``untranslated`` (untranslated.py): the output equals the source after normalisation, or is mostly English
  (py3langid, whose model ships inside the wheel: nothing is downloaded at run time); never an output made
  only of frequent Portuguese words (wordfreq's word lists, also inside its wheel: 'animal', 'hospital').
  When it fires, ``brazilian`` and ``truncated`` are not reported (English text trips their heuristics).
- ``brazilian`` (brazilian.py): PT-BR lexicon, spellings and grammar (progressive gerund, article-less
  possessives, sentence-initial clitics).  Only markers that are NOT also PT-PT are listed; the reason names
  each match with its PT-PT counterpart so a reader sees why.
- ``truncated`` (truncated.py): output much shorter than the source (ratio calibrated on the gold set),
  numbers of the source missing from the output in every rendering ('42' may be 'quarenta e dois', '10:30'
  '10h30'), or the output ending on a dangling article/preposition.
- ``repetitive`` (repetitive.py): an n-gram repeated back to back or many times, a sub-word piece looping
  inside one 'word' (a decoder loop on pieces without word boundaries), or an output far longer than the
  source; a repetition the source has too is faithful.
- ``overgeneration`` (overgeneration.py): the output runs on past the translation: more lines than the source,
  a prompt label the source lacks ('English:', 'Tradução:') or a chat-turn marker ('<|im_start|>'); an LLM that
  missed its end token.
- ``low_score`` (low_score.py): the engine's mean token log-probability below a threshold (only when a score
  is given).

Each detector returns ``None`` (clean) or a reason string that starts with the flag name and carries the
evidence, e.g. ``"brazilian: ônibus (PT-PT autocarro); está fazendo (PT-PT está a fazer)"``.

Layout: base.py (`Flag`, the declaration; `Row` and `Columns`, what a detector and a pre-filter see),
thresholds.py (`QualityThresholds`), text.py (`normalise`, `words`), one module per flag, registry.py (the
ordered `FLAGS`; `FLAG_NAMES`), details.py (`flag_details`, `flag_row`: the per-row path) and table.py
(`flag_table`, its vectorised pre-filter and process pool, `flag_table_reference`, `flag_rates`).

How to add a flag (three files; nothing else lists flags):
1. ``translation/quality/<name>.py``: the detector and its declaration ``FLAG = Flag(name, detect,
   candidates, doc=..., colour=...)``.  `detect(row, thresholds)` returns the reason (starting with
   ``"<name>: "``) or None; `candidates(cols, thresholds)` is a polars condition over `Columns` that is true
   wherever `detect` could fire (a superset: drop guards and context, widen thresholds a little).  Set
   `suppresses`/`exclusive` if it hides other flags, and a threshold it needs goes into
   `QualityThresholds` (thresholds.py, a fourth file only then).
2. ``translation/quality/registry.py``: import the module and add its ``FLAG`` to `FLAGS` where its reasons
   should appear in a row's list.
3. ``data_manifests/gold/flags_heldout.tsv``: labelled held-out cases (both labels, at least 40; tuning
   cases go to flags_tuning.tsv).  Only an exact check (``exact=True``: nothing to estimate, like ``empty``
   and ``low_score``) declares `cases` in its module instead.
Everything else follows from the registry: `FLAG_NAMES`, `flag_details`/`flag_row`, the pre-filter's bit
mask in `flag_table`, `flag_rates`, the review queues, the gold case loader (`translation.gold`) and the
report's badge colour.  tests/test_quality_equivalence.py then checks, for the new flag too, that
`flag_table` equals `flag_table_reference` on its cases and random mutations of them, and
tests/test_quality_registry.py that it has held-out cases.
"""
from __future__ import annotations

from translation.quality.base import Case, Columns, Flag, Row
from translation.quality.brazilian import (
    BRAZILIAN,
    BRAZILIAN_LEXICON,
    GERUND_STOP,
    Marker,
    brazilian_markers,
    detect_brazilian,
)
from translation.quality.details import flag_details, flag_row
from translation.quality.empty import EMPTY, detect_empty
from translation.quality.low_score import LOW_SCORE, detect_low_score
from translation.quality.overgeneration import OVERGENERATION, detect_overgeneration
from translation.quality.registry import FLAG_NAMES, FLAGS
from translation.quality.repetitive import REPETITIVE, detect_repetitive
from translation.quality.table import PARALLEL_MIN_ROWS, flag_rates, flag_table, flag_table_reference
from translation.quality.text import normalise, words
from translation.quality.thresholds import DEFAULT_THRESHOLDS, QualityThresholds
from translation.quality.truncated import TRUNCATED, detect_truncated, missing_source_numbers
from translation.quality.untranslated import (
    IDENTICAL_OK,
    UNTRANSLATED,
    detect_untranslated,
    english_probability,
    is_portuguese_word,
    zipf,
)

__all__ = [
    "BRAZILIAN", "BRAZILIAN_LEXICON", "DEFAULT_THRESHOLDS", "EMPTY", "FLAGS", "FLAG_NAMES", "GERUND_STOP",
    "IDENTICAL_OK", "LOW_SCORE", "OVERGENERATION", "PARALLEL_MIN_ROWS", "REPETITIVE", "TRUNCATED", "UNTRANSLATED", "Case",
    "Columns", "Flag", "Marker", "QualityThresholds", "Row", "brazilian_markers", "detect_brazilian",
    "detect_empty", "detect_low_score", "detect_overgeneration", "detect_repetitive", "detect_truncated", "detect_untranslated",
    "english_probability", "flag_details", "flag_rates", "flag_row", "flag_table", "flag_table_reference",
    "is_portuguese_word", "missing_source_numbers", "normalise", "words", "zipf",
]
