"""Dry-run cost: the characters a provider would bill for the texts missing from the memory, and the price."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from translation.memory import TranslationMemory, memory_key


@dataclass(frozen=True)
class CostEstimate:
    """What a run would send. `chars` counts source characters (code points), as DeepL bills them."""

    rows: int  # input strings, duplicates included
    unique: int  # distinct strings (memory keys)
    unique_missing: int  # distinct strings not yet in the memory: the only ones that would be sent
    chars: int  # characters of those strings
    eur: float  # chars * price_per_million / 1e6

    def __str__(self) -> str:
        return (f"{self.rows:,} rows, {self.unique:,} distinct, {self.unique_missing:,} not in memory: "
                f"{self.chars:,} characters billed, about EUR {self.eur:,.2f}")


def estimate(texts: Sequence[str], memory: TranslationMemory, engine_id: str, price_per_million: float,
             *, contexts: Sequence[str | None] | None = None) -> CostEstimate:
    """Price a run without sending anything: only distinct texts missing from `memory` count.

    Context is not billed by DeepL, so with `contexts` only the text's characters count (but a text
    with two different contexts is two memory keys, and is billed twice).
    """
    wanted: dict[str, str] = {}
    for i, t in enumerate(texts):
        wanted.setdefault(memory_key(t, contexts[i] if contexts is not None else None), t)
    missing = memory.missing(engine_id, list(wanted))
    chars = sum(len(wanted[h]) for h in missing)
    return CostEstimate(rows=len(texts), unique=len(wanted), unique_missing=len(missing), chars=chars,
                        eur=chars * price_per_million / 1e6)
