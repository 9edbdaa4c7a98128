"""The one definition of `text_hash`, the key that joins segments, the translation memory and outputs."""
from __future__ import annotations

import hashlib


def text_hash(text: str) -> str:
    """Stable 32-hex-digit key of an exact English string.

    No normalisation on purpose: two strings that differ in case or punctuation may translate
    differently, and a memory hit must be exactly the string that was paid for.
    """
    # surrogatepass: a lone surrogate (invalid text, set aside before any engine sees it) still gets a
    # key; every valid string encodes exactly as plain UTF-8.
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
