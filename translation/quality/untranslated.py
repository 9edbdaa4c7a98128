"""The `untranslated` flag: the output equals the source after normalisation, or is mostly English.

Language ID is py3langid, whose model ships inside the wheel (nothing is downloaded at run time); an output
made only of frequent Portuguese words (wordfreq's word lists, also inside its wheel: 'animal', 'hospital')
is never untranslated.  English text trips the PT-PT heuristics (a dangling 'a', 'time'), so when this flag
fires `brazilian` and `truncated` are not reported: only the root cause is.
"""
from __future__ import annotations

import math
from functools import lru_cache

import polars as pl

from translation.quality.base import NON_WORD_LATIN, Columns, Flag, Row, latin, without_word_boundaries
from translation.quality.brazilian import BRAZILIAN
from translation.quality.text import normalise, words
from translation.quality.thresholds import DEFAULT_THRESHOLDS, QualityThresholds
from translation.quality.truncated import TRUNCATED

UNTRANSLATED = "untranslated"

# Strings legitimately identical in EN and PT-PT; identity with the source is not evidence for these.
IDENTICAL_OK = frozenset({"ok", "okay", "tv", "pc", "dvd", "cd", "pizza", "selfie", "wifi", "wi fi", "hamburger",
                          "jazz", "rock", "golf", "surf", "ski", "snowboard", "skate", "hotel", "taxi", "bar"})
# English function words that are not Portuguese words: language ID only runs when one is present.
_EN_HINTS = frozenset({"the", "and", "of", "with", "is", "are", "on", "at", "for", "his", "her", "their", "this",
                       "that", "it", "to", "from", "by", "an", "in", "was", "be", "its", "they", "there", "what",
                       "how", "yes", "can", "you", "he", "she", "we", "has", "have", "does", "not", "some"})


@lru_cache(maxsize=4)
def _identifier(languages: tuple[str, ...]):
    # The model file (py3langid/data/model.npz.xz) is inside the wheel; loading it reads that file only.
    # Imported on first use: only rows that reach language ID need py3langid (and numpy) loaded.
    from py3langid.langid import (  # deferred: the language-ID model loads on the first call
        MODEL_FILE,
        LanguageIdentifier,
    )

    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    ident.set_languages(list(languages))
    return ident


def english_probability(text: str, languages: tuple[str, ...] = DEFAULT_THRESHOLDS.langid_languages) -> float:
    """P(en | text) by py3langid restricted to `languages` (normalised probabilities)."""
    for lang, prob in _identifier(tuple(languages)).rank(text):
        if lang == "en":
            return float(prob)
    return 0.0


@lru_cache(maxsize=2)
def _zipf_table(lang: str) -> dict[str, float]:
    # wordfreq's word lists ship inside its wheel (data/*.msgpack.gz): nothing is downloaded.
    # Imported on first use: wordfreq is slow to import and only candidate rows need it.
    from wordfreq import get_frequency_dict  # deferred: the word lists load on the first call

    return {w: math.log10(f) + 9.0 for w, f in get_frequency_dict(lang).items() if f > 0}


def zipf(word: str, lang: str) -> float:
    """wordfreq Zipf frequency (log10 per billion words) of a lower-case word in `lang`; 0 when unknown."""
    return _zipf_table(lang).get(word, 0.0)


def is_portuguese_word(word: str, th: QualityThresholds = DEFAULT_THRESHOLDS) -> bool:
    """A frequent Portuguese word that is not much more frequent in English ('animal', 'hospital', 'banana'
    are; 'dog', 'green', 'the' are not).  Tokens without a letter ('2', '10h') count as Portuguese."""
    if not any(c.isalpha() for c in word):
        return True
    pt = zipf(word, "pt")
    return pt >= th.portuguese_zipf and pt >= zipf(word, "en") - th.portuguese_zipf_margin


def detect_untranslated(text_en: str, text_pt: str, th: QualityThresholds = DEFAULT_THRESHOLDS) -> str | None:
    """Output identical to the source (after normalisation), or mostly English by language ID; never an
    output whose every word is frequent Portuguese (wordfreq), e.g. the VQA answers 'animal', 'normal'."""
    norm_pt = normalise(text_pt)
    if norm_pt and norm_pt == normalise(text_en):
        # Numbers, codes, shared loanwords ('2', 'ok', 'tv') and words that are Portuguese too
        # ('hospital', 'zebra') are correctly left as they are.
        if any(c.isalpha() for c in norm_pt) and norm_pt not in IDENTICAL_OK and \
                not all(is_portuguese_word(w, th) for w in norm_pt.split()):
            return f"{UNTRANSLATED}: identical to the source"
        return None
    toks = words(text_pt)
    if len(toks) < th.langid_min_words:
        return None
    # Language ID is the costly step: run it only when the output has an English function word or copies
    # at least a third of its words from the source (a Portuguese output has neither).
    source_words = set(words(text_en))
    copied = sum(t in source_words for t in toks)
    if not _EN_HINTS.intersection(toks) and copied * 3 < len(toks):
        return None
    if all(is_portuguese_word(t, th) for t in toks):
        return None
    p_en = english_probability(text_pt, th.langid_languages)
    if p_en >= th.english_prob:
        return f"{UNTRANSLATED}: language ID says English (p={p_en:.2f})"
    return None



def _detect(row: Row, th: QualityThresholds) -> str | None:
    return detect_untranslated(row.text_en, row.text_pt, th)


def _candidates(c: Columns, th: QualityThresholds) -> pl.Expr:
    # normalise(a) == normalise(b) implies equal word characters once everything else is removed
    identical = c.pt_low.str.replace_all(NON_WORD_LATIN, "") == c.en_low.str.replace_all(NON_WORD_LATIN, "")
    hint = c.pt_low.str.contains(latin(without_word_boundaries(r"\b(?:" + "|".join(sorted(_EN_HINTS)) + r")\b")))
    n = c.n_tokens
    # at least as many as the output tokens copied from the source (each distinct token the source lacks
    # stands for one or more output tokens)
    copied_upper = n - c.tokens_pt.list.set_difference(c.tokens_en).list.len()
    return identical | ((n >= th.langid_min_words) & (hint | (copied_upper * 3 >= n)))


FLAG = Flag(
    UNTRANSLATED, _detect, _candidates,
    doc="the output is the source again, or mostly English by language ID", colour="#7d3c98",
    suppresses=(BRAZILIAN, TRUNCATED),
)
