"""Small helpers many test modules share: a free loopback port, a JPEG of a given look, a small sample."""
from __future__ import annotations

import io
import socket
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.sample.write import SampleLayout, write_sample

SMALL_SAMPLE = {"n_train": 60, "n_val": 20, "n_coco": 10, "n_dialogs": 8, "image_size": 32}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jpeg(size: tuple[int, int] = (16, 16), colour: tuple[int, int, int] | str = (200, 40, 40), *,
         noise_seed: int | None = None) -> bytes:
    """A JPEG of `size` (width, height): one colour, or random noise (a different image per seed)."""
    if noise_seed is not None:
        rng = np.random.default_rng(noise_seed)
        img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    else:
        img = Image.new("RGB", size, colour)
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    return buf.getvalue()


def small_sample(root: Path, seed: int = 0, **overrides: int) -> SampleLayout:
    """A small synthetic sample in the real source formats (the reader and sample tests read it)."""
    return write_sample(root, seed=seed, **{**SMALL_SAMPLE, **overrides})
