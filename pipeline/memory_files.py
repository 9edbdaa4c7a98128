"""The translation memory files of a run root, and the views that read them together.

Layout (safe on a shared NFS run root; SQLite WAL is not), see `pipeline.layout.RunLayout`:

- ``memory/<engine key>/`` (`memory_folder_name`: the engine id's kind and a digest of it, with the full id
  in its ``ENGINE_ID`` file): one folder per engine id, i.e. per set of settings that decides the output,
  never per [engines.<name>] table.  Renaming a table, or two tables with the same settings, find the same
  memory (and the same part leases, `pipeline.leases`); a table whose settings differ is another engine id,
  with a folder of its own.
- ``memory/<engine key>/part-<i>-of-<n>.sqlite``: written only by the process holding translation part i's
  lease (one writer per file), in SQLite's rollback-journal mode (no shared-memory file); each request's
  results are committed (fsync'd) before the next request goes out, so a killed part loses at most the
  request in flight and its rerun pays only for what is missing.
- ``memory/<engine key>/imported.sqlite``: a reference engine's imported Parquet memory.
- ``memory/memory.sqlite``: the run's shared memory, written only by `ptvl memory import` (never by a
  running pipeline); read by every part, so translations imported from elsewhere are never paid again.
- ``memory/<table name>/``: where runs before the id folders kept a table's files.  They are read by every
  view (their rows carry their engine id, so only the same id's rows ever match) and never written: a
  memory paid for under an old layout, or a table since renamed, is never paid again.

A part reads the shared memory, its engine id's files from other part counts (a changed
`translate.parts`) and the old folders, never the files of its sibling parts (disjoint keys, and being
written right now).  `memory_view` reads all of them together (joins, reports, `ptvl memory export`).
"""
from __future__ import annotations

from pathlib import Path

from pipeline.human_review import human_export_path, is_overlay_export
from pipeline.layout import ENGINE_ID_FILE, RunLayout
from ptvl_io import write_text_atomic
from translation.memory import MemoryStack, MemoryStats, TranslationMemory
from translation.overlay import HumanOverlay


def open_memory(path: str | Path, *, read_only: bool = False) -> TranslationMemory:
    """A pipeline memory file: rollback journal (NFS-safe with one writer at a time)."""
    return TranslationMemory(path, journal="delete", read_only=read_only)


def engine_folder(layout: RunLayout, engine_id: str) -> Path:
    """The engine id's memory folder, made (with its ``ENGINE_ID`` file) if missing."""
    folder = layout.engine_memory(engine_id)
    marker = folder / ENGINE_ID_FILE
    if not marker.exists():
        write_text_atomic(marker, engine_id + "\n")
    return folder


def legacy_folders(layout: RunLayout) -> list[Path]:
    """Memory folders of the layout before the id folders (named after a table, no ``ENGINE_ID`` file)."""
    if not layout.memory_dir.is_dir():
        return []
    return sorted(p for p in layout.memory_dir.iterdir() if p.is_dir() and not (p / ENGINE_ID_FILE).exists())


def memory_view(root: Path, engine_id: str | None = None, *, writer: Path | None = None,
                skip_part_count: int | None = None) -> MemoryStack:
    """A `MemoryStack` over the run's memory files: `writer` (opened for writing) first, then the shared
    memory, the files of `engine_id`'s folder (every folder when None) and of the old table-named folders,
    read-only.  Part files of `skip_part_count` parts in the id's folder (a part's siblings) are left out."""
    layout = RunLayout(Path(root))
    files = []
    main = layout.shared_memory
    if main.exists():
        files.append(main)
    own = layout.engine_memory(engine_id) if engine_id is not None else None
    if own is None:
        dirs = sorted(p for p in layout.memory_dir.glob("*") if p.is_dir())
    else:
        dirs = [own, *legacy_folders(layout)]
    for d in dirs:
        for f in sorted(d.glob("*.sqlite")):
            sibling = (d == own and skip_part_count is not None
                       and f.name.endswith(f"-of-{skip_part_count:03d}.sqlite"))
            if f == writer or sibling:
                continue
            files.append(f)
    readers = [r for r in (_reader(f) for f in files) if r is not None]
    w = open_memory(writer) if writer is not None else None
    if w is None and not readers:  # nothing stored yet: an empty shared memory, so look-ups work
        w = open_memory(main)
    return MemoryStack(w, readers)


def _reader(path: Path) -> TranslationMemory | None:
    """`path` opened read-only, or None while another process is creating it (no table yet: nothing in it)."""
    mem = open_memory(path, read_only=True)
    if mem.ready():
        return mem
    mem.close()
    return None


def memory_census(root: Path) -> dict[str, MemoryStats]:
    """Every engine id the run's memory holds rows for, with their count and billed characters (a key
    stored in several files counts once)."""
    with memory_view(root) as mem:
        return {e: mem.stats(e) for e in mem.engine_ids()}


def export_memory(layout: RunLayout, out: Path, *, engine_id: str | None, human: bool) -> list[str]:
    """Write the run's memory (one engine id, or all) to `out` as Parquet and, with `human`, the human-review
    overlay beside it (`human_export_path`); the lines to print."""
    if not layout.memory_dir.is_dir():
        raise FileNotFoundError(f"no translation memory under {layout.memory_dir}: nothing to export "
                                "(run `ptvl translate` first)")
    with memory_view(layout.root) as mem:  # the shared memory and every part file, merged
        n = mem.export_parquet(out, engine_id=engine_id)
    lines = [f"exported {n:,} translations to {out}"]
    if human and layout.human_overlay.exists():
        dest = human_export_path(out)
        with HumanOverlay(layout.human_overlay, read_only=True) as ov:
            k = ov.export_parquet(dest)
        lines.append(f"exported {k:,} human-review rows (corrections, flag verdicts, gold) to {dest}")
    return lines


def import_memory(layout: RunLayout, path: Path, *, engine_id: str | None, human: bool) -> list[str]:
    """Import a Parquet memory (into the shared memory, under `engine_id`) or a human-review overlay export,
    and with `human` the overlay export beside a memory file; the lines to print.  ValueError (one line)
    for a file that cannot be imported."""
    overlays = [path] if is_overlay_export(path) else []
    lines = []
    if not overlays:
        if not engine_id:
            raise ValueError(f"{path} is a translation memory: --engine-id is required (the engine id its "
                             "translations belong to)")
        with open_memory(layout.shared_memory) as mem:  # the shared memory, read by every part
            stats = mem.import_parquet(path, engine_id=engine_id)
        lines.append(f"{stats.rows:,} rows: {stats.inserted:,} new, {stats.already_present:,} already present")
        beside = human_export_path(path)
        if human and beside.is_file():
            overlays.append(beside)
    for f in overlays:
        try:
            with HumanOverlay(layout.human_overlay) as ov:
                st = ov.import_parquet(f)
        except ValueError as e:
            raise ValueError(f"human-review overlay not imported: {e}") from None
        lines.append(f"{f}: {st.rows:,} human-review rows: {st.inserted:,} new, {st.already_present:,} already "
                     f"present (memory/human.sqlite)")
    return lines
