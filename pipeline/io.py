"""Atomic file writes: every stage output appears whole or not at all (temp file in the same folder,
fsync, os.replace), so a killed run never leaves a half-written file that looks complete."""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


@contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; on success fsync it and rename it over `dest`."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
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


def write_parquet_atomic(dest: str | Path, table: pa.Table, schema: pa.Schema | None = None) -> None:
    """Write a zstd Parquet file; when `schema` is given the table is cast to it first, so a writer
    that drifts from its contract fails here rather than in a later stage."""
    if schema is not None:
        table = table.select(schema.names).cast(schema)
    with atomic_path(dest) as tmp:
        pq.write_table(table, tmp, compression="zstd")
