"""ptvl_io, the one home of atomic writes: the rename is made durable (folder fsync), a failed write
leaves the old file or folder as it was and nothing temporary behind, and folders appear whole."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ptvl_io import (
    atomic_dir,
    atomic_path,
    atomic_write,
    fsync_dir,
    move_into_place,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Spy on os.fsync and os.replace: ("fsync-file" | "fsync-dir", path or inode) and ("replace", dest)."""
    seen: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        seen.append(("fsync-dir" if stat.S_ISDIR(st.st_mode) else "fsync-file", str(st.st_ino)))
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        seen.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return seen


def _ino(path: Path) -> str:
    return str(path.stat().st_ino)


def _write_with_atomic_write(dest: Path) -> None:
    with atomic_write(dest) as f:
        f.write(b"new")


def _write_with_atomic_path(dest: Path) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(b"new")


WRITERS = {
    "atomic_write": _write_with_atomic_write,
    "atomic_path": _write_with_atomic_path,
    "write_bytes_atomic": lambda dest: write_bytes_atomic(dest, b"new"),
    "write_text_atomic": lambda dest: write_text_atomic(dest, "new"),
    "write_json_atomic": lambda dest: write_json_atomic(dest, {"a": 1}),
}


@pytest.mark.parametrize("writer", WRITERS)
def test_every_file_writer_fsyncs_the_file_then_renames_then_fsyncs_the_folder(
    tmp_path: Path, events: list[tuple[str, str]], writer: str
) -> None:
    dest = tmp_path / "out" / "f.bin"
    WRITERS[writer](dest)
    assert [kind for kind, _ in events] == ["fsync-file", "replace", "fsync-dir"], events
    assert events[1][1] == str(dest) and events[2][1] == _ino(dest.parent)
    assert [p.name for p in dest.parent.iterdir()] == ["f.bin"]


def test_fsync_false_skips_both_fsyncs_but_still_renames(tmp_path: Path, events: list[tuple[str, str]]) -> None:
    with atomic_write(tmp_path / "f.txt", "w", fsync=False, encoding="utf-8") as f:
        f.write("x")
    assert [kind for kind, _ in events] == ["replace"]
    assert (tmp_path / "f.txt").read_text() == "x"


def test_move_into_place_fsyncs_and_renames_a_kept_temporary(tmp_path: Path, events: list[tuple[str, str]]) -> None:
    part = tmp_path / "data.bin.part"
    part.write_bytes(b"done")
    move_into_place(part, tmp_path / "data.bin")
    assert [kind for kind, _ in events] == ["fsync-file", "replace", "fsync-dir"]
    assert (tmp_path / "data.bin").read_bytes() == b"done" and not part.exists()


def test_fsync_dir_fsyncs_the_folder_itself(tmp_path: Path, events: list[tuple[str, str]]) -> None:
    fsync_dir(tmp_path)
    assert events == [("fsync-dir", _ino(tmp_path))]


@pytest.mark.parametrize("how", ["atomic_write", "atomic_path"])
def test_a_failed_file_write_leaves_the_old_file_and_no_temporary(tmp_path: Path, how: str) -> None:
    dest = tmp_path / "out.txt"
    dest.write_text("old")
    with pytest.raises(RuntimeError, match="killed"):
        if how == "atomic_write":
            with atomic_write(dest) as f:
                f.write(b"half")
                raise RuntimeError("killed")
        else:
            with atomic_path(dest) as tmp:
                tmp.write_bytes(b"half")
                raise RuntimeError("killed")
    assert dest.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_a_failed_rename_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch) -> None:
    dest = tmp_path / "out.txt"
    dest.write_text("old")

    def broken(src: object, dst: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk gone"):
        write_text_atomic(dest, "new")
    assert dest.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


# ------------------------------------------------------------------------------------------ atomic_dir


def _fill(folder: Path, text: str) -> None:
    (folder / "a.txt").write_text(text)
    (folder / "sub").mkdir()
    (folder / "sub" / "b.txt").write_text(text)


def _content(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_atomic_dir_writes_a_new_folder_durably(tmp_path: Path, events: list[tuple[str, str]]) -> None:
    dest = tmp_path / "parent" / "model"
    with atomic_dir(dest) as staging:
        assert staging.parent == dest.parent and staging.name.startswith(".model.") and not dest.exists()
        _fill(staging, "new")
    assert _content(dest) == {"a.txt": "new", "sub/b.txt": "new"}
    assert [p.name for p in dest.parent.iterdir()] == ["model"]
    kinds = [kind for kind, _ in events]
    # both files and both folders fsync'd before the rename, the parent after it
    assert sorted(kinds[:4]) == ["fsync-dir", "fsync-dir", "fsync-file", "fsync-file"]
    assert kinds[4:] == ["replace", "fsync-dir"] and events[5][1] == _ino(dest.parent)


def test_atomic_dir_refuses_an_existing_folder_unless_told_to_replace(tmp_path: Path) -> None:
    dest = tmp_path / "model"
    dest.mkdir()
    _fill(dest, "old")
    with pytest.raises(FileExistsError), atomic_dir(dest):
        pytest.fail("the block must not run")
    assert _content(dest) == {"a.txt": "old", "sub/b.txt": "old"}
    with atomic_dir(dest, replace=True) as staging:
        (staging / "only.txt").write_text("new")
    assert _content(dest) == {"only.txt": "new"}  # replaced whole, nothing of the old one merged in
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # the old folder and the staging are gone


def test_atomic_dir_a_crash_in_the_block_leaves_the_old_folder(tmp_path: Path) -> None:
    dest = tmp_path / "model"
    dest.mkdir()
    _fill(dest, "old")
    with pytest.raises(RuntimeError, match="killed"), atomic_dir(dest, replace=True) as staging:
        _fill(staging, "half")
        raise RuntimeError("killed")
    assert _content(dest) == {"a.txt": "old", "sub/b.txt": "old"}
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_atomic_dir_a_failed_swap_puts_the_old_folder_back(tmp_path: Path, monkeypatch) -> None:
    """The old folder is renamed aside, then the new one fails to take its place: the old one returns."""
    dest = tmp_path / "model"
    dest.mkdir()
    _fill(dest, "old")
    real_replace = os.replace

    def replace(src: str | Path, dst: str | Path) -> None:
        if Path(src).name.endswith(".tmp"):  # the staging folder's rename
            raise OSError("disk gone")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="disk gone"), atomic_dir(dest, replace=True) as staging:
        _fill(staging, "new")
    assert _content(dest) == {"a.txt": "old", "sub/b.txt": "old"}
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_dir_gives_the_folder_mkdirs_mode_not_mkdtemps(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        with atomic_dir(tmp_path / "d") as staging:
            (staging / "f").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o777 & ~umask

