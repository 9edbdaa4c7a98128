"""The write transaction shared by the SQLite stores (translation memory, human-review overlay)."""
from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager


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
