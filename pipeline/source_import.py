"""`ptvl sources import DATASET FILE...`: use the official files a user already has; fetch nothing for them.

Each FILE is matched to a manifest entry (data_manifests/<dataset>.toml) by the entry's name or the file
name in its URL (CC3M's `GCC-training.tsv` is `Train_GCC-training.tsv`), then its size and sha256 are
compared with the manifest's.  A mismatch is refused with both hashes and the likely cause (shorter:
truncated; longer: another release or another file; same size: another release or a damaged copy) unless
`accept_checksum` is given; the counts of an accepted file are then reported, not enforced.

An accepted file is placed at `sources/<dataset>/<name>` as a **hard link** when the run root is on the
same filesystem, else as a **copy** (streamed into a temporary file, fsync'd, renamed into place).  A
hard link costs no space and no copying time (CC3M's training TSV is 565 MB; VisDial's val zip is
larger) and keeps the run working if the user later moves or deletes their file; it is safe because
ptvl never writes into a source file: every write is a new file renamed over the old name, which leaves
the user's inode as it was.  No symlink: the run would break when the user's path changes.  A file
already at that path (the user put it where the reader looks) is used in place.

What was imported is recorded in `sources/<dataset>/_IMPORTED.json` (where from, how placed, hash, and
whether a checksum other than the manifest's was accepted).  Once every file of the manifest is present,
`fetch_source(..., offline=True)` verifies them, extracts zip members and writes `_FETCHED.json` with
that provenance per file (the dataset cards show it), so `ptvl run` finds the source complete and sends
no request.  A file still missing is named with the host `ptvl run` would fetch it from.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlparse

from pipeline.fetch import (
    CountMismatch,
    FetchError,
    VerifyError,
    fetch_source,
    read_imports,
    verify_counts,
)
from pipeline.manifests import MANIFEST_DIR, FileEntry, Manifest, ManifestError, load_source
from pipeline.settings import ConfigError, Settings
from ptvl_io import atomic_path, write_json_atomic


@dataclass
class _Checked:
    entry: FileEntry
    path: Path
    sha256: str
    size: int
    differs: bool  # from the manifest's sha256 or size
    refusal: str | None = None  # why it is refused (a mismatch without accept_checksum)
    count_note: str | None = None


def url_name(entry: FileEntry) -> str:
    """The file name in the entry's URL (what the official host calls it)."""
    return Path(unquote(urlparse(entry.url).path)).name


def _entry_for(manifest: Manifest, path: Path) -> FileEntry:
    for entry in manifest.files:
        if path.name in (entry.name, url_name(entry)):
            return entry
    names = ", ".join(e.name + (f" (or {url_name(e)})" if url_name(e) != e.name else "") for e in manifest.files)
    raise ConfigError(f"{path}: not a file of {manifest.name}; its official files are {names}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _cause(found: int, expected: int | None) -> str:
    if expected is None:
        return "another release of the file, or a truncated or damaged copy"
    if found < expected:
        return f"it is {expected - found:,} bytes shorter: probably truncated (an unfinished download or copy)"
    if found > expected:
        return f"it is {found - expected:,} bytes longer: probably another release, or another file"
    return "same size, other bytes: another release, or a damaged copy"


def _check(manifest: Manifest, entry: FileEntry, path: Path, accept: bool) -> _Checked:
    size, digest = path.stat().st_size, _sha256(path)
    differs = (entry.sha256 is not None and digest != entry.sha256) or (entry.size is not None and size != entry.size)
    checked = _Checked(entry, path, digest, size, differs)
    if not differs:
        return checked
    expected = entry.sha256 or "(none recorded)"
    sizes = f"{size:,} bytes, the official file {entry.size:,}" if entry.size is not None else f"{size:,} bytes"
    if not accept:
        checked.refusal = (f"{path}: sha256 {digest} is not the manifest's {expected} for {manifest.name}/"
                           f"{entry.name} ({sizes}): {_cause(size, entry.size)}. To use it anyway: "
                           "--accept-checksum (the dataset cards then record your file's hash)")
        return checked
    try:
        verify_counts(path, entry)
    except CountMismatch as e:
        checked.count_note = str(e)
    except VerifyError as e:  # not even readable as its kind: accepting the checksum does not help
        checked.refusal = f"{path}: {e}"
    return checked


def _place(src: Path, dest: Path) -> str:
    """Put `src` at `dest` without touching `src`: a hard link, or a copy where linking is impossible."""
    if dest.exists() and os.path.samefile(src, dest):
        return "in_place"  # the user put it where the reader looks
    with atomic_path(dest) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
            return "hardlink"
        except OSError:  # another filesystem (EXDEV), no permission to link, no hard links at all
            shutil.copyfile(src, tmp)
            return "copy"


def import_sources(settings: Settings, dataset: str, files: list[Path], *, accept_checksum: bool = False) -> list[str]:
    """Import `files` as official files of `dataset` into the run root; the lines to print.  ConfigError
    (one line per refused file) when a file is unknown, unreadable or (without `accept_checksum`) differs
    from the manifest; nothing is placed then."""
    if settings.sample.enabled:
        raise ConfigError("this profile uses the embedded sample ([sample] enabled = true), which writes its "
                          "own sources; import official files with a profile of real data (configs/full.toml)")
    try:
        manifest = load_source(dataset)
    except ManifestError:
        known = ", ".join(sorted(p.stem for p in Path(MANIFEST_DIR).glob("*.toml")))
        raise ConfigError(f"no manifest for {dataset!r}; datasets: {known}") from None
    for path in files:
        if not path.is_file():
            raise ConfigError(f"{path}: no such file" if not path.exists() else f"{path} is not a file")
    matched = [(_entry_for(manifest, path.resolve()), path.resolve()) for path in files]
    names = [e.name for e, _ in matched]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{', '.join(twice)}: given more than once")
    checked = [_check(manifest, entry, path, accept_checksum) for entry, path in matched]
    refusals = [c.refusal for c in checked if c.refusal]
    if refusals:
        raise ConfigError("\n".join(refusals))

    layout = settings.layout
    dest = layout.source(dataset)
    record = read_imports(dest)
    lines = []
    for c in checked:
        placed_by = _place(c.path, dest / c.entry.name)
        record[c.entry.name] = {
            "from": str(c.path), "placed_by": placed_by, "sha256": c.sha256, "size": c.size,
            "sha256_expected": c.entry.sha256, "checksum_accepted": c.differs, "count_mismatch": c.count_note,
            "imported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        if c.differs:
            verdict = "differs from the manifest's, accepted" + (f"; {c.count_note}" if c.count_note else "")
        elif c.entry.sha256 is None:
            verdict = f'the manifest records none: add  sha256 = "{c.sha256}"  to data_manifests/{dataset}.toml'
        else:
            verdict = "matches the manifest"
        how = "in place" if placed_by == "in_place" else f"{placed_by} of {c.path}"
        lines.append(f"{dataset}/{c.entry.name}: {how} (sha256 {c.sha256}: {verdict})")
    write_json_atomic(layout.source_imports(dataset), record)
    # An earlier marker lists these files as fetched: rewrite it with their provenance.
    layout.source_marker(dataset).unlink(missing_ok=True)

    missing = [e for e in manifest.files if not (dest / e.name).exists()]
    if missing:
        hosts = sorted({urlparse(e.url).hostname or e.url for e in missing})
        lines.append(f"{dataset}: still missing {', '.join(e.name for e in missing)}; `ptvl run` fetches them from "
                     f"{', '.join(hosts)}, or import them too")
        return lines
    try:
        fetch_source(manifest, dest, settings=settings.fetch, progress=False, offline=True)
    except FetchError as e:
        raise ConfigError(f"{dataset}: {e}; import that file too, or delete it and let `ptvl run` fetch it") from None
    lines.append(f"{dataset}: every official file is present and verified ({layout.source_marker(dataset)}); "
                 "`ptvl run` fetches nothing for it")
    return lines
