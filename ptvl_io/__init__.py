"""Atomic writes for every ptvl package: an output appears whole or not at all, so a killed run never
leaves a half-written file (or folder) that looks complete.

The one recipe, for files and folders alike: write beside the destination under a hidden temporary
name, fsync what was written, rename it into place, then fsync the parent folder.  The last step is
what makes the rename itself durable: a rename lives in the folder's entries, and without it a power
loss can forget the rename even though the bytes are on disk.

- `atomic_write(dest)`: an open file; `atomic_path(dest)`: a path, for writers that open it themselves.
- `write_bytes_atomic` / `write_text_atomic` / `write_json_atomic`: the one way to write those kinds.
- `atomic_dir(dest)`: a staging folder, renamed into place whole (the old folder moved aside first).
- `move_into_place(src, dest)`: for a temporary file that outlives one call (a resumable `.part`).

This is the one place temporary files and folders beside an output are made (`temp_beside`,
`atomic_dir`).  Files are created with mode 0666 minus the umask, as `open()` would, not 0600 as
`tempfile.mkstemp` does; folders with 0777 minus the umask, as `mkdir` would, not 0700 as
`tempfile.mkdtemp` does: a renamed temporary keeps its mode, and a run root shared by a team must stay
readable by the team.

A package of its own, below the others: `translation`, `training` and `eval` never import `pipeline`
(docs/ARCHITECTURE.md), yet all of them write outputs atomically.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def fsync_dir(folder: str | Path) -> None:
    """Flush a folder's entries (renames, new files) to disk.  POSIX only: Windows cannot open a folder,
    and its renames are journalled by NTFS instead."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _hidden_name(dest: Path, suffix: str) -> Path:
    return dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.{suffix}")


def temp_beside(dest: str | Path) -> tuple[int, Path]:
    """Create a new, empty, uniquely named hidden file in `dest`'s folder (made if missing) and return
    (open write fd, path).  O_EXCL as mkstemp, but mode 0666 & ~umask instead of mkstemp's 0600."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = _hidden_name(dest, "tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {dest}")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def move_into_place(src: str | Path, dest: str | Path) -> None:
    """fsync the complete file `src`, rename it over `dest` and fsync the folder.  For writers whose
    temporary file must survive between calls (a resumable download's `.part`); others use
    `atomic_write` / `atomic_path`, which also clean up after a failure."""
    src, dest = Path(src), Path(dest)
    _fsync_file(src)
    os.replace(src, dest)
    fsync_dir(dest.parent)


@contextmanager
def atomic_write(dest: str | Path, mode: str = "wb", *, fsync: bool = True,
                 encoding: str | None = None) -> Iterator[IO[Any]]:
    """Yield an open file beside `dest`; on success flush, fsync, rename it over `dest` and fsync the
    folder; on any error remove it, leaving `dest` as it was.

    fsync=False skips both fsyncs, for outputs cheap to rebuild: the rename stays atomic (readers never
    see half a file) but a power loss may lose it."""
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
    if fsync:
        fsync_dir(dest.parent)


@contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `dest` (for writers that open paths themselves); on success fsync
    it, rename it over `dest` and fsync the folder; on any error remove it."""
    dest = Path(dest)
    fd, tmp_path = temp_beside(dest)
    os.close(fd)
    try:
        yield tmp_path
        move_into_place(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)  # a no-op after the rename


def _fsync_tree(folder: Path) -> None:
    """fsync every file and folder under `folder` (what a library wrote there never was)."""
    for here, dirs, files in os.walk(folder):
        for name in files:
            path = Path(here) / name
            if not path.is_symlink():
                _fsync_file(path)
        for name in dirs:
            if not (Path(here) / name).is_symlink():
                fsync_dir(Path(here) / name)
    fsync_dir(folder)


@contextmanager
def atomic_dir(dest: str | Path, *, replace: bool = False, fsync: bool = True) -> Iterator[Path]:
    """Yield a new, empty, hidden staging folder beside `dest`; when the block succeeds, fsync what was
    written into it, rename it to `dest` and fsync the parent folder.  On any error the staging folder
    is removed and `dest` is left as it was.

    replace=False: an existing `dest` raises FileExistsError (before the block runs, and again at the
    rename if one appeared meanwhile).  replace=True: the old folder is renamed aside, the new one
    renamed into place, then the old one removed; a rename over a folder cannot be atomic on POSIX, so
    a crash between those two renames leaves the old folder beside `dest` as `.<name>.<hex>.old`, never
    a half-written `dest`.  A failed second rename moves the old folder back."""
    dest = Path(dest)
    if dest.exists() and not replace:
        raise FileExistsError(f"{dest} already exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        staging = _hidden_name(dest, "tmp")
        try:
            staging.mkdir(0o777)  # 0777 & ~umask, as mkdir gives; not mkdtemp's 0700
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"no free temporary name beside {dest}")
    old: Path | None = None
    try:
        yield staging
        if fsync:
            _fsync_tree(staging)
        if dest.exists():
            if not replace:
                raise FileExistsError(f"{dest} appeared while it was being written")
            old = _hidden_name(dest, "old")
            os.replace(dest, old)
        try:
            os.replace(staging, dest)
        except BaseException:
            if old is not None:  # put the old folder back: never leave neither
                os.replace(old, dest)
                old = None
            raise
        if fsync:
            fsync_dir(dest.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # a no-op after the rename
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_bytes_atomic(dest: str | Path, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(dest: str | Path, text: str) -> None:
    write_bytes_atomic(dest, text.encode("utf-8"))


def write_json_atomic(dest: str | Path, obj: Any) -> None:
    write_text_atomic(dest, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True, default=str) + "\n")
