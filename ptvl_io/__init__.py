"""Atomic file writes for every ptvl package: an output appears whole or not at all (temp file in the same
folder, fsync, os.replace), so a killed run never leaves a half-written file that looks complete.

This is the one place temporary files beside an output are made (`temp_beside`).  It creates them with
mode 0666 minus the umask, as `open()` would, not 0600 as `tempfile.mkstemp` does: a renamed temp file
keeps its mode, and a run root shared by a team must stay readable by the team.

A package of its own, below the others: `translation`, `training` and `eval` never import `pipeline`
(ARCHITECTURE.md), yet all of them write outputs atomically.
"""
from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def temp_beside(dest: str | Path) -> tuple[int, Path]:
    """Create a new, empty, uniquely named hidden file in `dest`'s folder (made if missing) and return
    (open write fd, path).  O_EXCL as mkstemp, but mode 0666 & ~umask instead of mkstemp's 0600."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {dest}")


@contextmanager
def atomic_write(dest: str | Path, mode: str = "wb", *, fsync: bool = True,
                 encoding: str | None = None) -> Iterator[IO[Any]]:
    """Yield an open file beside `dest`; on success flush, fsync (unless told not to) and rename it over
    `dest`; on any error remove it, leaving `dest` as it was."""
    dest = Path(dest)
    fd, tmp = temp_beside(dest)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `dest` (for writers that open paths themselves); on success fsync
    it and rename it over `dest`."""
    dest = Path(dest)
    fd, tmp_path = temp_beside(dest)
    os.close(fd)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(dest: str | Path, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(dest: str | Path, text: str) -> None:
    write_bytes_atomic(dest, text.encode("utf-8"))


def write_json_atomic(dest: str | Path, obj: Any) -> None:
    write_text_atomic(dest, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True, default=str) + "\n")
