"""Markdown that ptvl writes holds data (captions, translations, source lines, reasons) in table cells, and a
viewer that renders raw HTML without sanitising it would run a hostile caption.  Every writer puts data
through `ptvl_io.formatting.md_cell`: the comparison report, the availability table, the token statistics
(Table 5.2), the dataset card and the quarantine report."""
from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.availability import render_markdown
from pipeline.cards import write_dataset_card
from pipeline.reports.compare import render_comparison
from pipeline.tasks.report import write_quarantine_report
from ptvl_io.formatting import md_cell, md_code
from translation.tokstats import render_table_5_2, token_stats

# The 8 forms the probe used, more or less: tags, handlers, comments, entities, a pipe, a backtick.
HOSTILE = ['<script>alert(1)</script>', '<img src=x onerror=alert(2)>', '"><svg onload=alert(3)>',
           '<!--<script>', '</td></tr></table><iframe src=javascript:alert(4)>', 'a | b `code` c',
           '<a href="javascript:alert(5)">x</a>', '&lt;b&gt; already escaped &amp;']
RAW = re.compile(r"<\s*/?\s*(script|img|svg|iframe|a|td|tr|table|b)\b|<!--", re.I)


def _cells(md: str) -> list[str]:
    """The cells of every pipe table, header rows included (separator lines left out)."""
    out = []
    for line in md.splitlines():
        if line.startswith("|") and not re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line):
            out += [c for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
    return out


def test_md_cell_and_md_code() -> None:
    assert md_cell('<img src=x onerror=alert(1)> | a\nb `c`') == \
        "&lt;img src=x onerror=alert(1)&gt; &#124; a b &#96;c&#96;"
    assert md_cell("&lt;") == "&amp;lt;"  # shown as typed, not as "<"
    assert md_code("deepl:en>pt|x") == "`deepl:en>pt\\|x`" and md_code("a`b") == "``a`b``"


def test_the_comparison_report_shows_hostile_text_as_text(tmp_path: Path) -> None:
    n = len(HOSTILE)
    translated = {e: pl.DataFrame({
        "segment_id": [f"cc3m/validation/{i}" for i in range(n)], "dataset": "cc3m", "split": "validation",
        "item_id": [f"cc3m/validation/{i}" for i in range(n)], "field": "caption", "text_en": HOSTILE,
        "text_hash": "h", "engine": e, "engine_id": e + ":t", "text_pt": [f"{e} {t}" for t in HOSTILE],
        "score": pl.Series([None] * n, dtype=pl.Float32)}) for e in ("good", "bad")}
    paths = render_comparison(tmp_path, translated=translated,
                              token_stats=token_stats([t.lazy() for t in translated.values()]), gold_scores={},
                              billing={}, throughput={}, seed=0, n_random=n, n_worst=n)
    md = paths.markdown.read_text(encoding="utf-8")
    assert not RAW.search(md), RAW.search(md)
    for text in HOSTILE:  # every payload is there, as text
        assert md_cell(text) in md
    # header + n rows of 4 cells (segment, EN, two engines): no cell split by a pipe
    assert len(_cells(md.split("## Random examples")[1].split("##")[0])) == (n + 1) * 4
    page = paths.html.read_text(encoding="utf-8")
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_the_availability_table_tokstats_and_card_escape_their_data(tmp_path: Path) -> None:
    table = pl.DataFrame({"reason": ["read:<script>x</script>", "ok"], "train<img src=x>": [1, 2]})
    md = render_markdown(table)
    assert not RAW.search(md) and "read:&lt;script&gt;x&lt;/script&gt;" in md and "train&lt;img src=x&gt;" in md
    stats = pl.DataFrame({"dataset": ["<svg onload=alert(1)>"], "split": ["val"], "column": ["<b>engine</b>"],
                          "samples": [2], "tokens": [10], "tokens_per_sample": [5.0]})
    md = render_table_5_2(stats)
    assert not RAW.search(md) and "&lt;b&gt;engine&lt;/b&gt;" in md
    card = write_dataset_card(tmp_path, dataset="cc3m", split="train", engine="x<script>", engine_id="x:en>pt",
                              layout="caption rows", policy=["untranslated"],
                              stats={"total": 1, "kept": 1, "dropped_read:<img src=x onerror=alert(1)>": 3,
                                     "files": ["<iframe src=y>.parquet"]},
                              availability_md=None).read_text()
    assert not RAW.search(card.split("## Licence")[0].replace("`x<script>`", "")), card
    assert "`x<script>` (`x:en>pt`)" in card  # a code span shows the engine exactly and is never markup
    assert "| read:&lt;img src=x onerror=alert(1)&gt; | 3 |" in card


@pytest.mark.parametrize("detail", HOSTILE)
def test_the_quarantine_report_escapes_source_lines(tmp_path: Path, detail: str) -> None:
    folder = tmp_path / "sources" / "cc3m" / "train"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"line": [3], "reason": ["bad_url<script>"], "detail": [detail]}),
                   folder / "quarantine.parquet")
    assert write_quarantine_report(tmp_path, [("cc3m", "train")], tmp_path / "quarantine.md") == 1
    md = (tmp_path / "quarantine.md").read_text()
    assert not RAW.search(md), md
    row = next(line for line in md.splitlines() if line.startswith("| bad_url"))
    assert len(_cells(row)) == 3 and md_cell(f"3: {detail}") in row
