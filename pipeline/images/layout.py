"""Where the image download stage keeps its files: the folder contract every image module shares.

Layout under `out_dir` (one dataset split):

    urls.parquet                 url + image_id, the img2dataset input (derived from the ITEMS file)
    _input.json                  fingerprint of urls.parquet; guards a resume against changed input
    shards/                      img2dataset output of the first pass (<shard>.parquet|.tar, <shard>_stats.json)
    retry-<n>/urls.parquet       the transient failures sent again in retry round n
    retry-<n>/shards/            img2dataset output of that round
    <attempt>/sniff.parquet      reasons refined for undecodable bodies (see download.sniff_reason)
    <attempt>/_fixed_images.parquet  corrected bytes of the images img2dataset decoded wrongly (fixes.py)
    <attempt>/img2dataset.log    img2dataset's own output (its workers, logger and progress bar), unless -v
    attempts.parquet             history: one row per URL per attempt (attempt 0 = first pass)
    availability.parquet         contract AVAILABILITY: one row per URL, the latest attempt wins
    _MANIFEST.json               summary; written last, so it is the stage's completion marker

An attempt folder is `out_dir` itself for the first pass and `retry-<n>` for retry round n; its
img2dataset output is always `<attempt>/shards`.
"""
from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa

MANIFEST_NAME = "_MANIFEST.json"
SHARDS = "shards"
RETRY_DIR = re.compile(r"retry-(\d+)$")
FIXES_NAME = "_fixed_images.parquet"  # leading "_": not an img2dataset shard to the store's scan
LOG_NAME = "img2dataset.log"
FIXES = pa.schema([("key", pa.string()), ("jpg", pa.binary()), ("fix", pa.string())])


def manifest_path(out_dir: str | Path) -> Path:
    """Where `download_images` writes its completion marker (the Luigi target)."""
    return Path(out_dir) / MANIFEST_NAME


def attempt_dir(out_dir: Path, attempt: int) -> Path:
    return out_dir if attempt == 0 else out_dir / f"retry-{attempt}"


def retry_rounds(out_dir: Path) -> list[int]:
    """Retry rounds started in `out_dir` (their URL list is written before img2dataset runs)."""
    return sorted(
        int(m.group(1))
        for p in out_dir.iterdir()
        if (m := RETRY_DIR.match(p.name)) and (p / "urls.parquet").exists()
    )


def log_path(attempt_folder: Path) -> Path:
    """Where img2dataset's own output goes (pipeline/images/workers.py), appended run after run."""
    return attempt_folder / LOG_NAME


def fixes_path(attempt_folder: Path) -> Path:
    """The corrected images of one attempt."""
    return attempt_folder / FIXES_NAME


def fixes_for(shards_dir: Path) -> Path:
    """The corrected images of the attempt whose img2dataset output is `shards_dir`."""
    return fixes_path(shards_dir.parent)
