"""The `reference` engine: serves translations imported into the memory and never translates.

The embedded sample imports its hand-made PT-PT side this way, and a collaborator's exported memory
(or a professional translation) can be compared with the machine engines through the same stages.
"""
from __future__ import annotations

from translation.engines.base import BaseEngine, Result
from translation.errors import EngineError


class ReferenceEngine(BaseEngine):
    """An Engine whose every translation must already be in the memory."""

    def __init__(self, name: str = "reference") -> None:
        super().__init__()
        self._engine_id = name

    @property
    def engine_id(self) -> str:
        return self._engine_id

    def translate(self, texts: list[str], context: str | None = None) -> list[Result]:
        raise EngineError(
            f"the {self._engine_id!r} memory has no translation for {len(texts)} text(s), e.g. {texts[0]!r}; "
            "a reference engine only serves imported translations (import them with "
            "`ptvl memory import`)"
        )
