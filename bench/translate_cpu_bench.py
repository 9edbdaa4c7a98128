"""CPU speed: the CTranslate2 engine (int8, and float32 for reference) vs the transformers engine, same model.

Both engines translate the same captions with the same small mBART-shaped model (random weights,
a realistic vocabulary, `</s>` biased out so every output has exactly --out-tokens tokens), through
the project's own engine classes: tokenization, batching and scoring are included on both sides.
Runs are interleaved (hf, ct2, hf, ct2, ...) so load from other processes hits both alike; the
median of --repeats is reported. Prints sentences/s side by side and the CTranslate2/HF ratio.

    .venv/bin/python bench/translate_cpu_bench.py --threads 2 --repeats 5
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
    return p.parse_args()


def timed(engine, texts: list[str]) -> tuple[float, int]:
    before = engine.stats.output_tokens
    start = time.perf_counter()
    engine.translate(texts)
    return time.perf_counter() - start, engine.stats.output_tokens - before


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
        for engine in engines.values():  # warm-up: allocator, thread pools, lazy imports
            engine.translate(texts[: args.batch])
        load_before = os.getloadavg()
        times: dict[str, list[float]] = {name: [] for name in engines}
        tokens: dict[str, set[int]] = {name: set() for name in engines}
        for _ in range(args.repeats):
            for name, engine in engines.items():
                seconds, n_tokens = timed(engine, texts)
                times[name].append(seconds)
                tokens[name].add(n_tokens)
        load_after = os.getloadavg()

    expected = len(texts) * (args.out_tokens - 1)  # pt_XX is forced, the rest is decoded
    print(f"model: mBART-shaped d_model={args.d_model} layers={args.layers}+{args.layers} ffn={args.ffn} "
          f"vocab~{args.vocab}; {len(texts)} sentences x {args.out_tokens} output tokens; "
          f"beam={args.beam}; threads={args.threads}; repeats={args.repeats}")
    print(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} on {os.cpu_count()} cores")
    baseline = len(texts) / statistics.median(times["transformers fp32"])
    print(f"{'engine':<20}{'sent/s (median)':>16}{'min':>9}{'max':>9}{'x vs HF':>9}  output tokens")
    for name in engines:
        rates = [len(texts) / t for t in times[name]]
        median = len(texts) / statistics.median(times[name])
        print(f"{name:<20}{median:>16.1f}{min(rates):>9.1f}{max(rates):>9.1f}{median / baseline:>9.2f}  "
              f"{sorted(tokens[name])} (expected {expected})")


if __name__ == "__main__":
    main()
