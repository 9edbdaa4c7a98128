"""The SQLite plumbing the translation memory and the human-review overlay share: one file, opened for
writing (schema created, journal mode and fsync set) or read-only, with one write transaction helper.

Durability: ``synchronous=FULL``, so a transaction is on disk (fsync'd) when its COMMIT returns.  Journal:
``wal`` lets readers run beside one writer and several writer processes queue, but needs shared memory,
so a local disk only; ``delete`` (the rollback journal) has no shared-memory file and is safe on NFS for a
file that one process writes at a time, which is how the pipeline lays out its files.
"""
from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

DEFAULT_BUSY_TIMEOUT_S = 60.0
SQL_CHUNK = 900  # host parameters per IN (...) query, well under SQLite's limit on every build


@contextmanager
def immediate_transaction(db: sqlite3.Connection, lock: threading.RLock) -> Iterator[sqlite3.Connection]:
    """One write transaction on `db` (opened with isolation_level=None): COMMIT when the block ends,
    ROLLBACK when it raises.  `lock` serialises the threads of this process; ``BEGIN IMMEDIATE`` takes the
    file's write lock at once (waiting up to the connection's busy_timeout), so two writer processes queue
    instead of deadlocking when both try to upgrade a read lock."""
    with lock:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


class SQLiteFile:
    """One SQLite file; subclasses pass their schema.  Thread-safe within a process (one lock); open one
    instance per process (never share a connection across fork).  Use as a context manager or `close()`."""

    what = "SQLite file"  # for messages: "translation memory", "human overlay"

    def __init__(self, path: str | os.PathLike[str], *, schema: Sequence[str], journal: str = "delete",
                 read_only: bool = False, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> None:
        if journal not in ("wal", "delete"):
            raise ValueError(f"journal must be 'wal' or 'delete', not {journal!r}")
        self.path = Path(path)
        self.read_only = read_only
        self._lock = threading.RLock()
        if read_only:
            if not self.path.exists():
                raise FileNotFoundError(f"{self.what} {self.path} does not exist")
            # mode=ro: no schema or journal change and no write lock; a reader never blocks the writer long.
            self._db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=busy_timeout_s,
                                       isolation_level=None, check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are ours (BEGIN/COMMIT), so a batch is exactly one transaction.
        self._db = sqlite3.connect(str(self.path), timeout=busy_timeout_s, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        mode = self._db.execute(f"PRAGMA journal_mode={journal.upper()}").fetchone()[0]
        if str(mode).lower() != journal:
            raise sqlite3.OperationalError(f"{self.path}: SQLite refused journal mode {journal} (got {mode!r})")
        self._db.execute("PRAGMA synchronous=FULL")  # fsync at every COMMIT: durable when a write returns
        with self._write() as db:
            for sql in schema:
                db.execute(sql)

    def _write(self) -> Any:
        """A write transaction (context manager yielding the connection)."""
        return immediate_transaction(self._db, self._lock)

    def _column_exists(self, table: str, name: str) -> bool:
        return any(r[1] == name for r in self._db.execute(f"PRAGMA table_info({table})"))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"
