"""Translate what the memory lacks: dedup, look up, send misses batch by batch, store each batch before the next.

The cost and resume guarantee lives here: a batch's results are committed (fsync'd) to the memory
before the next request is sent, so ``kill -9`` at any moment loses at most the request in flight,
and a rerun asks the memory first and never pays for a stored text again.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from translation.engines.base import Engine, Result
from translation.errors import ConfigurationError, EngineError, QuotaExceeded
from translation.memory import MemoryRow, TranslationMemory, memory_key


@dataclass
class RunStats:
    """Counts of one `translate_missing` call (they add up: unique = hits + sent + remaining)."""

    rows: int = 0  # input strings, duplicates included
    unique: int = 0  # distinct memory keys among them
    hits: int = 0  # distinct keys already in the memory before this call
    sent: int = 0  # distinct texts translated by the engine and stored by this call
    billed_chars: int = 0  # characters the engine reported as billed for them
    requests: int = 0  # engine calls made (one stored batch each)

    @property
    def remaining(self) -> int:
        return self.unique - self.hits - self.sent


ProgressFn = Callable[[RunStats], None]


def translate_missing(
    texts: Sequence[str],
    engine: Engine,
    memory: TranslationMemory,
    *,
    contexts: Sequence[str | None] | None = None,
    batch_size: int = 50,
    max_batch_bytes: int | None = None,
    progress: ProgressFn | None = None,
) -> RunStats:
    """Make sure every text of `texts` has a translation by `engine` in `memory`; pay only for misses.

    texts: any strings, duplicates allowed (each distinct one is sent at most once).
    contexts: optional per-text context (DeepL ``use_context``); the memory key then covers it.
    batch_size / max_batch_bytes: most texts / UTF-8 bytes of text per engine call. Engines that
        expose ``request_batches`` (DeepL) split further to their request limits; every request's
        results are stored before the next request is sent.
    progress: called with the running stats after each stored batch.

    Raises QuotaExceeded (with ``done``/``remaining``) when the engine's quota runs out, and
    EngineError when a request fails for good (after the client's retries). Either way everything
    translated so far is stored, and rerunning the same call resumes with the remaining texts.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    uses_context = bool(getattr(engine, "uses_context", False))
    if contexts is not None:
        if len(contexts) != len(texts):
            raise ValueError(f"{len(contexts)} contexts for {len(texts)} texts")
        if not uses_context:
            raise ConfigurationError(
                f"{engine.engine_id}: contexts given, but the engine's context policy is off; "
                "enable use_context so the memory key includes the context"
            )
    engine_id = engine.engine_id

    # Distinct keys in first-seen order, with the text and context each stands for.
    wanted: dict[str, tuple[str, str | None]] = {}
    for i, text in enumerate(texts):
        ctx = contexts[i] if contexts is not None else None
        wanted.setdefault(memory_key(text, ctx), (text, ctx))
    stats = RunStats(rows=len(texts), unique=len(wanted))
    misses = memory.missing(engine_id, list(wanted))
    stats.hits = stats.unique - len(misses)

    # Empty strings translate to empty strings and cost nothing: store them without a request.
    empty = [h for h in misses if wanted[h][0] == ""]
    if empty:
        memory.put_batch(engine_id, [MemoryRow(h, "", "", None, 0, wanted[h][1]) for h in empty])
        stats.sent += len(empty)
        misses = [h for h in misses if wanted[h][0] != ""]

    # One context per request (DeepL takes one context per call), so group misses by context.
    by_context: dict[str | None, list[str]] = {}
    for h in misses:
        by_context.setdefault(wanted[h][1], []).append(h)

    try:
        for ctx, hashes in by_context.items():
            for chunk in _chunks(hashes, wanted, batch_size, max_batch_bytes):
                chunk_texts = [wanted[h][0] for h in chunk]
                split = getattr(engine, "request_batches", None)
                parts = split(chunk_texts, ctx) if split is not None else [slice(0, len(chunk))]
                for part in parts:
                    _translate_and_store(engine, memory, chunk[part], chunk_texts[part], ctx, wanted, stats)
                    if progress is not None:
                        progress(stats)
    except QuotaExceeded as e:
        left = [h for hs in by_context.values() for h in hs]
        left_chars = sum(len(wanted[h][0]) for h in memory.missing(engine_id, left))
        raise QuotaExceeded(
            f"{engine_id}: {e}. Stopped cleanly: {stats.sent} new translations stored this run, "
            f"{stats.hits + stats.sent} of {stats.unique} distinct texts are in the memory {memory.path}; "
            f"{stats.remaining} remain ({left_chars} characters). Nothing stored is lost: rerun the same "
            "command once the quota allows (next billing period, a higher limit or another key) and only "
            "the remaining texts are sent.",
            done=stats.hits + stats.sent,
            remaining=stats.remaining,
        ) from None
    except EngineError as e:
        raise EngineError(
            f"{e} (stopped with {stats.hits + stats.sent} of {stats.unique} distinct texts stored in "
            f"{memory.path}; rerunning resumes with the other {stats.remaining})"
        ) from None
    return stats


def _chunks(hashes: list[str], wanted: dict[str, tuple[str, str | None]], batch_size: int,
            max_batch_bytes: int | None) -> list[list[str]]:
    out: list[list[str]] = []
    cur: list[str] = []
    size = 0
    for h in hashes:
        n = len(wanted[h][0].encode("utf-8"))
        if cur and (len(cur) >= batch_size or (max_batch_bytes is not None and size + n > max_batch_bytes)):
            out.append(cur)
            cur, size = [], 0
        cur.append(h)
        size += n
    if cur:
        out.append(cur)
    return out


def _translate_and_store(engine: Engine, memory: TranslationMemory, hashes: list[str], texts: list[str],
                         ctx: str | None, wanted: dict[str, tuple[str, str | None]], stats: RunStats) -> None:
    results: list[Result] = engine.translate(texts, context=ctx) if ctx is not None else engine.translate(texts)
    if len(results) != len(texts):
        raise EngineError(f"{engine.engine_id} returned {len(results)} results for {len(texts)} texts")
    rows = [
        MemoryRow(h, t, r.text, r.score, r.billed_chars, wanted[h][1])
        for h, t, r in zip(hashes, texts, results, strict=True)
    ]
    memory.put_batch(engine.engine_id, rows)  # durable before the next request goes out
    stats.requests += 1
    stats.sent += len(rows)
    stats.billed_chars += sum(r.billed_chars for r in results)


def translations_for(texts: Sequence[str], engine_id: str, memory: TranslationMemory,
                     contexts: Sequence[str | None] | None = None) -> list[MemoryRow]:
    """The stored row for each of `texts` (in order, duplicates repeated); raises if any is missing."""
    keys = [memory_key(t, contexts[i] if contexts is not None else None) for i, t in enumerate(texts)]
    found = memory.lookup(engine_id, keys)
    absent = [k for k in dict.fromkeys(keys) if k not in found]
    if absent:
        raise KeyError(f"{len(absent)} texts have no {engine_id} translation in {memory.path} (first: {absent[0]})")
    return [found[k] for k in keys]
