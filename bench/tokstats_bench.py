"""Benchmark: word-level token statistics of 3.3M synthetic CC3M-like captions (target <= 5 s on 2 cores)."""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from translation.tokstats import render_table_5_2, token_stats

VOCAB_EN = ("a man woman dog cat city street person actor attends the premiere of film skyline at night "
            "riding bicycle down busy in on with and park beach people waiting for bus snow storm").split()
VOCAB_PT = ("um homem mulher cão gato cidade rua pessoa ator assiste à estreia do filme horizonte noite "
            "a andar de bicicleta numa movimentada no com e parque praia pessoas espera autocarro neve").split()


def synthetic(rows: int, seed: int = 0) -> pl.DataFrame:
    """`rows` captions of 4..16 words (mean ~10, like CC3M), EN plus a PT column, TRANSLATED columns."""
    rng = np.random.default_rng(seed)
    # Build a pool of distinct captions then index into it: generation stays fast and the text realistic.
    pool = 50_000
    lens = rng.integers(4, 17, size=pool)
    en = [" ".join(rng.choice(VOCAB_EN, n)) for n in lens]
    pt = [" ".join(rng.choice(VOCAB_PT, n + int(rng.integers(0, 3)))) for n in lens]
    idx = rng.integers(0, pool, size=rows)
    return pl.DataFrame({
        "segment_id": pl.Series([f"cc3m/train/{i}" for i in range(rows)]),
        "dataset": "cc3m", "split": "train",
        "item_id": pl.Series([f"cc3m/train/{i}" for i in range(rows)]),
        "field": "caption",
        "text_en": pl.Series(en)[idx], "text_hash": "x" * 32,
        "engine": "deepl", "engine_id": "deepl:pt-pt", "text_pt": pl.Series(pt)[idx],
        "score": pl.Series([None] * rows, dtype=pl.Float32),
    })


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=3_300_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "deepl.parquet"
        synthetic(args.rows).write_parquet(path, compression="zstd")
        t0, c0 = time.perf_counter(), time.process_time()
        stats = token_stats([path])
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(render_table_5_2(stats))
    print(f"token_stats: {args.rows:,} rows (EN + 1 engine, parquet scan included) in {elapsed:.2f} s "
          f"({args.rows / elapsed / 1e6:.2f} M rows/s), {cpu:.2f} CPU-s over all threads; target <= 5 s on 2 cores")


if __name__ == "__main__":
    main()
