"""What a run spent: each translation part attempt's audit line, and the reconciliation of DeepL's own
counter with the translation memory's.

Audit: each part attempt appends a start and an end line to
``translated/<engine>/_parts/part-<i>-of-<n>.audit.jsonl`` (DeepL's /v2/usage counter before and after,
the characters the memory recorded, retries, requests possibly billed twice), fsync'd as written.

Reconciliation.  Each `TranslatePart` attempt records DeepL's /v2/usage character count before and
after it ran.  The counter only grows, so each attempt is an interval on it; attempts that ran at once
(several workers or machines) overlap, and the characters DeepL counted while any part ran are the
length of the union of the intervals.  That is compared with what the memory recorded as billed, plus
the characters of requests that timed out after they were sent ("possibly billed twice": DeepL may
have billed the first attempt too).  Anything beyond is a loud warning giving both numbers (another
job using the same key at the same time also shows up there).
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.layout import RunLayout

log = logging.getLogger("ptvl")


@dataclass(frozen=True)
class Billing:
    """One engine's spending over every part attempt recorded under the run root."""

    memory_chars: int  # billed characters the memory recorded (sum over attempts)
    deepl_chars: int | None  # DeepL's counter over the attempts (union of intervals); None: not DeepL
    possibly_twice_chars: int
    possibly_twice_requests: int
    retries_429: int
    attempts: int
    killed: int  # attempts that started and never recorded an end (kill -9, power loss)

    @property
    def unexplained(self) -> int:
        """DeepL's count beyond what the memory and the counted timeouts explain (0 when none)."""
        if self.deepl_chars is None:
            return 0
        return self.deepl_chars - self.memory_chars - self.possibly_twice_chars

    def line(self, engine: str) -> str:
        s = f"{engine}: billed (memory) {self.memory_chars:,} chars"
        if self.deepl_chars is not None:
            s += f", billed (DeepL) {self.deepl_chars:,} chars"
        s += f", possibly billed twice {self.possibly_twice_chars:,} chars ({self.possibly_twice_requests} requests)"
        return s

    def warning(self, engine: str) -> str | None:
        """The loud warning when DeepL's count differs from what the memory explains, else None."""
        if self.deepl_chars is None or self.unexplained == 0:
            return None
        killed = (f"; {self.killed} attempt(s) were killed, and a request in flight at a kill is paid but "
                  "never stored" if self.killed else "")
        return (f"{engine}: DeepL counted {self.deepl_chars:,} characters while the parts ran, the memory "
                f"{self.memory_chars:,} (+ {self.possibly_twice_chars:,} possibly billed twice): "
                f"{self.unexplained:+,} characters unexplained{killed} (or another job used the same key, or "
                "the billing period was reset); check the DeepL account's usage page")


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


def _attempts(lines: list[dict]) -> tuple[list[dict], int]:
    """Pair one part file's start/end lines into attempts.  A start followed by another start was killed:
    the next start's readings bound it (what its part file and DeepL's counter held by then)."""
    out, killed = [], 0
    for i, r in enumerate(lines):
        if r["event"] != "start":
            continue
        nxt = lines[i + 1] if i + 1 < len(lines) else None
        if nxt is not None and nxt["event"] == "end":
            out.append({**r, **nxt})
        elif nxt is not None:  # killed: bounded by the next attempt's readings
            killed += 1
            out.append({**r, "deepl_after": nxt.get("deepl_before"),
                        "memory_billed": nxt["memory_before"] - r["memory_before"]})
    return out, killed


def billing_summary(root: Path, engine: str) -> Billing | None:
    """Reconcile every recorded part attempt of `engine` (see the module docstring); None if none ran."""
    records, killed = [], 0
    for f in sorted(RunLayout(root).parts_dir(engine).glob("*.audit.jsonl")):
        got, k = _attempts([json.loads(line) for line in f.read_text().splitlines() if line.strip()])
        records += got
        killed += k
    if not records:
        return None
    intervals = [(r["deepl_before"], r["deepl_after"]) for r in records
                 if r.get("deepl_before") is not None and r.get("deepl_after") is not None]
    deepl = _union_length(intervals) if intervals else None
    return Billing(
        memory_chars=sum(r.get("memory_billed") or 0 for r in records),
        deepl_chars=deepl,
        possibly_twice_chars=sum(r.get("possibly_billed_twice_chars", 0) for r in records),
        possibly_twice_requests=sum(r.get("possibly_billed_twice_requests", 0) for r in records),
        retries_429=sum(r.get("retries_429", 0) for r in records),
        attempts=len(records),
        killed=killed,
    )


def report_billing(root: Path, engines: list[str], say) -> None:
    """`say` one line per engine that ran parts, and the reconciliation warning where there is one."""
    for e in engines:
        b = billing_summary(root, e)
        if b is None:
            continue
        say(b.line(e))
        w = b.warning(e)
        if w:
            log.warning(w)
            say(f"WARNING: {w}")




# The engine counters each attempt's end line records (summed over the attempt's engines).
COUNTER_KEYS = ("retries_429", "waited_429_s", "retries_other", "possibly_billed_twice_requests",
                "possibly_billed_twice_chars")


def append_audit(path: Path, record: dict) -> None:
    """Append one JSON line and fsync it (the audit survives a kill right after)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_counter(fn: Callable[[], int | None]) -> int | None:
    """`fn()` (the provider's billing counter), or None when it fails: a usage read after a failed attempt
    must not hide the attempt's own error."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - the attempt's own error is the one to raise
        log.warning("could not read DeepL usage after the part: %s", e)
        return None
