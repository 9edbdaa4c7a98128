"""The whole neural path through `ptvl run`, with the tiny fixture checkpoints standing in for COMET-22 and
CometKiwi (tests/fixtures/comet/) and a tiny local variety classifier: QE of every translated string,
COMET on the gold set in the report, the QE plot, the variety evidence, and a rerun that scores nothing.
(min_qe in the shards: tests/test_neural_scores.py, on build_caption_shards itself.)"""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from tests.test_neural_scores import _tiny_classifier
from tests.test_pipeline import ptvl, write_config

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "comet"
MIN_QE = 0.0


@pytest.fixture(scope="module")
def neural_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("neural")
    variety = _tiny_classifier(tmp / "variety", (0.0, 6.0))  # P(PT-BR) ~0.998 for every text
    extra = f"""
[curate]
comet_model = "{FIXTURE / 'regression'}"
qe_model = "{FIXTURE / 'unified'}"
variety_model = "{variety}"
neural_batch_size = 16

[shards]
min_qe = {MIN_QE}
"""
    cfg = write_config(tmp, extra, datasets='[datasets.coco]\nenabled = false\n[datasets.visdial]\nenabled = false\n'
                                          '[datasets.vqav2]\nenabled = false\n')
    res = ptvl("run", "--config", str(cfg), "--until", "curate", "--workers", "1")
    assert res.returncode == 0, res.stderr[-4000:]
    return tmp


def test_qe_covers_every_translated_string_once(neural_run: Path) -> None:
    run = neural_run / "run"
    translated = pl.concat([pl.read_parquet(p) for p in sorted((run / "translated" / "reference").glob("*/*.parquet"))
                            if not p.name.endswith(("set_aside.parquet", "context.parquet"))])
    distinct = translated.filter(pl.col("text_pt").is_not_null())["text_hash"].n_unique()
    summary = json.loads((run / "neural" / "reference" / "_QE.json").read_text())
    assert summary["strings"] == distinct == summary["computed"] and summary["cached"] == 0
    qe = pl.read_parquet(run / "neural" / "reference" / "qe.parquet")
    assert qe.height == distinct and qe["qe"].null_count() == 0 and qe["qe"].std() > 0.05


def test_report_has_comet_with_interval_and_the_qe_plot(neural_run: Path) -> None:
    compare = neural_run / "run" / "reports" / "compare"
    md = (compare / "comparison.md").read_text()
    assert "## COMET against the gold PT-PT set" in md and "are off" not in md and "is off" not in md
    section = md[md.index("## COMET against the gold PT-PT set"):]
    row = next(line for line in section.splitlines() if line.startswith("| (yardstick) gold PT-BR variant |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    gold = pl.read_parquet(neural_run / "run" / "neural" / "gold_comet.parquet")
    assert float(cells[1]) == pytest.approx(gold["comet"].mean(), abs=1e-4) and cells[2].startswith("± ")
    assert cells[4] == "59.54" and cells[6] == str(gold.height)  # beside its chrF; every gold sentence scored
    assert "## Quality estimation of every translated string" in md and f"below min_qe {MIN_QE:g}" in md
    html = (compare / "comparison.html").read_text()
    assert "QE distribution per engine" in html and html.count("data:image/png;base64,") == 4


def test_variety_model_is_evidence_in_the_translated_flags(neural_run: Path) -> None:
    translated = pl.read_parquet(neural_run / "run" / "translated" / "reference" / "cc3m" / "validation.parquet")
    clean = translated.filter(~pl.col("flags").list.contains("empty") & ~pl.col("flags").list.contains("untranslated"))
    reasons = clean.select(pl.col("flag_reasons").list.join(" | ")).to_series().to_list()
    assert clean.height and all("variety model P(PT-BR) 1.00" in r or "variety model P(PT-BR) 0.99" in r
                                for r in reasons)
    assert clean["flags"].list.contains("brazilian").all()


def test_rerun_scores_nothing(neural_run: Path) -> None:
    run = neural_run / "run"
    before = json.loads((run / "neural" / "reference" / "_QE.json").read_text())
    # The outputs gone (the report too, or Luigi would not look below it), the caches kept: the tasks run
    # again and find every score in their cache.
    for p in (run / "neural" / "reference" / "_QE.json", run / "neural" / "_GOLD_COMET.json",
              run / "reports" / "compare" / "comparison.html"):
        p.unlink()
    res = ptvl("run", "--config", str(neural_run / "small.toml"), "--until", "curate", "--workers", "1")
    assert res.returncode == 0, res.stderr[-4000:]
    after = json.loads((run / "neural" / "reference" / "_QE.json").read_text())
    assert after["computed"] == 0 and after["cached"] == before["strings"] == after["strings"]
    gold = json.loads((run / "neural" / "_GOLD_COMET.json").read_text())
    assert all(v["computed"] == 0 and v["cached"] > 0 for v in gold["systems"].values())
