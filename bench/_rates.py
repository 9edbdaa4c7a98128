"""What the translation CPU benches share: timing every engine on the same texts, repeats interleaved (so a
change of machine load hits every engine alike), and the table of sentences/s per engine (median, min, max)
with the ratio to the transformers fp32 baseline, side by side in one run."""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass


def timed(engine, texts: list[str]) -> tuple[float, int]:  # noqa: ANN001 - any engine with .stats
    """Seconds of one `engine.translate(texts)` call, and the output tokens it decoded."""
    before = engine.stats.output_tokens
    start = time.perf_counter()
    engine.translate(texts)
    return time.perf_counter() - start, engine.stats.output_tokens - before


@dataclass
class Timings:
    times: dict[str, list[float]]  # engine -> seconds of each repeat
    tokens: dict[str, set[int]]  # engine -> output-token counts seen (one value when the repeats agreed)
    load_before: float
    load_after: float


def time_engines(engines: dict, texts: list[str], repeats: int, warmup: list[str]) -> Timings:
    """Warm every engine up on `warmup` (allocator, thread pools, lazy imports), then time `repeats` rounds
    of every engine on `texts`."""
    for engine in engines.values():
        engine.translate(warmup)
    load_before = os.getloadavg()[0]
    times: dict[str, list[float]] = {name: [] for name in engines}
    tokens: dict[str, set[int]] = {name: set() for name in engines}
    for _ in range(repeats):
        for name, engine in engines.items():
            seconds, n_tokens = timed(engine, texts)
            times[name].append(seconds)
            tokens[name].add(n_tokens)
    return Timings(times, tokens, load_before, os.getloadavg()[0])


def print_rate_table(times: dict[str, list[float]], tokens: dict[str, set], engines: list[str], n_texts: int,
                     *, width: int, baseline: str = "transformers fp32", note: str = "") -> None:
    """One row per engine of `engines`: `times[engine]` holds the seconds of each repeat over `n_texts`
    sentences, `tokens[engine]` the output-token counts seen (one value when every repeat agreed)."""
    base = n_texts / statistics.median(times[baseline])
    print(f"{'engine':<{width}}{'sent/s (median)':>16}{'min':>9}{'max':>9}{'x vs HF':>9}  output tokens")
    for name in engines:
        rates = [n_texts / t for t in times[name]]
        median = n_texts / statistics.median(times[name])
        print(f"{name:<{width}}{median:>16.1f}{min(rates):>9.1f}{max(rates):>9.1f}{median / base:>9.2f}  "
              f"{sorted(tokens[name])}{note}")
