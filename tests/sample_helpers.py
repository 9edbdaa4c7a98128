"""Shared by the sample and reader tests: one small synthetic sample per test module."""
from __future__ import annotations

from pathlib import Path

from pipeline.sample.write import SampleLayout, write_sample

SMALL = {"n_train": 60, "n_val": 20, "n_coco": 10, "n_dialogs": 8, "image_size": 32}


def small_sample(root: Path, seed: int = 0, **overrides: int) -> SampleLayout:
    return write_sample(root, seed=seed, **{**SMALL, **overrides})
