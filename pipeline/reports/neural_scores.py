"""The comparison report's neural-metric section: COMET on the gold set beside chrF/BLEU (with a bootstrap
95% interval), the QE distribution per engine (a table and a plot), and a note saying what is off and how
to turn it on.  Pure: the scores come in as DataFrames, a `NeuralSection` (Markdown + HTML) goes out for
`render_comparison` to append.
"""
from __future__ import annotations

import html
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # headless, as compare.py: pyplot must not pick a display backend first
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from pipeline.reports.compare import _html_table, _markdown, _png, _Table  # noqa: E402
from translation.neural_scoring import corpus_comet  # noqa: E402


@dataclass(frozen=True)
class NeuralSection:
    markdown: str
    html: str


HOW_TO = ("set `[curate] comet_model` (e.g. \"Unbabel/wmt22-comet-da\", Apache-2.0) for COMET-22 on the gold "
          "set, and `[curate] qe_model` (e.g. \"Unbabel/wmt22-cometkiwi-da\", CC BY-NC-SA 4.0) for CometKiwi QE "
          "of every translated string; a checkpoint folder works too (README, Neural metrics)")


def _off_note(comet_model: str | None, qe_model: str | None) -> str | None:
    off = [name for name, model in (("COMET on the gold set", comet_model), ("QE", qe_model)) if model is None]
    if not off:
        return None
    return f"{' and '.join(off)} {'is' if len(off) == 1 else 'are'} off: " + HOW_TO + "."


def comet_table(gold_comet: pl.DataFrame, gold_scores: dict[str, dict], model: str) -> _Table:
    """One row per system: COMET (mean of segments, sacrebleu bootstrap 95% interval) beside chrF and BLEU."""
    rows = []
    for name in sorted(set(gold_comet["engine"].to_list())):
        figures = corpus_comet(gold_comet.filter(pl.col("engine") == name)["comet"].to_list())
        chrf = gold_scores.get(name, {})
        rows.append([name, f"{figures['comet']:.4f}", f"± {figures['ci']:.4f}",
                     f"[{figures['low']:.4f}, {figures['high']:.4f}]",
                     f"{chrf['chrf']:.2f}" if "chrf" in chrf else "n/a",
                     f"{chrf['bleu']:.2f}" if "bleu" in chrf else "n/a", str(figures["n"])])
    return _Table(f"COMET against the gold PT-PT set ({model}; 95% bootstrap interval, 1000 resamples)",
                  ["engine", "COMET", "95% CI", "interval", "chrF", "BLEU", "sentences"], rows)


def qe_table(qe: dict[str, pl.DataFrame], model: str, min_qe: float | None) -> _Table:
    header = ["engine", "strings", "mean QE", "p10", "median", "p90"]
    if min_qe is not None:
        header.append(f"below min_qe {min_qe:g}")
    rows = []
    for engine, frame in sorted(qe.items()):
        v = frame["qe"].drop_nulls().to_numpy()
        if not len(v):
            rows.append([engine, "0"] + ["n/a"] * (len(header) - 2))
            continue
        p10, p50, p90 = np.percentile(v, [10, 50, 90])
        row = [engine, f"{len(v):,}", f"{v.mean():.4f}", f"{p10:.4f}", f"{p50:.4f}", f"{p90:.4f}"]
        if min_qe is not None:
            row.append(f"{100 * float((v < min_qe).mean()):.1f}%")
        rows.append(row)
    return _Table(f"Quality estimation of every translated string ({model})", header, rows)


def qe_plot(qe: dict[str, pl.DataFrame], min_qe: float | None) -> str:
    """Base64 PNG: one step histogram of QE per engine (shared bins), the drop threshold dotted."""
    values = {e: f["qe"].drop_nulls().to_numpy() for e, f in sorted(qe.items())}
    lo = min((v.min() for v in values.values() if len(v)), default=0.0)
    hi = max((v.max() for v in values.values() if len(v)), default=1.0)
    bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 41)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for engine, v in values.items():
        ax.hist(v, bins=bins, histtype="step", linewidth=1.5, label=f"{engine} (n={len(v):,})")
    if min_qe is not None:
        ax.axvline(min_qe, color="grey", linestyle=":", label=f"min_qe {min_qe:g}")
    ax.set(xlabel="QE score", ylabel="strings", title="QE distribution per engine")
    ax.legend()
    return _png(fig)


def neural_section(*, comet_model: str | None, qe_model: str | None, gold_comet: pl.DataFrame | None,
                   gold_scores: dict[str, dict], qe: dict[str, pl.DataFrame], min_qe: float | None) -> NeuralSection:
    """The section for the models that are on; for those off, one note saying how to turn them on."""
    md, parts = ["## Neural metrics", ""], ["<h2>Neural metrics</h2>"]
    note = _off_note(comet_model, qe_model)
    if note:
        md += [note, ""]
        parts.append(f"<p>{html.escape(note)}</p>")
    tables = []
    if comet_model is not None and gold_comet is not None and gold_comet.height:
        tables.append(comet_table(gold_comet, gold_scores, comet_model))
    if qe_model is not None and qe:
        tables.append(qe_table(qe, qe_model, min_qe))
    for t in tables:
        md.append(_markdown(t))
        parts.append(_html_table(t))
    if qe_model is not None and qe:
        title = "QE distribution per engine"
        parts.append(f'<h2>{title}</h2><img alt="{title}" src="data:image/png;base64,{qe_plot(qe, min_qe)}">')
    return NeuralSection("\n".join(md), "\n".join(parts))
