"""One part, one sender: a lease on each translation part, in the run root, whoever runs it.

Luigi runs a task once per scheduler, but nothing stops two `ptvl translate` processes (no luigid), a
worker orphaned by a killed parent, two machines or two engine tables with the same settings from
translating the same part at once, and paying twice.  Before it sends anything, a part takes the lease of
its (engine id, part) in ``memory/<engine key>/_leases/`` (`pipeline.layout.RunLayout.leases_dir`); a
process that finds it held waits (it never sends), and checks before each request that it still holds it.

Made for a shared run root on NFS, so no flock and no file two processes write:

- A lease is a file ``part-<i>-of-<n>.g<generation>.lease`` holding JSON: owner token, user, host, PID and
  the PID's start time, the attempt id (`pipeline.ledger`), and a heartbeat counter.  It is created whole
  and at most once: written to a temporary name, then hard-linked to its final name, which fails if the
  name exists (the NFS-safe exclusive create).  Only its holder rewrites it (heartbeat, release), by atomic
  rename.
- Taking a part over creates the next generation; the holder of generation g holds the part while no
  later generation of the part exists, its own file still names it and is not released.
- A lease is free when released, *dead* (its host is this host and its PID is gone, or is another process
  now) or *expired*: its heartbeat did not change for `ttl_s` seconds of this process's own watching, so
  clocks on other machines never matter.  A holder beats every `ttl_s / 4` seconds from a thread.
- Parts of different part counts overlap (part i of n and part j of m share strings unless i and j differ
  modulo gcd(n, m)), so a live overlapping lease of another count blocks too.  After creating its lease a
  process looks again, and gives the lease back if an overlapping one appeared meanwhile (both may give
  back; they retry after a random pause).

NFS caches directory listings and attributes for seconds; what this module sees is as fresh as the mount
(``lookupcache=positive`` or a short ``actimeo`` keeps the window small).
"""
from __future__ import annotations

import getpass
import json
import logging
import math
import os
import random
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ptvl_io import fsync_dir, temp_beside, write_json_atomic
from ptvl_io.lifetime import sleep as stoppable_sleep

log = logging.getLogger("ptvl")

DEFAULT_TTL_S = 60.0
_NAME = re.compile(r"^part-(\d+)-of-(\d+)\.g(\d+)\.lease$")


class LeaseLost(RuntimeError):
    """Another process took this part over (this one stalled past the lease's expiry): stop sending."""


def _host() -> str:
    return socket.gethostname()


def user() -> str:
    """The login name, or the uid where the container has no passwd entry for it."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def _proc_stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (Linux), None elsewhere or when the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _pid_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused PID apart."""
    stat = _proc_stat(pid)
    return stat[19] if stat else None  # field 22


def _pid_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    stat = _proc_stat(pid)
    if stat is None:
        return True  # no /proc: the signal said it exists
    # A zombie is dead (an orphan nobody reaps, in a container without an init, stays one); a PID whose start
    # time differs is another process.
    return stat[0] not in ("Z", "X") and (start is None or stat[19] == start)


@dataclass(frozen=True)
class LeaseFile:
    """One lease file as read: its part, generation and content (None while unreadable)."""

    path: Path
    part: int
    parts: int
    gen: int
    data: dict | None

    @property
    def released(self) -> bool:
        return bool(self.data and self.data.get("released"))

    @property
    def attempt(self) -> str | None:
        return (self.data or {}).get("attempt")

    def dead(self) -> bool:
        """Held by a process of this host that is gone (or whose PID now belongs to another process)."""
        d = self.data
        if not d or d.get("host") != _host():
            return False
        return not _pid_alive(int(d["pid"]), d.get("pid_start"))

    def describe(self) -> str:
        d = self.data or {}
        return f"{d.get('user', '?')}@{d.get('host', '?')} pid {d.get('pid', '?')} (attempt {d.get('attempt', '?')})"


def overlaps(part: int, parts: int, other: int, other_parts: int) -> bool:
    """Whether part `part` of `parts` and part `other` of `other_parts` can hold the same string (a hash h
    is in both iff h = part mod parts and h = other mod other_parts, solvable iff the parts agree modulo
    the counts' gcd)."""
    return (part - other) % math.gcd(parts, other_parts) == 0


def read_leases(folder: Path) -> list[LeaseFile]:
    """Every lease file in `folder` (temporary files left out)."""
    out = []
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    for name in names:
        m = _NAME.match(name)
        if not m:
            continue
        path = folder / name
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            data = None  # being replaced right now: treated as live until it expires
        out.append(LeaseFile(path, int(m[1]), int(m[2]), int(m[3]), data))
    return out


def latest(leases: list[LeaseFile]) -> dict[tuple[int, int], LeaseFile]:
    """The newest generation of each (part, parts): the only one that can hold the part."""
    out: dict[tuple[int, int], LeaseFile] = {}
    for lease in leases:
        key = (lease.part, lease.parts)
        if key not in out or lease.gen > out[key].gen:
            out[key] = lease
    return out


@dataclass
class Watcher:
    """This process's observations of other holders' heartbeats: a lease whose heartbeat has not changed
    for `ttl_s` seconds of watching (this machine's monotonic clock) has expired."""

    ttl_s: float = DEFAULT_TTL_S
    _seen: dict[Path, tuple[object, float]] = field(default_factory=dict)

    def state(self, lease: LeaseFile) -> str:
        """"released", "dead", "expired" or "live"."""
        if lease.released:
            return "released"
        if lease.dead():
            return "dead"
        beat = (lease.data or {}).get("beat", lease.data)
        now = time.monotonic()
        seen = self._seen.get(lease.path)
        if seen is None or seen[0] != beat:
            self._seen[lease.path] = (beat, now)
            return "live"
        return "expired" if now - seen[1] >= self.ttl_s else "live"


@dataclass(frozen=True)
class Busy:
    """Why a lease could not be taken now: the live lease in the way."""

    holder: LeaseFile

    def line(self, part: int, parts: int) -> str:
        what = (f"part {part + 1}/{parts}" if (self.holder.part, self.holder.parts) == (part, parts) else
                f"overlapping part {self.holder.part + 1}/{self.holder.parts}")
        return f"{what} is leased by {self.holder.describe()}; waiting (nothing is sent meanwhile)"


class PartLease:
    """The lease of part `part` of `parts` in `folder` (see the module docstring).

    `acquire()` waits until it holds the part, then keeps it alive from a thread; `check()` before each
    request raises `LeaseLost` if another process took it over; `release()` gives it back.  `superseded`
    lists the leases found dead or expired on the way (their attempts' ledgers are closed by the caller)."""

    def __init__(self, folder: Path, part: int, parts: int, *, attempt: str, engine_id: str,
                 ttl_s: float = DEFAULT_TTL_S, poll_s: float = 1.0) -> None:
        self.folder, self.part, self.parts = Path(folder), part, parts
        self.attempt, self.engine_id = attempt, engine_id
        self.ttl_s, self.poll_s = ttl_s, poll_s
        self.token = secrets.token_hex(8)
        self.path: Path | None = None
        self.gen = -1
        self.superseded: list[LeaseFile] = []
        self._watch = Watcher(ttl_s)
        self._beat = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- taking it ----------------------------------------------------------------------------------------

    def _blocking(self, leases: list[LeaseFile]) -> LeaseFile | None:
        """The first live lease that keeps this part from being taken (its own or an overlapping count's);
        dead and expired ones met on the way are remembered as superseded."""
        for lease in latest(leases).values():
            if lease.path == self.path or not overlaps(self.part, self.parts, lease.part, lease.parts):
                continue
            state = self._watch.state(lease)
            if state == "live":
                return lease
            if state in ("dead", "expired") and lease.path not in {s.path for s in self.superseded}:
                self.superseded.append(lease)
        return None

    def _content(self, released: bool = False) -> dict:
        pid = os.getpid()
        return {"owner": self.token, "user": user(), "host": _host(), "pid": pid,
                "pid_start": _pid_start(pid), "attempt": self.attempt, "engine_id": self.engine_id,
                "part": self.part, "parts": self.parts, "beat": self._beat, "beat_at": time.time(),
                "released": released}

    def _create(self, gen: int) -> bool:
        """Create generation `gen` whole, or False if that name exists (another process took it first)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"part-{self.part:03d}-of-{self.parts:03d}.g{gen:06d}.lease"
        fd, tmp = temp_beside(path)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self._content(), f)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # atomic and exclusive, on NFS too
            except FileExistsError:
                return False
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(self.folder)
        self.path, self.gen = path, gen
        return True

    def try_acquire(self) -> Busy | None:
        """Take the lease now if it is free: None when taken, else what holds it."""
        for _ in range(10):
            leases = read_leases(self.folder)
            holder = self._blocking(leases)
            if holder is not None:
                return Busy(holder)
            mine = [lease.gen for lease in leases if (lease.part, lease.parts) == (self.part, self.parts)]
            if self._create(max(mine, default=-1) + 1):
                break
            # Another process created that generation first: look again (it is live now).
        else:
            raise RuntimeError(f"could not create a lease in {self.folder} (10 races lost in a row)")
        # Another count's process may have created an overlapping lease meanwhile: whoever sees the other
        # after creating gives way.
        holder = self._blocking(read_leases(self.folder))
        if holder is not None:
            self._write(released=True)
            self.path = None
            return Busy(holder)
        self._prune()
        return None

    def acquire(self, on_wait: Callable[[str], None] | None = None) -> PartLease:
        """Wait until this process holds the part (polling; a stop request ends the wait with `Stopping`),
        then start the heartbeat.  `on_wait` is told once what it waits for."""
        told = False
        while (busy := self.try_acquire()) is not None:
            if not told and on_wait is not None:
                on_wait(busy.line(self.part, self.parts))
                told = True
            stoppable_sleep(self.poll_s * random.uniform(0.5, 1.5))
        self._thread = threading.Thread(target=self._heartbeat, name="ptvl-lease-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _prune(self) -> None:
        # Older generations of this part are superseded for good; a stalled holder of one of them finds
        # this generation (or its own file gone) and stops.
        for lease in read_leases(self.folder):
            if (lease.part, lease.parts) == (self.part, self.parts) and lease.gen < self.gen - 1:
                lease.path.unlink(missing_ok=True)

    # -- holding it ---------------------------------------------------------------------------------------

    def _write(self, *, released: bool = False) -> None:
        with self._lock:
            if self.path is not None:
                write_json_atomic(self.path, self._content(released))

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            if not self.holds():
                return
            self._beat += 1
            self._write()

    def _own(self, leases: list[LeaseFile]) -> bool:
        """This process's lease file still names it, is not released and no later generation exists."""
        own = next((lease for lease in leases if lease.path == self.path), None)
        if own is None or not own.data or own.data.get("owner") != self.token or own.released:
            return False
        return not any((lease.part, lease.parts) == (self.part, self.parts) and lease.gen > self.gen
                       for lease in leases)

    def _rival(self, leases: list[LeaseFile]) -> LeaseFile | None:
        """A lease of an overlapping count that appeared after this one was taken and is held."""
        gone = {s.path for s in self.superseded}
        for lease in latest(leases).values():
            if ((lease.part, lease.parts) == (self.part, self.parts) or lease.path in gone
                    or not overlaps(self.part, self.parts, lease.part, lease.parts)):
                continue
            if not lease.released and not lease.dead():
                return lease
        return None

    def holds(self) -> bool:
        """Whether this process still holds the part."""
        if self.path is None:
            return False
        leases = read_leases(self.folder)
        if not self._own(leases):
            return False
        if self._rival(leases) is None:
            return True
        # A process of another count that created its lease, saw this one and is giving its own back:
        # look again once it has had the time to.
        time.sleep(0.5)
        leases = read_leases(self.folder)
        return self._own(leases) and self._rival(leases) is None

    def check(self) -> None:
        """Raise `LeaseLost` unless this process still holds the part: called before every request."""
        if not self.holds():
            raise LeaseLost(f"part {self.part + 1}/{self.parts} of {self.engine_id} was taken over by another "
                            "process (this one stopped renewing its lease); stopped before sending")

    def release(self) -> None:
        """Stop the heartbeat and mark the lease released (only if this process still holds it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.path is not None and self._own(read_leases(self.folder)):
            self._write(released=True)
        self.path = None

    def __enter__(self) -> PartLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
