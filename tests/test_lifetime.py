"""ptvl_io.lifetime: a worker never outlives the process that started it.

A parent process forks two workers and is killed with SIGKILL.  Each worker "sends a request" every 0.2 s
by appending a line to a log (its pid, "sent", then "done" when the answer is in).  The stoppable worker
must finish the request in flight and send no other; the plain worker must die at once.  The log, written
by the workers themselves, is the judge.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from ptvl_io import lifetime

ROOT = Path(__file__).resolve().parents[1]

PARENT = textwrap.dedent(
    """
    import multiprocessing, os, sys, time
    from ptvl_io import lifetime

    log = sys.argv[1]

    def note(*words):
        with open(log, "a") as f:
            f.write(" ".join([str(os.getpid()), *map(str, words)]) + "\\n")

    def worker(parent, stoppable):
        lifetime.die_with_parent(parent, poll_s=0.1)
        note("kind", "stoppable" if stoppable else "plain")
        def loop():
            for i in range(1000):
                lifetime.check_stop()  # the safe point before each request
                note("sent", i)
                time.sleep(0.4)  # the request in flight
                note("done", i)
        if stoppable:
            with lifetime.stoppable(grace_s=10):  # an orphan is killed as the section ends
                try:
                    loop()
                except lifetime.Stopping as e:
                    note("stopped", e)
        else:
            loop()

    if __name__ == "__main__":
        ctx = multiprocessing.get_context("fork")
        for stoppable in (True, False):
            ctx.Process(target=worker, args=(os.getpid(), stoppable)).start()
        time.sleep(3600)
    """
)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # an orphan nobody reaps stays a zombie in a container without an init


def _lines(log: Path) -> list[list[str]]:
    return [line.split(" ", 2) for line in log.read_text().splitlines()] if log.exists() else []


def test_workers_die_with_their_parent_and_a_stoppable_one_finishes_its_request(tmp_path: Path) -> None:
    log = tmp_path / "requests.log"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(log)], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})

    def kinds() -> dict[str, str]:
        return {x[2]: x[0] for x in _lines(log) if x[1] == "kind"}

    def last(pid: str) -> str:
        return [x[1] for x in _lines(log) if x[0] == pid][-1]

    deadline = time.monotonic() + 60
    while len(kinds()) < 2 or len(_lines(log)) < 8:
        assert parent.poll() is None and time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.05)
    stoppable, plain = kinds()["stoppable"], kinds()["plain"]
    while last(stoppable) != "sent":  # kill while the stoppable worker has a request in flight
        time.sleep(0.02)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    killed_at = len(_lines(log))
    deadline = time.monotonic() + 15
    while _alive(int(stoppable)) or _alive(int(plain)):
        assert time.monotonic() < deadline, "a worker outlived its parent"
        time.sleep(0.05)
    after = _lines(log)[killed_at:]
    # Nothing was sent by anyone after the kill.
    assert [x for x in after if x[1] == "sent"] == []
    # The stoppable worker finished the request in flight, then stopped instead of sending another.
    mine = [x[1:] for x in _lines(log) if x[0] == stoppable]
    assert [m[0] for m in mine[-3:]] == ["sent", "done", "stopped"] and mine[-3][1] == mine[-2][1]
    assert "the parent process" in mine[-1][1]
    # The plain worker was killed at once: at most the line it was writing, never a "done" after the kill.
    assert [x for x in after if x[0] == plain] == []


def test_sleep_and_check_stop_end_on_a_stop_request() -> None:
    """In-process: a stop request ends a back-off sleep at once, and check_stop raises until the section
    ends (a SIGTERM inside a section only sets the flag; outside, its own handler is back)."""
    before = signal.getsignal(signal.SIGTERM)
    t0 = time.monotonic()
    try:
        with lifetime.stoppable(grace_s=30):
            assert signal.getsignal(signal.SIGTERM) is not before
            lifetime.request_stop("test")
            try:
                lifetime.sleep(30)
            except lifetime.Stopping as e:
                assert "test" in str(e)
            else:
                raise AssertionError("sleep did not stop")
            assert lifetime.stop_requested() == "test"
    finally:
        assert signal.getsignal(signal.SIGTERM) is before
    assert time.monotonic() - t0 < 5 and lifetime.stop_requested() is None
    lifetime.check_stop()  # the section is over: nothing pending
