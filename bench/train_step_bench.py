"""CPU benchmark of one V-Glória training step: cached features vs the CLIP encoder every step, fused vs two passes.

    .venv/bin/python bench/train_step_bench.py [--steps 10] [--batch 32] [--threads 1]

Builds the offline sample world (tiny CLIP, tiny / small PT LMs; memoised under runs/bench-cache) and times
forward + backward + AdamW of the real model on the real data path. CPU timings on a shared machine are
noisy: compare the columns of one run, not runs with each other.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.trainfixtures import build_world  # noqa: E402
from training.config import ModelConfig  # noqa: E402
from training.data import BatchPlan, CaptionData, StepBatches  # noqa: E402
from training.features import FeatureStore  # noqa: E402
from training.model import clip_preprocess, vgloria  # noqa: E402

SIZES = {
    "tiny": dict(hidden=64, layers=2, heads=4),
    "small": dict(hidden=256, layers=4, heads=8),
}


def time_steps(model, batches, feats_of, steps: int) -> float:
    opt = torch.optim.AdamW([p for _, p in model.trainable_parameters()], lr=1e-4)
    times = []
    for i in range(steps + 1):
        mb = batches[i % len(batches)][0]
        t = time.perf_counter()
        losses = model(feats_of(mb), mb.caps, mb.partner)
        losses.total.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:  # the first step warms caches and allocators
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--cache", type=Path, default=Path("runs/bench-cache"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for size, lm in SIZES.items():
        world = build_world(args.cache, n_train=200, n_heldout=8,
                            lm_args=dict(**lm, vocab_size=400, seq_len=64, batch=8, steps=10))
        cfg = ModelConfig(llm=str(world.lm), clip=str(world.clip), clip_pretrained="", bridge="cls", k=args.k,
                          dtype="fp32", compile=False)
        model = vgloria(cfg, "cpu", seed=0)  # with the CLIP encoder loaded, for the online column
        store = FeatureStore(world.features)
        data = CaptionData(world.train_shards, model.tokenize)
        plan = BatchPlan(data.lengths, args.batch, seed=0)
        online = StepBatches(data, plan, start=0, steps=4, concat_prob=0.5, preprocess=clip_preprocess(cfg))
        batches = [online[i] for i in range(4)]
        needs = model.bridge.needs()
        cached_fn = lambda mb, s=store, n=needs: s.features(mb.image_ids, n)  # noqa: E731
        online_fn = lambda mb, m=model: m.encode_images(mb.pixels)  # noqa: E731
        result = {"lm": size, "lm_params": sum(p.numel() for p in model.lm.parameters())}
        model.cfg.fused_pass = True  # the CPU default is two passes; measure both explicitly
        result["cached_fused"] = time_steps(model, batches, cached_fn, args.steps)
        result["online_fused"] = time_steps(model, batches, online_fn, args.steps)
        model.cfg.fused_pass = False
        result["cached_two_pass"] = time_steps(model, batches, cached_fn, args.steps)
        rows.append(result)
    print(f"\nV-Glória train step on CPU ({args.threads} thread(s)), batch {args.batch}, CLS-{args.k}, "
          "median seconds per step")
    print("| LM | LM params | cached + fused | CLIP online + fused | cached + two passes |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['lm']} | {r['lm_params']:,} | {r['cached_fused']:.3f} | {r['online_fused']:.3f} | "
              f"{r['cached_two_pass']:.3f} |")


if __name__ == "__main__":
    main()
