"""The `Engine` protocol every translator implements, and its `Result`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Result:
    """One translated string.

    score: mean token log-probability where the engine gives one (CTranslate2, HF), else None.
    billed_chars: characters the provider charges for this text (DeepL counts source characters);
    0 for local engines.
    input_truncated: the source was cut at the engine's max_input_length (None: the engine does not
    tokenize, e.g. DeepL).  Stored in the memory and summed in the split's stats.
    """

    text: str
    score: float | None = None
    billed_chars: int = 0
    input_truncated: bool | None = None


@runtime_checkable
class Engine(Protocol):
    """A translator EN -> PT-PT.

    `engine_id` is stable across runs and names the engine, model, version and every setting that
    changes the output (e.g. "deepl:pt-pt:formality=default", "ct2-madlad:google/madlad400-3b-mt:int8:beam1").
    It keys the translation memory, so changing a setting that changes outputs must change the id.
    """

    @property
    def engine_id(self) -> str: ...

    def translate(self, texts: list[str]) -> list[Result]:
        """Translate `texts` in order; len(result) == len(texts)."""
        ...
