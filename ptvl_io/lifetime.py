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

Children that a library starts (img2dataset: a ``spawn`` pool and a logger process) run no code of ours
first, so `spawned_children_die_with_me()` ties them instead: inside the block multiprocessing starts every
``spawn`` child through a launcher (`multiprocessing.set_executable`, the documented hook) that sets the
parent-death signal (SIGKILL), checks that the parent is still there, optionally sends its stdout/stderr
to `output`, and ``exec``s the real interpreter with the same arguments (the signal survives ``exec``).
The kernel kills such a worker while this process dies, so it sends no request after the kill.  Because
the signal follows the forking *thread*, and a pool replaces workers from its own worker-handler thread
(tied to it, those workers were killed at `terminate()` while holding the task-queue lock, and the
200k-URL bench hung there), every spawn inside the block is forked from one daemon thread of this module
that lives as long as the process (`multiprocessing.util.spawnv_passfds` is routed to it).

This file is also that launcher: ``python -I -S lifetime.py --parent PID [--output FILE] -- ARGS...``
(standard library only, so it starts in milliseconds and needs no ``sys.path``).
"""
from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.spawn
import multiprocessing.util
import os
import queue
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

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


# ------------------------------------------------ children a library spawns (img2dataset's pool)


class _Spawner:
    """One daemon thread, alive as long as the process, that runs the forks of the spawned children."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="ptvl-spawner", daemon=True).start()

    def _serve(self) -> None:
        while True:
            fn, args, mask, box, done = self._jobs.get()
            own = signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # the child inherits the caller's mask
            try:
                box.append((True, fn(*args)))
            except BaseException as e:  # handed back to the caller
                box.append((False, e))
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, own)
                done.set()

    def call(self, fn, *args):  # noqa: ANN001, ANN201 - spawnv_passfds' own signature
        box: list = []
        done = threading.Event()
        self._jobs.put((fn, args, signal.pthread_sigmask(signal.SIG_BLOCK, []), box, done))
        done.wait()
        ok, value = box[0]
        if not ok:
            raise value
        return value


_spawner: _Spawner | None = None
_spawner_lock = threading.Lock()


def _forget_spawner_in_child() -> None:
    # A forked child (a Luigi task process) has no copy of the parent's thread: it starts its own.
    global _spawner, _spawner_lock
    _spawner, _spawner_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_spawner_in_child)


def _the_spawner() -> _Spawner:
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = _Spawner()
        return _spawner


@contextmanager
def spawned_children_die_with_me(output: str | Path | None = None) -> Iterator[None]:
    """Inside the block, every process multiprocessing starts with the "spawn" method (and its resource
    tracker, if first started here) dies with this process, even when it is killed by SIGKILL; with
    `output`, their stdout and stderr are appended to that file.  See the module docstring."""
    previous = multiprocessing.spawn.get_executable()
    original = multiprocessing.util.spawnv_passfds
    spawner = _the_spawner()
    folder = Path(tempfile.mkdtemp(prefix="ptvl-spawn-"))
    launcher = folder / "python"
    args = [sys.executable, "-I", "-S", str(Path(__file__).resolve()), "--parent", str(os.getpid())]
    if output is not None:
        args += ["--output", str(Path(output).resolve())]
    # A shell script, not a Python shebang: a shebang line is cut at 127 bytes on older kernels, and a
    # virtual environment's interpreter path can be longer.
    launcher.write_text("#!/bin/sh\nexec " + " ".join(shlex.quote(a) for a in args) + ' -- "$@"\n')
    launcher.chmod(0o700)
    multiprocessing.set_executable(str(launcher))
    multiprocessing.util.spawnv_passfds = lambda path, argv, passfds: spawner.call(original, path, argv, passfds)
    try:
        yield
    finally:
        multiprocessing.util.spawnv_passfds = original
        multiprocessing.set_executable(os.fsdecode(previous))
        shutil.rmtree(folder, ignore_errors=True)


def _launch(argv: list[str]) -> None:
    """The launcher: tie to the parent, redirect output, then become the real interpreter."""
    split = argv.index("--")
    opts, rest = argv[:split], argv[split + 1:]
    die_with_parent(int(opts[opts.index("--parent") + 1]))  # SIGKILL: outside any stoppable section
    if "--output" in opts:
        fd = os.open(opts[opts.index("--output") + 1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    os.execv(sys.executable, [sys.executable, *rest])


if __name__ == "__main__":
    _launch(sys.argv[1:])
