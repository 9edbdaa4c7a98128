"""Billed / unique characters under N Luigi workers, on a VisDial-sized synthetic set, against the
project's fake DeepL server (its own billing counter, the one /v2/usage reports).

It writes a run root with VisDial-shaped segments for train and val (the global question and answer
lists and one caption per dialog, shaped as in `bench/dedup_bench.py`: val shares half its lists with
train), then runs `ptvl translate --engine deepl --workers N` (the real `TranslatePart` tasks:
`translate.parts` hash parts of the run-wide unique-string table, then the per-split joins) with the
real DeepL client.  The fake server runs in this process, ptvl in a child process.  Printed: strings and
characters per split, the run-wide unique characters, what the server billed, the ratio (1.000 is the
guarantee), texts the server billed twice, requests, the run's reconciliation line, and time.

Scenarios (issue #23), each judged by the server's own log:

- ``plain``: one `ptvl translate`.
- ``kill``: `kill -9` of `ptvl translate --workers N` once `--kill-after` requests were answered, then the
  same command again at once (as a user does); also counts the requests the server got between the kill
  and the rerun's start (an orphaned worker's).
- ``concurrent``: two `ptvl translate --workers N` started together on one root.

    .venv/bin/python bench/pay_once_bench.py                       # VisDial v1.0 size, 8 workers
    .venv/bin/python bench/pay_once_bench.py --scale 0.1 --workers 8 --parts 8
    .venv/bin/python bench/pay_once_bench.py --scale 0.02 --scenario kill --slow 0.05
"""
from __future__ import annotations

import argparse
import os
import signal
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


def _ptvl(cfg: Path, workers: int) -> subprocess.Popen:
    # Output to a file, not a pipe: reading a pipe would wait for every process holding it, orphans included.
    log = open(cfg.with_suffix(f".{time.monotonic_ns()}.out"), "w")  # noqa: SIM115 - closed by _finish
    p = subprocess.Popen([sys.executable, "-m", "pipeline", "translate", "--engine", "deepl", "--config",
                          str(cfg), "--workers", str(workers)], stdout=log, stderr=subprocess.STDOUT, text=True,
                         env={**os.environ, "DEEPL_AUTH_KEY": KEY, "COLUMNS": "200"})
    p.log = log
    return p


def _finish(p: subprocess.Popen, check: bool = True) -> str:
    p.wait()
    p.log.close()
    out = Path(p.log.name).read_text()
    if check and p.returncode not in (0, 3):
        raise SystemExit(f"ptvl translate failed ({p.returncode}):\n{out[-3000:]}")
    return out


def run_scenario(scenario: str, cfg: Path, server: FakeDeepL, args: argparse.Namespace) -> list[str]:
    """Run `scenario` against `server`; notes to print."""
    if scenario == "plain":
        _finish(_ptvl(cfg, args.workers))
        return []
    if scenario == "concurrent":
        procs = [_ptvl(cfg, args.workers) for _ in range(2)]
        codes = [(_finish(p), p.returncode)[1] for p in procs]
        return [f"two processes at once, exit codes {codes}"]
    first = _ptvl(cfg, args.workers)
    while len(server.translate_requests()) < args.kill_after:
        if first.poll() is not None:
            raise SystemExit("the run ended before the kill; lower --kill-after or raise --slow")
        time.sleep(0.01)
    os.kill(first.pid, signal.SIGKILL)  # the parent only: its workers are on their own now
    at_kill = len(server.translate_requests(None))
    _finish(first, check=False)
    rerun = _ptvl(cfg, args.workers)  # at once, as a user does
    _finish(rerun)
    return [f"kill -9 after {at_kill} translate requests; the rerun started at once"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of VisDial v1.0 train size")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--parts", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenario", choices=("plain", "kill", "concurrent"), default="plain")
    ap.add_argument("--kill-after", type=int, default=40, help="kill: answered translate requests before the kill")
    ap.add_argument("--slow", type=float, default=0.0, help="seconds each answer of the fake server is late")
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
    from pipeline.settings import load_settings

    with tempfile.TemporaryDirectory() as tmp, FakeDeepL(KEY, slow_s=args.slow) as server:
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
        notes = run_scenario(args.scenario, cfg, server, args)
        seconds = time.perf_counter() - t0
        billed = server.character_count
        sent = server.sent_texts()
        twice = [t for t, n in Counter(sent).items() if n > 1]
        summary = billing_summary(root, "deepl", load_settings(cfg).engines["deepl"].engine_id("deepl"))
        n_req = len(server.translate_requests())
    print(f"scale {args.scale}, {args.workers} workers, {args.parts} parts, scenario {args.scenario}")
    for note in notes:
        print(f"  {note}")
    for split, (n, c) in per_split.items():
        print(f"  {split:5}: {n:,} distinct strings, {c:,} chars")
    print(f"  split by split (each split's distinct strings paid on its own): {sum(c for _, c in per_split.values()):,} chars")
    print(f"  run-wide unique: {len(all_u):,} strings, {unique_chars:,} chars")
    print(f"  billed by the server: {billed:,} chars in {n_req:,} requests ({len(sent):,} texts, "
          f"{len(twice)} texts billed twice: {sum(map(len, twice)):,} chars)")
    print(f"  billed / unique = {billed / unique_chars:.4f}")
    print(f"  reconciliation: {summary.line('deepl')}")
    warning = summary.warning("deepl")
    print(f"  reconciliation warning: {warning}" if warning else "  reconciliation: no warning")
    print(f"  {seconds:.1f} s wall for the scenario's `ptvl translate` runs (start-up and joins included), "
          f"{len(sent) / seconds:,.0f} texts/s")


if __name__ == "__main__":
    main()
