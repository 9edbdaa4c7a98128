"""DDP with 2 CPU processes (gloo): retrieval negatives are gathered across ranks, ranks stay in sync, rank 0 writes."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests.helpers import free_port
from tests.test_train import cfgs
from tests.trainfixtures import SampleWorld
from training import checkpoint as ckpt
from training.train import train

STEPS = 3


def _worker(rank: int, world: SampleWorld, run_dir: Path, port: int, out: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    mc, tc = cfgs(world, steps=STEPS, batch_size=16, ckpt_every=2)
    mc = mc.model_copy(update={"concat_prob": 0.0})
    res = train(mc, tc, world.train_shards, run_dir, features_dir=world.features, progress=False, device="cpu")
    with open(out / f"rank{rank}.pkl", "wb") as f:
        pickle.dump({"parts": res.parts, "weights": res.model.trainable_state_dict()}, f)


def test_two_process_ddp_matches_one_process(small_world, tmp_path):
    port = free_port()
    mp.start_processes(_worker, args=(small_world, tmp_path / "ddp", port, tmp_path), nprocs=2, join=True,
                       start_method="spawn")
    r0, r1 = (pickle.loads((tmp_path / f"rank{r}.pkl").read_bytes()) for r in (0, 1))
    torch.set_num_threads(1)
    mc, tc = cfgs(small_world, steps=STEPS, batch_size=16, ckpt_every=2)
    single = train(mc.model_copy(update={"concat_prob": 0.0}), tc, small_world.train_shards, tmp_path / "one",
                   features_dir=small_world.features, progress=False)
    # Negatives gathered across ranks: the step-1 InfoNCE is over all 16 pairs, exactly as in one process
    # (with 8 local negatives it would start near log 8, not log 16).
    for k in ("i2t", "t2i"):
        assert r0["parts"][1][k] == pytest.approx(single.parts[1][k], rel=1e-5)
        assert r1["parts"][1][k] == pytest.approx(single.parts[1][k], rel=1e-5)
    # The logged loss is the mean over ranks, and follows the single-process curve (caption CE is a mean
    # per rank, so not bit-identical).
    for s in range(1, STEPS + 1):
        assert r0["parts"][s]["total"] == pytest.approx(single.parts[s]["total"], rel=2e-2)
        assert r0["parts"][s] == r1["parts"][s]
    # DDP kept both ranks' trainable weights identical, and only rank 0 wrote (one checkpoint series)
    assert all(torch.equal(r0["weights"][k], r1["weights"][k]) for k in r0["weights"])
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "ddp")] == [2, 3]
    saved = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "ddp"))["trainable"]
    assert all(torch.equal(saved[k], r1["weights"][k]) for k in saved)
    assert (tmp_path / "ddp" / "run.toml").is_file()
