"""pipeline.leases: one sender per translation part, whoever runs it (processes, machines, orphans, another
part count), on a run root that may be NFS (exclusive create by hard link, heartbeat by rename)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipeline.leases import Busy, LeaseLost, PartLease, overlaps, read_leases

ROOT = Path(__file__).resolve().parents[1]

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pipeline.leases import PartLease
    lease = PartLease(sys.argv[1], 0, 4, attempt="holder-attempt", engine_id="deepl:x").acquire()
    print("held", flush=True)
    time.sleep(3600)
    """
)


def lease(folder: Path, part: int = 0, parts: int = 4, ttl_s: float = 60.0, attempt: str = "a") -> PartLease:
    return PartLease(folder, part, parts, attempt=attempt, engine_id="deepl:x", ttl_s=ttl_s, poll_s=0.05)


def test_one_holder_at_a_time_and_released_leases_pass_on(tmp_path: Path) -> None:
    a, b = lease(tmp_path, attempt="a"), lease(tmp_path, attempt="b")
    assert a.try_acquire() is None and a.holds()
    busy = b.try_acquire()
    assert isinstance(busy, Busy) and busy.holder.attempt == "a" and "leased by" in busy.line(0, 4)
    a.check()  # still held: no error
    a.release()
    assert not a.holds() and b.try_acquire() is None and b.holds()
    assert b.superseded == []  # a released lease is not an attempt to close
    files = read_leases(tmp_path)
    assert [f.gen for f in files if not f.released] == [b.gen] and b.gen == a.gen + 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_parts_of_another_count_block_only_where_they_overlap(tmp_path: Path) -> None:
    assert overlaps(0, 2, 2, 4) and not overlaps(0, 2, 1, 4) and overlaps(1, 3, 0, 4)  # gcd(3, 4) = 1
    holder = lease(tmp_path, 0, 2)
    assert holder.try_acquire() is None
    assert isinstance(lease(tmp_path, 2, 4).try_acquire(), Busy)  # 2 = 0 mod 2: shares strings with part 0/2
    other = lease(tmp_path, 1, 4)
    assert other.try_acquire() is None and other.holds() and holder.holds()  # disjoint: both run


def test_a_dead_holder_is_taken_over_at_once_and_its_attempt_named(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "held"
    waiting = lease(tmp_path, 0, 4)
    assert isinstance(waiting.try_acquire(), Busy)  # alive: it holds the part
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert waiting.try_acquire() is None  # its PID is gone on this host: no need to wait for the expiry
    assert [s.attempt for s in waiting.superseded] == ["holder-attempt"]


def test_an_expired_lease_is_taken_over_and_its_stalled_holder_stops(tmp_path: Path) -> None:
    stalled = lease(tmp_path, ttl_s=0.4, attempt="stalled").acquire()
    stalled._stop.set()  # its heartbeat stops, as a process stopped (SIGSTOP) or cut off from the NFS server
    stalled._thread.join()
    taker = lease(tmp_path, ttl_s=0.4, attempt="taker")
    t0 = time.monotonic()
    assert isinstance(taker.try_acquire(), Busy)  # first sight: live until seen unchanged for ttl_s
    taker.acquire()
    assert time.monotonic() - t0 >= 0.4 and [s.attempt for s in taker.superseded] == ["stalled"]
    with pytest.raises(LeaseLost, match="taken over"):
        stalled.check()  # it never sends again
    stalled.release()  # does not release the taker's lease
    assert taker.holds()
    taker.release()


def test_a_foreign_host_lease_waits_for_its_heartbeat_to_stop(tmp_path: Path) -> None:
    """A lease of another machine: its PID means nothing here, only its heartbeat does (no clocks compared)."""
    path = tmp_path / "part-000-of-004.g000000.lease"
    path.write_text(json.dumps({"owner": "x", "host": "elsewhere", "pid": 1, "attempt": "remote", "beat": 0}))
    taker = lease(tmp_path, ttl_s=0.3)
    assert isinstance(taker.try_acquire(), Busy)
    path.write_text(json.dumps({"owner": "x", "host": "elsewhere", "pid": 1, "attempt": "remote", "beat": 1}))
    time.sleep(0.35)
    assert isinstance(taker.try_acquire(), Busy)  # it beat meanwhile: the watch starts again
    time.sleep(0.35)
    assert taker.try_acquire() is None and [s.attempt for s in taker.superseded] == ["remote"]
