"""The decision table at the top of the translator comparison: one row per engine with what a choice between
engines weighs (cost, speed, quality on the gold set with its uncertainty, flag rates, what survives the drop
policy).

No figure is computed here that the report does not show further down: the table reads the report's own
inputs (billing, throughput, the gold scores with sacrebleu's paired-bootstrap intervals from
`translation.scoring.compare_on_gold`, `flag_rates`) and `kept_shares`, which the flag-rate table shows too; the
cells are formatted by the same functions the lower tables use, so the two places print the same strings.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from translation.quality import FLAG_NAMES

SAMPLE_NOTE = (
    "These are the embedded sample's engines: `reference` is the sample's hand-made PT-PT, and the tiny-* "
    "engines are models of a few hundred thousand parameters trained for seconds on its ~400 training captions "
    "of coloured shapes (pipeline/sample/translators.py), run through CTranslate2 exactly as the real models "
    "are. On the sample's own captions they differ visibly (flags, the worst cases, `ptvl review`'s "
    "disagreement queue). The gold set is hand-written real-world PT-PT, which they have never seen, so "
    "their chrF and BLEU on it are low and only rank them; sentences/s of tiny models on a shared CPU "
    "measure the pipeline's overhead more than translation speed. Point `--config` at a real profile to "
    "compare real engines."
)


@dataclass(frozen=True)
class DecisionTable:
    title: str
    header: list[str]
    cells: list[list[str]]
    legend: str


def kept_shares(rows: pl.DataFrame, drop: Mapping[str, list[str]]) -> dict[str, float]:
    """Per engine, the share of its rows that no flag of its drop policy removes (the shards' filter)."""
    out = {}
    for (engine,), part in rows.group_by(["engine"], maintain_order=True):
        dropped = set(drop.get(engine, ()))
        keep = ~pl.col("flags").list.eval(pl.element().is_in(list(dropped))).list.any() if dropped else pl.lit(True)
        out[engine] = float(part.select(keep.mean()).item()) if part.height else 0.0
    return out


def percent(x: float) -> str:
    return f"{100 * x:.1f}%"


def score_cells(s: Mapping, key: str) -> list[str]:
    """A gold score as shown: the score, its 95% interval (bootstrap mean +- half-width), and against the best
    engine: "best", "p=0.001 (differs)" or "p=0.420 (same)"."""
    if f"{key}_ci" not in s:
        return [f"{s[key]:.2f}", "n/a", "n/a"]
    mean, ci = s[f"{key}_mean"], s[f"{key}_ci"]
    if s[f"{key}_p"] is None:
        versus = "best"
    else:
        versus = f"p={s[f'{key}_p']:.3f} ({'differs' if s[f'{key}_differs'] else 'same'})"
    return [f"{s[key]:.2f}", f"{mean - ci:.2f}-{mean + ci:.2f}", versus]


def billed_cells(b: Mapping) -> list[str]:
    """Characters billed (DeepL's own count where there is one, else the memory's) and the cost."""
    chars = b["deepl_chars"] if b.get("deepl_chars") is not None else b.get("chars", 0)
    return [f"{int(chars):,}", f"{float(b.get('eur', 0.0)):.2f}"]


def speed_cell(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "n/a"


def flag_summary(rate: Mapping) -> str:
    """The rows with any flag, then each flag that fires, most frequent first."""
    fired = sorted(((rate[f], f) for f in FLAG_NAMES if rate[f] > 0), reverse=True)
    return percent(rate["any_flag"]) + (" (" + ", ".join(f"{f} {percent(r)}" for r, f in fired) + ")" if fired else "")


def decision_table(engines: list[str], *, rates: pl.DataFrame, kept: Mapping[str, float],
                   gold_scores: Mapping[str, Mapping], billing: Mapping[str, Mapping],
                   throughput: Mapping[str, float]) -> DecisionTable:
    """One row per engine, best gold chrF first (engines with no gold score, such as imports, last)."""
    by_engine = {r["engine"]: r for r in rates.iter_rows(named=True)}
    order = sorted(engines, key=lambda e: (e not in gold_scores, -gold_scores.get(e, {}).get("chrf", 0.0), e))
    cells = []
    for e in order:
        gold = gold_scores.get(e)
        quality = (score_cells(gold, "chrf") + score_cells(gold, "bleu")) if gold else ["n/a"] * 6
        cells.append([e, *billed_cells(billing.get(e, {})), speed_cell(throughput.get(e)), *quality,
                      flag_summary(by_engine[e]), percent(kept[e])])
    header = ["engine", "chars billed", "cost (EUR)", "sentences/s", "gold chrF", "chrF 95% CI", "chrF vs best",
              "gold BLEU", "BLEU 95% CI", "BLEU vs best", "flagged rows", "kept by the drop policy"]
    legend = ("Each figure is also in a table below. CI: sacrebleu's paired bootstrap (1,000 resamples, its fixed "
              "seed), the 95% interval around the resampled mean; vs best: its p-value against the engine with the "
              "best score on that metric, 'differs' when p < 0.05. Kept: rows that no flag of the engine's drop "
              "policy ([shards] default_policy / policy) keeps out of the shards. n/a: the engine does not "
              "translate (an import) or sent nothing in this run.")
    return DecisionTable("Decision table (one row per engine)", header, cells, legend)
