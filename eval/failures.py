"""Failure records: a training or evaluation that failed leaves `_FAILED.json` with its one-line error, so the
results tables list the run with that error instead of leaving it out.

- `train/<run>/_FAILED.json`: the training failed (the Luigi `Train` task, or the retrain flow when training
  ended without a record, e.g. a killed process);
- `train/<run>/eval/<benchmark>/_FAILED.json`: that benchmark's evaluation failed.

A success removes the record of the same step (a rerun that works is not listed as failed). Each record holds
the step, the error in one line, when, and the benchmarks the profile asked for (`expected`: what a finished
run must have evaluated). Torch-free: the Luigi tasks import it at the top.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ptvl_io import write_json_atomic

FAILED_NAME = "_FAILED.json"
ERROR_CHARS = 300  # a table cell, not a traceback


def one_line(error: BaseException | str, limit: int = ERROR_CHARS) -> str:
    """`Type: message` on one line (first line of the message, whitespace collapsed), cut to `limit` chars."""
    if isinstance(error, BaseException):
        lines = str(error).strip().splitlines()
        text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    else:
        text = error
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def write_failure(folder: Path, stage: str, error: BaseException | str, *,
                  expected: Sequence[str] | None = None, engine: str | None = None) -> Path:
    """Record that `stage` ("training" or "evaluation") failed in `folder` (a run folder or an eval folder);
    `engine` names whose translations the run trains on, for a run that fails before any metrics.json."""
    path = Path(folder) / FAILED_NAME
    record: dict[str, Any] = {"stage": stage, "error": one_line(error),
                              "at": datetime.now(UTC).isoformat(timespec="seconds")}
    if expected is not None:
        record["expected"] = list(expected)
    if engine is not None:
        record["engine"] = engine
    write_json_atomic(path, record)
    return path


def read_failure(folder: Path) -> dict | None:
    """The failure record in `folder`, or None. A record that cannot be read still says the step failed."""
    path = Path(folder) / FAILED_NAME
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        return {"stage": "unknown", "error": one_line(f"unreadable {path.name}: {e}")}
    return record if isinstance(record, dict) else {"stage": "unknown", "error": f"malformed {path.name}"}


def clear_failure(folder: Path) -> None:
    """The step succeeded: drop an older failure record of it."""
    (Path(folder) / FAILED_NAME).unlink(missing_ok=True)
