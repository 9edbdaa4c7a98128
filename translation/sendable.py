"""Texts that must never be sent to a translation engine, whatever the engine: the one check."""
from __future__ import annotations

import unicodedata

# Reasons a text is set aside (never sent); engines add their own limits (DeepL: over_max_chars,
# too_long_for_request) and the runner adds rejected_by_engine.
LONE_SURROGATE = "lone_surrogate"
CONTROL_CHARS = "control_chars"


def text_problem(text: str) -> str | None:
    """Why `text` must never be sent to any engine, or None.

    ``lone_surrogate``: not valid Unicode (it cannot even be encoded as UTF-8, so no request body can
    carry it).  ``control_chars``: NUL and the other C0/C1 control characters except tab, newline and
    carriage return (DeepL rejects or silently drops them, and a model would translate noise).
    """
    if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        return LONE_SURROGATE
    if any(unicodedata.category(c) == "Cc" and c not in "\t\n\r" for c in text):
        return CONTROL_CHARS
    return None
