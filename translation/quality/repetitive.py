"""The `repetitive` flag: decoder loops and runaway outputs.

An n-gram repeated back to back or many times, a sub-word piece looping inside one 'word' (a decoder loop
on pieces without word boundaries), or an output far longer than the source; a repetition the source has
too is faithful.
"""
from __future__ import annotations

import re
from collections import Counter

import polars as pl

from translation.quality.base import Columns, Flag, Row, latin
from translation.quality.text import nfc, words
from translation.quality.thresholds import DEFAULT_THRESHOLDS, QualityThresholds

REPETITIVE = "repetitive"

# A piece of 2-10 word characters repeated back to back inside one word: subword decoder loops glue their
# pieces together ('vermelhaqjqjqjqjqjq'), so the word-level n-gram checks see one long unique word.
_PIECE_LOOP = re.compile(r"(\w{2,10}?)\1+")
# Laughter and onomatopoeia are written as one syllable repeated ('hahaha', 'hehe', 'kkkk', 'rsrs',
# 'blablabla', 'lalala', 'zzzz'): an interjection, not a decoder loop, whether as one word or as words
# ('ha ha ha').  A decoder loop glues its pieces onto a stem ('vermelhaqjqjqj') or repeats a real word
# ('casacasacasa'), and neither is made only of these syllables.
_INTERJECTION = re.compile(r"(?:ha|he|hi|ho|hu|ah|eh|oh|uh|ja|je|ji|hue|k|rs|bla|blá|la|lá|z|m|hm)+")
# Past this many copies even laughter is a loop ('ha' x 12 from a 'haha' source).
MAX_INTERJECTION_COPIES = 8


def is_interjection(word: str) -> bool:
    """Whether `word` (casefolded) is laughter or an onomatopoeia made of one repeated syllable."""
    return _INTERJECTION.fullmatch(word) is not None


def _word_around(text: str, start: int, end: int) -> str:
    """The run of word characters holding text[start:end] ('kkkkkkkkk' for the 'kk' loop in its first 8)."""
    while start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_"):
        start -= 1
    while end < len(text) and (text[end].isalnum() or text[end] == "_"):
        end += 1
    return text[start:end]


def _piece_loop(text: str) -> tuple[str, int] | None:
    """The piece looping most often inside one word (first of equals), with its number of copies; an
    interjection word ('hahaha', at most MAX_INTERJECTION_COPIES copies) is not a loop."""
    best: tuple[str, int] | None = None
    for m in _PIECE_LOOP.finditer(text):
        piece = m.group(1)
        copies = len(m.group(0)) // len(piece)
        if copies <= MAX_INTERJECTION_COPIES and is_interjection(_word_around(text, m.start(), m.end())):
            continue
        if any(c.isalpha() for c in piece):  # not '121212'
            if best is None or copies > best[1]:
                best = (piece, copies)
    return best


def _repetition(toks: list[str], text_cf: str, th: QualityThresholds) -> tuple[list[str], int]:
    """(reasons, copies): the repetition found in one text by the n-gram and piece checks, and the largest
    number of copies of any n-gram (n <= 4) back to back, 2-/3-gram anywhere, or piece in a word."""
    k = th.tandem_copies
    reasons: list[str] = []
    level = 1
    for n in range(1, 5):
        for i in range(0, len(toks) - n + 1):
            block = toks[i:i + n]
            c = 1
            while toks[i + c * n:i + (c + 1) * n] == block:
                c += 1
            if c <= MAX_INTERJECTION_COPIES and all(is_interjection(t) for t in block):
                continue  # 'ha ha ha': laughter written as words
            if c >= k and not reasons:
                reasons.append(f"'{' '.join(block)}' x{k}+ in a row")
            level = max(level, c)
    for n in (3, 2):
        counts = Counter(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))
        if counts:
            gram, c = counts.most_common(1)[0]
            if c <= MAX_INTERJECTION_COPIES and all(is_interjection(t) for t in gram):
                continue  # 'ha ha ha ha': laughter written as words
            if c >= th.ngram_max_repeats and not reasons:
                reasons.append(f"'{' '.join(gram)}' x{c}")
            level = max(level, c)
    loop = _piece_loop(text_cf)
    if loop:
        piece, c = loop
        if c >= k and not reasons:
            reasons.append(f"'{piece}' x{k}+ in a row inside a word")
        level = max(level, c)
    return reasons, level


def detect_repetitive(text_en: str, text_pt: str, th: QualityThresholds = DEFAULT_THRESHOLDS) -> str | None:
    """Back-to-back repeated n-grams or sub-word pieces, an n-gram repeated many times, or an output far
    longer than the source (a source shorter than `min_source_chars` counts as `short_source_chars`).

    A repetition the source has too ('no no no' -> 'não não não', 'hahaha') is faithful: it flags only when
    the output has more than one copy beyond the source's largest repetition.
    """
    reasons, level = _repetition(words(text_pt), nfc(text_pt).casefold(), th)
    if reasons:
        src_reasons, src_level = _repetition(words(text_en), nfc(text_en).casefold(), th)
        if src_level >= 2 and level <= src_level + 1:
            reasons = []
    src, out = text_en.strip(), text_pt.strip()
    if len(src) >= th.min_source_chars:
        if len(out) / len(src) > th.max_length_ratio:
            reasons.append(f"length ratio {len(out) / len(src):.2f} > {th.max_length_ratio:g}")
    elif len(out) > th.max_length_ratio * max(len(src), th.short_source_chars):
        # Short sources have erratic ratios ('ok' -> 'está bem', 'tv' -> 'televisão'), but no short
        # source needs 2.5 times 20 characters: a longer output is a hallucinated continuation.
        reasons.append(f"{len(out)} chars for a {len(src)}-char source "
                       f"(> {th.max_length_ratio:g} x {max(len(src), th.short_source_chars)})")
    return f"{REPETITIVE}: " + "; ".join(reasons) if reasons else None



def _detect(row: Row, th: QualityThresholds) -> str | None:
    return detect_repetitive(row.text_en, row.text_pt, th)


def _looped_words(long_words: pl.Series, th: QualityThresholds) -> list[str]:
    """The distinct words (runs of \\w) in which a piece loops `tandem_copies` times or more."""
    uniq = long_words.explode().drop_nulls().unique()
    return [w for w in uniq.to_list() if (loop := _piece_loop(w)) and loop[1] >= th.tandem_copies]


def _candidates(c: Columns, th: QualityThresholds) -> pl.Expr:
    # A piece of >= 2 chars looping `tandem_copies` times needs a run of \w at least twice that long.
    long_words = c.materialise("repetitive_long_words",
                               c.pt_low.str.extract_all(latin(rf"\w{{{2 * th.tandem_copies},}}")))
    looped = _looped_words(c.values(long_words), th)
    tp = c.tokens_pt
    short = pl.max_horizontal(c.src_len, pl.lit(th.short_source_chars))
    long_source = c.src_len >= th.min_source_chars
    # A loop of a 2-4-gram ('x y x y x y') and a 2-/3-gram seen ngram_max_repeats times both repeat their
    # leading 2-gram that often; a one-word loop is the same word `tandem_copies` times in a row.
    times = min(th.tandem_copies, th.ngram_max_repeats)
    el = pl.element()
    often = (tp.list.eval(pl.concat_str([el, el.shift(-1)], separator=" ").drop_nulls()
                          .unique_counts().max()).list.first().fill_null(0) >= times)
    same_run = pl.lit(True)
    for j in range(1, th.tandem_copies):
        same_run = same_run & (el == el.shift(j))
    one_word_loop = tp.list.eval(same_run.fill_null(False).any()).list.first().fill_null(False)
    return (often | one_word_loop
            | (long_words.list.eval(pl.element().is_in(looped)).list.any() if looped else pl.lit(False))
            | (long_source & (c.out_len > (th.max_length_ratio - 0.01) * c.src_len))
            | (~long_source & (c.out_len > th.max_length_ratio * short - 1)))


FLAG = Flag(REPETITIVE, _detect, _candidates, doc="a decoder loop or a runaway output", colour="#2e4053")
