"""Translate what the memory lacks: dedup, look up, send misses batch by batch, store each batch before the next.

The cost and resume guarantee lives here: a batch's results are committed (fsync'd) to the memory
before the next request is sent, so ``kill -9`` at any moment loses at most the request in flight,
and a rerun asks the memory first and never pays for a stored text again.  A caller that journals its
requests (the pipeline's billing ledger) passes a `RequestLog`, told before each request leaves and once
its answer is stored; no request is sent once a stop was asked for (`ptvl_io.lifetime`).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ptvl_io.lifetime import Stopping, check_stop
from translation.engines.base import Engine, Result
from translation.errors import ConfigurationError, EngineError, QuotaExceeded, RequestRejected
from translation.memory import MemoryRow, TranslationMemory, memory_key
from translation.sendable import text_problem

log = logging.getLogger(__name__)


@dataclass
class RunStats:
    """Counts of one `translate_missing` call (they add up: unique = hits + sent + set aside + remaining)."""

    rows: int = 0  # input strings, duplicates included
    unique: int = 0  # distinct memory keys among them
    hits: int = 0  # distinct keys already in the memory before this call
    sent: int = 0  # distinct texts translated by the engine (or stored as "" unsent) and stored by this call
    billed_chars: int = 0  # characters the engine reported as billed for them
    requests: int = 0  # engine calls made (one stored batch each)
    # memory key -> reason, for texts never sent (see `set_aside_reason`); they are not in the memory,
    # so a rerun checks them again (for free: no request is made for them).
    set_aside: dict[str, str] = field(default_factory=dict)

    @property
    def remaining(self) -> int:
        return self.unique - self.hits - self.sent - len(self.set_aside)


ProgressFn = Callable[[RunStats], None]


class RequestLog(Protocol):
    """Told about each engine call around it: the pipeline's intent journal (`pipeline.ledger`)."""

    def before_send(self, keys: Sequence[str], texts: Sequence[str]) -> int:
        """Called before the call leaves (raise to refuse it); returns a ticket for the two below."""
        ...

    def after_store(self, ticket: int, billed_chars: int) -> None:
        """The call's results are stored (durably) in the memory."""
        ...

    def after_failure(self, ticket: int, error: BaseException) -> None:
        """The engine raised for the call (refused, quota, rate limit, a stop between retries): nothing of it
        was stored.  Not called when the process dies or an unexpected error escapes: the intent stays open."""
        ...


def set_aside_reason(text: str, engine: Engine, context: str | None = None) -> str | None:
    """Why `text` is never sent to `engine`, or None: ``lone_surrogate`` / ``control_chars`` for every
    engine (`text_problem`), plus the engine's own limits (DeepL: ``over_max_chars``,
    ``too_long_for_request``).  A text the engine refuses at request time is set aside as
    ``rejected_by_engine`` by `translate_missing` itself."""
    return text_problem(text) or engine.unsendable(text, context)


def translate_missing(
    texts: Sequence[str],
    engine: Engine,
    memory: TranslationMemory,
    *,
    contexts: Sequence[str | None] | None = None,
    batch_size: int = 50,
    max_batch_bytes: int | None = None,
    progress: ProgressFn | None = None,
    request_log: RequestLog | None = None,
) -> RunStats:
    """Make sure every text of `texts` has a translation by `engine` in `memory`; pay only for misses.

    texts: any strings, duplicates allowed (each distinct one is sent at most once).
    contexts: optional per-text context (DeepL ``use_context``); the memory key then covers it.
    batch_size / max_batch_bytes: most texts / UTF-8 bytes of text per engine call, for engines that
        batch freely and do not declare their own ``call_size``.  Engines with a ``call_size`` (the
        CTranslate2 and transformers engines: thousands of texts, so CTranslate2's length sorting,
        token batching and replicas see enough work) get calls of that many texts instead.  Engines
        that expose ``request_batches`` (DeepL) get each context group whole and cut it to their own
        request limits (50 texts, 128 KiB), so a batch size that is not a multiple of 50 never makes
        50 + 14 requests.  Every call's results are stored (one chunk, one transaction) before the
        next call is made, so a kill loses at most the call in flight.
    progress: called with the running stats after each stored batch.
    request_log: told before each engine call and after its results are stored (see `RequestLog`).

    Never sent: empty and whitespace-only texts (stored as "" without a request), and texts with a
    `set_aside_reason` (listed in ``stats.set_aside``; the rest completes).

    Raises QuotaExceeded (with ``done``/``remaining``) when the engine's quota runs out, EngineError
    (RateLimited, ...) when a request fails for good, and `ptvl_io.lifetime.Stopping` when a stop was asked
    for (checked before every call).  Whatever stops it, everything translated so far is stored, and
    rerunning the same call resumes with the remaining texts.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if contexts is not None:
        if len(contexts) != len(texts):
            raise ValueError(f"{len(contexts)} contexts for {len(texts)} texts")
        if not engine.uses_context:
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

    # Empty and whitespace-only strings translate to "" and cost nothing: stored without a request.
    blank = [h for h in misses if not wanted[h][0].strip()]
    if blank:
        memory.put_batch(engine_id, [MemoryRow(h, wanted[h][0], "", None, 0, wanted[h][1]) for h in blank])
        stats.sent += len(blank)
    to_send = []
    for h in misses:
        if not wanted[h][0].strip():
            continue
        reason = set_aside_reason(wanted[h][0], engine, wanted[h][1])
        if reason is None:
            to_send.append(h)
        else:
            stats.set_aside[h] = reason

    # One context per request (DeepL takes one context per call), so group misses by context.
    by_context: dict[str | None, list[str]] = {}
    for h in to_send:
        by_context.setdefault(wanted[h][1], []).append(h)

    call_size = engine_call_size(engine, batch_size)
    try:
        for ctx, hashes in by_context.items():
            # An engine with request limits of its own (DeepL) cuts each context group into its requests;
            # the others get calls of `call_size` texts.
            whole = [wanted[h][0] for h in hashes]
            requests = engine.request_batches(whole, ctx)
            chunks = [hashes] if requests is not None else _chunks(hashes, wanted, call_size, max_batch_bytes)
            for chunk in chunks:
                chunk_texts = [wanted[h][0] for h in chunk]
                parts = requests if requests is not None else [slice(0, len(chunk))]
                for part in parts:
                    _send(engine, memory, chunk[part], chunk_texts[part], ctx, wanted, stats, request_log)
                    if progress is not None:
                        progress(stats)
    except QuotaExceeded as e:
        left = [h for h in to_send if h not in stats.set_aside]
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
        raise type(e)(
            f"{e} (stopped with {stats.hits + stats.sent} of {stats.unique} distinct texts stored in "
            f"{memory.path}; rerunning resumes with the other {stats.remaining})"
        ) from None
    if stats.set_aside:
        counts: dict[str, int] = {}
        for r in stats.set_aside.values():
            counts[r] = counts.get(r, 0) + 1
        log.warning("%s: %d texts set aside, never sent (%s)", engine_id, len(stats.set_aside),
                    ", ".join(f"{r} {n}" for r, n in sorted(counts.items())))
    return stats


def engine_call_size(engine: Engine, batch_size: int) -> int:
    """Texts per engine call: the engine's own ``call_size`` when it declares one, else `batch_size`."""
    size = engine.call_size
    if size is None:
        return batch_size
    if int(size) < 1:
        raise ValueError(f"{engine.engine_id}: call_size must be >= 1, got {size}")
    return int(size)


def _send(engine: Engine, memory: TranslationMemory, hashes: list[str], texts: list[str], ctx: str | None,
          wanted: dict[str, tuple[str, str | None]], stats: RunStats, request_log: RequestLog | None) -> None:
    """One request; if the engine refuses it as malformed (HTTP 400/413), halve it until the one text
    at fault is found and set aside: a bad text never blocks the rest."""
    try:
        _translate_and_store(engine, memory, hashes, texts, ctx, wanted, stats, request_log)
    except RequestRejected as e:
        if len(hashes) == 1:
            log.warning("%s: text %s set aside, the engine refused it: %s", engine.engine_id, hashes[0], e)
            stats.set_aside[hashes[0]] = "rejected_by_engine"
            return
        mid = len(hashes) // 2
        _send(engine, memory, hashes[:mid], texts[:mid], ctx, wanted, stats, request_log)
        _send(engine, memory, hashes[mid:], texts[mid:], ctx, wanted, stats, request_log)


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
                         ctx: str | None, wanted: dict[str, tuple[str, str | None]], stats: RunStats,
                         request_log: RequestLog | None) -> None:
    check_stop()  # never a request once a stop was asked for (the parent died, SIGTERM)
    ticket = request_log.before_send(hashes, texts) if request_log is not None else 0
    try:
        check_stop()  # again after the journal's fsync: the stop may have come meanwhile
        results: list[Result] = engine.translate(texts, ctx)
    except (EngineError, Stopping) as e:
        if request_log is not None:
            request_log.after_failure(ticket, e)
        raise
    if len(results) != len(texts):
        raise EngineError(f"{engine.engine_id} returned {len(results)} results for {len(texts)} texts")
    rows = [
        MemoryRow(h, t, r.text, r.score, r.billed_chars, wanted[h][1],
                  input_truncated=r.input_truncated)
        for h, t, r in zip(hashes, texts, results, strict=True)
    ]
    memory.put_batch(engine.engine_id, rows)  # durable before the next request goes out
    billed = sum(r.billed_chars for r in results)
    if request_log is not None:
        request_log.after_store(ticket, billed)
    stats.requests += 1
    stats.sent += len(rows)
    stats.billed_chars += billed


def translations_for(texts: Sequence[str], engine_id: str, memory: TranslationMemory,
                     contexts: Sequence[str | None] | None = None) -> list[MemoryRow]:
    """The stored row for each of `texts` (in order, duplicates repeated); raises if any is missing."""
    keys = [memory_key(t, contexts[i] if contexts is not None else None) for i, t in enumerate(texts)]
    found = memory.lookup(engine_id, keys)
    absent = [k for k in dict.fromkeys(keys) if k not in found]
    if absent:
        raise KeyError(f"{len(absent)} texts have no {engine_id} translation in {memory.path} (first: {absent[0]})")
    return [found[k] for k in keys]
