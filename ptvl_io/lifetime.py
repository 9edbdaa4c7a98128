"""Die with the parent: a worker process must never outlive the process that started it.

When a parent is killed with SIGKILL its children are not told: they are re-parented (to PID 1 or a
subreaper) and carry on.  img2dataset's pool workers left like that went on downloading (1,576 requests
after a `kill -9` of `ptvl run`, two more shards written into a folder the rerun was about to use).

Two entry points:

- `die_with_parent()`, called first thing in a child: the kernel sends the child `sig` (default SIGKILL)
  when its parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``, through ctypes; elsewhere a watchdog thread
  polls ``os.getppid()``).  The kernel ties the child to the parent *thread* that forked it: fork from a
  thread that lives as long as the work.
- `spawned_children_die_with_me()`, a context manager for a parent that runs a library which starts its
  own workers (img2dataset: a ``spawn`` pool and a logger process), so no code of ours runs in them
  first.  Inside the block multiprocessing starts every ``spawn`` child through a launcher
  (`multiprocessing.set_executable`, the documented hook) that sets the parent-death signal (SIGKILL),
  checks that the parent is still there (one that died in between is caught), optionally sends its
  stdout/stderr to `output`, and ``exec``s the real interpreter with the same arguments; the signal
  survives ``exec``.  The kernel kills such a worker while this process dies, synchronously, so it sends
  no request after the kill.

  The signal follows the forking *thread*, and the library forks from threads it owns: a pool replaces
  a worker every few tasks from its worker-handler thread, which ends when the pool terminates.  Tied to
  that thread, those workers were killed at `terminate()`, one holding the pool's task-queue lock, and
  `terminate()` then waited for ever (the 200k-URL bench hung there).  So inside the block every spawn
  is forked from one daemon thread of this module that lives as long as the process
  (`multiprocessing.util.spawnv_passfds`, which every spawn goes through, is routed to it, with the
  caller's signal mask): the signal then means "this process died", nothing else.

This file is also the launcher: ``python -I -S lifetime.py --parent PID [--output FILE] -- ARGS...``
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
from pathlib import Path

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _set_pdeathsig(sig: int) -> bool:
    """Ask the kernel for `sig` when the parent (thread) dies; False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent_pid: int, sig: int, poll_s: float) -> None:
    while os.getppid() == parent_pid:
        time.sleep(poll_s)
    os.kill(os.getpid(), sig)


def die_with_parent(parent_pid: int | None = None, *, sig: int = signal.SIGKILL, poll_s: float = 0.5) -> bool:
    """Tie this process to its parent: `sig` is delivered to it when the parent dies.

    Call it first thing in the child.  `parent_pid`, read by the parent before it started the child, also
    catches a parent that died before this call (the child is then signalled at once).  Returns True when
    the kernel enforces the tie (Linux); otherwise a daemon thread polls ``os.getppid()`` every `poll_s`
    seconds, which does not survive an ``exec``."""
    parent = os.getppid() if parent_pid is None else parent_pid
    enforced = _set_pdeathsig(sig)
    if not enforced:
        threading.Thread(target=_watch, args=(parent, sig, poll_s), name="ptvl-die-with-parent",
                         daemon=True).start()
    if os.getppid() != parent:  # it died before the tie was made
        os.kill(os.getpid(), sig)
    return enforced


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
    die_with_parent(int(opts[opts.index("--parent") + 1]), sig=signal.SIGKILL)
    if "--output" in opts:
        fd = os.open(opts[opts.index("--output") + 1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    os.execv(sys.executable, [sys.executable, *rest])


if __name__ == "__main__":
    _launch(sys.argv[1:])
