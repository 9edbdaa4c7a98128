"""One attempt at one translation part: take the part's lease, journal every request, read DeepL's counter
before and after, fill the part's memory file, give the lease back.

The order is what makes "every string is paid for once" hold whoever runs the part:

1. The attempt runs in a `ptvl_io.lifetime.stoppable` section: when the process that started this worker
   dies (or SIGTERM arrives), the request in flight is finished and stored and no other one is sent.
2. It takes the part's lease (`pipeline.leases`), keyed by the engine id, waiting while another process
   holds it: two workers, processes, machines, an orphan or two tables with the same settings never send
   for one part at once.  Only then does it open the memory and ask what is missing.
3. Before each request it checks it still holds the lease and writes the request's intent to its journal
   (`pipeline.ledger`), fsync'd; once the answer is stored, it marks the intent done.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.layout import RunLayout, part_name
from pipeline.leases import PartLease
from pipeline.ledger import AttemptJournal, new_attempt_id
from pipeline.memory_files import engine_folder, memory_view
from pipeline.settings import Settings
from pipeline.translate_plan import context_entry
from ptvl_io import lifetime
from ptvl_io.progress import ProgressReporter
from translation.engines.base import Engine
from translation.runner import RunStats, translate_missing

log = logging.getLogger("ptvl")

# A stopping part finishes the request in flight first; past this it is killed (DeepL's timeout_s is 60 s).
GRACE_S = 90.0
# The engine counters each stored answer and the end line record (summed over the attempt's engines).
COUNTER_KEYS = ("retries_429", "waited_429_s", "retries_other", "possibly_billed_twice_requests",
                "possibly_billed_twice_chars")


@dataclass
class PartWork:
    """What one part must translate: context-free texts, and dialog texts with their caption as context."""

    name: str  # the [engines.<name>] table
    part: int
    parts: int
    plain: list[str]
    context_texts: list[str]
    contexts: list[str]


@dataclass
class PartResult:
    """What an attempt did, for the part's stats file."""

    engine_id: str
    context_engine_id: str | None
    plain: RunStats
    context: RunStats | None
    memory_billed: int
    deepl_billed: int | None
    seconds: float
    counters: dict


def read_counter(fn: Callable[[], int | None]) -> int | None:
    """`fn()` (the provider's billing counter), or None when it fails: a usage read after a failed attempt
    must not hide the attempt's own error."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - the attempt's own error is the one to raise
        log.warning("could not read DeepL usage after the part: %s", e)
        return None


def _fill(engine: Engine, mem, texts: list[str], label: str, name: str, batch_size: int, journal: AttemptJournal,
          contexts: list[str] | None = None) -> RunStats:
    """`translate_missing` with a progress report (a bar on a terminal, log lines in batch and luigid logs);
    the total is known once the memory has been asked what is missing, at the first stored batch."""
    reporter: list[ProgressReporter] = []

    def progress(stats: RunStats) -> None:
        if not reporter:
            reporter.append(ProgressReporter(f"translate {label} [{name}]",
                                             stats.unique - stats.hits - len(stats.set_aside), unit="texts",
                                             fields_fmt="{chars:,} chars billed"))
        reporter[0].update(stats.sent, chars=stats.billed_chars)

    try:
        return translate_missing(texts, engine, mem, contexts=contexts, batch_size=batch_size, progress=progress,
                                 request_log=journal)
    finally:
        if reporter:
            reporter[0].close()


def _counters(engines: list[Engine]) -> dict:
    dicts = [e.counters.as_dict() for e in engines]
    return {"requests": sum(c["requests"] for c in dicts), **{k: sum(c[k] for c in dicts) for k in COUNTER_KEYS}}


def run_part(settings: Settings, work: PartWork) -> PartResult:
    """Translate one part under its lease, journalled (see the module docstring); raises what stopped it
    (QuotaExceeded, RateLimited, `lifetime.Stopping`, `pipeline.leases.LeaseLost`), everything sent so far
    stored and journalled."""
    layout: RunLayout = settings.layout
    entry = settings.engines[work.name]
    engine_id = entry.engine_id(work.name)
    engine_folder(layout, engine_id)
    attempt = new_attempt_id()
    label = f"part {work.part + 1}/{work.parts}"
    with lifetime.stoppable(GRACE_S):
        lease = PartLease(layout.leases_dir(engine_id), work.part, work.parts, attempt=attempt, engine_id=engine_id)
        with lease.acquire(on_wait=lambda line: log.info("%s %s", work.name, line)):
            return _attempt(settings, work, engine_id, attempt, lease, label)


def _attempt(settings: Settings, work: PartWork, engine_id: str, attempt: str, lease: PartLease,
             label: str) -> PartResult:
    layout = settings.layout
    engines: list[Engine] = []
    journal = AttemptJournal(layout.ledger_dir(engine_id) / f"{part_name(work.part, work.parts)}.{attempt}.jsonl",
                             before_each=lease.check, counters=lambda: _counters(engines),
                             keys=settings.engines[work.name].paid)
    batch = settings.translate.batch_size
    t0 = time.perf_counter()
    writer = layout.part_memory(engine_id, work.part, work.parts)
    # Opened once the lease is held: what is missing is asked of files no other sender touches now.
    with memory_view(settings.root, engine_id, writer=writer, skip_part_count=work.parts) as mem:
        engine = settings.engines[work.name].build(work.name)
        engines.append(engine)
        deepl_before = engine.billed_so_far()
        journal.start(attempt=attempt, engine=work.name, engine_id=engine_id, part=work.part, parts=work.parts,
                      deepl_before=deepl_before,
                      closes=[{"attempt": s.attempt, "holder": s.describe()} for s in lease.superseded if s.attempt])
        end: dict = {"outcome": "running"}
        stats_plain = stats_ctx = None
        ctx_id = None
        try:
            stats_plain = _fill(engine, mem, work.plain, label, work.name, batch, journal)
            if work.context_texts:
                ctx_engine = context_entry(settings, work.name).build(work.name)
                engines.append(ctx_engine)
                ctx_id = ctx_engine.engine_id
                stats_ctx = _fill(ctx_engine, mem, work.context_texts, f"{label} with context", work.name, batch,
                                  journal, contexts=work.contexts)
            end["outcome"] = "done"
        except BaseException as e:
            end["outcome"] = f"{type(e).__name__}: {e}"
            raise
        finally:
            # No usage request once a stop was asked for: nothing leaves a stopping worker.  The ledger closes
            # such an attempt with the next reading (`pipeline.billing`).
            stopping = lifetime.stop_requested() is not None
            deepl_after = (read_counter(engine.billed_so_far)
                           if deepl_before is not None and not stopping else None)
            seconds = time.perf_counter() - t0
            counters = _counters(engines)
            memory_billed = sum(s.billed_chars for s in (stats_plain, stats_ctx) if s is not None)
            journal.end(deepl_after=deepl_after, seconds=seconds, **end, **counters)
            for e in engines:
                e.close()
    return PartResult(
        engine_id=engines[0].engine_id, context_engine_id=ctx_id, plain=stats_plain, context=stats_ctx,
        memory_billed=memory_billed, deepl_billed=(deepl_after - deepl_before if deepl_before is not None
                                                   and deepl_after is not None else None),
        seconds=seconds, counters=counters)
