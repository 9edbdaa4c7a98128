"""torchrun / DDP plumbing: who am I, which device, and a barrier; single-process runs need none of it."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def default_device() -> str:
    """This rank's GPU (torchrun's LOCAL_RANK) when there is one, else the CPU."""
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"


def setup(device: str | None = None) -> Dist:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1): nccl on GPUs, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = default_device()
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank, world, local, dev)


def all_true(flag: bool, d: Dist) -> bool:
    """True on every rank only if true on all (e.g. "the loss is finite")."""
    if d.world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=d.device if d.device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0)


def mean_over_ranks(values: dict[str, float], d: Dist) -> dict[str, float]:
    """Average a dict of floats over ranks (for logging)."""
    if d.world == 1:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64,
                     device=d.device if d.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return dict(zip(values, (t / d.world).tolist(), strict=True))


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()


def teardown(d: Dist) -> None:
    if d.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
