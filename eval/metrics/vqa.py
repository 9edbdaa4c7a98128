"""VQAv2 accuracy: the official rule (GT-Vision-Lab/VQA, vqaEval.py) and a Portuguese mode.

Two modes, chosen with `EvalSettings.vqa_mode` and labelled in every table (`VQA_MODE_LABELS`):

``official`` -- the CURRENT official vqaEval.py, i.e. the revision after the 2021 commit "Fixed processing
answers bug" (before it, the 2016 code normalised the generated answer always and the references only by
punctuation when they disagreed, so an exact copy "Sim" of a unanimous, never-normalised reference "Sim" x10
scored 0). Today's rule, per question:
- whitespace: newlines and tabs become spaces and both sides are stripped;
- the 10 references AGREE (one distinct string): neither side is normalised; exact string match;
- they DISAGREE: both the references and the generated answer go through punctuation rules, then
  lowercasing, number words -> digits ("two" -> "2", "none" -> "0"), articles (a, an, the) removed and
  contractions restored ("dont" -> "don't").
- Punctuation rule: each of ; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? ! is deleted if it touches a space
  or if the text contains a comma between digits ("1,000"), otherwise replaced by a space
  ("t-shirt" -> "t shirt"). Then periods not followed by a digit are deleted ("3.5" keeps its period).
  Two official bugs are kept: the intended look-behind is written as a look-ahead (harmless), and
  `re.UNICODE` (== 32) is passed as the count, so at most 32 periods are removed.
English rules on Portuguese text: "a comer" loses its "a" only when the annotators disagree.

``pt`` -- Portuguese mode for machine-translated references (not comparable with published numbers):
- BOTH sides are ALWAYS normalised, agreeing references or not;
- lowercase; punctuation removed, but a hyphen or apostrophe between letters stays ("guarda-chuva",
  "d'água" stay whole words); periods kept only between digits;
- the decimal comma: "1,5" -> "1.5" (so "1,5" and "1.5" match);
- articles removed: o a os as um uma uns umas;
- contractions of a preposition with an article keep the preposition: do da dos das dum duma -> de,
  no na nos nas num numa -> em, pelo pela pelos pelas -> por, ao aos à às -> a (then dropped as "a");
- number words -> digits: zero/nenhum(a) -> 0, um/uma ALONE -> 1 (elsewhere they are articles),
  dois/duas -> 2, ... dezanove/dezenove -> 19, the tens, cem, and "vinte e dois" -> 22.

Accuracy of an answer (both modes) = mean over the 10 leave-one-out subsets of 9 references of
min(#matches in the subset / 3, 1).
A generated answer is cut to the longest reference answer's length in words, as the thesis did (a causal
LM does not stop after "yes"). The cut comes AFTER the answer's normalisation (when the mode normalises it),
so an article the model adds ("a dog" against "dog") is removed first instead of taking the only word the
cut keeps.
"""
from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

ANSWER_TYPES = ("yes/no", "number", "other")
VQAMode = Literal["official", "pt"]
VQA_MODES: tuple[str, ...] = ("official", "pt")
VQA_MODE_LABELS = {
    "official": "official vqaEval.py (2021 revision: references that agree are compared verbatim)",
    "pt": "Portuguese mode (both sides normalised: case, punctuation, articles, contractions, numbers)",
}

# The official contraction table (apostrophe-less form -> standard form).
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = {"a", "an", "the"}
PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
               ",", "?", "!"]
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")  # sic: the official pattern (a lookahead for "<=digit")
_COMMA_BETWEEN_DIGITS = re.compile(r"(\d)(,)(\d)")


class VQAInputError(ValueError):
    """A VQA item is malformed (no references, unknown answer type, missing prediction)."""


def process_punctuation(text: str) -> str:
    out = text
    digit_comma = _COMMA_BETWEEN_DIGITS.search(text) is not None
    for p in PUNCTUATION:
        # The official test looks at the ORIGINAL text each time, not the partly processed one.
        if p + " " in text or " " + p in text or digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out, count=re.UNICODE)  # sic: the official code passes re.UNICODE as count


def process_digit_article(text: str) -> str:
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize_answer(text: str) -> str:
    """The official normalisation (whitespace, punctuation, digits/articles/contractions), applied to both
    sides when the references disagree."""
    return process_digit_article(process_punctuation(_clean(text)))


def _clean(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


# ---------------------------------------------------------------------- Portuguese mode

PT_ARTICLES = frozenset({"o", "a", "os", "as", "um", "uma", "uns", "umas"})
# Preposition + article -> the preposition (the article part goes, as the articles do).
PT_CONTRACTIONS: dict[str, str] = {
    **dict.fromkeys(("do", "da", "dos", "das", "dum", "duma", "duns", "dumas"), "de"),
    **dict.fromkeys(("no", "na", "nos", "nas", "num", "numa", "nuns", "numas"), "em"),
    **dict.fromkeys(("pelo", "pela", "pelos", "pelas"), "por"),
    **dict.fromkeys(("ao", "aos", "à", "às"), "a"),
}
PT_UNITS: dict[str, int] = {
    "zero": 0, "nenhum": 0, "nenhuma": 0, "um": 1, "uma": 1, "dois": 2, "duas": 2, "três": 3, "quatro": 4,
    "cinco": 5, "seis": 6, "sete": 7, "oito": 8, "nove": 9, "dez": 10, "onze": 11, "doze": 12, "treze": 13,
    "catorze": 14, "quatorze": 14, "quinze": 15, "dezasseis": 16, "dezesseis": 16, "dezassete": 17,
    "dezessete": 17, "dezoito": 18, "dezanove": 19, "dezenove": 19,
}
PT_TENS: dict[str, int] = {"vinte": 20, "trinta": 30, "quarenta": 40, "cinquenta": 50, "sessenta": 60,
                           "setenta": 70, "oitenta": 80, "noventa": 90, "cem": 100}
_PT_ONE = frozenset({"um", "uma"})  # "one" or "a": a number only when it is the whole answer
_DECIMAL_COMMA = re.compile(r"(?<=\d),(?=\d)")
_W = r"[^\W_]+"  # letters and digits (Unicode), not "_"
# A decimal number, or a word whose parts are joined by hyphens / apostrophes ("guarda-chuva", "d'água").
_PT_TOKEN = re.compile(rf"\d+(?:\.\d+)+|{_W}(?:['-]{_W})*")


def pt_words(text: str) -> list[str]:
    """Lowercase words of a Portuguese answer: the decimal comma becomes a period, punctuation separates
    words except a hyphen or apostrophe between letters, and a period between digits."""
    text = _DECIMAL_COMMA.sub(".", _clean(text).lower().replace("\u2019", "'"))
    return _PT_TOKEN.findall(text)


def _pt_numbers(words: list[str]) -> list[str]:
    """Number words -> digits; "vinte e dois" -> "22"; a lone um/uma -> "1", elsewhere it stays a word."""
    out: list[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        if w in PT_TENS:
            value = PT_TENS[w]
            if value < 100 and i + 2 < len(words) and words[i + 1] == "e" and 1 <= PT_UNITS.get(words[i + 2], 0) <= 9:
                value += PT_UNITS[words[i + 2]]
                i += 2
            out.append(str(value))
        elif w in PT_UNITS and (w not in _PT_ONE or len(words) == 1):
            out.append(str(PT_UNITS[w]))
        else:
            out.append(w)
        i += 1
    return out


def normalize_answer_pt(text: str) -> str:
    """The Portuguese-mode normalisation (see the module docstring); applied to answer and references."""
    words = [PT_CONTRACTIONS.get(w, w) for w in _pt_numbers(pt_words(text))]
    return " ".join(w for w in words if w not in PT_ARTICLES)


# ---------------------------------------------------------------------- accuracy


def truncate_to_references(answer: str, references: Iterable[str]) -> str:
    """Cut an answer to the longest reference's length in (whitespace) words."""
    longest = max((len(r.split()) for r in references), default=0)
    return " ".join(answer.split()[:longest])


def vqa_accuracy(answer: str, references: list[str], *, truncate: bool = True, mode: VQAMode = "official") -> float:
    """Accuracy in [0, 1] of one generated answer against the (usually 10) reference answers."""
    return _accuracy(answer, references, truncate, mode)[0]


def _accuracy(answer: str, references: list[str], truncate: bool, mode: str) -> tuple[float, str]:
    if mode not in VQA_MODES:
        raise VQAInputError(f"VQA mode {mode!r} is not one of {VQA_MODES}")
    if not references:
        raise VQAInputError("a VQA item needs at least one reference answer")
    hyp, refs = _clean(answer), [_clean(r) for r in references]
    if mode == "pt":
        hyp, refs = normalize_answer_pt(hyp), [normalize_answer_pt(r) for r in refs]
    elif len(set(refs)) > 1:  # official since 2021: both sides normalised only when annotators disagree
        hyp, refs = normalize_answer(hyp), [normalize_answer(r) for r in refs]
    if truncate:
        hyp = truncate_to_references(hyp, refs)
    accs = []
    for i in range(len(refs)):
        matches = sum(1 for j, r in enumerate(refs) if j != i and r == hyp)
        accs.append(min(1.0, matches / 3.0))
    return sum(accs) / len(accs), hyp


@dataclass(frozen=True)
class VQAScored:
    question_id: str
    answer_type: str
    answer: str  # as generated
    scored_as: str  # after normalisation (if the mode applies it) and the cut to the longest reference
    accuracy: float


def vqa_metrics(predictions: dict[str, str], references: dict[str, list[str]], answer_types: dict[str, str],
                *, truncate: bool = True, mode: VQAMode = "official") -> tuple[dict[str, float], list[VQAScored]]:
    """Accuracy (fractions) overall and per answer type; keys overall, yes/no, number, other, n.

    predictions / references / answer_types are keyed by question id; every question needs all three.
    mode: "official" (vqaEval.py as of 2021) or "pt" (Portuguese mode); see the module docstring.
    """
    missing = set(references) - set(predictions)
    if missing:
        raise VQAInputError(f"{len(missing)} questions have no prediction (e.g. {sorted(missing)[:3]})")
    if not references:
        raise VQAInputError("no questions to score")
    scored = []
    for qid, refs in references.items():
        atype = answer_types.get(qid)
        if atype not in ANSWER_TYPES:
            raise VQAInputError(f"question {qid}: answer type {atype!r} is not one of {ANSWER_TYPES}")
        acc, used = _accuracy(predictions[qid], refs, truncate, mode)
        scored.append(VQAScored(qid, atype, predictions[qid], used, acc))
    return summarize_vqa(scored), scored


def summarize_vqa(scored: list[VQAScored]) -> dict[str, float]:
    """overall / per answer type means (NaN for a type without questions) and n, from scored questions
    (also what a common-subset comparison recomputes from a subset of them)."""
    if not scored:
        raise VQAInputError("no questions to score")
    per_type: dict[str, list[float]] = defaultdict(list)
    for s in scored:
        per_type[s.answer_type].append(s.accuracy)
    out = {"overall": sum(s.accuracy for s in scored) / len(scored), "n": float(len(scored))}
    for t in ANSWER_TYPES:
        out[t] = sum(per_type[t]) / len(per_type[t]) if per_type[t] else float("nan")
    return out
