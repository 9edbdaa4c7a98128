"""Checkpoints of a run: trainable weights only, optimizer, scheduler, RNG states, step and config; atomic writes."""
from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ptvl_io import atomic_write

CKPT_DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d{8})\.pt$")


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CKPT_DIR / f"step-{step:08d}.pt"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    folder = Path(run_dir) / CKPT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def save_checkpoint(run_dir: Path, step: int, payload: dict[str, Any], keep: int = 2) -> Path:
    """Write step-XXXXXXXX.pt atomically (temp file, fsync, rename, fsync the folder), then drop all but the
    newest `keep`. A crash mid-write leaves at most a stray hidden .tmp; the previous checkpoint is untouched."""
    path = checkpoint_path(run_dir, step)
    # atomic_write fsyncs the folder after the rename, so the old checkpoints below go only once the new
    # one is durable (a power loss could otherwise forget the rename even with the bytes on disk).
    with atomic_write(path) as f:
        torch.save(payload, f)
    for _, old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    # Our own files (numpy RNG state is not a tensor), so weights_only would reject them.
    return torch.load(path, map_location=map_location, weights_only=False)
