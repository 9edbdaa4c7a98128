"""Download and verify a source's official files: resume, retries, size/sha256/count checks, atomic writes.

`fetch_file` downloads one URL (http, https or file) to `dest`:
- bytes go to `dest.part`; a later call resumes from it with an HTTP Range request (a server that
  ignores Range and answers 200 is handled by starting over cleanly);
- connection errors, timeouts, HTTP 5xx, 408 and 429 are retried with exponential backoff (Retry-After
  is honoured); other 4xx and redirect loops fail at once;
- size and sha256 are checked (hashing is streamed) before an atomic rename, so `dest` is either absent
  or verified. Bytes that fail a check are moved to `dest.rejected` for inspection, never to `dest`;
- a verified `dest` already in place is not downloaded again.

`fetch_source` fetches every file of a manifest, checks row/record counts (also inside zips), extracts
the listed zip members, and writes `dest_dir/_FETCHED.json` (atomically) as the completion marker.
A file the user imported (`ptvl sources import`, pipeline/source_import.py, recorded in
`dest_dir/_IMPORTED.json`) is never fetched: it is checked against the hash recorded at import, and its
entry in `_FETCHED.json` says where it came from and whether its checksum differs from the manifest's.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import shutil
import time
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

import requests
from pydantic import BaseModel, ConfigDict, Field

from pipeline.layout import FETCHED_MARKER, IMPORTED_RECORD
from pipeline.manifests import FileEntry, Manifest, ZipMember
from ptvl_io import atomic_write, move_into_place, write_json_atomic
from ptvl_io.progress import BYTES, ProgressReporter

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, "int | None"], None]  # (bytes done, bytes total or None)

_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504}) | frozenset(range(520, 530))
_USER_AGENT = "ptvl-fetch/0.1 (+https://github.com/; research dataset download)"


# --------------------------------------------------------------------------------------------- errors


class FetchError(Exception):
    """A file could not be fetched. `url` and `status` (the HTTP status, or None) say where and why."""

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None):
        super().__init__(message)
        self.url = url
        self.status = status


class FetchTimeout(FetchError):
    """The server stopped sending (connect or read timeout) on every attempt."""


class VerifyError(FetchError):
    """The bytes arrived but are not the expected file (bad archive, bad JSON, missing member, ...)."""


class SizeMismatch(VerifyError):
    def __init__(self, message: str, *, url: str | None = None, expected: int, found: int):
        super().__init__(message, url=url)
        self.expected, self.found = expected, found


class ChecksumMismatch(VerifyError):
    def __init__(self, message: str, *, url: str | None = None, expected: str, found: str):
        super().__init__(message, url=url)
        self.expected, self.found = expected, found


class CountMismatch(VerifyError):
    def __init__(self, message: str, *, url: str | None = None, what: str, expected: int, found: int):
        super().__init__(message, url=url)
        self.what, self.expected, self.found = what, expected, found


class _Retryable(Exception):
    """Internal: this attempt failed in a way worth retrying."""

    def __init__(self, reason: str, *, status: int | None = None, retry_after: float | None = None,
                 timeout: bool = False):
        super().__init__(reason)
        self.status, self.retry_after, self.timeout = status, retry_after, timeout


# ------------------------------------------------------------------------------------ settings/report


class FetchSettings(BaseModel):
    """How FetchSource downloads (the `[fetch]` table of the run settings)."""

    model_config = ConfigDict(extra="forbid")

    timeout: float = Field(60.0, gt=0, description="seconds to wait for a connection or for the next bytes")
    retries: int = Field(3, ge=0, description="extra attempts after a transient failure (each resumes)")
    backoff: float = Field(1.0, ge=0, description="seconds before the first retry; doubles each retry")
    backoff_max: float = Field(60.0, ge=0, description="cap on one wait, including a server's Retry-After")
    chunk_size: int = Field(1 << 20, gt=0, description="bytes read per chunk")
    verify_counts: bool = Field(True, description="check TSV rows / JSON records against the manifest")
    extract: bool = Field(True, description="extract the manifest's zip members next to the zips")


class FetchReport(BaseModel):
    """What one fetch did and verified (one entry of _FETCHED.json)."""

    model_config = ConfigDict(extra="forbid")

    url: str
    path: str = Field(description="fetch_file: the destination; fetch_source: relative to dest_dir")
    status: Literal["downloaded", "resumed", "cached", "imported"]
    size: int
    sha256: str = Field(description="sha256 of the file as written")
    sha256_expected: str | None = None
    sha256_pending: bool = Field(False, description="no recorded checksum: sha256 should go in the manifest")
    bytes_transferred: int = 0
    attempts: int = 0
    resumed_from: int = Field(0, description="size of the .part the download continued from")
    counts: dict[str, int] = Field(default_factory=dict, description="rows/records found, by file or member")
    extracted: list[str] = Field(default_factory=list, description="extracted members, relative to dest_dir")
    imported_from: str | None = Field(None, description="status imported: the user's file it was placed from")
    placed_by: Literal["hardlink", "copy", "in_place"] | None = Field(None, description="status imported: how it was placed")
    checksum_accepted: bool = Field(False, description="imported with a sha256 other than the manifest's, "
                                                       "accepted by the user (--accept-checksum)")
    count_mismatch: str | None = Field(None, description="checksum accepted: how its counts differ from the "
                                                         "manifest's")


# ------------------------------------------------------------------------------------------ fetch_file


def fetch_file(
    url: str,
    dest: str | Path,
    *,
    size: int | None = None,
    sha256: str | None = None,
    timeout: float = 60,
    retries: int = 3,
    backoff: float = 1.0,
    backoff_max: float = 60.0,
    chunk_size: int = 1 << 20,
    progress: ProgressFn | None = None,
    check: Callable[[Path], Any] | None = None,
    offline: bool = False,
) -> FetchReport:
    """Download `url` to `dest`, resuming `dest.part`, and verify `size` / `sha256` before renaming.

    `check(path)` is an extra verification run on the complete file before the rename (it raises a
    VerifyError to reject the bytes). `offline`: only verify a `dest` already in place; where it would
    have to be downloaded, raise FetchError instead. Raises FetchError (or a subclass); `dest` is then
    unchanged.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)

    if dest.exists():
        try:
            digest = _verify(dest, url, size, sha256, _hash_file(dest, chunk_size), check)
            return _report(url, dest, "cached", digest, sha256)
        except VerifyError as e:
            if offline:
                raise FetchError(f"{dest} fails verification ({e})", url=url) from None
            # Keep the old file until a verified replacement is renamed over it.
            log.warning("%s exists but fails verification (%s); downloading again", dest, e)
    if offline:
        raise FetchError(f"{dest} is missing", url=url)

    attempts = transferred = resumed_from = 0
    resumed = False
    while True:
        attempts += 1
        offset = part.stat().st_size if part.exists() else 0
        if size is not None and offset > size:
            log.warning("%s is larger than the expected %d bytes; starting over", part, size)
            part.unlink()
            offset = 0
        try:
            if size is not None and offset == size:
                hasher = _hash_file(part, chunk_size)  # complete but not yet renamed (killed before it)
            else:
                hasher, received, continued = _download(url, part, offset, size, timeout, chunk_size, progress)
                transferred += received
                if continued:
                    resumed, resumed_from = True, resumed_from or offset
            break
        except _Retryable as e:
            if attempts > retries:
                kind = FetchTimeout if e.timeout else FetchError
                raise kind(f"{url}: gave up after {attempts} attempt(s): {e}", url=url, status=e.status) from None
            wait = min(backoff_max, e.retry_after if e.retry_after is not None else backoff * 2 ** (attempts - 1))
            log.info("%s: %s; retry %d/%d in %.1f s", url, e, attempts, retries, wait)
            time.sleep(wait)

    try:
        digest = _verify(part, url, size, sha256, hasher, check)
    except VerifyError as e:
        rejected = dest.with_name(dest.name + ".rejected")
        os.replace(part, rejected)
        e.args = (f"{e.args[0]} (bytes kept in {rejected})",)
        raise
    move_into_place(part, dest)
    report = _report(url, dest, "resumed" if resumed else "downloaded", digest, sha256)
    report.bytes_transferred, report.attempts, report.resumed_from = transferred, attempts, resumed_from
    return report


def _report(url: str, path: Path, status: str, digest: str, expected: str | None) -> FetchReport:
    return FetchReport(
        url=url, path=str(path), status=status, size=path.stat().st_size, sha256=digest,  # type: ignore[arg-type]
        sha256_expected=expected, sha256_pending=expected is None,
    )


def _verify(path: Path, url: str, size: int | None, sha256: str | None, hasher: Any,
            check: Callable[[Path], Any] | None) -> str:
    found_size = path.stat().st_size
    if size is not None and found_size != size:
        raise SizeMismatch(f"{url}: expected {size} bytes, got {found_size}", url=url, expected=size,
                           found=found_size)
    digest = hasher.hexdigest()
    if sha256 is not None and digest != sha256:
        raise ChecksumMismatch(f"{url}: sha256 mismatch: expected {sha256}, got {digest}", url=url,
                               expected=sha256, found=digest)
    if check is not None:
        check(path)
    return digest


def _hash_file(path: Path, chunk_size: int = 1 << 20) -> Any:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(chunk_size):
            h.update(chunk)
    return h


def _download(url: str, part: Path, offset: int, size: int | None, timeout: float, chunk_size: int,
              progress: ProgressFn | None) -> tuple[Any, int, bool]:
    """One attempt: append to `part` from `offset`. Returns (sha256 of the whole part, bytes received,
    whether the attempt continued an existing part)."""
    if urlparse(url).scheme == "file":
        return _download_file_url(url, part, offset, size, chunk_size, progress)
    headers = {"Accept-Encoding": "identity", "User-Agent": _USER_AGENT}  # identity: sizes are raw bytes
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        with requests.get(url, headers=headers, stream=True, timeout=(timeout, timeout)) as r:
            if r.status_code == 416 and offset:
                # Our .part reaches (or passes) the end; if the server's total equals it, it is complete.
                total = _content_range_total(r.headers.get("Content-Range"))
                if total == offset:
                    return _hash_file(part, chunk_size), 0, True
                part.unlink()
                raise _Retryable(f"HTTP 416 for Range bytes={offset}-; restarting from 0", status=416)
            if r.status_code in _RETRY_STATUS:
                raise _Retryable(f"HTTP {r.status_code} {r.reason}", status=r.status_code,
                                 retry_after=_retry_after(r.headers.get("Retry-After")))
            if r.status_code not in (200, 206):
                raise FetchError(f"{url}: HTTP {r.status_code} {r.reason}", url=url, status=r.status_code)
            continued = r.status_code == 206
            if continued and _content_range_start(r.headers.get("Content-Range")) != offset:
                log.warning("%s: unexpected Content-Range %r; restarting", url, r.headers.get("Content-Range"))
                continued = False
                r.close()
                part.unlink(missing_ok=True)
                raise _Retryable("server answered a different range than asked", status=206)
            if offset and not continued:
                log.info("%s: server ignored the Range request (HTTP 200); restarting from 0", url)
            start = offset if continued else 0
            total = size or _total_from_headers(r, start)
            hasher = _hash_file(part, chunk_size) if continued else hashlib.sha256()
            received = 0
            with part.open("ab" if continued else "wb") as fh:
                if progress:
                    progress(start, total)
                for chunk in r.iter_content(chunk_size):
                    fh.write(chunk)
                    hasher.update(chunk)
                    received += len(chunk)
                    if size is not None and start + received > size:
                        # Stop early: the body is longer than the file we expect.
                        fh.flush()
                        return hasher, received, continued
                    if progress:
                        progress(start + received, total)
                fh.flush()
                os.fsync(fh.fileno())
            return hasher, received, continued
    except requests.TooManyRedirects as e:
        raise FetchError(f"{url}: redirect loop or too many redirects ({e})", url=url) from None
    except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema) as e:
        raise FetchError(f"{url}: invalid URL ({e})", url=url) from None
    except requests.RequestException as e:
        # requests wraps a read timeout during the body in ConnectionError; look at the message too.
        is_timeout = isinstance(e, requests.Timeout) or "timed out" in str(e).lower()
        raise _Retryable(f"{type(e).__name__}: {e}", timeout=is_timeout) from None


def _download_file_url(url: str, part: Path, offset: int, size: int | None, chunk_size: int,
                       progress: ProgressFn | None) -> tuple[Any, int, bool]:
    src = Path(url2pathname(unquote(urlparse(url).path)))
    if not src.is_file():
        raise FetchError(f"{url}: no such file {src}", url=url)
    total = src.stat().st_size
    if offset > total:
        offset = 0
    hasher = _hash_file(part, chunk_size) if offset else hashlib.sha256()
    received = 0
    with src.open("rb") as fin, part.open("ab" if offset else "wb") as fout:
        fin.seek(offset)
        while chunk := fin.read(chunk_size):
            fout.write(chunk)
            hasher.update(chunk)
            received += len(chunk)
            if progress:
                progress(offset + received, size or total)
        fout.flush()
        os.fsync(fout.fileno())
    return hasher, received, offset > 0


def _content_range_start(value: str | None) -> int | None:
    # "bytes 100-199/200"
    try:
        return int(value.split()[1].split("-")[0]) if value else None  # type: ignore[union-attr]
    except (IndexError, ValueError):
        return None


def _content_range_total(value: str | None) -> int | None:
    # "bytes */200" or "bytes 0-99/200"; "*" total means unknown
    try:
        total = value.rsplit("/", 1)[1] if value else "*"  # type: ignore[union-attr]
        return None if total == "*" else int(total)
    except (IndexError, ValueError):
        return None


def _total_from_headers(r: requests.Response, start: int) -> int | None:
    if r.status_code == 206:
        return _content_range_total(r.headers.get("Content-Range"))
    length = r.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def _retry_after(value: str | None) -> float | None:
    # Only the delta-seconds form; an HTTP-date falls back to our own backoff.
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


# ------------------------------------------------------------------------------------------- counting


def verify_counts(path: str | Path, entry: FileEntry | ZipMember) -> dict[str, int]:
    """Count TSV rows (lines) or JSON records at `count_path`, also for members inside a zip.

    Returns the counts found, keyed by the entry's name (members: "<zip name>!<member path>"); raises
    CountMismatch (expected vs found) when a count differs from the manifest, and VerifyError when the
    file cannot be read as its kind. Entries without anything to count return {}.
    """
    path = Path(path)
    label = entry.name if isinstance(entry, FileEntry) else entry.path
    if isinstance(entry, FileEntry) and entry.kind == "zip":
        counts: dict[str, int] = {}
        try:
            with zipfile.ZipFile(path) as zf:
                for m in entry.members:
                    counts.update(_count_member(zf, m, path, label))
        except zipfile.BadZipFile as e:
            raise VerifyError(f"{path}: not a valid zip archive ({e})") from None
        return counts
    if not _countable(entry):
        return {}
    with path.open("rb") as fh:
        return {label: _count_stream(fh, entry, str(path))}


def _countable(entry: FileEntry | ZipMember) -> bool:
    return entry.kind == "tsv" or (entry.kind == "json" and entry.count_path is not None)


def _count_member(zf: zipfile.ZipFile, m: ZipMember, path: Path, label: str) -> dict[str, int]:
    names = [n for n in zf.namelist() if not n.endswith("/")]
    if m.kind == "files":
        found = sum(fnmatch.fnmatch(n, m.path) for n in names)
        _expect(f"{path}!{m.path}", "matching files", m.files, found)
        return {f"{label}!{m.path}": found}
    if m.path not in names:
        raise VerifyError(f"{path}: member {m.path!r} not in the archive (it has {names[:10]}"
                          f"{' ...' if len(names) > 10 else ''})")
    if not _countable(m):
        return {}
    with zf.open(m.path) as fh:
        return {f"{label}!{m.path}": _count_stream(fh, m, f"{path}!{m.path}")}


def _count_stream(fh: IO[bytes], entry: FileEntry | ZipMember, where: str) -> int:
    if entry.kind == "tsv":
        found = _count_lines(fh)
        _expect(where, "rows", entry.rows, found)
        return found
    try:
        data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VerifyError(f"{where}: not valid JSON ({e})") from None
    node = data
    for key in [k for k in (entry.count_path or "").split(".") if k]:
        if not isinstance(node, dict) or key not in node:
            have = sorted(node)[:10] if isinstance(node, dict) else type(node).__name__
            raise VerifyError(f"{where}: count_path {entry.count_path!r}: no key {key!r} (found {have})")
        node = node[key]
    if not isinstance(node, (list, dict)):
        raise VerifyError(f"{where}: count_path {entry.count_path!r} is a {type(node).__name__}, not a list")
    _expect(where, f"records at {entry.count_path or '<top level>'!r}", entry.records, len(node))
    return len(node)


def _count_lines(fh: IO[bytes]) -> int:
    # Lines, counting a last line without a trailing newline; blank lines count (readers quarantine them).
    n, last = 0, b"\n"
    while chunk := fh.read(1 << 20):
        n += chunk.count(b"\n")
        last = chunk[-1:]
    return n + (last != b"\n")


def _expect(where: str, what: str, expected: int | None, found: int) -> None:
    if expected is not None and expected != found:
        raise CountMismatch(f"{where}: expected {expected} {what}, found {found}", what=what,
                            expected=expected, found=found)


# ---------------------------------------------------------------------------------------- extraction


def _extract_members(zip_path: Path, entry: FileEntry, dest_dir: Path) -> list[str]:
    """Extract the entry's members under dest_dir (each atomically); skip ones already complete."""
    root = dest_dir.resolve()
    out: list[str] = []
    with zipfile.ZipFile(zip_path) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        for m in entry.members:
            chosen = [i for i in infos if fnmatch.fnmatch(i.filename, m.path)] if m.kind == "files" else \
                [i for i in infos if i.filename == m.path]
            for info in chosen:
                target = (root / info.filename).resolve()
                if root not in target.parents:  # zip-slip: never write outside dest_dir
                    raise VerifyError(f"{zip_path}: member {info.filename!r} would extract outside {root}")
                out.append(info.filename)
                if target.is_file() and target.stat().st_size == info.file_size:
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, atomic_write(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    return out


# ---------------------------------------------------------------------------------------- fetch_source


def fetch_source(
    manifest: Manifest,
    dest_dir: str | Path,
    *,
    settings: FetchSettings | None = None,
    progress: bool = True,
    offline: bool = False,
) -> list[FetchReport]:
    """Fetch and verify every file of `manifest` into `dest_dir`, extract zip members, and write
    `dest_dir/_FETCHED.json` last (the completion marker). Files already verified are not fetched again;
    files recorded in `dest_dir/_IMPORTED.json` are never fetched (see the module docstring).

    `progress`: True reports the bytes of each file (ptvl_io.progress: a bar on a terminal, a log line
    every PTVL_PROGRESS_EVERY_S seconds without one); False reports nothing.  `offline`: verify what is
    there and raise FetchError for a file that would have to be downloaded.
    """
    settings = settings or FetchSettings()
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    # A stale marker must not claim completion while this run (maybe for a changed manifest) is under way.
    (dest_dir / FETCHED_MARKER).unlink(missing_ok=True)
    imported = read_imports(dest_dir)
    reports = [_imported_entry(manifest, entry, dest_dir, imported[entry.name], settings)
               if entry.name in imported else _fetch_entry(manifest, entry, dest_dir, settings, progress, offline)
               for entry in manifest.files]

    pending = {r.path: r.sha256 for r in reports if r.sha256_pending}
    write_json_atomic(dest_dir / FETCHED_MARKER, {
        "source": manifest.name,
        "manifest_sha256": hashlib.sha256(manifest.model_dump_json().encode()).hexdigest(),
        "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": [r.model_dump() for r in reports],
        "sha256_to_record": pending,
    })
    return reports


def _reported_on(bar: ProgressReporter) -> ProgressFn:
    """fetch_file's progress callback, drawn on `bar`: the total may only come with the response."""
    def on_progress(done: int, total: int | None) -> None:
        if total != bar.total:
            bar.set_total(total)
        bar.update(done)
    return on_progress


def read_imports(dest_dir: Path) -> dict[str, dict]:
    """The files `ptvl sources import` placed in `dest_dir`, by manifest name ({} when none)."""
    path = dest_dir / IMPORTED_RECORD
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _imported_entry(manifest: Manifest, entry: FileEntry, dest_dir: Path, record: dict,
                    settings: FetchSettings) -> FetchReport:
    """A file the user imported: the bytes must still be the ones imported (a hard link follows edits of
    the user's file); counts are enforced unless the user accepted another checksum."""
    path = dest_dir / entry.name
    again = f"import it again: ptvl sources import {manifest.name} FILE"
    if not path.is_file():
        raise FetchError(f"{path}: the imported file is gone; {again}", url=entry.url)
    digest = _hash_file(path, settings.chunk_size).hexdigest()
    if digest != record["sha256"]:
        raise ChecksumMismatch(f"{path} changed since it was imported (sha256 {digest}, imported "
                               f"{record['sha256']}); {again}", url=entry.url, expected=record["sha256"],
                               found=digest)
    counts: dict[str, int] = {}
    mismatch = None
    if settings.verify_counts:
        try:
            counts = verify_counts(path, entry)
        except CountMismatch as e:
            if not record.get("checksum_accepted"):
                raise
            mismatch = str(e)  # known and accepted at import: recorded, shown in the dataset cards
    report = FetchReport(
        url=entry.url, path=entry.name, status="imported", size=path.stat().st_size, sha256=digest,
        sha256_expected=entry.sha256, sha256_pending=entry.sha256 is None, counts=counts,
        imported_from=record["from"], placed_by=record["placed_by"],
        checksum_accepted=bool(record.get("checksum_accepted")), count_mismatch=mismatch,
    )
    if entry.kind == "zip" and entry.members and settings.extract:
        report.extracted = _extract_members(path, entry, dest_dir)
    return report


def _fetch_entry(manifest: Manifest, entry: FileEntry, dest_dir: Path, settings: FetchSettings,
                 progress: bool, offline: bool = False) -> FetchReport:
    counts: dict[str, int] = {}

    def check(path: Path) -> None:
        if settings.verify_counts:
            counts.update(verify_counts(path, entry))

    bar = ProgressReporter(f"{manifest.name}/{entry.name}", entry.size, unit=BYTES) if progress else None
    try:
        report = fetch_file(
            entry.url, dest_dir / entry.name, size=entry.size, sha256=entry.sha256, timeout=settings.timeout,
            retries=settings.retries, backoff=settings.backoff, backoff_max=settings.backoff_max,
            chunk_size=settings.chunk_size, progress=_reported_on(bar) if bar is not None else None, check=check,
            offline=offline,
        )
        if bar is not None:
            bar.set_total(report.size)
            bar.update(report.size)
    finally:
        if bar is not None:
            bar.close()
    report.path = entry.name  # relative to dest_dir, so the marker survives moving the run root
    report.counts = counts
    if entry.kind == "zip" and entry.members and settings.extract:
        report.extracted = _extract_members(dest_dir / entry.name, entry, dest_dir)
    if report.sha256_pending:
        log.warning("%s/%s: no sha256 recorded; add  sha256 = \"%s\"  (and size = %d) to data_manifests/%s.toml",
                    manifest.name, entry.name, report.sha256, report.size, manifest.name)
    return report
