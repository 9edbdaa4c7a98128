"""Randomised equivalence of the two halves of every registered flag, so a new flag is covered on arrival.

For each flag of `registry.FLAGS`: its labelled cases (data_manifests/gold/flags_*.tsv, and the cases an
exact flag declares) plus random, adversarial mutations of them (case, accents decomposed, characters
polars and Python read differently, whitespace and punctuation, repeated words and pieces, cuts, dangling
words, copies of the source, numbers, scores around the threshold, nulls) must give
`flag_table(df) == flag_table_reference(df)` under several threshold sets, and the flag's vectorised
`candidates` must be true on every row its detector fires on (checked directly, so a flag that another
suppresses is held to it too).

PTVL_QUALITY_FUZZ_SEED and PTVL_QUALITY_FUZZ_ROWS (default 0 and 160) explore other or more rows.
"""
from __future__ import annotations

import os
import random
import unicodedata
import zlib

import polars as pl
import pytest

from translation.gold import FLAG_TUNING_PATH, load_flag_cases
from translation.quality import (
    FLAG_NAMES,
    FLAGS,
    Flag,
    QualityThresholds,
    Row,
    flag_table,
    flag_table_reference,
)
from translation.quality.table import _candidate_bits

SEED = int(os.environ.get("PTVL_QUALITY_FUZZ_SEED", "0"))
ROWS = int(os.environ.get("PTVL_QUALITY_FUZZ_ROWS", "160"))
THRESHOLDS = {
    "default": QualityThresholds(),
    # every check stricter, and a min_score that float32 cannot represent exactly
    "strict": QualityThresholds(tandem_copies=2, ngram_max_repeats=2, langid_min_words=1, min_length_ratio=0.9,
                                max_length_ratio=1.2, min_source_chars=10, short_source_chars=5, min_score=-1.1,
                                english_prob=0.6, portuguese_zipf_margin=0.0),
    "lax": QualityThresholds(tandem_copies=5, ngram_max_repeats=6, langid_min_words=6, min_length_ratio=0.2,
                             max_length_ratio=4.0, min_source_chars=80, short_source_chars=40, min_score=None),
}
CASES = pl.concat([load_flag_cases(), load_flag_cases(FLAG_TUNING_PATH)])

UNSAFE = ["\u0302", "ß", "º", "²", "\U0001f436", "\x1c", "ﬁ", "\u200b", "İ", "\u2028", "Σ", "\u0301", "ǅ"]
SPACES = [" ", "  ", "\t", "\n", "\u00a0", " \u00a0 ", "\r\n"]
PUNCT = [".", ",", "?", "!", "-", "'", ":", "…", "«", "»", "—", "/", "(", ")", "’", "\""]
DANGLING = ["de", "a", "com", "para", "o", "em", "das", "num", "sem"]
NUMBERS = [("3", "três"), ("42", "quarenta e dois"), ("1,000", "mil"), ("10:30", "10h30"), ("7 pm", "19h"),
           ("1980s", "anos 80"), ("2.5", "2,5"), ("1/2", "meio"), ("3rd", "terceiro"), ("100", "cem"),
           ("12:00", "meio-dia"), ("1,200,000", "1 200 000"), ("0", "zero")]
SCORES = [None, float("nan"), -1.5, -1.5000001, -1.4999, -1.1, -1.1000001, 0.0, -20.0]


def _seeds(f: Flag) -> list[tuple[str | None, str | None, float | None]]:
    """The flag's own labelled rows: declared cases and its TSV cases (tuning and held-out)."""
    rows: list[tuple[str | None, str | None, float | None]] = [(c.text_en, c.text_pt, c.score) for c in f.cases]
    rows += [(e, p, None) for e, p in CASES.filter(pl.col("flag") == f.name).select("en", "pt").rows()]
    return rows


def _split(text: str) -> list[str]:
    return text.split(" ") if text else []


# --- mutations: each takes and returns (en, pt, score); `pool` holds words of every flag's cases -----------

def _case(rng, en, pt, score, pool):
    fn = rng.choice([str.upper, str.title, str.swapcase, str.capitalize,
                     lambda t: "".join(c.upper() if rng.random() < 0.3 else c for c in t)])
    return (fn(en) if en and rng.random() < 0.3 else en), (fn(pt) if pt else pt), score


def _unsafe(rng, en, pt, score, pool):
    ch = rng.choice(UNSAFE)
    if rng.random() < 0.3 and en:
        i = rng.randrange(len(en) + 1)
        return en[:i] + ch + en[i:], pt, score
    if pt:
        i = rng.randrange(len(pt) + 1)
        return en, pt[:i] + ch + pt[i:], score
    return en, pt, score


def _decompose(rng, en, pt, score, pool):
    form = rng.choice(["NFD", "NFKD", "NFKC"])
    return en, unicodedata.normalize(form, pt) if pt else pt, score


def _space(rng, en, pt, score, pool):
    if not pt:
        return en, pt, score
    if rng.random() < 0.5:
        return en, rng.choice(SPACES) + pt + rng.choice(SPACES), score
    return en, pt.replace(" ", rng.choice(SPACES), rng.randint(1, 3)), score


def _punct(rng, en, pt, score, pool):
    if not pt:
        return en, pt, score
    if rng.random() < 0.3:
        return en, "".join(c for c in pt if c.isalnum() or c.isspace()), score
    words = _split(pt)
    i = rng.randrange(len(words))
    words[i] = rng.choice([words[i] + rng.choice(PUNCT), rng.choice(PUNCT) + words[i]])
    return en, " ".join(words), score


def _join(rng, en, pt, score, pool):
    words = _split(pt or "")
    if len(words) < 2:
        return en, pt, score
    i = rng.randrange(len(words) - 1)
    return en, " ".join(words[:i] + [words[i] + rng.choice(["-", "'", ""]) + words[i + 1]] + words[i + 2:]), score


def _repeat_words(rng, en, pt, score, pool):
    words = _split(pt or "") or [rng.choice(pool)]
    n = rng.randint(1, min(4, len(words)))
    i = rng.randrange(len(words) - n + 1)
    block, k = words[i:i + n], rng.randint(2, 5)
    if rng.random() < 0.7:  # back to back
        words = words[:i] + block * k + words[i + n:]
    else:  # scattered through the sentence
        for _ in range(k - 1):
            j = rng.randrange(len(words) + 1)
            words = words[:j] + block + words[j:]
    out = " ".join(words)
    if rng.random() < 0.2:  # the source repeats too (a faithful repetition)
        en = " ".join([(en or "x")] * rng.randint(2, 3))
    return en, out, score


def _piece_loop(rng, en, pt, score, pool):
    words = _split(pt or "") or ["x"]
    i = rng.randrange(len(words))
    source = words[i] if len(words[i]) >= 2 and rng.random() < 0.5 else rng.choice(["qj", "ra", "zz", "ha", "ada",
                                                                                    "12", "a1", "ção"])
    size = rng.randint(2, min(4, len(source))) if len(source) >= 2 else 2
    piece = source[:size]
    words[i] = words[i] + piece * rng.randint(2, 7)
    return en, " ".join(words), score


def _cut(rng, en, pt, score, pool):
    words = _split(pt or "")
    if len(words) < 2:
        return en, pt, score
    keep = max(1, int(len(words) * rng.uniform(0.1, 0.95)))
    return en, " ".join(words[:keep]), score


def _dangling(rng, en, pt, score, pool):
    tail = rng.choice(DANGLING) + rng.choice(["", "", ".", " ", "?"])
    if rng.random() < 0.2 and en:  # the source ends on the same word
        en = en + " " + tail.strip(" .?")
    return en, ((pt or "") + " " + tail).strip(" ") if rng.random() < 0.9 else tail, score


def _copy_source(rng, en, pt, score, pool):
    src = en or ""
    choice = rng.random()
    if choice < 0.4:
        return en, src, score
    if choice < 0.7:  # first words translated, the rest copied
        words, source = _split(pt or ""), _split(src)
        k = rng.randint(0, len(words))
        return en, " ".join(words[:k] + source[k:]), score
    return en, src.upper() + rng.choice(PUNCT), score


def _swap(rng, en, pt, score, pool):
    return pt, en, score


def _mix(rng, en, pt, score, pool):
    words = _split(pt or "")
    if words and rng.random() < 0.5:
        words[rng.randrange(len(words))] = rng.choice(pool)
    else:
        words += [rng.choice(pool) for _ in range(rng.randint(1, 4))]
    if rng.random() < 0.3:
        en = " ".join(_split(en or "") + [rng.choice(pool)])
    return en, " ".join(words), score


def _numbers(rng, en, pt, score, pool):
    digits, pt_form = rng.choice(NUMBERS)
    en = f"{en or ''} {digits}".strip() if rng.random() < 0.5 else f"{digits} {en or ''}".strip()
    shown = rng.choice([digits, pt_form, "", rng.choice(NUMBERS)[0], digits.replace(",", "."), digits + "h"])
    return en, f"{pt or ''} {shown}".strip(), score


def _length(rng, en, pt, score, pool):
    if rng.random() < 0.5:
        return en, " ".join([pt or rng.choice(pool)] * rng.randint(2, 4)), score
    return " ".join(_split(en or "")[: rng.randint(1, 2)]), pt, score


def _score(rng, en, pt, score, pool):
    return en, pt, rng.choice(SCORES + [round(rng.uniform(-4.0, 0.0), 4)])


def _null(rng, en, pt, score, pool):
    choice = rng.random()
    if choice < 0.3:
        return None, pt, score
    if choice < 0.5:
        return en, None, score
    return en, rng.choice(["", " ", "\u00a0", "\t\n", "."]), score


MUTATIONS = [_case, _unsafe, _decompose, _space, _punct, _join, _repeat_words, _piece_loop, _cut, _dangling,
             _copy_source, _swap, _mix, _numbers, _length, _score, _null]
WEIGHTS = [3, 2, 1, 2, 3, 2, 4, 3, 3, 3, 3, 1, 4, 3, 2, 3, 1]


def _rows(f: Flag) -> list[tuple[str | None, str | None, float | None]]:
    seeds = _seeds(f)
    pool = sorted({w for e, p, _ in _seeds_all() for w in _split((e or "") + " " + (p or "")) if w})
    rng = random.Random(SEED * 1_000_003 + zlib.crc32(f.name.encode()))
    rows = list(seeds)
    for _ in range(ROWS):
        en, pt, score = rng.choice(seeds)
        if rng.random() < 0.3:  # mixed with another flag's case
            other = rng.choice(_seeds_all())
            en, pt = (en, other[1]) if rng.random() < 0.5 else (other[0], pt)
        for op in rng.choices(MUTATIONS, WEIGHTS, k=rng.randint(1, 3)):
            en, pt, score = op(rng, en, pt, score, pool)
        rows.append((en, pt, score))
    return rows


_ALL: list[tuple[str | None, str | None, float | None]] = []


def _seeds_all() -> list[tuple[str | None, str | None, float | None]]:
    if not _ALL:
        _ALL.extend(r for f in FLAGS for r in _seeds(f))
    return _ALL


def _frame(rows, dtype) -> pl.DataFrame:
    df = pl.DataFrame(rows, schema={"text_en": pl.String, "text_pt": pl.String, "score": dtype}, orient="row")
    return df.with_columns(segment_id=pl.format("r{}", pl.int_range(pl.len())))


@pytest.mark.parametrize("f", FLAGS, ids=FLAG_NAMES)
def test_flag_table_equals_reference_on_the_flags_cases_and_mutations(f: Flag):
    rows = _rows(f)
    assert any(f.detect(Row(e or "", p, s), THRESHOLDS["default"]) for e, p, s in _seeds(f) if p and p.strip()
               or f.exclusive), f"{f.name}: no labelled case fires it; add firing cases"
    fired: set[str] = set()
    for name, th in THRESHOLDS.items():
        dtype = pl.Float32 if name != "lax" else pl.Float64
        df = _frame(rows, dtype)
        fast = flag_table(df, th, workers=1)
        ref = flag_table_reference(df, th)
        assert fast.columns == ref.columns
        assert fast["segment_id"].to_list() == df["segment_id"].to_list()
        for i, (a, b) in enumerate(zip(fast["flag_reasons"].to_list(), ref["flag_reasons"].to_list(), strict=True)):
            assert a == b, (name, df.row(i))
        assert fast["flags"].to_list() == ref["flags"].to_list()
        for flags, reasons in zip(ref["flags"].to_list(), ref["flag_reasons"].to_list(), strict=True):
            assert all(r.startswith(f"{n}: ") for n, r in zip(flags, reasons, strict=True)), reasons
            fired.update(flags)
    assert f.name in fired, f"{f.name} never fired on its own cases and their mutations"


@pytest.mark.parametrize("f", FLAGS, ids=FLAG_NAMES)
def test_candidates_are_a_superset_of_the_detector(f: Flag):
    """Wherever a flag's detector fires (suppressed or not), its pre-filter bit is set."""
    index = FLAGS.index(f)
    for name, th in THRESHOLDS.items():
        uniq = _frame(_rows(f), pl.Float32 if name != "lax" else pl.Float64).select(
            "text_en", "text_pt", "score").unique(maintain_order=True)
        bits = _candidate_bits(uniq, th, "text_en", "text_pt", "score").to_list()
        for (en, pt, score), b in zip(uniq.rows(), bits, strict=True):
            row = Row(en or "", pt, score)
            if not f.exclusive and any(g.exclusive and g.detect(row, th) for g in FLAGS):
                continue  # the other detectors never see such a row
            if f.detect(row, th):
                assert b >> index & 1, (name, en, pt, score)
