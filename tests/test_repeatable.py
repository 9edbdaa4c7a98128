"""Runs repeat: one profile run twice gives identical stage outputs, identical shards (byte for byte)
and identical training losses.

img2dataset stores each shard's images in the order its download threads finish them, so anything
that streams its output in file order (the shard builder did) changes from run to run, and with it the
training batches, the losses and every metric.  The profile here downloads with 16 threads per
process so that finishing order really does vary between the two runs.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from tests.test_pipeline import SMALL, ptvl

pytestmark = pytest.mark.timeout(1200)  # two runs up to training: minutes on a loaded 2-core machine

PROFILE = SMALL.replace("thread_count = 4", "thread_count = 16") + """
[datasets.cc3m]
splits = ["train"]

[datasets.coco]
enabled = false

[datasets.visdial]
enabled = false

[datasets.vqav2]
enabled = false

[sample_models]
clip_steps = 3
lm_steps = 3

[features]
layers = [-1]
tokens = "all"
batch_size = 16
workers = 1

[model]
llm = "{models}/tiny-lm"
clip = "{models}/tiny-clip"
clip_pretrained = ""
bridge = "crossattn"
k = 2
bridge_kwargs = { head_dim = 16 }
feature_norm = "standardize"
max_caption_tokens = 16
dtype = "fp32"
compile = false

[train]
steps = 4
batch_size = 8
warmup_steps = 0
log_every = 1
ckpt_every = 100

[training]
engine = "reference"
data = ["cc3m/train"]
run_name = "repeat"
"""

# Stage outputs whose content must repeat (img2dataset's own shard files are its business: their row
# order is its threads' finishing order, which is exactly what the stages after it must not inherit).
TABLES = ("segments/**/*.parquet", "sources/*/*/*.parquet", "translated/**/*.parquet",
          "images/*/*/availability.parquet", "images/*/*/attempts.parquet", "shards/**/part-*.parquet")


def _tables(root: Path) -> dict[str, pl.DataFrame]:
    return {str(p.relative_to(root)): pl.read_parquet(p) for pattern in TABLES for p in sorted(root.glob(pattern))}


def _losses(run_dir: Path) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars("loss/total")]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("repeat")
    cfg = tmp / "profile.toml"
    cfg.write_text(PROFILE.replace("{root}", str(tmp / "run")))
    kept = []
    for n in (1, 2):  # the same profile, the same run root: the first run is moved aside, then run again
        res = ptvl("run", "--config", str(cfg), "--until", "train", "--workers", "2")
        assert res.returncode == 0, res.stderr[-4000:]
        shutil.move(tmp / "run", tmp / f"run{n}")
        kept.append(tmp / f"run{n}")
    return kept[0], kept[1]


def test_two_runs_give_identical_stage_outputs(two_runs: tuple[Path, Path]) -> None:
    first, second = (_tables(r) for r in two_runs)
    assert first.keys() == second.keys()
    assert any(k.startswith("shards/") for k in first) and any(k.startswith("translated/") for k in first)
    for name, table in first.items():
        assert table.equals(second[name]), f"{name} differs between two runs of one profile"


def test_two_runs_give_byte_identical_shards(two_runs: tuple[Path, Path]) -> None:
    a, b = two_runs
    parts = sorted(p.relative_to(a) for p in a.glob("shards/**/part-*.parquet"))
    assert parts == [Path("shards/reference/cc3m/train/part-00000.parquet")]
    for rel in parts:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    # The order is the URL list's, never the download threads' finishing order.
    train = pl.read_parquet(a / "shards/reference/cc3m/train/part-00000.parquet")
    items = pl.read_parquet(a / "sources/cc3m/train/items.parquet")
    position = {i: n for n, i in enumerate(items["image_id"].to_list())}
    order = [position[i] for i in train["image_id"].to_list()]
    assert order == sorted(order) and train.height > 40


def test_two_runs_give_identical_training_losses(two_runs: tuple[Path, Path]) -> None:
    a, b = (_losses(r / "train" / "repeat") for r in two_runs)
    assert [s for s, _ in a] == [1, 2, 3, 4]
    assert a == b
