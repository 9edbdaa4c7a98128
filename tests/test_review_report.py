"""Flag verdicts and reviewed gold rows in the comparison report: precision = confirmed / (confirmed + false
alarms) per engine and flag, counted on the strings the engine flagged, labelled as human review."""
from __future__ import annotations

import polars as pl
import pyarrow as pa

from pipeline.contracts import TRANSLATED
from pipeline.human_review import flag_verdict_figures, review_figures
from pipeline.reports.compare import render_comparison
from translation.overlay import HumanOverlay
from translation.textkey import text_hash
from translation.tokstats import token_stats

# (EN, PT, flags) of one engine: four strings flagged brazilian, one untranslated, one clean
ROWS = [
    ("people on the bus", "pessoas no ônibus", ["brazilian"]),
    ("a man at the station", "um homem na estação de trem", ["brazilian"]),
    ("a girl with her team", "uma menina com seu time", ["brazilian"]),
    ("a cup of coffee", "uma xícara de café", ["brazilian"]),
    ("a red car", "a red car", ["untranslated"]),
    ("a brown dog", "um cão castanho", []),
]


def _translated(engine: str, rows=ROWS) -> pl.DataFrame:
    return pl.from_arrow(pa.Table.from_pylist([
        {"segment_id": f"cc3m/validation/{i}", "dataset": "cc3m", "split": "validation",
         "item_id": f"cc3m/validation/{i}", "field": "caption", "text_en": en, "text_hash": text_hash(en),
         "engine": engine, "engine_id": f"{engine}:test", "text_pt": pt, "score": None, "flags": flags,
         "flag_reasons": ["x"] * len(flags)} for i, (en, pt, flags) in enumerate(rows)], schema=TRANSLATED))


def _verdicts(root) -> None:
    with HumanOverlay(root / "memory" / "human.sqlite") as ov:
        def say(engine: str, i: int, flag: str, verdict: str) -> None:
            ov.record_verdict(engine_id=f"{engine}:test", text_hash=text_hash(ROWS[i][0]), flag=flag, verdict=verdict,
                              who="ana")
        say("opus", 0, "brazilian", "confirmed")
        say("opus", 1, "brazilian", "false_alarm")
        say("opus", 1, "brazilian", "confirmed")  # changed mind: the latest verdict counts
        say("opus", 2, "brazilian", "false_alarm")
        say("opus", 4, "untranslated", "confirmed")
        say("opus", 5, "brazilian", "false_alarm")  # a flag the row does not raise: not counted
        say("madlad", 0, "brazilian", "false_alarm")
        ov.add_gold(text_hash=text_hash(ROWS[5][0]), text_en=ROWS[5][0], text_pt="um cão castanho", style="cc3m",
                    who="ana", from_engine="opus:test")
        ov.add_gold(text_hash=text_hash(ROWS[3][0]), text_en=ROWS[3][0], text_pt="uma chávena de café", style="cc3m",
                    who="ana", from_engine=None)


def test_flag_verdict_figures_count_latest_verdicts_on_flagged_strings(tmp_path):
    _verdicts(tmp_path)
    with HumanOverlay(tmp_path / "memory" / "human.sqlite", read_only=True) as ov:
        rows = flag_verdict_figures(_translated("opus"), ov.verdicts("opus:test"))
    assert rows == [
        {"flag": "brazilian", "flagged": 4, "reviewed": 3, "confirmed": 2, "false_alarms": 1, "precision": 2 / 3},
        {"flag": "untranslated", "flagged": 1, "reviewed": 1, "confirmed": 1, "false_alarms": 0, "precision": 1.0},
    ]


def test_report_shows_review_precision_and_reviewed_gold(tmp_path):
    _verdicts(tmp_path)
    translated = {"opus": _translated("opus"), "madlad": _translated("madlad")}
    review = review_figures(tmp_path, translated)
    assert review["gold_rows"] == 2 and review["gold"]["opus"]["n"] == 2
    assert review["flags"]["madlad"] == [{"flag": "brazilian", "flagged": 4, "reviewed": 1, "confirmed": 0,
                                          "false_alarms": 1, "precision": 0.0}]
    paths = render_comparison(tmp_path / "report", translated=translated,
                              token_stats=token_stats([t.lazy() for t in translated.values()]), gold_scores={},
                              billing={}, throughput={}, review=review)
    md = paths.markdown.read_text(encoding="utf-8")
    section = md.split("## Flag precision from human review (5 verdicts)")[1].split("##")[0]
    lines = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("|")]
    assert lines[2:] == [["madlad", "brazilian", "4", "1", "0", "1", "0.00"],
                         ["opus", "brazilian", "4", "3", "2", "1", "0.67"],
                         ["opus", "untranslated", "1", "1", "1", "0", "1.00"]]
    assert "## chrF and BLEU against the reviewed gold (2 rows added in review" in md
    gold = md.split("reviewed gold (2 rows")[1].split("##")[0]
    assert "| opus |" in gold and "| 2 |" in gold
    assert "Flag precision from human review (5 verdicts)" in paths.html.read_text(encoding="utf-8")


def test_no_review_no_tables(tmp_path):
    translated = {"opus": _translated("opus")}
    review = review_figures(tmp_path, translated)
    assert review["flags"] == {} and review["gold"] == {} and review["gold_rows"] == 0
    paths = render_comparison(tmp_path / "r", translated=translated, token_stats=token_stats([translated["opus"].lazy()]),
                              gold_scores={}, billing={}, throughput={}, review=review)
    assert "human review" not in paths.markdown.read_text(encoding="utf-8")
