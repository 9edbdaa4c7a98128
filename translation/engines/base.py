"""The `Engine` protocol every translator implements, its `Result`, and `BaseEngine` with the defaults.

Callers (`translation.runner`, the pipeline's part tasks) use only the members declared in `Engine`; an
engine states its behaviour by overriding them, never by having or lacking an attribute.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

from translation.sendable import text_problem


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


@dataclass
class RequestCounters:
    """What an engine's requests went through, for the part's stats and the billing reconciliation (all
    zero for a local engine, which makes no requests)."""

    requests: int = 0  # requests answered
    retries_429: int = 0
    waited_429_s: float = 0.0
    retries_other: int = 0  # 5xx and network errors retried
    # Requests that timed out (or lost their connection) after they were sent: the provider may have billed
    # them, and they are sent again (or, failing for good, by the rerun).
    possibly_billed_twice_requests: int = 0
    possibly_billed_twice_chars: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Quota:
    """A provider's billing counter for the key: characters used this period and the limit (None: none)."""

    used: int
    limit: int | None


@runtime_checkable
class Engine(Protocol):
    """A translator EN -> PT-PT.

    `engine_id` is stable across runs and names the engine, model, version and every setting that
    changes the output (e.g. "deepl:en>pt-pt:...:context=off", "ct2-madlad:madlad400-3b-mt@<digest>:int8:beam1").
    It keys the translation memory, so changing a setting that changes outputs must change the id.
    """

    @property
    def engine_id(self) -> str: ...

    @property
    def uses_context(self) -> bool:
        """Whether `translate` takes a `context` (then the memory key covers text + context)."""
        ...

    @property
    def call_size(self) -> int | None:
        """Texts per `translate` call the runner makes and stores as one chunk; None: the runner's batch size."""
        ...

    counters: RequestCounters

    def translate(self, texts: list[str], context: str | None = None) -> list[Result]:
        """Translate `texts` in order; len(result) == len(texts)."""
        ...

    def unsendable(self, text: str, context: str | None = None) -> str | None:
        """Why `text` is never sent to this engine (the runner sets it aside with that reason), or None."""
        ...

    def request_batches(self, texts: list[str], context: str | None = None) -> list[slice] | None:
        """How `texts` are cut into requests the engine accepts (each stored before the next is sent), or
        None when the engine has no request limits and the runner cuts calls by `call_size`."""
        ...

    def billed_so_far(self) -> int | None:
        """The provider's own billing counter for this key (DeepL's character count), or None."""
        ...

    def quota(self) -> Quota | None:
        """The key's usage and limit as the provider reports them (raises ConfigurationError for a rejected
        key), or None for an engine that bills nothing."""
        ...

    def close(self) -> None:
        """Release clients and models."""
        ...


class BaseEngine:
    """The defaults of every `Engine` member but `engine_id` and `translate`: a local engine that needs no
    context, has no request limits, bills nothing and holds nothing to close."""

    uses_context: bool = False
    call_size: int | None = None

    def __init__(self) -> None:
        self.counters = RequestCounters()

    @property
    def engine_id(self) -> str:
        raise NotImplementedError

    def translate(self, texts: list[str], context: str | None = None) -> list[Result]:
        raise NotImplementedError

    def unsendable(self, text: str, context: str | None = None) -> str | None:
        return text_problem(text)

    def request_batches(self, texts: list[str], context: str | None = None) -> list[slice] | None:
        return None

    def billed_so_far(self) -> int | None:
        return None

    def quota(self) -> Quota | None:
        return None

    def close(self) -> None:
        return None

    def __enter__(self) -> BaseEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
