"""The billing ledger: one journal per translation part attempt, written as it goes, read by
`pipeline.billing` whatever the part count or the process of the next run.

``memory/<engine key>/_ledger/part-<i>-of-<n>.<attempt>.jsonl`` (`RunLayout.ledger_dir`), one file per
attempt, so no two processes (or machines, on NFS) ever append to one file.  Every line is fsync'd as
written:

- ``start``: the engine table and id, the part, host and PID, DeepL's /v2/usage counter before anything is
  sent (`deepl_before`), and the attempts found dead or expired on the way to the lease (`closes`): this
  reading, taken after they died, closes their interval on DeepL's counter.
- ``send`` (the intent), written *before* each request leaves: the texts' characters and, for a paid
  engine, their memory keys (a local engine's calls of thousands of texts would only grow the file).
- ``stored`` once its answer is in the memory (the characters billed, the engine's counters so far), or
  ``failed`` when the engine refused it for good (429 after the back-off, 456, 400: not billed; a request
  that timed out is in the engine's own "possibly billed twice" counters).
- ``end``: the outcome, DeepL's counter after, the counters.

An intent never closed (the process was killed with its request in flight) is "possibly billed twice":
DeepL may have billed it, and the rerun sends it again.  ``accepted-*.json`` files beside the journals
record billing differences a person acknowledged (`ptvl translate --accept-billing-difference`).
"""
from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pipeline.leases import user
from ptvl_io import write_json_atomic


def now() -> str:
    """The ledger's timestamps: UTC, ISO 8601 with microseconds, so they sort as text."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def new_attempt_id() -> str:
    """`20250101T120000Z-host-1234-ab12`: when, where and who, unique across machines."""
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())[:40]
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{host}-{os.getpid()}-{secrets.token_hex(2)}"


def _append(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, separators=(",", ":")) + "\n")
        f.flush()
        os.fsync(f.fileno())


class AttemptJournal:
    """The journal of one part attempt, and the `translation.runner.RequestLog` the runner tells about each
    request.  `before_each` runs before each intent is written (the lease check: raise to refuse the
    request); `counters` gives the engines' request counters so far (recorded with each stored answer, so a
    killed attempt's timeouts are not lost)."""

    def __init__(self, path: Path, *, before_each: Callable[[], None] | None = None,
                 counters: Callable[[], dict] | None = None, keys: bool = True) -> None:
        self.path = Path(path)
        self.before_each = before_each
        self.counters = counters
        self.keys = keys
        self._seq = 0

    def start(self, **fields: object) -> None:
        _append(self.path, {"event": "start", "at": now(), "host": socket.gethostname(), "pid": os.getpid(),
                            **fields})

    def end(self, **fields: object) -> None:
        _append(self.path, {"event": "end", "at": now(), **fields})

    # -- translation.runner.RequestLog ---------------------------------------------------------------------

    def before_send(self, keys: Sequence[str], texts: Sequence[str]) -> int:
        if self.before_each is not None:
            self.before_each()
        self._seq += 1
        lens = [len(t) for t in texts]
        record = {"event": "send", "seq": self._seq, "at": now(), "n": len(lens), "chars": sum(lens)}
        if self.keys:
            record |= {"keys": list(keys), "lens": lens}
        _append(self.path, record)
        return self._seq

    def after_store(self, ticket: int, billed_chars: int) -> None:
        _append(self.path, {"event": "stored", "seq": ticket, "at": now(), "billed": billed_chars,
                            **(self.counters() if self.counters is not None else {})})

    def after_failure(self, ticket: int, error: BaseException) -> None:
        _append(self.path, {"event": "failed", "seq": ticket, "at": now(), "error": type(error).__name__,
                            **(self.counters() if self.counters is not None else {})})


@dataclass
class Attempt:
    """One part attempt as its journal tells it (or, for runs before the ledger, its audit lines)."""

    id: str
    engine: str  # the [engines.<name>] table that ran it
    engine_id: str
    part: int
    parts: int
    started: str
    last_at: str  # the time of its last line
    deepl_before: int | None
    deepl_after: int | None  # from its end line (None: killed, or stopped without reading)
    ended: bool
    outcome: str | None
    memory_billed: int  # characters billed for what it stored
    in_flight_chars: int = 0  # intents never closed: possibly billed twice
    in_flight_requests: int = 0
    in_flight_keys: list[str] = field(default_factory=list)  # their memory keys (a paid engine's journal)
    timeout_chars: int = 0  # the engine's "possibly billed twice" counters (timeouts, lost connections)
    timeout_requests: int = 0
    retries_429: int = 0
    closes: list[str] = field(default_factory=list)  # attempts found dead or expired before this one started
    readings: list[tuple[str, int]] = field(default_factory=list)  # (time, DeepL counter) it recorded


_TWICE = ("possibly_billed_twice_chars", "possibly_billed_twice_requests", "retries_429")


def parse_journal(path: Path) -> Attempt | None:
    """The attempt a journal file records (None for an empty file or one without its start line)."""
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:  # a line cut by a kill or power loss: everything before it stands
            break
    if not lines or lines[0].get("event") != "start":
        return None
    s = lines[0]
    a = Attempt(id=s["attempt"], engine=s.get("engine", ""), engine_id=s.get("engine_id", ""), part=s["part"],
                parts=s["parts"], started=s["at"], last_at=lines[-1].get("at", s["at"]),
                deepl_before=s.get("deepl_before"), deepl_after=None, ended=False, outcome=None, memory_billed=0,
                closes=[c["attempt"] for c in s.get("closes", [])])
    if a.deepl_before is not None:
        a.readings.append((s["at"], a.deepl_before))
    open_intents: dict[int, dict] = {}
    counters: dict = {}
    for r in lines[1:]:
        ev = r.get("event")
        if ev == "send":
            open_intents[r["seq"]] = r
        elif ev in ("stored", "failed"):
            open_intents.pop(r["seq"], None)
            a.memory_billed += r.get("billed", 0)
            counters = r
        elif ev == "end":
            a.ended, a.outcome, a.deepl_after = True, r.get("outcome"), r.get("deepl_after")
            counters = r
            if a.deepl_after is not None:
                a.readings.append((r["at"], a.deepl_after))
    a.in_flight_chars = sum(r["chars"] for r in open_intents.values())
    a.in_flight_requests = len(open_intents)
    a.in_flight_keys = [k for r in open_intents.values() for k in r.get("keys", [])]
    a.timeout_chars = int(counters.get(_TWICE[0], 0))
    a.timeout_requests = int(counters.get(_TWICE[1], 0))
    a.retries_429 = int(counters.get(_TWICE[2], 0))
    return a


def read_attempts(folder: Path) -> list[Attempt]:
    """Every attempt journalled in `folder`, oldest first."""
    out = [a for f in sorted(Path(folder).glob("part-*.jsonl")) if (a := parse_journal(f)) is not None]
    return sorted(out, key=lambda a: a.started)


def legacy_attempts(parts_dir: Path, engine: str) -> list[Attempt]:
    """The attempts of runs before the ledger (``translated/<engine>/_parts/*.audit.jsonl``: a start and an
    end line per attempt in one file per part).  A start followed by another start was killed: the next
    start's readings bound it (what its part file and DeepL's counter held by then)."""
    out = []
    for f in sorted(Path(parts_dir).glob("*.audit.jsonl")):
        lines = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
        for i, r in enumerate(lines):
            if r.get("event") != "start":
                continue
            nxt = lines[i + 1] if i + 1 < len(lines) else None
            if nxt is None:
                continue  # its end was never written and nothing came after: nothing to bound it by
            ended = nxt.get("event") == "end"
            after = nxt.get("deepl_after") if ended else nxt.get("deepl_before")
            billed = nxt.get("memory_billed") if ended else nxt["memory_before"] - r["memory_before"]
            a = Attempt(id=f"{f.name}#{i}", engine=engine, engine_id="", part=0, parts=0,
                        started=r.get("at", ""), last_at=nxt.get("at", ""), deepl_before=r.get("deepl_before"),
                        deepl_after=after, ended=ended, outcome=nxt.get("outcome") if ended else None,
                        memory_billed=int(billed or 0),
                        timeout_chars=int(nxt.get(_TWICE[0], 0)) if ended else 0,
                        timeout_requests=int(nxt.get(_TWICE[1], 0)) if ended else 0,
                        retries_429=int(nxt.get(_TWICE[2], 0)) if ended else 0)
            out.append(a)
    return out


# -- acknowledged differences ----------------------------------------------------------------------------

def accept_difference(folder: Path, amount: int, **context: object) -> Path:
    """Record that a person acknowledged `amount` unexplained characters (later summaries stop warning for
    them); the record's path."""
    path = Path(folder) / f"accepted-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(2)}.json"
    write_json_atomic(path, {"at": now(), "user": user(), "host": socket.gethostname(),
                             "amount": int(amount), **context})
    return path


def accepted_total(folder: Path) -> int:
    """The characters of every acknowledged difference in `folder`."""
    return sum(int(json.loads(p.read_text())["amount"]) for p in sorted(Path(folder).glob("accepted-*.json")))
