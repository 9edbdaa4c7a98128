"""Atomic file writes of the pipeline's outputs (the primitives live in `ptvl_io`, shared with the
libraries; Parquet with a contract cast is added here)."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ptvl_io import (  # noqa: F401  (re-exported: the pipeline's modules import them from here)
    atomic_path,
    atomic_write,
    temp_beside,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)


def write_parquet_atomic(dest: str | Path, table: pa.Table, schema: pa.Schema | None = None) -> None:
    """Write a zstd Parquet file; when `schema` is given the table is cast to it first, so a writer
    that drifts from its contract fails here rather than in a later stage."""
    if schema is not None:
        table = table.select(schema.names).cast(schema)
    with atomic_path(dest) as tmp:
        pq.write_table(table, tmp, compression="zstd")
