"""Exceptions shared by the translation engines, the memory and the runner (never carry a secret)."""
from __future__ import annotations


class TranslationError(Exception):
    """Base class of every error the translation library raises on purpose."""


class ConfigurationError(TranslationError):
    """A setting, key or model folder is missing or wrong; raised at start-up, before any work."""


class MemoryIntegrityError(TranslationError):
    """A memory row (stored, put or imported) whose key does not match its English text."""


class EngineError(TranslationError):
    """An engine request failed for good (after the client's own retries)."""


class QuotaExceeded(EngineError):
    """The provider refused more characters this billing period (DeepL HTTP 456).

    Engines raise it bare; `translation.runner.translate_missing` re-raises it with the counts of
    what is done (stored durably) and what remains, and how to resume.
    """

    def __init__(self, message: str, *, done: int | None = None, remaining: int | None = None) -> None:
        super().__init__(message)
        self.done = done
        self.remaining = remaining


class RateLimited(EngineError):
    """The provider kept answering HTTP 429 longer than the configured wait; rerun later (resumable)."""


class RequestRejected(EngineError):
    """The provider refused a request as malformed or too large (HTTP 400/413): one of its texts
    cannot be sent.  The runner splits the batch to find it and sets it aside; never retried as is."""
