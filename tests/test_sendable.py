"""translation/sendable.py: the one place for the text rules, shared by the translate stage (what may be
sent to an engine) and `ptvl review` (what a person may store): the first offending character, where it
is and which rule, and the translate stage's set-aside reasons."""
from __future__ import annotations

import unicodedata

import pytest

from translation.sendable import BIDI_CONTROLS, CONTROL_CHARS, LONE_SURROGATE, first_unsafe, text_problem


@pytest.mark.parametrize("text,char,position,kind", [
    ("a cat\x00 on a mat", "\x00", 5, "control character"),
    ("\x1b[2Jcleared", "\x1b", 0, "control character"),
    ("del\x7f", "\x7f", 3, "control character"),
    ("c1 \x9b", "\x9b", 3, "control character"),
    ("abc \u202eevil", "\u202e", 4, "bidi control"),
    ("x\u2069", "\u2069", 1, "bidi control"),
    ("half \udc80 pair", "\udc80", 5, "lone surrogate"),
    ("first \x07 then \u202e", "\x07", 6, "control character"),
])
def test_the_first_offending_character_is_named_with_its_position(text, char, position, kind) -> None:
    found = first_unsafe(text)
    assert (found.char, found.position, found.kind) == (char, position, kind)
    assert f"at position {position}" in found.describe() and f"U+{ord(char):04X}" in found.describe()


def test_what_is_allowed() -> None:
    for text in ("tab\tand\nline\r\nbreaks", "bidi marks \u200e\u200f\u061c", "acentuação, emoji 🙂", ""):
        assert first_unsafe(text) is None and text_problem(text) is None, text


def test_the_rules_are_exactly_cc_minus_tab_and_breaks_plus_bidi_controls_plus_surrogates() -> None:
    for code in range(0x10000):
        c = chr(code)
        refused = ((unicodedata.category(c) == "Cc" and c not in "\t\n\r") or c in BIDI_CONTROLS
                   or 0xD800 <= code <= 0xDFFF)
        assert (first_unsafe(f"ok {c}") is not None) == refused, hex(code)


def test_the_translate_stage_keeps_its_reasons() -> None:
    assert text_problem("a cat\x00 on a mat") == CONTROL_CHARS == "control_chars"
    assert text_problem("a bell \x07 rings") == CONTROL_CHARS
    assert text_problem("\x00 then \ud800") == LONE_SURROGATE == "lone_surrogate"  # a surrogate wins, as before
    assert text_problem("a \u202e b") == CONTROL_CHARS  # bidi controls: the same rule as for people's texts
