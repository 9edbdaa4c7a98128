"""Small helpers many test modules share: a free loopback port, a running luigid, a JPEG of a given look, a small
sample."""
from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def running_luigid(home: Path, config: str | None = None, *, timeout_s: float = 60) -> Iterator[int]:
    """A real luigid on a free loopback port, its logs and state under `home` (and `config`, the text of a
    luigi.cfg, as its LUIGI_CONFIG_PATH); yields the port once its API answers, and stops it afterwards."""
    (home / "logs").mkdir(parents=True, exist_ok=True)  # luigid does not create its --logdir
    env = dict(os.environ)
    if config is not None:
        (home / "luigid.cfg").write_text(config)
        env["LUIGI_CONFIG_PATH"] = str(home / "luigid.cfg")
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "luigid"), "--address", "127.0.0.1", "--port", str(port),
         "--logdir", str(home / "logs"), "--state-path", str(home / "state.pickle")],
        cwd=home, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/task_list?data={{}}", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("luigid did not start") from None
                time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
