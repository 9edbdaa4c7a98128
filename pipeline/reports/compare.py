"""The translator comparison report: one self-contained HTML file plus Markdown tables (thesis Tables 5.1, 5.2).

Pure functions: the data comes in as DataFrames and dicts, two files go out (written atomically).
"""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on pipeline workers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from pipeline.io import write_text_atomic  # noqa: E402
from pipeline.reports.decision import decision_table, kept_shares, percent, score_cells  # noqa: E402
from pipeline.shards import FilterPolicy  # noqa: E402
from ptvl_io.formatting import md_cell  # noqa: E402
from translation.gold import load_flag_cases
from translation.quality import FLAG_NAMES, FLAGS, QualityThresholds, flag_rates, flag_table  # noqa: E402
from translation.scoring import flag_case_precision_recall
from translation.tokstats import render_table_5_2  # noqa: E402

HTML_NAME = "comparison.html"
MARKDOWN_NAME = "comparison.md"


@dataclass(frozen=True)
class ComparisonPaths:
    """The two files a comparison writes."""

    html: Path
    markdown: Path


@dataclass(frozen=True)
class _Table:
    """A table rendered both ways: `cells` hold plain text; `flags` (same shape, optional) hold
    (flag, reason) pairs to highlight in that cell."""

    title: str
    header: list[str]
    cells: list[list[str]]
    flags: list[list[list[tuple[str, str]]]] | None = None


# --- data preparation --------------------------------------------------------------------------------

def _with_flags(engine: str, df: pl.DataFrame, thresholds: QualityThresholds | None) -> pl.DataFrame:
    if "engine" not in df.columns:
        df = df.with_columns(pl.lit(engine).alias("engine"))
    if "flags" not in df.columns or "flag_reasons" not in df.columns:
        df = flag_table(df, thresholds)
    return df.select("segment_id", "text_en", "engine", "text_pt", "flags", "flag_reasons").with_columns(
        pl.lit(engine).alias("engine")
    )


def _side_by_side(frames: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """One row per segment: text_en, then <engine>, <engine>__flags, <engine>__reasons per engine."""
    base = pl.concat([f.select("segment_id", "text_en") for f in frames.values()]).unique("segment_id")
    for name, f in frames.items():
        base = base.join(
            f.select("segment_id", pl.col("text_pt").alias(name), pl.col("flags").alias(f"{name}__flags"),
                     pl.col("flag_reasons").alias(f"{name}__reasons")),
            on="segment_id", how="left",
        )
    n_flags = pl.sum_horizontal([pl.col(f"{n}__flags").list.len().fill_null(0) for n in frames])
    return base.with_columns(n_flags.alias("n_flags")).sort("segment_id")


def _examples(wide: pl.DataFrame, engines: list[str], ids: list[str], title: str) -> _Table:
    rows = wide.filter(pl.col("segment_id").is_in(ids))
    order = {s: i for i, s in enumerate(ids)}
    rows = rows.with_columns(pl.col("segment_id").replace_strict(order, return_dtype=pl.Int64).alias("_o")).sort("_o")
    cells, flags = [], []
    for r in rows.iter_rows(named=True):
        cells.append([r["segment_id"], r["text_en"]] + [r[e] if r[e] is not None else "" for e in engines])
        flags.append([[], []] + [list(zip(r[f"{e}__flags"] or [], r[f"{e}__reasons"] or [], strict=True))
                                 for e in engines])
    return _Table(title, ["segment", "source (EN)"] + engines, cells, flags)


def _worst_ids(wide: pl.DataFrame, engines: list[str], n: int) -> list[str]:
    """Segments with the most flags; first the worst example of each flag kind, so every failure mode
    present is illustrated, then the rest by flag count (ties by segment id)."""
    worst = wide.filter(pl.col("n_flags") > 0).sort(["n_flags", "segment_id"], descending=[True, False])
    rows = worst.select("segment_id", *[f"{e}__flags" for e in engines]).rows()
    chosen: list[str] = []
    for flag in FLAG_NAMES:
        for seg, *flag_lists in rows:
            if seg not in chosen and any(flag in (fl or []) for fl in flag_lists):
                chosen.append(seg)
                break
    chosen = chosen[:n]
    chosen += [seg for seg, *_ in rows if seg not in chosen][: n - len(chosen)]
    order = {seg: i for i, (seg, *_) in enumerate(rows)}
    return sorted(chosen, key=order.__getitem__)


# --- plots -------------------------------------------------------------------------------------------

def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plots(all_rows: pl.DataFrame, engines: list[str], rates: pl.DataFrame) -> dict[str, str]:
    words = lambda c: pl.col(c).fill_null("").str.count_matches(r"\S+")  # noqa: E731
    en = all_rows.unique("segment_id").select(words("text_en")).to_series().to_numpy()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    top = int(max([en.max(initial=1)] + [all_rows.filter(pl.col("engine") == e).select(words("text_pt"))
                                          .to_series().max() or 1 for e in engines]))
    bins = np.arange(0, top + 2) - 0.5
    ax.hist(en, bins=bins, histtype="step", linewidth=2, label="English")
    for e in engines:
        ax.hist(all_rows.filter(pl.col("engine") == e).select(words("text_pt")).to_series().to_numpy(),
                bins=bins, histtype="step", label=e)
    ax.set(xlabel="words per segment", ylabel="segments", title="Length distribution")
    ax.legend()
    out = {"Length distribution per engine": _png(fig)}

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for e in engines:
        ratio = (all_rows.filter(pl.col("engine") == e)
                 .select(pl.col("text_pt").fill_null("").str.len_chars() / pl.col("text_en").str.len_chars().clip(1))
                 .to_series().to_numpy())
        ax.hist(ratio, bins=np.linspace(0, 3, 31), histtype="step", label=e)
    ax.axvline(1.0, color="grey", linestyle=":")
    ax.set(xlabel="chars(output) / chars(source)", ylabel="segments", title="Length ratio against the source")
    ax.legend()
    out["Length ratio against the source"] = _png(fig)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / max(1, len(engines))
    x = np.arange(len(FLAG_NAMES))
    for i, row in enumerate(rates.iter_rows(named=True)):
        ax.bar(x + i * width, [100 * row[f] for f in FLAG_NAMES], width, label=row["engine"])
    ax.set_xticks(x + width * (len(engines) - 1) / 2, FLAG_NAMES)
    ax.set(ylabel="% of rows", title="Flag rates")
    ax.legend()
    out["Flag rates per engine"] = _png(fig)
    return out


# --- rendering ---------------------------------------------------------------------------------------

def _markdown(t: _Table) -> str:
    lines = [f"## {t.title}", "", "| " + " | ".join(t.header) + " |", "|" + "---|" * len(t.header)]
    for i, row in enumerate(t.cells):
        cells = []
        for j, text in enumerate(row):
            cell = md_cell(text)  # captions and translations are data: no viewer may run them
            found = t.flags[i][j] if t.flags else []
            if found:
                cell += " **⚑ " + ", ".join(f for f, _ in found) + "**"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _html_table(t: _Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.header)
    body = []
    for i, row in enumerate(t.cells):
        tds = []
        for j, text in enumerate(row):
            found = t.flags[i][j] if t.flags else []
            badges = "".join(
                f'<span class="flag flag-{html.escape(f)}" title="{html.escape(reason)}">{html.escape(f)}</span>'
                for f, reason in found
            )
            cls = ' class="flagged"' if found else ""
            tds.append(f"<td{cls}>{html.escape(text)}{'<br>' + badges if badges else ''}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f"<h2>{html.escape(t.title)}</h2>\n<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _from_markdown(title: str, md: str) -> _Table:
    """A _Table from a pipe table whose cells went through md_cell (render_table_5_2's output): split on the
    pipes, entities undone (_html_table escapes them again)."""
    rows = [[html.unescape(c.strip()) for c in line.strip().strip("|").split("|")]
            for line in md.splitlines() if line.startswith("|")]
    if len(rows) < 2:
        return _Table(title, ["(empty)"], [])
    return _Table(title, rows[0], rows[2:])


def _flag_badge_css() -> str:
    """One `.flag-<name>` rule per registered quality flag, in its declared colour (`Flag.colour`)."""
    return "".join(f".flag-{f.name}{{background:{f.colour}}}" for f in FLAGS)


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}
table{border-collapse:collapse;margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}
th{background:#f0f0f0}td.flagged{background:#fff1f0}
.flag{display:inline-block;margin:2px 4px 0 0;padding:0 6px;border-radius:8px;font-size:.8em;color:#fff;background:#c0392b}
""" + _flag_badge_css() + "\n"


def _atomic_write(path: Path, text: str) -> None:
    write_text_atomic(path, text)


def _scoring_lines(scoring: dict[str, str] | None) -> list[str]:
    if not scoring:
        return []
    lines = []
    if "vqa_rule" in scoring:
        lines.append(f"VQA answers ({scoring.get('vqa_mode', '?')}): {scoring['vqa_rule']}")
    if "tie_rule" in scoring:
        lines.append(f"Retrieval and VisDial ties: {scoring['tie_rule']}")
    return lines


def _flag_heldout_table(thresholds: QualityThresholds | None) -> _Table:
    # The flags' own precision/recall on labelled cases nobody tuned on (data_manifests/gold/), under the
    # run's thresholds: how far each flag rate above can be trusted.

    # The first false alarms and misses say what limits a flag that stays under its targets (P 0.9, R 0.8).
    figures = flag_case_precision_recall(load_flag_cases(), thresholds, examples=3)

    def shown(pairs: list[tuple[str, str]]) -> str:
        return "; ".join(f"{en[:40]} -> {pt[:40]}" for en, pt in pairs) or "-"

    return _Table("Quality flags on the held-out labelled cases",
                  ["flag", "precision", "recall", "cases", "false alarms (first 3)", "misses (first 3)"],
                  [[f, f"{r['precision']:.2f}", f"{r['recall']:.2f}", str(r["positives"] + r["negatives"]),
                    shown(r["false_alarms"]), shown(r["misses"])] for f, r in figures.items()])


def _review_tables(review: dict | None) -> list[_Table]:
    """The human review's figures (pipeline.human_review.review_figures): each flag's precision as the
    people judged the rows it raised, and the engines scored on the gold rows added in review.  Nothing
    when nobody reviewed."""
    if not review:
        return []
    tables = []
    flags = review.get("flags") or {}
    n = sum(r["reviewed"] for rows in flags.values() for r in rows)
    if n:
        tables.append(_Table(
            f"Flag precision from human review ({n:,} verdicts)",
            ["engine", "flag", "flagged strings", "reviewed", "confirmed", "false alarms",
             "precision = confirmed / (confirmed + false alarms)"],
            [[e, r["flag"], f"{r['flagged']:,}", f"{r['reviewed']:,}", f"{r['confirmed']:,}",
              f"{r['false_alarms']:,}", f"{r['precision']:.2f}" if r["precision"] is not None else "n/a"]
             for e, rows in sorted(flags.items()) for r in rows]))
    gold = review.get("gold") or {}
    if gold:
        tables.append(_Table(
            f"chrF and BLEU against the reviewed gold ({review.get('gold_rows', 0):,} rows added in review; "
            "each engine's machine text against the approved PT-PT)",
            ["engine", "chrF", "BLEU", "sentences"],
            [[e, f"{s['chrf']:.2f}", f"{s['bleu']:.2f}", str(s["n"])] for e, s in sorted(gold.items())]))
    return tables


def render_comparison(
    out_dir: Path,
    *,
    translated: dict[str, pl.DataFrame],
    token_stats: pl.DataFrame,
    gold_scores: dict[str, dict],
    billing: dict[str, dict],
    throughput: dict[str, float],
    seed: int = 0,
    n_random: int = 5,
    n_worst: int = 5,
    thresholds: QualityThresholds | None = None,
    truncation: dict[str, dict] | None = None,
    scoring: dict[str, str] | None = None,
    review: dict | None = None,
    neural=None,
    drop: dict[str, list[str]] | None = None,
    note: str | None = None,
) -> ComparisonPaths:
    """Write `comparison.html` (self-contained, plots as base64 PNG) and `comparison.md` into `out_dir`.

    translated: engine -> rows with the TRANSLATED columns (flags/flag_reasons are computed when absent).
    token_stats: translation.tokstats.token_stats output.  gold_scores: engine -> score_against_gold dict.
    billing: engine -> {"chars": int (billed, as the memory recorded), "deepl_chars": int | None (DeepL's own
    /v2/usage counter over the run's part attempts; None for engines that do not bill), "twice_chars":
    int (requests that timed out after they were sent, or were in flight when an attempt died: possibly
    billed twice), "paid_twice": int (of those, what DeepL's counter shows was billed), "warning": str |
    None (an unexplained difference: shown at the top of both files), "eur": float}.  throughput: engine ->
    sentences per second.
    truncation: engine -> {"rows": int, "truncated": int, "unique": int} (sources cut at the engine's
    max_input_length, summed over the splits' stats; engines that do not tokenize are left out).
    The random examples are drawn with `seed`; the worst cases are the segments with the most flags
    summed over engines (ties by segment id). scoring: EvalSettings.scoring_labels() of the evaluation that
    compares the engines' models (VQA mode, tie rule), stated in a section of its own.  review:
    pipeline.human_review.review_figures (flag verdicts and reviewed gold from `ptvl review`), shown in
    tables labelled as coming from human review; None or empty: no such tables.  neural: a
    pipeline.reports.neural_scores.NeuralSection (COMET on gold, QE), appended as it comes.  drop: engine -> the
    flags its shard policy drops (default: FilterPolicy's); the share it keeps is shown with the flag rates.
    note: a paragraph under the decision table (the sample says what its numbers mean).  The decision table at
    the top repeats figures of the tables below (pipeline/reports/decision.py).
    """
    if not translated:
        raise ValueError("render_comparison: no engines given")
    engines = sorted(translated)
    frames = {e: _with_flags(e, translated[e], thresholds) for e in engines}
    all_rows = pl.concat(list(frames.values()), how="vertical_relaxed")
    wide = _side_by_side(frames)
    ids = wide["segment_id"].to_list()
    rng = np.random.default_rng(seed)
    random_ids = [ids[i] for i in sorted(rng.choice(len(ids), size=min(n_random, len(ids)), replace=False))]
    worst_ids = _worst_ids(wide, engines, n_worst)

    rates = flag_rates(all_rows)
    kept = kept_shares(all_rows, drop if drop is not None else {e: FilterPolicy().drop for e in engines})
    tables = [
        _examples(wide, engines, random_ids, f"Random examples (Table 5.1 style, seed {seed})"),
        _examples(wide, engines, worst_ids, "Worst cases (most flags across engines)"),
        _Table("Flag rates per engine", ["engine", "rows"] + list(FLAG_NAMES) + ["any flag", "kept by the drop policy"],
               [[r["engine"], f"{r['rows']:,}"] + [percent(r[f]) for f in (*FLAG_NAMES, "any_flag")]
                + [percent(kept[r["engine"]])] for r in rates.iter_rows(named=True)]),
        _Table("chrF and BLEU against the gold PT-PT set (95% CI and p-values: sacrebleu paired bootstrap)",
               ["engine", "chrF", "chrF 95% CI", "chrF vs best", "BLEU", "BLEU 95% CI", "BLEU vs best", "sentences"],
               [[e, *score_cells(s, "chrf"), *score_cells(s, "bleu"), str(s.get("n", ""))]
                for e, s in sorted(gold_scores.items())]),
        _Table("Characters billed and estimated cost",
               ["engine", "billed (memory)", "billed (DeepL)", "possibly billed twice", "paid twice",
                "estimated cost (EUR)"],
               [[e, f"{int(b.get('chars', 0)):,}",
                 f"{int(b['deepl_chars']):,}" if b.get("deepl_chars") is not None else "n/a",
                 f"{int(b.get('twice_chars', 0)):,}", f"{int(b.get('paid_twice', 0)):,}",
                 f"{float(b.get('eur', 0.0)):.2f}"]
                for e, b in sorted(billing.items())]),
        _Table("Throughput", ["engine", "sentences/s"], [[e, f"{v:.1f}"] for e, v in sorted(throughput.items())]),
        _Table("Inputs cut at max_input_length", ["engine", "rows", "truncated rows", "share", "distinct strings"],
               [[e, f"{t['rows']:,}", f"{t['truncated']:,}", f"{100 * t['truncated'] / max(t['rows'], 1):.2f}%",
                 f"{t['unique']:,}"] for e, t in sorted((truncation or {}).items())]),
        _flag_heldout_table(thresholds),
        *_review_tables(review),
    ]
    table_5_2 = render_table_5_2(token_stats)
    signatures = sorted({s["chrf_signature"] for s in gold_scores.values() if "chrf_signature" in s}
                        | {s["bleu_signature"] for s in gold_scores.values() if "bleu_signature" in s})

    # An unexplained billing difference comes first: money is the one thing a reader must not miss.
    warnings = [b["warning"] for _, b in sorted(billing.items()) if b.get("warning")]
    decision = decision_table(engines, rates=rates, kept=kept, gold_scores=gold_scores, billing=billing,
                              throughput=throughput)
    top = _Table(decision.title, decision.header, decision.cells)
    md = ["# Translator comparison", "", *[f"> **Billing warning:** {md_cell(w)}\n" for w in warnings],
          f"Engines: {md_cell(', '.join(engines))}", "", _markdown(top), decision.legend, ""]
    md += [note, ""] if note else []
    md += [_markdown(tables[0]), _markdown(tables[1]), "## Token statistics (Table 5.2 style)", "", table_5_2]
    md += [_markdown(t) for t in tables[2:]]
    if signatures:
        md += ["sacrebleu signatures: " + "; ".join(f"`{s}`" for s in signatures), ""]
    rules = _scoring_lines(scoring)
    if rules:
        md += ["## Evaluation scoring rules", "", *[f"- {line}" for line in rules], ""]
    if neural is not None:
        md += [neural.markdown, ""]

    plots = _plots(all_rows, engines, rates)
    parts = ["<h1>Translator comparison</h1>"]
    parts += [f'<p class="billing-warning"><strong>Billing warning:</strong> {html.escape(w)}</p>' for w in warnings]
    parts += [f"<p>Engines: {html.escape(', '.join(engines))}</p>", _html_table(top),
              f"<p>{html.escape(decision.legend)}</p>" + (f"<p>{html.escape(note)}</p>" if note else "")]
    parts += [_html_table(tables[0]), _html_table(tables[1])]
    parts.append(_html_table(_from_markdown("Token statistics (Table 5.2 style)", table_5_2)))
    parts += [_html_table(t) for t in tables[2:]]
    if signatures:
        parts.append("<p>sacrebleu signatures: " + "; ".join(f"<code>{html.escape(s)}</code>" for s in signatures) + "</p>")
    if rules:
        parts.append("<h2>Evaluation scoring rules</h2><ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in rules)
                     + "</ul>")
    for title, b64 in plots.items():
        parts.append(f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" src="data:image/png;base64,{b64}">')
    if neural is not None:
        parts.append(neural.html)
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Translator comparison</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")

    out_dir = Path(out_dir)
    paths = ComparisonPaths(html=out_dir / HTML_NAME, markdown=out_dir / MARKDOWN_NAME)
    _atomic_write(paths.markdown, "\n".join(md))
    _atomic_write(paths.html, page)
    return paths
