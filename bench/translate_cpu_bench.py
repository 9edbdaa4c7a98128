"""CPU speed: the CTranslate2 engine (int8, and float32 for reference) vs the transformers engine, same model.

Both engines translate the same captions with the same small mBART-shaped model (random weights,
a realistic vocabulary, `</s>` biased out so every output has exactly --out-tokens tokens), through
the project's own engine classes: tokenization, batching and scoring are included on both sides.
Runs are interleaved (hf, ct2, hf, ct2, ...) so load from other processes hits both alike; the
median of --repeats is reported. Prints sentences/s side by side and the CTranslate2/HF ratio.

Then (unless --call-sizes is empty) the call-size sweep: --sweep-sentences distinct captions go
through `translation.runner.translate_missing` into a fresh memory (the pipeline's path, storage
included) with the int8 CTranslate2 engine at each call size (50 = the old `[translate] batch_size`
cap, 2000 = thousands per call) and each replica count (`inter_threads`, `intra_threads=1`).

    .venv/bin/python bench/translate_cpu_bench.py --threads 2 --repeats 5
    .venv/bin/python bench/translate_cpu_bench.py --skip-hf --call-sizes 50,2000 --replicas 1,2
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._rates import print_rate_table, time_engines  # noqa: E402
from tests.tinymodels import build_tiny_mbart50, caption_pairs  # noqa: E402
from translation.convert import convert_model  # noqa: E402
from translation.engines.ct2 import CT2Settings, NarrativaEngine  # noqa: E402
from translation.engines.hf import HFEngine, HFSettings  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sentences", type=int, default=128)
    p.add_argument("--out-tokens", type=int, default=24, help="output length, forced on both engines")
    p.add_argument("--batch", type=int, default=32, help="sentences per batch (HF); CT2 gets the same tokens")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--beam", type=int, default=1, help="beam size on both engines (1 = greedy)")
    p.add_argument("--d-model", type=int, default=512)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--ffn", type=int, default=2048)
    p.add_argument("--vocab", type=int, default=16000, help="approximate vocabulary size")
    p.add_argument("--skip-hf", action="store_true", help="only the call-size sweep")
    p.add_argument("--call-sizes", default="50,2000", help="comma-separated texts per engine call ('' = no sweep)")
    p.add_argument("--replicas", default="1,2", help="comma-separated inter_threads values for the sweep")
    p.add_argument("--sweep-sentences", type=int, default=2000)
    return p.parse_args()


def call_size_sweep(args: argparse.Namespace, ct2_dir: Path, tmp: Path) -> None:
    """sentences/s of translate_missing (engine calls + durable chunk stores) per call size and replicas."""
    from translation.memory import TranslationMemory
    from translation.runner import translate_missing

    sizes = [int(x) for x in args.call_sizes.split(",") if x]
    replicas = [int(x) for x in args.replicas.split(",") if x]
    pool = [en for en, _ in caption_pairs(n_scenes=args.sweep_sentences, seed=12)]
    texts = list(dict.fromkeys(pool))
    k = 0
    while len(texts) < args.sweep_sentences:  # distinct texts: every one is a memory miss
        texts.append(f"{pool[k % len(pool)]} {k}")
        k += 1
    texts = texts[: args.sweep_sentences]
    common = {"max_input_length": 128, "max_decoding_length": args.out_tokens, "beam_size": args.beam}
    engines = {(n, r): NarrativaEngine(CT2Settings(model_dir=ct2_dir, compute_type="int8", inter_threads=r,
                                                   intra_threads=1, call_size=n, **common))
               for r in replicas for n in sizes}
    for engine in engines.values():
        engine.translate(texts[:50])  # warm-up
    times: dict[tuple[int, int], list[float]] = {key: [] for key in engines}
    load_before = os.getloadavg()
    run = 0
    for _ in range(args.repeats):
        for key, engine in engines.items():
            run += 1
            with TranslationMemory(tmp / f"sweep-{run}.sqlite") as mem:
                start = time.perf_counter()
                stats = translate_missing(texts, engine, mem, batch_size=50)
                times[key].append(time.perf_counter() - start)
            assert stats.sent == len(texts) and stats.requests == -(-len(texts) // key[0])
    load_after = os.getloadavg()
    print(f"\ncall-size sweep: {len(texts)} distinct captions through translate_missing (stores included), "
          f"ctranslate2 int8, intra_threads=1, max_batch_tokens=4096; repeats={args.repeats}")
    print(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} on {os.cpu_count()} cores")
    print(f"{'call size':>10}{'replicas':>10}{'calls':>8}{'sent/s (median)':>17}{'min':>9}{'max':>9}")
    for (n, r), ts in times.items():
        rates = [len(texts) / t for t in ts]
        print(f"{n:>10}{r:>10}{-(-len(texts) // n):>8}{len(texts) / statistics.median(ts):>17.1f}"
              f"{min(rates):>9.1f}{max(rates):>9.1f}")


def main() -> None:
    args = parse_args()
    import torch

    torch.set_num_threads(args.threads)
    texts = [en for en, _ in caption_pairs(n_scenes=args.sentences // 5 + 1, seed=11)][: args.sentences]
    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = build_tiny_mbart50(
            Path(tmp) / "hf", d_model=args.d_model, layers=args.layers, heads=8, ffn_dim=args.ffn,
            init_std=0.02, extra_pieces=args.vocab, never_end=True,
        )
        ct2_dirs = {q: convert_model("narrativa", str(hf_dir), Path(tmp) / f"ct2-{q}", quantization=q)
                    for q in ("int8", "float32")}
        if args.call_sizes:
            call_size_sweep(args, ct2_dirs["int8"], Path(tmp))
        if args.skip_hf:
            return
        common = {"max_input_length": 128, "max_decoding_length": args.out_tokens}
        hf_common = {**common, "num_beams": args.beam}
        ct2_common = {**common, "beam_size": args.beam}
        max_tokens = args.batch * max(len(t.split()) for t in texts) * 2
        engines = {
            "transformers fp32": HFEngine(HFSettings(model=str(hf_dir), kind="narrativa",
                                                     batch_size=args.batch, **hf_common)),
            "ctranslate2 int8": NarrativaEngine(CT2Settings(
                model_dir=ct2_dirs["int8"], compute_type="int8", intra_threads=args.threads,
                max_batch_tokens=max_tokens, **ct2_common)),
            # Two replicas of one thread each: small models scale better across batches than within one.
            "ctranslate2 int8 2x1": NarrativaEngine(CT2Settings(
                model_dir=ct2_dirs["int8"], compute_type="int8", inter_threads=args.threads, intra_threads=1,
                max_batch_tokens=max(1, max_tokens // args.threads), **ct2_common)),
            "ctranslate2 fp32": NarrativaEngine(CT2Settings(
                model_dir=ct2_dirs["float32"], compute_type="float32", intra_threads=args.threads,
                max_batch_tokens=max_tokens, **ct2_common)),
        }
        timings = time_engines(engines, texts, args.repeats, warmup=texts[: args.batch])

    expected = len(texts) * (args.out_tokens - 1)  # pt_XX is forced, the rest is decoded
    print(f"model: mBART-shaped d_model={args.d_model} layers={args.layers}+{args.layers} ffn={args.ffn} "
          f"vocab~{args.vocab}; {len(texts)} sentences x {args.out_tokens} output tokens; "
          f"beam={args.beam}; threads={args.threads}; repeats={args.repeats}")
    print(f"load average before/after: {timings.load_before:.2f} / {timings.load_after:.2f} on {os.cpu_count()} cores")
    print_rate_table(timings.times, timings.tokens, engines, len(texts), width=20, note=f" (expected {expected})")


if __name__ == "__main__":
    main()
