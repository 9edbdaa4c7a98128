"""Progress of long steps, for people: a bar on a terminal; without one (a batch job, CI, output piped
to a file), a log line every `every_s` seconds and one at the end, so a step that takes minutes is never
silent and a log never fills with bar redraws (or gets one bar, printed once at the end).

Every progress display of the project goes through here (training's loop, the sample's model
pretraining, source fetching, image download, feature caching, evaluation), so batch jobs and luigid
logs see all of them.  Here, beside the atomic writes, because the libraries never import `pipeline`.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("ptvl.progress")

# Seconds between two log lines when there is no terminal (PTVL_PROGRESS_EVERY_S overrides it).
DEFAULT_EVERY_S = 30.0
# The unit that makes counts sizes: "1.2 GB", a transfer speed, a download bar.
BYTES = "bytes"


def _every_s() -> float:
    try:
        return float(os.environ.get("PTVL_PROGRESS_EVERY_S", DEFAULT_EVERY_S))
    except ValueError:
        return DEFAULT_EVERY_S


def _size(n: float) -> str:
    """Decimal byte units, as rich's download bar shows them."""
    if n < 1000:
        return f"{n:,.0f} bytes"
    for unit in ("kB", "MB", "GB"):
        n /= 1000
        if n < 1000:
            return f"{n:,.1f} {unit}"
    return f"{n / 1000:,.1f} TB"


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:02d}:{rest % 60:02d}"


class ProgressReporter:
    """`update(completed, **fields)` as work advances; `close()` (or the with-block) at the end.

    total: None when unknown (a download without Content-Length); `set_total` gives it later.
    unit: what is counted, shown after the counts; BYTES ("bytes") shows sizes and a transfer speed.
    fields_fmt formats the extra fields on both the bar and the log lines, e.g. "loss {loss:.4f}".
    console: the rich Console to draw on (default: a new one on stderr); the bar is drawn only when it is
    a terminal.  Log lines go to the `ptvl.progress` logger at INFO."""

    def __init__(self, label: str, total: int | None, *, completed: int = 0, unit: str = "",
                 fields_fmt: str = "", console: Any = None, every_s: float | None = None,
                 fields: dict[str, Any] | None = None) -> None:
        from rich.console import Console  # deferred: ptvl_io is imported everywhere, rich only by reporters

        self.label, self.total, self.unit, self.fields_fmt = label, total, unit, fields_fmt
        self.completed, self.fields = completed, dict(fields or {})
        self.console = console or Console(stderr=True)
        self.every_s = _every_s() if every_s is None else every_s
        self.t0 = self.last_log = time.monotonic()
        self.start = completed
        self.logged: tuple[int, str] = (completed, "")
        self.bar = None
        self.closed = False
        if self.console.is_terminal:
            from rich.progress import (  # deferred: only a terminal draws a bar
                BarColumn,
                DownloadColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            columns = [TextColumn(label), BarColumn()]
            columns += [DownloadColumn(), TransferSpeedColumn()] if unit == BYTES else [MofNCompleteColumn()]
            if fields_fmt:  # the formatted fields travel as the task's description
                columns.append(TextColumn("{task.description}"))
            columns += [TimeElapsedColumn(), TimeRemainingColumn()]
            self.bar = Progress(*columns, console=self.console, transient=False)
            self.task = self.bar.add_task(self._fields_text(), total=total, completed=completed)
            self.bar.start()

    def _fields_text(self) -> str:
        if not self.fields_fmt:
            return ""
        try:
            return self.fields_fmt.format(**self.fields)
        except (KeyError, ValueError, TypeError):
            return ""

    def line(self) -> str:
        """The log line of the current state: label, count, share, fields, elapsed and remaining time."""
        elapsed = time.monotonic() - self.t0
        done = self.completed - self.start
        if self.unit == BYTES:
            count = _size(self.completed) if not self.total else f"{_size(self.completed)}/{_size(self.total)}"
        else:
            unit = f" {self.unit}" if self.unit else ""
            count = f"{self.completed:,}{unit}" if not self.total else f"{self.completed:,}/{self.total:,}{unit}"
        text = f"{self.label}: {count}"
        eta = None
        if self.total:
            text += f" ({100 * self.completed / self.total:.0f}%)"
            eta = elapsed * (self.total - self.completed) / done if done > 0 else None
        if self.unit == BYTES and done > 0 and elapsed > 0:
            text += f", {_size(done / elapsed)}/s"
        fields = self._fields_text()
        text += f", {fields}" if fields else ""
        text += f", elapsed {_clock(elapsed)}"
        return text + (f", about {_clock(eta)} left" if eta is not None and self.completed < (self.total or 0) else "")

    def update(self, completed: int, **fields: Any) -> None:
        self.completed = completed
        self.fields.update(fields)
        if self.bar is not None:
            self.bar.update(self.task, completed=completed, description=self._fields_text())
            return
        # A line when there is news and every_s has passed, and a heartbeat every DEFAULT_EVERY_S even
        # without news (a stalled step still says it is alive).
        now = time.monotonic()
        news = (completed, self._fields_text()) != self.logged
        if (news and now - self.last_log >= self.every_s) or now - self.last_log >= max(self.every_s, DEFAULT_EVERY_S):
            self.last_log, self.logged = now, (completed, self._fields_text())
            log.info("%s", self.line())

    def set_total(self, total: int | None) -> None:
        """The total once known (or changed: a server's size differs from the expected one)."""
        self.total = total
        if self.bar is not None:
            self.bar.update(self.task, total=total)

    def advance(self, n: int = 1, **fields: Any) -> None:
        self.update(self.completed + n, **fields)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.bar is not None:
            self.bar.stop()
        elif self.completed != self.start and (self.completed, self._fields_text()) != self.logged:
            log.info("%s", self.line())  # the final state, unless its line was just logged

    def __enter__(self) -> ProgressReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def stage_progress(label: str, *, console: Any = None) -> Iterator[Callable[[str, int, int], None]]:
    """A `progress(stage, done, total)` callback (the evaluation runners' protocol): one reporter per
    stage name, each closed when the next stage starts or the block ends."""
    current: dict[str, ProgressReporter] = {}

    def progress(stage: str, done: int, total: int) -> None:
        rep = current.get("r")
        if rep is None or rep.label != f"{label}: {stage}" or rep.total != total:
            if rep is not None:
                rep.close()
            rep = current["r"] = ProgressReporter(f"{label}: {stage}", total, console=console)
        rep.update(done)

    try:
        yield progress
    finally:
        if "r" in current:
            current["r"].close()
