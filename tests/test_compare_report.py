"""The comparison report: a good and a bad fake engine; the bad one's failures are flagged and highlighted."""
from __future__ import annotations

import re

import polars as pl
import pytest

from pipeline.reports.compare import render_comparison
from translation.gold import load_gold
from translation.scoring import compare_on_gold
from translation.tokstats import token_stats

N_EACH = 4  # rows of each failure kind in the bad engine


def _translated(engine: str, en: list[str], pt: list[str]) -> pl.DataFrame:
    n = len(en)
    return pl.DataFrame({
        "segment_id": [f"cc3m/validation/{i:03d}" for i in range(n)], "dataset": "cc3m", "split": "validation",
        "item_id": [f"cc3m/validation/{i:03d}" for i in range(n)], "field": "caption", "text_en": en,
        "text_hash": "h", "engine": engine, "engine_id": engine + ":test", "text_pt": pt,
        "score": pl.Series([None] * n, dtype=pl.Float32),
    })


@pytest.fixture(scope="module")
def engines():
    gold = load_gold().filter(pl.col("style") == "cc3m", pl.col("pt_pt") != pl.col("pt_br"))
    gold = gold.filter(pl.col("en").str.len_chars() >= 40).head(4 * N_EACH + 4)
    en, pp, pb = gold["en"].to_list(), gold["pt_pt"].to_list(), gold["pt_br"].to_list()
    bad = []
    for i, (e, p, b) in enumerate(zip(en, pp, pb, strict=True)):
        kind = i // N_EACH
        if kind == 0:
            bad.append(b)  # Brazilian
        elif kind == 1:
            bad.append(e)  # untranslated
        elif kind == 2:
            bad.append(" ".join(p.split()[:2]))  # truncated
        elif kind == 3:
            bad.append(p + " " + " ".join(p.split()[-2:] * 4))  # repetitive
        else:
            bad.append(p)  # fine
    return {"good": _translated("good", en, pp), "bad": _translated("bad", en, bad)}, gold


@pytest.fixture(scope="module")
def report(engines, tmp_path_factory):
    translated, gold = engines
    out = tmp_path_factory.mktemp("report")
    stats = token_stats([translated["good"].lazy(), translated["bad"].lazy()])
    scores = compare_on_gold({e: translated[e]["text_pt"].to_list() for e in translated}, gold["pt_pt"].to_list())
    paths = render_comparison(
        out, translated=translated, token_stats=stats, gold_scores=scores,
        billing={"good": {"chars": 1_234_567, "deepl_chars": 1_234_600, "twice_chars": 33, "eur": 24.69},
                 "bad": {"chars": 0, "eur": 0.0}},
        throughput={"good": 12.5, "bad": 310.25}, seed=3, n_random=4, n_worst=6,
    )
    return paths, stats, scores, out


def _md_row(md: str, first_cell: str) -> list[str]:
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r}")


def test_files_written_atomically(report):
    paths, _, _, out = report
    assert paths.html == out / "comparison.html" and paths.markdown == out / "comparison.md"
    assert sorted(p.name for p in out.iterdir()) == ["comparison.html", "comparison.md"]  # no temp files left


def test_flag_rates_table(report):
    md = report[0].markdown.read_text(encoding="utf-8")
    section = md.split("## Flag rates per engine")[1].split("##")[0]
    bad, good = _md_row(section, "bad"), _md_row(section, "good")
    # columns: engine, rows, empty, untranslated, brazilian, truncated, repetitive, overgeneration, low_score,
    # any flag, kept by the drop policy (the default drops empty, untranslated and overgeneration rows)
    share = f"{100 * N_EACH / (4 * N_EACH + 4):.1f}%"
    assert bad[1] == str(4 * N_EACH + 4)
    assert bad[2:] == ["0.0%", share, share, share, share, "0.0%", "0.0%",
                       f"{100 * 4 * N_EACH / (4 * N_EACH + 4):.1f}%", f"{100 * (3 * N_EACH + 4) / (4 * N_EACH + 4):.1f}%"]
    assert good[2:] == ["0.0%"] * 8 + ["100.0%"]


def test_examples_side_by_side_with_flags(report, engines):
    translated, _ = engines
    md = report[0].markdown.read_text(encoding="utf-8")
    worst = md.split("## Worst cases")[1].split("##")[0]
    header_line = next(line for line in worst.splitlines() if line.startswith("| segment"))
    header = [c.strip() for c in header_line.strip("|").split("|")]
    assert header == ["segment", "source (EN)", "bad", "good"]
    rows = [line for line in worst.splitlines() if line.startswith("| cc3m/")]
    assert len(rows) == 6
    assert all("**⚑ " in r.split("|")[3] for r in rows) and not any("⚑" in r.split("|")[4] for r in rows)
    random = md.split("## Random examples (Table 5.1 style, seed 3)")[1].split("##")[0]
    assert len([line for line in random.splitlines() if line.startswith("| cc3m/")]) == 4


def test_html_highlights_and_is_self_contained(report):
    page = report[0].html.read_text(encoding="utf-8")
    for flag in ("brazilian", "untranslated", "truncated", "repetitive"):
        assert re.search(rf'<td class="flagged">[^<]*<br><span class="flag flag-{flag}" title="{flag}: ', page), flag
    assert page.count('src="data:image/png;base64,') == 3
    assert not re.search(r"(src|href)=\"(?!data:)", page)  # nothing fetched from elsewhere
    assert "http://" not in page and "https://" not in page and "<script" not in page and "<link" not in page
    assert "ônibus" in page or "celular" in page  # the Brazilian output is shown as text
    assert "<th>bad</th><th>good</th>" in page


def test_numbers_in_tables(report):
    _, stats, scores, _ = report
    md = report[0].markdown.read_text(encoding="utf-8")
    ts = md.split("## Token statistics (Table 5.2 style)")[1].split("##")[0]
    english = stats.filter(pl.col("column") == "English").row(0, named=True)
    good = stats.filter(pl.col("column") == "good").row(0, named=True)
    assert _md_row(ts, "cc3m / validation")[1:] == ["samples", str(english["samples"]), str(english["samples"]),
                                                     str(good["samples"])]
    gold_section = md.split("## chrF and BLEU")[1].split("##")[0]
    # engine, chrF, its 95% CI, vs best, BLEU, its 95% CI, vs best, sentences
    assert _md_row(gold_section, "good")[1:] == ["100.00", "100.00-100.00", "best", "100.00", "100.00-100.00", "best",
                                                 str(4 * N_EACH + 4)]
    bad = _md_row(gold_section, "bad")
    assert float(bad[1]) == pytest.approx(scores["bad"]["chrf"], abs=0.01) and float(bad[1]) < 90
    low, high = map(float, bad[2].split("-"))
    assert low < float(bad[1]) < high and high < 100  # the interval holds the score and stays below the best
    assert re.fullmatch(r"p=0\.\d{3} \(differs\)", bad[3]) and scores["bad"]["chrf_p"] < 0.05
    # billed (memory), billed (DeepL), possibly billed twice, paid twice, cost; "n/a" for an engine DeepL did
    # not bill
    assert "| good | 1,234,567 | 1,234,600 | 33 | 0 | 24.69 |" in md and "| bad | 0 | n/a | 0 | 0 | 0.00 |" in md
    assert "| bad | 310.2 |" in md or "| bad | 310.3 |" in md
    assert "sacrebleu signatures: `nrefs:1|" in md


def test_same_seed_same_report(engines, report, tmp_path):
    translated, _ = engines
    paths, stats, scores, _ = report
    again = render_comparison(tmp_path, translated=translated, token_stats=stats, gold_scores=scores,
                              billing={}, throughput={}, seed=3, n_random=4, n_worst=6)
    def examples(path):  # the random and worst examples (the decision table above them shows the billing)
        return path.read_text(encoding="utf-8").split("## Random examples")[1].split("## Flag rates")[0]

    assert examples(again.markdown) == examples(paths.markdown)


def test_decision_table_repeats_the_figures_below(report):
    md = report[0].markdown.read_text(encoding="utf-8")
    assert md.index("## Decision table") < md.index("## Random examples")
    top = md.split("## Decision table (one row per engine)")[1].split("##")[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in top.splitlines()
            if line.startswith("| good") or line.startswith("| bad")]
    assert [r[0] for r in rows] == ["good", "bad"]  # best gold chrF first

    def section(title):
        return md.split(f"## {title}")[1].split("\n## ")[0]

    for row in rows:
        engine = row[0]
        billing = _md_row(section("Characters billed"), engine)
        flags = _md_row(section("Flag rates per engine"), engine)
        gold = _md_row(section("chrF and BLEU"), engine)
        assert row[1] == (billing[2] if billing[2] != "n/a" else billing[1])  # DeepL's count where there is one
        assert row[2] == billing[5]  # cost
        assert row[3] == _md_row(section("Throughput"), engine)[1]
        assert row[4:10] == gold[1:7]  # chrF, CI, vs best, BLEU, CI, vs best
        assert row[10].split(" ")[0] == flags[-2] and row[11] == flags[-1]  # any flag, kept by the policy
    assert rows[0][1:4] == ["1,234,600", "24.69", "12.5"]
    assert rows[1][3] in ("310.2", "310.3")
    assert rows[1][10].startswith("80.0% (") and "repetitive 20.0%" in rows[1][10]
    assert "paired bootstrap" in top


def test_an_unexplained_billing_difference_comes_first(engines, tmp_path):
    """The reconciliation's warning opens both files, before any table (pipeline.billing.Billing.warning)."""
    translated, _ = engines
    warning = "good: DeepL counted 1,300 characters while the parts ran, the memory 1,234: +66 characters unexplained"
    paths = render_comparison(
        tmp_path, translated=translated, token_stats=token_stats([translated["good"].lazy()]), gold_scores={},
        billing={"good": {"chars": 1_234, "deepl_chars": 1_300, "twice_chars": 0, "warning": warning, "eur": 0.03},
                 "bad": {"chars": 0, "eur": 0.0}},
        throughput={}, seed=3)
    md, page = paths.markdown.read_text(encoding="utf-8"), paths.html.read_text(encoding="utf-8")
    assert md.index("**Billing warning:** " + warning) < md.index("Engines:") < md.index("## Random examples")
    assert page.index("Billing warning:</strong> " + warning) < page.index("<table")
    quiet = render_comparison(tmp_path / "quiet", translated=translated,
                              token_stats=token_stats([translated["good"].lazy()]), gold_scores={},
                              billing={"good": {"chars": 1_234, "deepl_chars": 1_234, "eur": 0.03}}, throughput={})
    assert "Billing warning" not in quiet.markdown.read_text(encoding="utf-8")
