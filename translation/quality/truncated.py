"""The `truncated` flag: the output much shorter than the source, numbers of the source missing, or a
dangling last word.

The length ratio is calibrated on the gold set; numbers are missing only when the output states them in no
rendering ('42' may be 'quarenta e dois', '10:30' '10h30', '1,000' '1000'); a PT sentence never ends on an
article or preposition.
"""
from __future__ import annotations

import re

import polars as pl

from translation.quality.base import Columns, Flag, Row
from translation.quality.text import words
from translation.quality.thresholds import DEFAULT_THRESHOLDS, QualityThresholds

TRUNCATED = "truncated"

_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
# A PT sentence never ends on an article or preposition: the engine stopped mid-phrase.
_DANGLING = frozenset({"de", "do", "da", "dos", "das", "em", "no", "na", "nos", "nas", "o", "a", "os", "as", "um",
                       "uma", "uns", "umas", "e", "para", "com", "por", "pelo", "pela", "pelos", "pelas", "ao",
                       "à", "aos", "às", "num", "numa", "dum", "duma", "sobre", "entre", "sem"})

# --- numbers rendered differently: '42' -> 'quarenta e dois', '10:30' -> '10h30', '1,000' -> '1000' -----

_PT_NUMBER_WORDS: dict[str, float] = {
    "zero": 0, "um": 1, "uma": 1, "dois": 2, "duas": 2, "três": 3, "quatro": 4, "cinco": 5, "seis": 6,
    "sete": 7, "oito": 8, "nove": 9, "dez": 10, "onze": 11, "doze": 12, "treze": 13, "catorze": 14,
    "quatorze": 14, "quinze": 15, "dezasseis": 16, "dezesseis": 16, "dezassete": 17, "dezessete": 17,
    "dezoito": 18, "dezanove": 19, "dezenove": 19, "vinte": 20, "trinta": 30, "quarenta": 40, "cinquenta": 50,
    "sessenta": 60, "setenta": 70, "oitenta": 80, "noventa": 90, "cem": 100, "cento": 100, "duzentos": 200,
    "duzentas": 200, "trezentos": 300, "trezentas": 300, "quatrocentos": 400, "quatrocentas": 400,
    "quinhentos": 500, "quinhentas": 500, "seiscentos": 600, "seiscentas": 600, "setecentos": 700,
    "setecentas": 700, "oitocentos": 800, "oitocentas": 800, "novecentos": 900, "novecentas": 900,
    "meio": 0.5, "meia": 0.5, "dúzia": 12,
    "primeiro": 1, "primeira": 1, "segundo": 2, "segunda": 2, "terceiro": 3, "terceira": 3, "quarto": 4,
    "quarta": 4, "quinto": 5, "quinta": 5, "sexto": 6, "sexta": 6, "sétimo": 7, "sétima": 7, "oitavo": 8,
    "oitava": 8, "nono": 9, "nona": 9, "décimo": 10, "décima": 10, "vigésimo": 20, "vigésima": 20,
    "trigésimo": 30, "trigésima": 30, "quadragésimo": 40, "quinquagésimo": 50, "centésimo": 100,
}
_PT_MULTIPLIERS = {"mil": 1e3, "milhão": 1e6, "milhões": 1e6, "bilião": 1e12, "biliões": 1e12, "bilhão": 1e9,
                   "bilhões": 1e9}
_PT_NUMBER_RUN = re.compile(
    r"\b(?:" + "|".join(sorted(list(_PT_NUMBER_WORDS) + list(_PT_MULTIPLIERS), key=len, reverse=True)) + r")"
    r"(?:\s+(?:e\s+)?(?:" + "|".join(sorted(list(_PT_NUMBER_WORDS) + list(_PT_MULTIPLIERS), key=len,
                                            reverse=True)) + r")\b)*\b", re.IGNORECASE)
_TIMES_PT = re.compile(r"\b(\d{1,2})\s*(?:[:h.]|horas?\s+e)\s*(\d{2})\b|\b(\d{1,2})\s*h(?:oras?)?\b", re.IGNORECASE)
_NAMED_TIMES = {"meio-dia": 12 * 60, "meia-noite": 0}
_THOUSANDS_PT = re.compile(r"\b\d{1,3}(?:[ \u00a0\u202f.]\d{3})+\b")
_EN_NUMBER = re.compile(r"(\d+(?:[.,:]\d+)*)(\s*(?:[ap]\.?m\b\.?)|s\b|st\b|nd\b|rd\b|th\b)?", re.IGNORECASE)
_FRACTION = re.compile(r"\b(\d+)/(\d+)\b")


def _pt_values(text: str) -> tuple[set[float], set[int]]:
    """(numbers, times in minutes) an output states, in digits or in words ('dois milhões', '10h30')."""
    low = text.casefold()
    values: set[float] = set()
    for m in _THOUSANDS_PT.finditer(low):
        values.add(float(re.sub(r"\D", "", m.group(0))))
    for n in _NUMBER.findall(low):
        values.update(_digit_readings(n))
    for m in _PT_NUMBER_RUN.finditer(low):
        total, current = 0.0, 0.0
        for w in re.findall(r"\w+", m.group(0)):
            if w in _PT_MULTIPLIERS:
                total += (current or 1) * _PT_MULTIPLIERS[w]
                current = 0.0
            elif w in _PT_NUMBER_WORDS:
                values.add(float(_PT_NUMBER_WORDS[w]))
                current += _PT_NUMBER_WORDS[w]
        values.add(total + current)
    times: set[int] = set()
    for m in _TIMES_PT.finditer(low):
        hour = int(m.group(1) or m.group(3))
        times.add(hour * 60 + int(m.group(2) or 0))
    for name, minutes in _NAMED_TIMES.items():
        if name in low:
            times.add(minutes)
            if f"{name} e meia" in low:
                times.add(minutes + 30)
    for v in values:  # 'às 9' / 'nove e meia': an hour stated as a plain number
        if 0 <= v <= 24:
            times.add(int(v * 60))
            times.add(int(v) * 60 + (30 if v % 1 else 0))
    return values, times


def _digit_readings(n: str) -> set[float]:
    """Every value a digit string can mean: '1,000' -> {1000, 1.0}, '3.5' -> {3.5, 35}, '10:30' -> {10, 30}."""
    out: set[float] = set()
    parts = re.split(r"[.,:]", n)
    if all(len(p) == 3 for p in parts[1:]):
        out.add(float("".join(parts)))  # a thousands separator
    if len(parts) == 2:
        out.add(float(f"{parts[0]}.{parts[1]}"))  # a decimal point or comma
    out.update(float(p) for p in parts if p)
    return out


def _source_number_ok(m: re.Match[str], src_low: str, values: set[float], times: set[int]) -> bool:
    """Whether the output states the source number `m` in some rendering."""
    n, suffix = m.group(1), (m.group(2) or "").strip().casefold().replace(".", "")
    if ":" in n:
        hour, minute = (int(x) for x in n.split(":")[:2])
        pm = suffix == "pm" or re.match(r"\s*p\.?m\b", src_low[m.end():]) is not None
        return bool({hour * 60 + minute, (hour + 12) * 60 + minute if pm and hour < 12 else -1} & times)
    if suffix in ("am", "pm"):
        hour = int(n.split(".")[0].split(",")[0])
        return bool({hour * 60, (hour + 12) * 60 if suffix == "pm" and hour < 12 else -1} & times)
    readings: set[float] = set()
    if "," in n and all(len(p) == 3 for p in n.split(",")[1:]):
        readings.add(float(n.replace(",", "")))  # EN thousands separator
    elif "." in n and n.count(".") == 1:
        readings.add(float(n))  # EN decimal point
    else:
        readings.add(float(re.sub(r"\D", "", n) or 0))
    if suffix == "s" and readings and max(readings) >= 1900:  # the 1980s -> os anos 80
        readings.add(max(readings) % 100)
    return bool(readings & values)


def missing_source_numbers(text_en: str, text_pt: str) -> list[str]:
    """Source numbers the output states in no rendering: digits with either separator, PT number and
    ordinal words, 24-hour times ('6:45 pm' -> '18h45'), decades ('1980s' -> 'anos 80'), halves."""
    src_numbers = _NUMBER.findall(text_en)
    if not src_numbers or set(src_numbers) <= set(_NUMBER.findall(text_pt)):
        return []  # every source number is in the output verbatim, which every reading below accepts
    src_low = text_en.casefold()
    values, times = _pt_values(text_pt)
    missing: list[str] = []
    fractions = {m.span(): float(m.group(1)) / float(m.group(2)) for m in _FRACTION.finditer(src_low)
                 if float(m.group(2))}
    covered = [span for span, v in fractions.items() if v in values]
    for m in _EN_NUMBER.finditer(src_low):
        if any(a <= m.start() < b for a, b in covered):
            continue
        if not _source_number_ok(m, src_low, values, times):
            missing.append(m.group(1))
    return missing


def detect_truncated(text_en: str, text_pt: str, th: QualityThresholds = DEFAULT_THRESHOLDS) -> str | None:
    """Output far shorter than the source, numbers of the source missing, or a dangling last word.

    Translation changes the words, so 'the source's last content words are missing' is checked through
    what survives translation: numbers, in whatever rendering (see `missing_source_numbers`).  Proper nouns
    are mostly hypernymised away in CC3M ('actor', 'person') and are not a reliable signal.  A last word
    copied from the end of the source ('the letter a' -> 'a letra a') is not dangling.
    """
    reasons = []
    src, out = text_en.strip(), text_pt.strip()
    if len(src) >= th.min_source_chars:
        ratio = len(out) / len(src)
        if ratio < th.min_length_ratio:
            reasons.append(f"length ratio {ratio:.2f} < {th.min_length_ratio:g}")
    if any(c.isdigit() for c in src):
        missing = missing_source_numbers(src, out)
        if missing:
            reasons.append("source numbers missing: " + ", ".join(dict.fromkeys(missing)))
    toks = words(out)
    if len(toks) >= 3 and toks[-1] in _DANGLING and not re.search(r"[.!?]\s*$", out):
        src_toks = words(src)
        if not src_toks or src_toks[-1] != toks[-1]:
            reasons.append(f"ends on '{toks[-1]}'")
    return f"{TRUNCATED}: " + "; ".join(reasons) if reasons else None



def _detect(row: Row, th: QualityThresholds) -> str | None:
    return detect_truncated(row.text_en, row.text_pt, th)


def _candidates(c: Columns, th: QualityThresholds) -> pl.Expr:
    # source numbers not all in the output verbatim (missing_source_numbers is [] when they all are)
    digits = (c.en.str.extract_all(_NUMBER.pattern).list.set_difference(c.pt.str.extract_all(_NUMBER.pattern))
              .list.len() > 0)
    long_source = c.src_len >= th.min_source_chars
    return ((long_source & (c.out_len < (th.min_length_ratio + 0.01) * c.src_len))
            | digits | ((c.n_tokens >= 3) & c.tokens_pt.list.last().is_in(sorted(_DANGLING))))


FLAG = Flag(TRUNCATED, _detect, _candidates, doc="the output cut short: length, missing numbers, dangling word",
            colour="#b9770e")
