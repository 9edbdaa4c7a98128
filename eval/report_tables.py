"""Every results table of a set of evaluated runs, as one Markdown text: what `ptvl table` and `ptvl retrain`
print and the run report (reports/README.md) embeds.

One loop for all of them, so a new table (or a new benchmark in the common-subset section) shows up
everywhere at once.  The text is returned, not printed: the caller decides where it goes.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from eval.common_subset import CommonSubsetError, common_subset_runs
from eval.tables import RunMetrics, ablation_table, table_5_3, table_5_4, table_5_5, table_vqa
from ptvl_io import write_text_atomic

# (benchmark, kind) of the ablation tables rendered by default: the COCO captioning layout of chapters 6-7.
DEFAULT_ABLATIONS: tuple[tuple[str, str], ...] = (("coco", "captioning"),)

# The thesis tables re-rendered on the common subset, each when one of its benchmarks was re-scored.
# Table 5.4 is not among them: captioning is not re-scored on the common subset (eval.common_subset).
_COMMON_SUBSET_TABLES: tuple[tuple[Callable[..., str], frozenset[str]], ...] = (
    (table_5_3, frozenset({"cc3m-val", "coco"})),
    (table_5_5, frozenset({"visdial"})),
    (table_vqa, frozenset({"vqav2"})),
)


def _comment(text: str) -> str:
    """An HTML comment: invisible once the Markdown is rendered, so the other tables still read cleanly, yet
    the reason is in the file for whoever wonders where a table went.  "--" cannot appear inside one (a run
    named "a-->b" would end it early and show the rest), so it is broken up."""
    return "<!-- " + text.replace("--", "- -") + " -->"


def _render(name: str, render: Callable[[], str]) -> str:
    """One table, or a comment saying why it could not be made (a run record lacking a field it needs)."""
    try:
        return render()
    except (KeyError, ValueError) as e:
        return _comment(f"{name}: {e}")


def render_run_tables(rows: Sequence[RunMetrics], labels: tuple[str, ...] = (), *,
                      ablations: Sequence[tuple[str, str]] = DEFAULT_ABLATIONS) -> str:
    """Tables 5.3, 5.4, 5.5 and VQAv2 over `rows` (records as eval.benchmarks.collect_runs returns them), the
    ablation layout of each (benchmark, kind) in `ablations` that some run evaluated, and, when runs of
    different engines were evaluated, the same tables re-scored on the items all engines have.

    Rows are labelled by LLM and engine, plus `labels` (of bridge, layer, k) and whichever of those differ
    between runs that LLM and engine do not tell apart.  A table that cannot be made becomes an HTML
    comment with the reason; so does a common subset that cannot be formed.  Markdown, ending in a newline."""
    rows = list(rows)
    parts = [_render(render.__name__, lambda render=render: render(rows, labels=labels))
             for render in (table_5_3, table_5_4, table_5_5, table_vqa)]
    for bench, kind in ablations:
        if any(bench in r["metrics"] or bench in r.get("expected", ()) for r in rows):
            parts.append(_render(f"ablation_table {bench} {kind}", lambda b=bench, k=kind: ablation_table(rows, b, k)))
    try:
        common = common_subset_runs(rows)
    except CommonSubsetError as e:
        common = []
        parts.append(_comment(f"common subset: {e}"))
    if common:
        parts.append("## Common subset of all engines")
        present = {b for r in common for b in r["metrics"]}
        for render, needs in _COMMON_SUBSET_TABLES:
            if present & needs:
                parts.append(_render(f"{render.__name__} (common subset)", lambda render=render: render(common)))
    return "\n\n".join(parts) + "\n"


def write_run_tables(rows: Sequence[RunMetrics], out: Path | None, labels: tuple[str, ...] = (), *,
                     ablations: Sequence[tuple[str, str]] = DEFAULT_ABLATIONS) -> str:
    """render_run_tables, also written to `out` (atomically) when it is given; returns the text."""
    text = render_run_tables(rows, labels, ablations=ablations)
    if out is not None:
        write_text_atomic(out, text)
    return text
