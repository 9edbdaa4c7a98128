"""How img2dataset's processes run under ptvl: tied to this process, and quiet.

img2dataset starts its own workers (a "spawn" pool and a logger process), so no code of ours runs in them
before they download.  Around each img2dataset call, `img2dataset_workers`:

- ties every process it spawns to this one (`ptvl_io.lifetime.spawned_children_die_with_me`): when this
  process dies, even by SIGKILL, they are killed within milliseconds, before they send another request;
- unless `verbose` (`ptvl -v`), keeps img2dataset's own output off the console: the workers' and the
  logger's stdout/stderr, and what img2dataset prints in this process (its shard progress bar, "Starting
  the downloading of this file", the reader's "Sharding file ..." from the pool's task thread, retries),
  are appended to the attempt's `img2dataset.log`.  Python's sys.stdout / sys.stderr are redirected per
  thread: the calling thread and every thread started inside the block (the pool's, tqdm's monitor) write
  to the log; threads that were running before (ptvl's progress bar and its log lines) still reach the
  console.
"""
from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ptvl_io.lifetime import spawned_children_die_with_me


class _ThreadRouted:
    """A stand-in for sys.stdout / sys.stderr: writes from the threads in `passing` go to the stream it
    replaces, all others to `log`."""

    def __init__(self, stream: IO[str], log: IO[str], passing: set[int]) -> None:
        self._stream, self._log, self._passing = stream, log, passing

    def _target(self) -> IO[str]:
        return self._stream if threading.get_ident() in self._passing else self._log

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:
        return self._target().isatty()

    def __getattr__(self, name: str):  # encoding, fileno, buffer, ...: those of the stream replaced
        return getattr(self._stream, name)


@contextlib.contextmanager
def img2dataset_workers(log_path: Path, verbose: bool) -> Iterator[None]:
    """Run img2dataset inside this block (see the module docstring)."""
    if verbose:
        with spawned_children_die_with_me():
            yield
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8", errors="replace") as log, \
            spawned_children_die_with_me(output=log_path):
        before = {t.ident for t in threading.enumerate() if t.ident is not None} - {threading.get_ident()}
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _ThreadRouted(out, log, before), _ThreadRouted(err, log, before)  # type: ignore[assignment]
        try:
            yield
        finally:
            sys.stdout, sys.stderr = out, err
