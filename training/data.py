"""Training data from CAPTION_SHARD parquet: tokenised captions, length-bucketed batches that are a pure function
of (seed, step) for exact resume, and images either decoded + CLIP-preprocessed online or read from the cache."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from training.features import to_pixels
from training.shards import CAPTION_SHARD


class ShardError(ValueError):
    """A shard file that does not follow CAPTION_SHARD (which file, what is wrong)."""


class CaptionData:
    """All (image, caption) rows of some CAPTION_SHARD files. Captions are tokenised once (for bucketing);
    image bytes stay in the memory-mapped files until a batch needs them."""

    def __init__(self, shards: Sequence[Path], tokenize: Callable[[list[str]], list[list[int]]],
                 chunk: int = 50_000) -> None:
        self.shards = [Path(s) for s in shards]
        if not self.shards:
            raise ShardError("no shard files given")
        cols = ["sample_id", "image_id", "caption"]
        parts, files, rows = [], [], []
        for f, path in enumerate(self.shards):
            schema = pq.read_schema(path)
            for name in cols + ["image"]:
                if name not in schema.names:
                    raise ShardError(f"{path}: missing column {name!r} (expected CAPTION_SHARD)")
                if schema.field(name).type != CAPTION_SHARD.field(name).type:
                    raise ShardError(f"{path}: column {name!r} is {schema.field(name).type}, "
                                     f"expected {CAPTION_SHARD.field(name).type}")
            t = pq.read_table(path, columns=cols)
            parts.append(t)
            files.append(np.full(t.num_rows, f, dtype=np.int32))
            rows.append(np.arange(t.num_rows, dtype=np.int64))
        table = pa.concat_tables(parts)
        self.sample_ids: list[str] = table["sample_id"].to_pylist()
        self.image_ids: list[str] = table["image_id"].to_pylist()
        self.captions: list[str] = table["caption"].to_pylist()
        self._file, self._row = np.concatenate(files), np.concatenate(rows)
        if any(c is None for c in self.captions):
            bad = self.sample_ids[self.captions.index(None)]
            raise ShardError(f"sample {bad}: null caption")
        self.tokens: list[list[int]] = []
        for s in range(0, len(self.captions), chunk):
            self.tokens += tokenize(self.captions[s : s + chunk])
        self.lengths = np.array([len(t) for t in self.tokens], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.captions)

    def image_bytes(self, index: Sequence[int]) -> list[bytes]:
        return [_mapped(str(self.shards[self._file[i]]))["image"][int(self._row[i])].as_py() for i in index]


@lru_cache(maxsize=64)
def _mapped(path: str) -> pa.Table:
    # Memory-mapped: the image column is paged in on access, never copied whole into RAM.
    return pq.read_table(path, columns=["image"], memory_map=True)


class BatchPlan:
    """Which rows form the global batch of each optimizer step: a pure function of (seed, step).

    Each epoch is a seeded permutation; with bucketing, pools of `pool` batches are sorted by caption length
    and cut into batches (little padding), then batch order is shuffled so lengths do not drift in time.
    The last incomplete batch of an epoch is dropped (InfoNCE wants full batches)."""

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, bucket_by_length: bool = True,
                 pool: int = 50) -> None:
        self.lengths, self.batch_size, self.seed = lengths, batch_size, seed
        self.bucket, self.pool = bucket_by_length, pool
        self.per_epoch = len(lengths) // batch_size
        if self.per_epoch == 0:
            raise ValueError(f"{len(lengths)} samples cannot fill one batch of {batch_size}")
        self._epoch: tuple[int, np.ndarray] | None = None

    def _epoch_batches(self, epoch: int) -> np.ndarray:
        if self._epoch is None or self._epoch[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            perm = rng.permutation(len(self.lengths))[: self.per_epoch * self.batch_size]
            if self.bucket:
                span = self.pool * self.batch_size
                perm = np.concatenate([
                    c[np.argsort(self.lengths[c], kind="stable")] for c in np.split(perm, range(span, len(perm), span))
                ])
            batches = perm.reshape(self.per_epoch, self.batch_size)
            self._epoch = (epoch, batches[rng.permutation(self.per_epoch)])
        return self._epoch[1]

    def batch(self, step: int) -> np.ndarray:
        epoch, i = divmod(step, self.per_epoch)
        return self._epoch_batches(epoch)[i]


def concat_partners(n: int, prob: float, seed: int, step: int, rank: int, micro: int) -> list[int | None]:
    """FROMAGe caption concatenation: with probability `prob` example i is followed by example i+1 (mod n)
    of the same micro-batch. Seeded by (seed, step, rank, micro) so resume replays it exactly."""
    if n < 2 or prob == 0:
        return [None] * n
    draw = np.random.default_rng([seed, step, rank, micro, 7]).random(n)
    return [(i + 1) % n if draw[i] < prob else None for i in range(n)]


def concat_pairs(n: int, prob: float, seed: int, step: int) -> list[int | None]:
    """The fromage recipe's concatenation: one coin per optimizer step (the same on every rank and
    micro-batch, seeded by (seed, step) so resume replays it); heads, fixed pairs (0, 1), (2, 3)... share a
    row, each caption used once: example 2i is followed by 2i + 1, which gets no row of its own."""
    if prob == 0 or np.random.default_rng([seed, step, 11]).random() >= prob:
        return [None] * n
    if n % 2:
        raise ValueError(f"the fromage recipe pairs captions: micro-batch of {n} is odd")
    return [i + 1 if i % 2 == 0 else None for i in range(n)]


@dataclass
class MicroBatch:
    """What the model's forward needs, before features are attached."""

    index: list[int]  # dataset rows
    image_ids: list[str]
    caps: list[list[int]]
    partner: list[int | None]
    pixels: torch.Tensor | None  # (B, 3, H, W) when images are preprocessed online


class StepBatches(torch.utils.data.Dataset):
    """Item i = this rank's micro-batches of optimizer step `start + i` (so a DataLoader with workers
    prefetches whole steps, and resuming at step s is exactly `start = s`)."""

    def __init__(self, data: CaptionData, plan: BatchPlan, *, start: int, steps: int, rank: int = 0,
                 world: int = 1, micro_batch_size: int | None = None, concat_prob: float = 0.0, seed: int = 0,
                 preprocess: Callable[[Any], torch.Tensor] | None = None, recipe: str = "thesis-eq") -> None:
        if plan.batch_size % world:
            raise ValueError(f"batch size {plan.batch_size} is not divisible by {world} ranks")
        local = plan.batch_size // world
        self.micro = micro_batch_size or local
        if local % self.micro:
            raise ValueError(f"per-rank batch {local} is not divisible by micro_batch_size {self.micro}")
        self.data, self.plan, self.start, self.steps = data, plan, start, steps
        self.rank, self.local, self.concat_prob, self.seed = rank, local, concat_prob, seed
        self.preprocess = preprocess
        self.recipe = recipe
        if recipe == "fromage" and concat_prob > 0 and self.micro % 2:
            raise ValueError(f"the fromage recipe concatenates fixed pairs of captions: the per-rank micro-batch "
                             f"({self.micro}) must be even")

    def __len__(self) -> int:
        return max(0, self.steps - self.start)

    def __getitem__(self, i: int) -> list[MicroBatch]:
        step = self.start + i
        mine = self.plan.batch(step)[self.rank * self.local : (self.rank + 1) * self.local]
        out = []
        for m, s in enumerate(range(0, self.local, self.micro)):
            index = [int(x) for x in mine[s : s + self.micro]]
            pixels = None
            if self.preprocess is not None:

                pixels = to_pixels(self.data.image_bytes(index), self.preprocess)
            out.append(MicroBatch(
                index=index, image_ids=[self.data.image_ids[j] for j in index],
                caps=[self.data.tokens[j] for j in index],
                partner=self._partners(len(index), step, m),
                pixels=pixels,
            ))
        return out

    def _partners(self, n: int, step: int, micro: int) -> list[int | None]:
        if self.recipe == "fromage":
            return concat_pairs(n, self.concat_prob, self.seed, step)
        return concat_partners(n, self.concat_prob, self.seed, step, self.rank, micro)


def step_loader(dataset: StepBatches, num_workers: int = 0) -> torch.utils.data.DataLoader:
    """Iterate steps in order; workers decode JPEGs ahead of the GPU."""
    return torch.utils.data.DataLoader(
        dataset, batch_size=None, shuffle=False, num_workers=num_workers,
        persistent_workers=False, prefetch_factor=4 if num_workers else None,
    )
