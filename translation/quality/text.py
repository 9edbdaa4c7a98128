"""Text helpers the per-row detectors share: the identity form of a string and its word tokens."""
from __future__ import annotations

import re
import unicodedata

# A word: letters/digits/underscore, hyphenated or apostrophe-joined parts kept together ('vê-se').
WORD = re.compile(r"\w+(?:[-']\w+)*")
_PUNCT = re.compile(r"[^\w\s]+")


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def normalise(text: str) -> str:
    """Casefolded, NFKC, punctuation removed, whitespace collapsed: the form compared for identity."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_PUNCT.sub(" ", text).split())


def words(text: str) -> list[str]:
    """Lower-cased word tokens (accents kept; hyphenated clitics such as 'vê-se' stay one token)."""
    return [w.casefold() for w in WORD.findall(nfc(text))]
