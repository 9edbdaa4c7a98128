"""The learning proof's figures under each training recipe, with and without length bucketing.

Bucketing sorts pools of batches by caption length, so a batch holds captions of few distinct lengths; the
InfoNCE negatives of a caption are then captions of its own length. This script trains the learning proof's
model (tests/test_learning.py: same world, settings and 500 steps) per (recipe, bucketing) and prints the
held-out figures and the mean number of distinct caption lengths per batch.

    python bench/learning_recipes_bench.py [--recipe fromage] [--no-bucket] [--cache .pytest_cache/d/ptvl-train-sample]

Each run takes a few CPU minutes (one thread); figures go to README ("The sample proves learning").
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def distinct_lengths_per_batch(world, tc) -> float:
    from transformers import AutoTokenizer

    from training.data import BatchPlan, CaptionData

    tok = AutoTokenizer.from_pretrained(world.lm)
    data = CaptionData(world.train_shards, lambda t: tok(t, add_special_tokens=False)["input_ids"])
    plan = BatchPlan(data.lengths, tc.batch_size, tc.seed, tc.bucket_by_length, tc.bucket_pool)
    return float(np.mean([len(set(data.lengths[plan.batch(s)].tolist())) for s in range(plan.per_epoch)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", action="append", choices=["thesis-eq", "fromage"])
    ap.add_argument("--bucket", action="append", choices=["on", "off"])
    ap.add_argument("--cache", default=".pytest_cache/d/ptvl-train-sample", help="world cache (the test's)")
    ap.add_argument("--out", default=None, help="append one JSON line per run to this file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from tests.test_learning import MODEL, TRAIN
    from tests.trainfixtures import build_world, evaluate_sample
    from training.config import ModelConfig, TrainConfig
    from training.train import train

    world = build_world(Path(args.cache), tokens=True, clip_steps=300)

    for bucket in args.bucket or ["on", "off"]:
        for recipe in args.recipe or ["thesis-eq", "fromage"]:
            mc = ModelConfig(llm=str(world.lm), clip=str(world.clip), clip_pretrained="", recipe=recipe, **MODEL)
            tc = TrainConfig(**TRAIN, bucket_by_length=bucket == "on")
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                res = train(mc, tc, world.train_shards, Path(tmp) / "run", features_dir=world.features,
                            progress=False)
                after = evaluate_sample(res.model, world)
            row = {"recipe": recipe, "bucket": bucket, "distinct_lengths": distinct_lengths_per_batch(world, tc),
                   **{k: round(v, 3) for k, v in after.items()}, "loss_last": round(res.losses[tc.steps], 3),
                   "seconds": round(time.perf_counter() - t0, 1)}
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
