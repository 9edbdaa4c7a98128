"""The image download stage: img2dataset runs, the per-URL availability table and the retry of
transient failures (folder layout: pipeline/images/layout.py).

Everything after img2dataset is rebuilt from img2dataset's own files (a shard counts once its
`_stats.json` exists, which img2dataset writes after closing the shard), so its incremental resume
keeps working: rerun after a crash and complete shards are skipped, the rest downloaded again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from datetime import UTC, datetime
from multiprocessing.pool import ThreadPool
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from pipeline.availability import OK, TRANSIENT_REASONS, classify, is_transient
from pipeline.contracts import AVAILABILITY
from pipeline.images.fixes import counts as fix_counts
from pipeline.images.fixes import fix_attempt
from pipeline.images.layout import (
    MANIFEST_NAME,
    RETRY_DIR,
    SHARDS,
    attempt_dir,
    fixes_path,
    log_path,
    manifest_path,
    retry_rounds,
)
from pipeline.images.settings import DownloadSettings
from pipeline.images.store import complete_shards, covered_urls
from pipeline.images.workers import img2dataset_workers
from pipeline.io import write_json_atomic, write_parquet_atomic
from pipeline.spark import spark_session
from ptvl_io.progress import ProgressReporter

log = logging.getLogger(__name__)

_UA = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:72.0) Gecko/20100101 Firefox/72.0"

ATTEMPTS = pa.schema(
    [
        ("image_id", pa.string()),
        ("url", pa.string()),
        ("attempt", pa.int32()),  # 0 = first pass, n = retry round n
        ("shards_dir", pa.string()),  # img2dataset output folder of that attempt, relative to out_dir
        ("status", pa.string()),  # success | failed
        ("reason", pa.string()),
        ("error_message", pa.string()),
        ("key", pa.string()),  # img2dataset key inside shards_dir (keys repeat across attempts)
    ]
)


class DownloadError(Exception):
    """The download stage cannot proceed; the message says what to fix.  Work on disk is kept."""


class ShardSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")
    shard: str
    count: int
    successes: int
    failed_to_download: int
    failed_to_resize: int
    duration_s: float


class AttemptSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")
    attempt: int
    shards_dir: str
    urls: int
    successes: int
    shards: list[ShardSummary]


class DownloadManifest(BaseModel):
    """The content of `_MANIFEST.json`: what was asked, what came back, with which settings."""

    model_config = ConfigDict(extra="forbid")
    items: str
    input_sha256: str
    urls: int
    available: int
    failed: int
    by_status: dict[str, int]
    by_reason: dict[str, int]
    # images re-encoded after download, by fix (exif_orientation, 16bit); see pipeline/images/fixes.py
    fixed: dict[str, int] = {}
    attempts: list[AttemptSummary]
    settings: DownloadSettings
    created_at: str


# ---------------------------------------------------------------- public API


def download_images(
    items: str | Path,
    out_dir: str | Path,
    settings: DownloadSettings | None = None,
    progress: Callable[[str], None] | None = None,
) -> DownloadManifest:
    """Download every URL of an ITEMS parquet file into `out_dir` and write the availability table.

    Safe to rerun: complete img2dataset shards are skipped (incremental mode) and the table and
    manifest are rebuilt from all shards, retry rounds included.  Must run in the main thread of a
    process whose entry point is import-safe (`if __name__ == "__main__"`): img2dataset installs a
    SIGINT handler and starts its workers with the "spawn" method.
    """
    settings = settings or DownloadSettings()
    out_dir = Path(out_dir)
    say = progress or (lambda _m: None)
    urls = _read_items(Path(items))
    digest = _fingerprint(urls, settings.number_sample_per_shard)

    if settings.incremental_mode == "overwrite" and out_dir.exists():
        _clear(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = _read_json(out_dir / "_input.json")
    if previous is not None and previous.get("sha256") != digest:
        raise DownloadError(
            f"{out_dir}: the URL list differs from the one this folder was downloaded from "
            f"({previous.get('items')}); its shards would map to the wrong URLs. Use a new out_dir, "
            "or incremental_mode='overwrite' to start again."
        )
    if previous is None:
        write_parquet_atomic(out_dir / "urls.parquet", urls)
        write_json_atomic(out_dir / "_input.json", {"sha256": digest, "items": str(items), "urls": urls.num_rows})

    if covered_urls(out_dir / SHARDS) == urls.num_rows:  # every shard done: skip spawning workers
        say(f"all {urls.num_rows} URLs already in complete shards")
    else:
        say(f"downloading {urls.num_rows} URLs into {out_dir / SHARDS}")
        _run_img2dataset(out_dir / "urls.parquet", out_dir / SHARDS, settings)
    _finish_attempt(out_dir, 0, urls, settings)
    return _rebuild(out_dir, str(items), digest, settings)


def retry_failed(
    out_dir: str | Path,
    settings: DownloadSettings | None = None,
    reasons: Iterable[str] = TRANSIENT_REASONS,
    progress: Callable[[str], None] | None = None,
) -> DownloadManifest:
    """Download again only the URLs whose current reason is in `reasons` (default: transient ones).

    `settings` default to those of the last run (from the manifest); pass longer timeouts if wanted.
    Runs in `out_dir/retry-<n>/`; a success there replaces the earlier failure in availability.parquet
    and attempts.parquet keeps the history.  A round killed midway is resumed by the next call.
    """
    out_dir = Path(out_dir)
    say = progress or (lambda _m: None)
    old = _read_json(manifest_path(out_dir))
    if old is None:
        raise DownloadError(f"{out_dir}: no {MANIFEST_NAME}; run download_images first")
    settings = settings or DownloadSettings(**old["settings"])
    reasons = set(reasons)
    rounds = retry_rounds(out_dir)
    history = _collect_attempts(out_dir)
    done_rounds = set(history["attempt"].unique().to_list())
    pending = [n for n in rounds if n not in done_rounds]
    if pending:  # a round that crashed before it was merged: resume it with its own URL list
        n = pending[0]
        todo = pq.read_table(out_dir / f"retry-{n}" / "urls.parquet")
    else:
        latest = _latest(history)
        retry_these = [r for r in latest["reason"].unique().to_list() if is_transient(r, reasons)]
        todo_df = latest.filter(pl.col("reason").is_in(retry_these)).select("url", "image_id")
        if todo_df.height == 0:
            say("no URL failed with a reason to retry")
            return _rebuild(out_dir, old["items"], old["input_sha256"], settings)
        n = max(rounds, default=0) + 1
        todo = todo_df.to_arrow()
        write_parquet_atomic(out_dir / f"retry-{n}" / "urls.parquet", todo)
    say(f"retry round {n}: {todo.num_rows} URLs")
    _run_img2dataset(out_dir / f"retry-{n}" / "urls.parquet", out_dir / f"retry-{n}" / SHARDS, settings)
    _finish_attempt(out_dir, n, todo, settings)
    return _rebuild(out_dir, old["items"], old["input_sha256"], settings)


def sniff_reason(url: str, timeout: float = 10, user_agent: str = _UA) -> str:
    """Fetch the first bytes of an undecodable URL: `decode_error` if they start like an image
    (so the file is corrupt or truncated), `not_an_image` otherwise.  A failed fetch keeps
    `decode_error`, the reason img2dataset's message supports."""
    try:
        req = urllib.request.Request(url, headers={"User-Agent": user_agent, "Range": "bytes=0-63"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            head = r.read(64)
    except Exception:  # noqa: BLE001 - any failure leaves the original reason
        return "decode_error"
    return "decode_error" if _looks_like_image(head) else "not_an_image"


# ---------------------------------------------------------------- internals


def _read_items(path: Path) -> pa.Table:
    """ITEMS -> (url, image_id), checked: the columns exist, ids are unique, every URL is set."""
    if not path.exists():
        raise DownloadError(f"{path}: items file not found")
    try:
        table = pq.read_table(path, columns=["image_id", "url"])
    except (pa.ArrowInvalid, KeyError) as err:
        raise DownloadError(f"{path}: not an ITEMS parquet file with image_id and url ({err})") from err
    df = pl.from_arrow(table)
    bad = df.with_row_index("row").filter(pl.col("url").is_null() | (pl.col("url").str.strip_chars() == ""))
    if bad.height:
        raise DownloadError(f"{path}: {bad.height} rows without a URL, first at row {bad['row'][0]}")
    dup = df.filter(pl.col("image_id").is_duplicated())
    if dup.height:
        raise DownloadError(f"{path}: duplicate image_id {dup['image_id'][0]!r} ({dup.height} rows)")
    if df["image_id"].null_count():
        raise DownloadError(f"{path}: null image_id")
    return df.select("url", "image_id").to_arrow()


def _fingerprint(urls: pa.Table, per_shard: int) -> str:
    h = hashlib.sha256(f"{per_shard}\n".encode())
    for url, image_id in zip(urls.column("url").to_pylist(), urls.column("image_id").to_pylist(), strict=True):
        h.update(f"{image_id}\t{url}\n".encode())
    return h.hexdigest()


def _run_img2dataset(url_list: Path, output_folder: Path, s: DownloadSettings) -> None:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import img2dataset  # deferred: slow import (cv2, albumentations), only when a download really runs

    n = pq.read_metadata(url_list).num_rows
    if n == 0:
        output_folder.mkdir(parents=True, exist_ok=True)
        return
    # `ptvl -v` (DEBUG logging) shows img2dataset's own output; otherwise it goes to the attempt's log.
    verbose = log.isEnabledFor(logging.DEBUG)
    session = nullcontext()
    if s.distributor == "pyspark":
        session = spark_session(s.spark_master, s.spark_conf, s.processes_count,
                                quiet_to=None if verbose else log_path(output_folder.parent))
    # The progress bar is entered first: it must bind the console before img2dataset's thread is redirected.
    with session, _DownloadProgress("images " + "/".join(output_folder.parent.parts[-2:]), output_folder, n), \
            img2dataset_workers(log_path(output_folder.parent), verbose):
        img2dataset.download(**img2dataset_kwargs(url_list, output_folder, s))


class _DownloadProgress:
    """URLs covered so far (from the shards' *_stats.json, as the resume logic counts them), polled in a
    thread while img2dataset runs: a bar on a terminal, a log line every 30 s without one."""

    def __init__(self, label: str, shards_dir: Path, total: int, poll_s: float = 1.0) -> None:
        self.label, self.shards_dir, self.total, self.poll_s = label, shards_dir, total, poll_s

    def __enter__(self) -> _DownloadProgress:
        self.bar = ProgressReporter(self.label, self.total, unit="URLs", completed=self._done())
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _done(self) -> int:
        try:
            return covered_urls(self.shards_dir) if self.shards_dir.exists() else 0
        except (OSError, ValueError, KeyError):  # a stats file being written: count it next time
            return self.bar.completed if hasattr(self, "bar") else 0

    def _poll(self) -> None:
        while not self.stop.wait(self.poll_s):
            self.bar.update(self._done())

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.bar.update(self._done())
        self.bar.close()


def img2dataset_kwargs(url_list: Path, output_folder: Path, s: DownloadSettings) -> dict:
    """The arguments of the `img2dataset.download` call for `s` (bench/download_scale_bench.py makes the
    same call without ptvl around it)."""
    return dict(
        url_list=str(url_list),
        input_format="parquet",
        url_col="url",
        save_additional_columns=["image_id"],
        output_folder=str(output_folder),
        output_format=s.output_format,
        processes_count=s.processes_count,
        thread_count=s.thread_count,
        image_size=s.image_size,
        resize_mode=s.resize_mode,
        resize_only_if_bigger=s.resize_only_if_bigger,
        encode_format=s.encode_format,
        encode_quality=s.encode_quality,
        retries=s.retries,
        timeout=s.timeout,
        number_sample_per_shard=s.number_sample_per_shard,
        distributor=s.distributor,
        subjob_size=s.subjob_size,
        min_image_size=s.min_image_size,
        max_aspect_ratio=s.max_aspect_ratio if s.max_aspect_ratio is not None else float("inf"),
        incremental_mode="incremental",  # "overwrite" is handled by _clear, before the first pass
        max_shard_retry=s.max_shard_retry,
        disallowed_header_directives=list(s.disallowed_header_directives),
        user_agent_token=s.user_agent_token,
        compute_hash=s.compute_hash,
        extract_exif=s.extract_exif,
        oom_shard_count=s.oom_shard_count,
        enable_wandb=False,
    )


def _read_shards(shards_dir: Path) -> tuple[pl.DataFrame, list[ShardSummary]]:
    """Rows of every complete shard (one whose *_stats.json exists) and the per-shard stats."""
    frames, summaries = [], []
    for shard in complete_shards(shards_dir):
        stats, meta = shard.stats, shard.metadata
        try:
            t = pq.read_table(meta, columns=["image_id", "url", "key", "status", "error_message"])
        except (OSError, pa.ArrowInvalid) as err:
            raise DownloadError(f"{meta}: shard marked complete but unreadable ({err}); delete "
                                f"{shard.stats_file.name} and rerun to download that shard again") from err
        if t.num_rows != stats["count"]:
            raise DownloadError(f"{meta}: {t.num_rows} rows but its stats say {stats['count']}")
        frames.append(pl.from_arrow(t))
        summaries.append(
            ShardSummary(
                shard=shard.name,
                count=stats["count"],
                successes=stats["successes"],
                failed_to_download=stats["failed_to_download"],
                failed_to_resize=stats["failed_to_resize"],
                duration_s=round(float(stats.get("duration", 0.0)), 3),
            )
        )
    schema = {c: pl.Utf8 for c in ("image_id", "url", "key", "status", "error_message")}
    rows = pl.concat(frames) if frames else pl.DataFrame(schema=schema)
    return rows, summaries


def _finish_attempt(out_dir: Path, attempt: int, urls: pa.Table, s: DownloadSettings) -> None:
    """Check that img2dataset covered every URL of the attempt, re-encode the images it decoded wrongly,
    then refine undecodable reasons."""
    adir = attempt_dir(out_dir, attempt)
    rows, _ = _read_shards(adir / SHARDS)
    missing = set(urls.column("image_id").to_pylist()) - set(rows["image_id"].to_list())
    if missing:
        raise DownloadError(
            f"{adir / SHARDS}: {len(missing)} URLs are in no complete shard (a shard failed more than "
            f"max_shard_retry={s.max_shard_retry} times); rerun to resume, complete shards are kept"
        )
    if s.fix_orientation or s.fix_16bit:
        fix_attempt(adir, adir / SHARDS, s)
    sniff_file = adir / "sniff.parquet"
    if not s.sniff_undecodable or sniff_file.exists():
        return
    undecodable = rows.filter(pl.col("error_message") == "Image decoding error")
    pairs = list(zip(undecodable["image_id"].to_list(), undecodable["url"].to_list(), strict=True))
    with ThreadPool(max(1, min(s.thread_count, len(pairs)))) as pool:
        refined = pool.map(lambda p: sniff_reason(p[1], s.timeout), pairs)
    table = pa.table(
        {"image_id": [p[0] for p in pairs], "reason": refined}, schema=pa.schema([("image_id", pa.string()),
                                                                                  ("reason", pa.string())])
    )
    write_parquet_atomic(sniff_file, table)


def _collect_attempts(out_dir: Path) -> pl.DataFrame:
    """attempts.parquet rows from every attempt folder whose img2dataset run covered all its URLs."""
    frames = []
    for attempt in [0, *retry_rounds(out_dir)]:
        adir = attempt_dir(out_dir, attempt)
        rows, _ = _read_shards(adir / SHARDS)
        expected = pq.read_table(adir / "urls.parquet", columns=["image_id"]).num_rows
        if rows.height != expected:
            continue  # interrupted: not merged until it is resumed and finished
        # classify each distinct message once: CC3M has millions of rows but few distinct messages
        messages = {m: classify(m) for m in rows["error_message"].unique().to_list() if m is not None}
        rows = rows.with_columns(
            pl.col("error_message").replace_strict(messages, default=OK, return_dtype=pl.Utf8).alias("reason")
        )
        if (adir / "sniff.parquet").exists():
            sniff = pl.read_parquet(adir / "sniff.parquet").rename({"reason": "sniffed"})
            rows = rows.join(sniff, on="image_id", how="left").with_columns(
                pl.coalesce("sniffed", "reason").alias("reason")
            )
        rel = str((adir / SHARDS).relative_to(out_dir))
        frames.append(
            rows.select(
                "image_id",
                "url",
                pl.lit(attempt, dtype=pl.Int32).alias("attempt"),
                pl.lit(rel).alias("shards_dir"),
                pl.when(pl.col("status") == "success").then(pl.lit("success")).otherwise(pl.lit("failed"))
                .alias("status"),
                pl.when(pl.col("status") == "success").then(pl.lit(OK)).otherwise(pl.col("reason")).alias("reason"),
                "error_message",
                pl.when(pl.col("status") == "success").then(pl.col("key")).otherwise(None).alias("key"),
            )
        )
    if not frames:
        return pl.from_arrow(ATTEMPTS.empty_table())
    return pl.concat(frames).sort("image_id", "attempt")


def _latest(history: pl.DataFrame) -> pl.DataFrame:
    """The availability view: per URL the row of its latest attempt."""
    return history.sort("image_id", "attempt").group_by("image_id", maintain_order=True).last()


def _rebuild(out_dir: Path, items: str, digest: str, s: DownloadSettings) -> DownloadManifest:
    """attempts.parquet, availability.parquet, then _MANIFEST.json, each written atomically."""
    history = _collect_attempts(out_dir)
    latest = _latest(history)
    expected = pq.read_metadata(out_dir / "urls.parquet").num_rows
    if latest.height != expected:
        raise DownloadError(f"{out_dir}: {latest.height} of {expected} URLs have a status; rerun to resume")
    write_parquet_atomic(out_dir / "attempts.parquet", history.to_arrow(), ATTEMPTS)
    write_parquet_atomic(out_dir / "availability.parquet", latest.to_arrow(), AVAILABILITY)
    attempts = []
    for attempt in [0, *retry_rounds(out_dir)]:
        part = history.filter(pl.col("attempt") == attempt)
        if part.height == 0 and attempt:
            continue
        _, shards = _read_shards(attempt_dir(out_dir, attempt) / SHARDS)
        attempts.append(
            AttemptSummary(
                attempt=attempt,
                shards_dir=str((attempt_dir(out_dir, attempt) / SHARDS).relative_to(out_dir)),
                urls=part.height,
                successes=part.filter(pl.col("status") == "success").height,
                shards=shards,
            )
        )
    available = latest.filter(pl.col("status") == "success").height
    fixed: Counter[str] = Counter()
    for attempt in [0, *retry_rounds(out_dir)]:
        fixed.update(fix_counts(fixes_path(attempt_dir(out_dir, attempt))))
    manifest = DownloadManifest(
        items=items,
        input_sha256=digest,
        urls=latest.height,
        available=available,
        failed=latest.height - available,
        by_status=_counts(latest, "status"),
        by_reason=_counts(latest, "reason"),
        fixed=dict(sorted(fixed.items())),
        attempts=attempts,
        settings=s,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    write_json_atomic(manifest_path(out_dir), manifest.model_dump(mode="json"))
    return manifest


def _counts(df: pl.DataFrame, col: str) -> dict[str, int]:
    c = df.group_by(col).len().sort("len", col, descending=[True, False])
    return {k: int(v) for k, v in c.iter_rows()}


def _looks_like_image(head: bytes) -> bool:
    return (
        head.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*"))
        or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
        or head[4:8] == b"ftyp"  # AVIF / HEIC
        or head.startswith(b"\x00\x00\x01\x00")  # ICO
    )


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _clear(out_dir: Path) -> None:
    """incremental_mode='overwrite': remove this stage's own outputs (never anything else)."""
    for name in ("urls.parquet", "_input.json", "attempts.parquet", "availability.parquet", MANIFEST_NAME):
        (out_dir / name).unlink(missing_ok=True)
    (out_dir / "sniff.parquet").unlink(missing_ok=True)
    fixes_path(out_dir).unlink(missing_ok=True)
    log_path(out_dir).unlink(missing_ok=True)
    shutil.rmtree(out_dir / SHARDS, ignore_errors=True)
    for p in out_dir.iterdir():
        if p.is_dir() and RETRY_DIR.match(p.name):
            shutil.rmtree(p, ignore_errors=True)

