"""VQAv2 accuracy with the official answer normalisation (GT-Vision-Lab/VQA, vqaEval.py).

Faithful to the official evaluation, including its quirks (so numbers compare with published ones):
- The generated answer is ALWAYS normalised: punctuation rules, then lowercasing, number words -> digits
  ("two" -> "2", "none" -> "0"), articles (a, an, the) removed, contractions restored ("dont" -> "don't").
- The 10 reference answers are normalised ONLY when they disagree, and then only by the punctuation
  rules: unanimous references are compared verbatim (VQAv2's answers were normalised at collection).
- Punctuation rule: each of ; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? ! is deleted if it touches a space
  or if the text contains a comma between digits ("1,000"), otherwise replaced by a space
  ("t-shirt" -> "t shirt"). Then periods not followed by a digit are deleted ("3.5" keeps its period).
  Two official bugs are kept: the intended look-behind is written as a look-ahead (harmless), and
  `re.UNICODE` (== 32) is passed as the count, so at most 32 periods are removed.
- Accuracy of an answer = mean over the 10 leave-one-out subsets of 9 references of
  min(#matches in the subset / 3, 1).
A generated answer is cut to the longest reference answer's length in words, as the thesis did (a causal
LM does not stop after "yes"). The cut comes AFTER the answer's normalisation, so an article the model
adds ("a dog" against "dog") is removed first instead of taking the only word the cut keeps.
"""
from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

ANSWER_TYPES = ("yes/no", "number", "other")

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
    """The official normalisation of a generated answer (whitespace, punctuation, digits/articles)."""
    return process_digit_article(process_punctuation(text.replace("\n", " ").replace("\t", " ").strip()))


def truncate_to_references(answer: str, references: Iterable[str]) -> str:
    """Cut an answer to the longest reference's length in (whitespace) words."""
    longest = max((len(r.split()) for r in references), default=0)
    return " ".join(answer.split()[:longest])


def vqa_accuracy(answer: str, references: list[str], *, truncate: bool = True) -> float:
    """Official accuracy in [0, 1] of one generated answer against the (usually 10) reference answers."""
    return _accuracy(answer, references, truncate)[0]


def _accuracy(answer: str, references: list[str], truncate: bool) -> tuple[float, str]:
    if not references:
        raise VQAInputError("a VQA item needs at least one reference answer")
    hyp = normalize_answer(answer)
    refs = [r.replace("\n", " ").replace("\t", " ").strip() for r in references]
    if len(set(refs)) > 1:  # normalise references only when the annotators disagree
        refs = [process_punctuation(r) for r in refs]
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
    scored_as: str  # after normalisation and the cut to the longest reference
    accuracy: float


def vqa_metrics(predictions: dict[str, str], references: dict[str, list[str]], answer_types: dict[str, str],
                *, truncate: bool = True) -> tuple[dict[str, float], list[VQAScored]]:
    """Accuracy (fractions) overall and per answer type; keys overall, yes/no, number, other, n.

    predictions / references / answer_types are keyed by question id; every question needs all three.
    """
    missing = set(references) - set(predictions)
    if missing:
        raise VQAInputError(f"{len(missing)} questions have no prediction (e.g. {sorted(missing)[:3]})")
    if not references:
        raise VQAInputError("no questions to score")
    per_type: dict[str, list[float]] = defaultdict(list)
    scored = []
    for qid, refs in references.items():
        atype = answer_types.get(qid)
        if atype not in ANSWER_TYPES:
            raise VQAInputError(f"question {qid}: answer type {atype!r} is not one of {ANSWER_TYPES}")
        acc, used = _accuracy(predictions[qid], refs, truncate)
        per_type[atype].append(acc)
        scored.append(VQAScored(qid, atype, predictions[qid], used, acc))
    out = {"overall": sum(s.accuracy for s in scored) / len(scored), "n": float(len(scored))}
    for t in ANSWER_TYPES:
        out[t] = sum(per_type[t]) / len(per_type[t]) if per_type[t] else float("nan")
    return out, scored
