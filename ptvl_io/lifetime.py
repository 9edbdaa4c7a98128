"""Die with the parent: a worker process must never outlive the process that started it.

When a parent is killed with SIGKILL its children are not told: they are re-parented (to PID 1 or a
subreaper) and carry on.  A translation worker left like that keeps paying for requests and races the rerun
the user starts at once; an image downloader keeps filling a folder the rerun is writing.
`die_with_parent()`, called first thing in the child, ties the child to its parent:

- Linux: the kernel signals the child when the parent dies (``prctl(PR_SET_PDEATHSIG)``, through ctypes).
  The kernel sends it when the *thread* that forked the child exits, so fork from a thread that lives as
  long as the parent (Luigi and multiprocessing pools fork from the main thread, or a pool's own thread).
- Everywhere (and as a second line on Linux): a watchdog thread that polls ``os.getppid()``.

What the parent's death does to the child depends on what the child is doing:

- By default the child is killed at once (SIGKILL): right for work that a rerun simply redoes (downloads,
  parsing, joins).
- Inside a `stoppable()` section (a paid translation part) the child is asked to stop instead: the code in
  the section calls `check_stop()` at its safe points (before each paid request) and sleeps with `sleep()`,
  so the request in flight is finished and stored, and no other request is sent.  If the section has not
  ended `grace_s` seconds after the stop was asked for, the process is killed.

Inside a `stoppable()` section SIGTERM from anyone (``kill``, Luigi's worker timeout) asks for the same
graceful stop; outside, SIGTERM keeps its usual meaning.

Reuse: a multiprocessing pool's ``initializer=die_with_parent`` (or a first call in any child's entry
function) is all a worker needs; ``die_with_parent(parent_pid)`` with the pid read in the parent before
forking also covers a parent that died before the child got to run.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_SLICE_S = 0.1  # `sleep` notices a stop within this long


class Stopping(Exception):  # noqa: N818 - a request, not an error: the caller stops cleanly
    """A stop was asked for (the parent died, or SIGTERM): stop before the next unit of work."""


@dataclass
class _State:
    parent_pid: int | None = None  # the parent `die_with_parent` ties this process to
    depth: int = 0  # nesting of `stoppable()` sections
    grace_s: float = 90.0
    stop_reason: str | None = None
    stop_at: float = 0.0  # time.monotonic() when the stop was asked for
    sigterm: bool = False  # the stop came from a SIGTERM, delivered again once the section ends
    watchdog_pid: int | None = None  # the process whose watchdog thread runs (threads do not survive fork)
    poll_s: float = 1.0


_state = _State()


def _reset_in_child() -> None:
    # A forked child starts free: its parent's tie, stop and sections are not its own.
    global _state
    _state = _State()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_in_child)


def _set_pdeathsig(sig: int) -> bool:
    """Ask the kernel for `sig` at the parent's death (Linux only); False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def orphaned() -> bool:
    """True when `die_with_parent` tied this process to a parent that is gone."""
    return _state.parent_pid is not None and os.getppid() != _state.parent_pid


def _parent_gone() -> None:
    if _state.depth:
        request_stop(f"the parent process (pid {_state.parent_pid}) died")
    else:
        os.kill(os.getpid(), signal.SIGKILL)


def _watchdog() -> None:
    while True:
        time.sleep(_state.poll_s)
        if orphaned():
            _parent_gone()
        if _state.stop_reason is not None and _state.depth and time.monotonic() - _state.stop_at > _state.grace_s:
            # The section did not reach a safe point in time (a request hung past its timeout): kill.
            os.kill(os.getpid(), signal.SIGKILL)


def _start_watchdog() -> None:
    if _state.watchdog_pid != os.getpid():
        _state.watchdog_pid = os.getpid()
        threading.Thread(target=_watchdog, name="ptvl-lifetime-watchdog", daemon=True).start()


def die_with_parent(parent_pid: int | None = None, *, poll_s: float = 1.0) -> None:
    """Tie this process to `parent_pid` (default: its parent now): when the parent dies, this process is
    killed at once, or asked to stop inside a `stoppable()` section (see the module docstring).

    Call it first thing in the child.  `parent_pid`, read by the parent before it forks, also catches a
    parent that died before this call: the child then acts at once.  `poll_s`: the watchdog's period."""
    _state.parent_pid = os.getppid() if parent_pid is None else parent_pid
    _state.poll_s = poll_s
    _set_pdeathsig(signal.SIGTERM if _state.depth else signal.SIGKILL)
    _start_watchdog()
    if orphaned():  # it died before the kernel was asked to tell us
        _parent_gone()


def request_stop(reason: str) -> None:
    """Ask the current `stoppable()` work to stop at its next safe point (the first reason is kept)."""
    if _state.stop_reason is None:
        _state.stop_reason = reason
        _state.stop_at = time.monotonic()


def stop_requested() -> str | None:
    """Why a stop was asked for, or None."""
    return _state.stop_reason


def check_stop() -> None:
    """Raise `Stopping` if a stop was asked for: call it at every safe point (before a paid request)."""
    if _state.stop_reason is not None:
        raise Stopping(f"stopped before the next request: {_state.stop_reason}")


def sleep(seconds: float) -> None:
    """`time.sleep` that ends early with `Stopping` when a stop is asked for (a back-off never outlives
    the parent)."""
    end = time.monotonic() + seconds
    while True:
        check_stop()
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, _SLICE_S))


def _on_sigterm(signum: int, frame: object) -> None:
    # Only a flag: the work stops at its next safe point (a handler that raised could break a write).
    _state.sigterm = not orphaned()
    request_stop(f"the parent process (pid {_state.parent_pid}) died" if orphaned() else "SIGTERM received")


@contextmanager
def stoppable(grace_s: float = 90.0) -> Iterator[None]:
    """A section that stops gracefully: the parent's death or SIGTERM set the stop flag instead of killing
    the process; the code inside calls `check_stop()` at safe points.  After `grace_s` without leaving the
    section, the process is killed.  Sections nest; SIGTERM is handled only in the main thread's sections
    (Python delivers signals there)."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main else None
    _state.depth += 1
    _state.grace_s = grace_s
    if _state.parent_pid is not None:
        _set_pdeathsig(signal.SIGTERM)
        if orphaned():
            _parent_gone()
    _start_watchdog()
    try:
        yield
    finally:
        _state.depth -= 1
        if _state.depth == 0:
            if _state.parent_pid is not None:
                _set_pdeathsig(signal.SIGKILL)
            if main:
                signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
            if orphaned():  # the section ended because the parent died: nothing more to do here
                os.kill(os.getpid(), signal.SIGKILL)
            sigterm, _state.sigterm, _state.stop_reason = _state.sigterm, False, None
            if sigterm and main:  # the SIGTERM the section held back now means what it meant
                os.kill(os.getpid(), signal.SIGTERM)
