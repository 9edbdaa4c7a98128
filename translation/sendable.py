"""The text rules, in one place: which characters a text may carry to a translation engine (the translate
stage) and into the human-review overlay (`ptvl review`), and so into the shards.

Refused, wherever they are:

- a lone surrogate (U+D800-U+DFFF not in a pair): not valid Unicode, it cannot even be encoded as UTF-8;
- NUL and every other C0/C1 control character, DEL included, except tab, line feed and carriage return:
  DeepL rejects or silently drops them, a model translates them as noise, and a terminal or a viewer
  may act on them (ESC starts an escape sequence).  Tab and the line breaks are allowed: source captions
  and answers carry them, and a browser sends a textarea's line breaks as CR LF;
- the bidi embedding, override and isolate controls (U+202A-U+202E, U+2066-U+2069): they reorder how
  the text around them is shown, so a caption can read differently from what it holds.  The bidi marks
  (U+200E, U+200F, U+061C) only set a direction, and are allowed.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# Reasons a text is set aside (never sent); engines add their own limits (DeepL: over_max_chars,
# too_long_for_request) and the runner adds rejected_by_engine.
LONE_SURROGATE = "lone_surrogate"
CONTROL_CHARS = "control_chars"

ALLOWED_CONTROLS = "\t\n\r"
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# One character class, searched in C: the translate stage checks millions of strings.
_SURROGATE = re.compile("[\ud800-\udfff]")
_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_C0_NAMES = ("NUL", "SOH", "STX", "ETX", "EOT", "ENQ", "ACK", "BEL", "BS", "TAB", "LF", "VT", "FF", "CR", "SO",
             "SI", "DLE", "DC1", "DC2", "DC3", "DC4", "NAK", "SYN", "ETB", "CAN", "EM", "SUB", "ESC", "FS", "GS",
             "RS", "US")


@dataclass(frozen=True)
class UnsafeChar:
    """The first character of a text that breaks the rules: which, where, and which rule."""

    char: str
    position: int  # 0-based index in the text (Python characters, i.e. code points)
    kind: str  # "lone surrogate", "control character" or "bidi control"

    @property
    def reason(self) -> str:
        """The translate stage's set-aside reason (`LONE_SURROGATE` or `CONTROL_CHARS`)."""
        return LONE_SURROGATE if self.kind == "lone surrogate" else CONTROL_CHARS

    def describe(self) -> str:
        """'U+001B (ESC, a control character) at position 4'."""
        code = ord(self.char)
        name = _C0_NAMES[code] if code < 32 else ("DEL" if code == 0x7F else unicodedata.name(self.char, ""))
        label = f"U+{code:04X}" + (f" ({name}, a {self.kind})" if name else f" (a {self.kind})")
        return f"{label} at position {self.position}"


def first_unsafe(text: str) -> UnsafeChar | None:
    """The first character of `text` the rules refuse (see the module docstring), or None."""
    found = _UNSAFE.search(text)
    if found is None:
        return None
    c = found.group()
    kind = ("lone surrogate" if 0xD800 <= ord(c) <= 0xDFFF else "bidi control" if c in BIDI_CONTROLS
            else "control character")
    return UnsafeChar(c, found.start(), kind)


def text_problem(text: str) -> str | None:
    """Why `text` must never be sent to any engine, or None: ``lone_surrogate`` or ``control_chars`` (a
    C0/C1 control other than tab and the line breaks, or a bidi embedding/override/isolate control).
    A lone surrogate anywhere wins over a control character earlier in the text, as it always has."""
    if _SURROGATE.search(text):
        return LONE_SURROGATE
    found = first_unsafe(text)
    return found.reason if found else None
