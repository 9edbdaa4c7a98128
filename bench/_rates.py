"""The speed table the translation benches print: sentences/s per engine (median, min, max over repeats)
and the ratio to the transformers fp32 baseline, side by side in one run."""
from __future__ import annotations

import statistics


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
