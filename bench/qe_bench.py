"""Benchmark: QE (CometKiwi through translation.comet) segments per second, and the projected cost of
scoring CC3M's 3,318,333 unique strings on one device.

The segments are CC3M-like (source, translation) pairs built from the flag benchmark's slots (subject,
action, place, time; PT-PT side), ~10 English words like CC3M's captions.  The model is any COMET
checkpoint folder or Hugging Face id; the default is the tiny test fixture, for a smoke run on CPU.

    python bench/qe_bench.py                                        # smoke: tiny fixture, CPU
    python bench/qe_bench.py --model /models/wmt22-cometkiwi-da --device cuda --dtype bfloat16 --batch-size 256
    python bench/qe_bench.py --model Unbabel/wmt22-comet-da --device cuda --reference   # COMET-22 (src, mt, ref)

It prints tokens per segment (the model's own tokenizer, as the port concatenates them), warm-up and
steady-state segments/s, peak GPU memory, and the hours for 3.3M strings at that rate.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.flags_bench import ACTIONS, PLACES, SUBJECTS, TIMES  # noqa: E402

CC3M_UNIQUE = 3_318_333
FIXTURE = REPO / "tests" / "fixtures" / "comet" / "unified"


def segments(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = [rng.choice(SUBJECTS), rng.choice(ACTIONS), rng.choice(PLACES)]
        if rng.random() < 0.5:
            parts.append(rng.choice(TIMES))
        out.append((" ".join(p[0] for p in parts), " ".join(p[1] for p in parts)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(FIXTURE), help="COMET checkpoint folder or Hugging Face id")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--segments", type=int, default=20_000)
    parser.add_argument("--reference", action="store_true", help="score (src, mt, ref) with a COMET-22 model")
    args = parser.parse_args()

    import torch

    from translation.comet import load_comet

    t0 = time.perf_counter()
    model = load_comet(args.model, args.device).to(dtype=getattr(torch, args.dtype))
    load_s = time.perf_counter() - t0
    pairs = segments(args.segments)
    src, mt = [s for s, _ in pairs], [m for _, m in pairs]
    ref = mt if args.reference else None
    tok = model.tokenizer
    sample = min(2000, len(src))
    if model.kind == "unified_metric":
        lengths = [len(x) for x in model._concat(model._ids(mt[:sample]), model._ids(src[:sample]))]
        what = "tokens per concatenated (mt, src) input"
    else:
        lengths = [len(x) for x in tok(src[:sample] + mt[:sample])["input_ids"]]
        what = "tokens per encoded segment (src, mt and ref are encoded separately)"
    warm = min(len(src), 4 * args.batch_size)
    model.score(src[:warm], mt[:warm], ref[:warm] if ref else None, batch_size=args.batch_size)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t1 = time.perf_counter()
    model.score(src, mt, ref, batch_size=args.batch_size)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t1
    rate = len(src) / seconds
    print(f"model {model.model_id} ({model.kind}) on {args.device} {args.dtype}, batch {args.batch_size}")
    print(f"load {load_s:.1f} s; {what}: mean {sum(lengths) / len(lengths):.1f}, max {max(lengths)}")
    print(f"{len(src):,} segments in {seconds:.1f} s = {rate:,.0f} segments/s")
    if args.device.startswith("cuda"):
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    print(f"projected for {CC3M_UNIQUE:,} unique strings: {CC3M_UNIQUE / rate / 3600:.2f} h")


if __name__ == "__main__":
    main()
