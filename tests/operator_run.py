"""One tiny run of the whole DAG (sources -> report) through `ptvl run`, shared by the operator and
browser tests (registered in conftest.py): a terminal-less batch job under umask 002, as a team's
shared run root would see it."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PROFILE = """
[run]
name = "tiny"
root = "{root}"

[sample]
enabled = true
n_train = 40
n_val = 12
n_coco = 8
n_dialogs = 4
n_vqa = 4
image_size = 32

[download]
processes_count = 1
thread_count = 4
image_size = 32
number_sample_per_shard = 100
timeout = 2
min_image_size = 12

[datasets.cc3m]
splits = ["train"]

[datasets.coco]
splits = ["val"]
url_base = "file://{{sources}}/coco"

[datasets.visdial]
splits = ["val"]

[datasets.vqav2]
image_url_template = "file://{{sources}}/vqav2/val2014/COCO_val2014_{{image_id:012d}}.jpg"

[sample_models]
clip_width = 32
clip_layers = 2
clip_steps = 3
lm_hidden = 32
lm_layers = 1
lm_heads = 2
lm_steps = 3

[features]
layers = [-1, -2]
batch_size = 32
workers = 1

[model]
llm = "{{models}}/tiny-lm"
clip = "{{models}}/tiny-clip"
clip_pretrained = ""
bridge = "cls"
k = 1
max_caption_tokens = 16
dtype = "fp32"
compile = false

[train]
steps = 3
batch_size = 8
warmup_steps = 1
log_every = 1
ckpt_every = 100

[training]
data = ["cc3m/train"]

[eval]
benchmarks = ["coco", "visdial", "vqav2"]

[eval.settings]
meteor_mode = "none"
caption_max_new_tokens = 4
qualitative_examples = 4
"""
UMASK = 0o002


@dataclass(frozen=True)
class TinyRun:
    root: Path
    config: Path
    log: str  # stdout + stderr of `ptvl run`, no terminal


def ptvl(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 900,
         umask: int | None = None) -> subprocess.CompletedProcess:
    """`ptvl ...` as a batch job would run it: no terminal, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
    )


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    tmp = tmp_path_factory.mktemp("tinyrun")
    config = tmp / "tiny.toml"
    config.write_text(PROFILE.format(root=tmp / "run"))
    # PTVL_PROGRESS_EVERY_S=0: without a terminal, every progress update is a log line (default: every 30 s).
    res = ptvl("run", "--config", str(config), "--workers", "2", env={"PTVL_PROGRESS_EVERY_S": "0"}, umask=UMASK,
               timeout=2300)
    assert res.returncode == 0, (res.stdout + res.stderr)[-6000:]
    return TinyRun(tmp / "run", config, res.stdout + res.stderr)
