"""What a run spent: every translation part attempt in the ledger (`pipeline.ledger`), and the
reconciliation of DeepL's own counter with the translation memory's, across every attempt and rerun.

Reconciliation.  Each attempt reads DeepL's /v2/usage character count before it sends anything and after
it ends.  The counter only grows, so each attempt is an interval on it; attempts that ran at once (several
workers or machines) overlap, and the characters DeepL counted while any part ran are the length of the
union of the intervals.  An attempt that died without its end reading is closed by the first reading taken
after it died: the start reading of the attempt that took its lease over (recorded in that attempt's
``closes``), else the first reading in the ledger after the dead attempt's last line.

The union is compared with what the memory recorded as billed.  The difference is explained, to the
character, by what may have been billed without reaching the memory ("possibly billed twice"): requests
that timed out after they were sent (the engine's counters) and requests in flight when an attempt died
(intents the journal never closed).  A difference within that bound is those requests, paid twice; beyond
it (another job using the same key, a billing period reset) it is *unexplained*: a loud warning at the end
of `ptvl translate` and `ptvl run`, at the top of the comparison report and in `ptvl status`, and
`ptvl translate` exits with `EXIT_BILLING_DIFFERENCE` until a person acknowledges it
(`--accept-billing-difference`, recorded in the ledger).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.layout import RunLayout
from pipeline.leases import latest, read_leases
from pipeline.ledger import Attempt, accept_difference, accepted_total, legacy_attempts, read_attempts
from pipeline.settings import Settings

log = logging.getLogger("ptvl")

# `ptvl translate` exits with this when DeepL's counter differs from what the memory explains (and nobody
# acknowledged the difference); 2 is a failed run or a bad command line.
EXIT_BILLING_DIFFERENCE = 3


@dataclass(frozen=True)
class Billing:
    """One engine id's spending over every part attempt recorded under the run root."""

    memory_chars: int  # billed characters the memory recorded (sum over attempts)
    deepl_chars: int | None  # DeepL's counter over the attempts (union of intervals); None: not DeepL
    timeout_chars: int  # requests retried after a timeout or a lost connection (the engine's counters)
    timeout_requests: int
    in_flight_chars: int  # requests in flight when an attempt died (intents never closed)
    in_flight_requests: int
    retries_429: int
    attempts: int
    died: int  # attempts that never wrote their end (kill -9, power loss)
    running: int  # attempts still holding their part's lease (left out of the totals)
    unclosed: int  # died attempts with no later DeepL reading to close them (left out of DeepL's count)
    accepted: int = 0  # unexplained characters a person acknowledged

    @property
    def possibly_twice_chars(self) -> int:
        return self.timeout_chars + self.in_flight_chars

    @property
    def possibly_twice_requests(self) -> int:
        return self.timeout_requests + self.in_flight_requests

    @property
    def difference(self) -> int:
        """DeepL's count beyond the memory's (0 for an engine that bills nothing)."""
        return 0 if self.deepl_chars is None else self.deepl_chars - self.memory_chars

    @property
    def paid_twice(self) -> int:
        """Characters DeepL billed beyond the memory that the possibly-billed-twice requests explain."""
        return min(max(self.difference, 0), self.possibly_twice_chars)

    @property
    def unexplained(self) -> int:
        """DeepL's count beyond what the memory and the possibly-billed-twice requests explain (negative:
        DeepL counted less than the memory recorded), before acknowledgements."""
        d = self.difference
        return d - self.possibly_twice_chars if d > self.possibly_twice_chars else min(d, 0)

    @property
    def open_difference(self) -> int:
        """The unexplained characters nobody acknowledged: what warns and sets the exit code.  0 while an
        attempt runs: DeepL's counter then holds some of its billing, its journal not all of it yet."""
        return 0 if self.running else self.unexplained - self.accepted

    def line(self, engine: str) -> str:
        s = f"{engine}: billed (memory) {self.memory_chars:,} chars"
        if self.deepl_chars is not None:
            s += f", billed (DeepL) {self.deepl_chars:,} chars"
        s += f", possibly billed twice {self.possibly_twice_chars:,} chars ({self.possibly_twice_requests} requests"
        if self.possibly_twice_requests:
            s += (f": {self.timeout_chars:,} chars timed out, {self.in_flight_chars:,} chars in flight when an "
                  "attempt died")
        s += ")"
        if self.deepl_chars is not None and self.possibly_twice_chars:
            s += f"; paid twice {self.paid_twice:,} chars (DeepL's count beyond the memory's)"
        notes = [f"{self.died} died" if self.died else "",
                 f"{self.running} still running: reconciled once they end" if self.running else "",
                 f"{self.accepted:+,} chars acknowledged" if self.accepted else ""]
        if any(notes):
            s += f"; {self.attempts} part attempts (" + ", ".join(n for n in notes if n) + ")"
        return s

    def warning(self, engine: str) -> str | None:
        """The loud warning when DeepL's count differs from what the memory explains, else None."""
        if self.deepl_chars is None or self.running or (self.open_difference == 0 and not self.unclosed):
            return None
        if self.open_difference == 0:
            return (f"{engine}: {self.unclosed} part attempt(s) died with no later DeepL reading, so DeepL's count "
                    "over them is unknown; rerun `ptvl translate` to close them")
        acked = f", {self.accepted:+,} of it acknowledged before" if self.accepted else ""
        return (f"{engine}: DeepL counted {self.deepl_chars:,} characters while the parts ran, the memory "
                f"{self.memory_chars:,} (+ up to {self.possibly_twice_chars:,} possibly billed twice): "
                f"{self.open_difference:+,} characters unexplained{acked} (another job using the same key, or the "
                "billing period was reset); check the DeepL account's usage page, then acknowledge it with "
                "`ptvl translate --accept-billing-difference`")


def _union_length(intervals: list[tuple[int, int]]) -> int:
    total, end = 0, None
    for a, b in sorted(intervals):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def _running(layout: RunLayout, engine_id: str) -> set[str]:
    """Attempts that hold a live lease right now (not released, holder not known dead)."""
    return {lease.attempt for lease in latest(read_leases(layout.leases_dir(engine_id))).values()
            if lease.attempt and not lease.released and not lease.dead()}


def _close(attempt: Attempt, attempts: list[Attempt]) -> int | None:
    """DeepL's counter once `attempt` was over: its end reading, or the first reading after it died."""
    if attempt.deepl_after is not None:
        return attempt.deepl_after
    closers = [a.deepl_before for a in attempts if attempt.id in a.closes and a.deepl_before is not None]
    if closers:
        return min(closers)
    later = [(t, v) for a in attempts if a is not attempt for t, v in a.readings if t > attempt.last_at]
    return min(later)[1] if later else None


def attempts_of(layout: RunLayout, engine: str, engine_id: str) -> list[Attempt]:
    """Every recorded attempt of `engine_id` (any table), and the audit lines `engine` left before the ledger."""
    return read_attempts(layout.ledger_dir(engine_id)) + legacy_attempts(layout.parts_dir(engine), engine)


def billing_summary(root: Path, engine: str, engine_id: str) -> Billing | None:
    """Reconcile every recorded part attempt of `engine_id` (see the module docstring); None if none ran."""
    layout = RunLayout(Path(root))
    everything = attempts_of(layout, engine, engine_id)
    running = _running(layout, engine_id)
    done = [a for a in everything if a.ended or a.id not in running]
    if not done:
        return None
    intervals, unclosed = [], 0
    for a in done:
        if a.deepl_before is None:
            continue
        after = _close(a, everything)
        if after is None:
            unclosed += 1
        else:
            intervals.append((a.deepl_before, after))
    return Billing(
        memory_chars=sum(a.memory_billed for a in done),
        deepl_chars=_union_length(intervals) if intervals else None,
        timeout_chars=sum(a.timeout_chars for a in done),
        timeout_requests=sum(a.timeout_requests for a in done),
        in_flight_chars=sum(a.in_flight_chars for a in done),
        in_flight_requests=sum(a.in_flight_requests for a in done),
        retries_429=sum(a.retries_429 for a in done),
        attempts=len(done),
        died=sum(not a.ended for a in done),
        running=len(everything) - len(done),
        unclosed=unclosed,
        accepted=accepted_total(layout.ledger_dir(engine_id)),
    )


def engine_ids(settings: Settings, names: list[str]) -> dict[str, str]:
    """Table name -> engine id (computed without a key), for the functions below."""
    return {n: settings.engines[n].engine_id(n) for n in names}


def engine_billing(root: Path, engines: dict[str, str]) -> dict[str, Billing]:
    """`billing_summary` of each engine (table name -> engine id) that ran parts; tables with one engine id
    share one memory and one ledger, so the id's summary is given once, under its first table."""
    out, seen = {}, set()
    for name, engine_id in engines.items():
        if engine_id in seen:
            continue
        seen.add(engine_id)
        b = billing_summary(root, name, engine_id)
        if b is not None:
            out[name] = b
    return out


def report_billing(root: Path, engines: dict[str, str], say: Callable[[str], None]) -> dict[str, Billing]:
    """`say` one line per engine that ran parts, and the reconciliation warning where there is one."""
    summaries = engine_billing(root, engines)
    for name, b in summaries.items():
        say(b.line(name))
        w = b.warning(name)
        if w:
            log.warning(w)
            say(f"WARNING: {w}")
    return summaries


def accept_billing(root: Path, engine: str, engine_id: str) -> int:
    """Acknowledge the engine's open unexplained difference in its ledger (later summaries stop warning for
    it); the characters acknowledged (0 when there was none)."""
    b = billing_summary(root, engine, engine_id)
    if b is None or b.open_difference == 0:
        return 0
    accept_difference(RunLayout(Path(root)).ledger_dir(engine_id), b.open_difference, engine=engine,
                      deepl_chars=b.deepl_chars, memory_chars=b.memory_chars, attempts=b.attempts)
    return b.open_difference
