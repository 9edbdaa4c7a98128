"""How a metric or a count is printed for people: model cards (training), results tables (eval), the CLI
and the run report (pipeline) all print numbers, and must print them alike.

Here, at the bottom of the layers, because both `training` (the model card) and `eval` (the tables) need it
and `training` must never import `eval`; the pipeline's reports use it for row counts that are no run's
metric at all.  Beside the atomic writes and the progress bars: the other things every package shows people.
"""
from __future__ import annotations

import re


def is_count(key: str) -> bool:
    """Metrics that count things (VQA's `n`, VisDial's `n_rounds`): whole numbers, not fractions."""
    parts = key.split("_")
    return "n" in parts


def format_metric(key: str, value: object, digits: int = 3) -> str:
    """One metric for people: counts as 90,000 (never 90.000), other floats with `digits` decimals."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int | float) and is_count(key) and float(value).is_integer():
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def md_cell(text: object) -> str:
    """`text` as one Markdown table cell that no viewer can turn into markup: HTML special characters become
    entities (a viewer that renders raw HTML, or does not sanitise it, shows them as text), `|` cannot end the
    cell, and line breaks become spaces.  For data (captions, translations, reasons, file names), never for
    the Markdown ptvl writes on purpose."""
    s = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = s.replace("|", "&#124;").replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    return s.replace("`", "&#96;")


def md_code(text: object) -> str:
    """`text` as an inline code span in a Markdown table cell: shown exactly as it is (a code span is never
    markup, so nothing is HTML-escaped), fenced with more backticks than it holds, `|` escaped so the cell
    does not end (GFM), line breaks as spaces."""
    s = str(text).replace("\r\n", " ").replace("\n", " ").replace("\r", " ").replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall("`+", s)), default=0) + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{fence}{pad}{s}{pad}{fence}"
