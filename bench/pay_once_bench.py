"""Billed / unique characters under N Luigi workers, on a VisDial-sized synthetic set, against the
project's fake DeepL server (its own billing counter, the one /v2/usage reports).

It writes a run root with VisDial-shaped segments for train and val (the global question and answer
lists and one caption per dialog, shaped as in `bench/dedup_bench.py`: val shares half its lists with
train), then runs `ptvl translate --engine deepl --workers N` (the real `TranslatePart` tasks:
`translate.parts` hash parts of the run-wide unique-string table, then the per-split joins) with the
real DeepL client.  The fake server runs in this process, ptvl in a child process.  Printed: strings and
characters per split, the run-wide unique characters, what the server billed, the ratio (1.000 is the
guarantee), requests, the memory's count and DeepL's count from the run's reconciliation, and time.

    .venv/bin/python bench/pay_once_bench.py                       # VisDial v1.0 size, 8 workers
    .venv/bin/python bench/pay_once_bench.py --scale 0.1 --workers 8 --parts 8
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from bench.dedup_bench import visdial_like  # noqa: E402
from pipeline.contracts import SEGMENTS  # noqa: E402
from pipeline.io import write_parquet_atomic  # noqa: E402
from tests.fake_deepl import FakeDeepL  # noqa: E402
from translation.textkey import text_hash  # noqa: E402

KEY = "bench-key-0000:fx"
CONFIG = """
[run]
name = "pay-once-bench"
root = "{root}"
[sample]
enabled = false
[datasets.cc3m]
enabled = false
[datasets.coco]
enabled = false
[datasets.vqav2]
enabled = false
[datasets.visdial]
splits = ["train", "val"]
[translate]
engines = ["deepl"]
parts = {parts}
[curate]
gold = false
[engines.deepl]
engine = "deepl"
server_url = "{url}"
[training]
engine = "deepl"
data = ["visdial/train"]
"""


def segments(split: str, lists: dict[str, list[str]]) -> pl.DataFrame:
    """The VisDial reader's segments: one row per string of the global lists (and per caption)."""
    rows = []
    for field in ("caption", "question", "answer"):
        uniq = list(dict.fromkeys(lists[field])) if field != "caption" else lists[field]
        rows += [(f"visdial/{split}/{field}/{i}", "visdial", split, f"visdial/{split}/{field}/{i}", field, t,
                  text_hash(t)) for i, t in enumerate(uniq)]
    return pl.DataFrame(rows, schema=SEGMENTS.names, orient="row")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of VisDial v1.0 train size")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--parts", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    n_dialogs, n_q, n_a = (max(int(x * args.scale), 20) for x in (123_287, 376_082, 337_527))
    train = visdial_like(n_dialogs, n_q, n_a, rng)
    q_u = [s for s, _ in Counter(train["question"]).most_common()]
    a_u = [s for s, _ in Counter(train["answer"]).most_common()]
    val = visdial_like(max(int(2_064 * args.scale), 10), max(int(9_000 * args.scale), 10),
                       max(int(8_000 * args.scale), 10), rng,
                       train={"question": q_u, "answer": a_u, "caption": train["caption"]})

    from pipeline.billing import billing_summary

    with tempfile.TemporaryDirectory() as tmp, FakeDeepL(KEY) as server:
        root = Path(tmp) / "run"
        per_split = {}
        for split, lists in (("train", train), ("val", val)):
            seg = segments(split, lists)
            write_parquet_atomic(root / "segments" / "visdial" / f"{split}.parquet", seg.to_arrow(), SEGMENTS)
            u = seg["text_en"].unique().to_list()
            per_split[split] = (len(u), sum(map(len, u)))
        cfg = Path(tmp) / "bench.toml"
        cfg.write_text(CONFIG.format(root=root, parts=args.parts, url=server.url))
        all_u = set()
        for split in ("train", "val"):
            all_u |= set(pl.read_parquet(root / "segments" / "visdial" / f"{split}.parquet")["text_en"].to_list())
        unique_chars = sum(map(len, all_u))
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "pipeline.cli", "translate", "--engine", "deepl", "--config",
                              str(cfg), "--workers", str(args.workers)], capture_output=True, text=True,
                             env={**os.environ, "DEEPL_AUTH_KEY": KEY})
        seconds = time.perf_counter() - t0
        if res.returncode != 0:
            raise SystemExit(f"ptvl translate failed:\n{res.stderr[-3000:]}")
        billed = server.character_count
        sent = server.sent_texts()
        summary = billing_summary(root, "deepl")
        n_req = len(server.translate_requests())
    print(f"scale {args.scale}, {args.workers} workers, {args.parts} parts")
    for split, (n, c) in per_split.items():
        print(f"  {split:5}: {n:,} distinct strings, {c:,} chars")
    print(f"  split by split (each split's distinct strings paid on its own): {sum(c for _, c in per_split.values()):,} chars")
    print(f"  run-wide unique: {len(all_u):,} strings, {unique_chars:,} chars")
    print(f"  billed by the server: {billed:,} chars in {n_req:,} requests ({len(sent):,} texts, "
          f"{len(sent) - len(set(sent))} sent twice)")
    print(f"  billed / unique = {billed / unique_chars:.4f}")
    print(f"  reconciliation: {summary.line('deepl')}")
    print(f"  {seconds:.1f} s wall for `ptvl translate` (start-up and joins included), "
          f"{len(sent) / seconds:,.0f} texts/s")


if __name__ == "__main__":
    main()
