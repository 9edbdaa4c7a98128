"""The default profile's comparison: configs/sample.toml (smaller sample, same engines and recipes) through
`ptvl run --until curate`. The DAG trains the sample's three tiny translators on the training captions, converts
them with `convert_model` and runs them through CTranslate2 next to `reference`; the report must show four
engines that differ (flags, gold chrF, worst cases), with the engine ids computable offline from the profile.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from pipeline.review.queues import Queues
from pipeline.review.tables import RunTables
from pipeline.sample.translators import RECIPES
from pipeline.settings import load_settings
from translation.scoring import score_against_gold

pytestmark = pytest.mark.slow  # the sample DAG up to the report (~40 CPU-s: three tiny models trained)
REPO = Path(__file__).resolve().parent.parent
TINY = ["tiny-llm", "tiny-madlad", "tiny-narrativa"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("sample-translators")
    text = (REPO / "configs" / "sample.toml").read_text()
    # The default training split (the recipes are calibrated on it); fewer evaluation strings to translate.
    for key, value in {"n_val = 100": "n_val = 40", "n_coco = 100": "n_coco = 10", "n_dialogs = 50": "n_dialogs = 4"}.items():
        assert key in text
        text = text.replace(key, value)
    profile = tmp / "sample.toml"
    profile.write_text(text.replace('root = "runs/sample"', f'root = "{tmp / "run"}"'))
    res = subprocess.run([sys.executable, "-m", "pipeline", "run", "--config", str(profile), "--until", "curate"],
                         capture_output=True, text=True, timeout=900, cwd=tmp, env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-4000:]
    root = tmp / "run"
    return {"root": root, "profile": profile, "md": (root / "reports" / "compare" / "comparison.md").read_text()}


def _table(md: str, title: str) -> dict[str, list[str]]:
    body = md.split(f"## {title}")[1].split("\n## ")[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in body.splitlines()
            if line.startswith("|") and not line.startswith("|---")]
    return {r[0]: r[1:] for r in rows[1:]}


def test_four_engines_that_differ(run):
    top = _table(run["md"], "Decision table")
    assert sorted(top) == ["reference", *TINY]
    # columns: chars, cost, sentences/s, chrF, CI, vs best, BLEU, CI, vs best, flagged rows, kept
    chrf = {e: float(top[e][3]) for e in TINY}
    flagged = {e: float(top[e][9].split("%")[0]) for e in ["reference", *TINY]}
    print({e: (chrf.get(e), flagged[e], top[e][2]) for e in top})
    assert len(set(chrf.values())) == 3 and len(set(flagged.values())) >= 3
    assert flagged["reference"] == 0.0 and flagged["tiny-madlad"] > 20 > flagged["tiny-narrativa"]
    assert top["tiny-narrativa"][5] == "best" and all(float(top[e][2]) > 0 for e in TINY)
    assert "These are the embedded sample's engines" in run["md"]
    assert _table(run["md"], "Worst cases (most flags across engines)")  # rows, not just the header


def test_the_engines_translate_held_out_captions_to_different_degrees(run):
    """chrF against the reference on validation captions (never trained on): strong, middling, weak."""
    ref = pl.read_parquet(run["root"] / "translated" / "reference" / "cc3m" / "validation.parquet")
    chrf = {}
    for engine in TINY:
        df = pl.read_parquet(run["root"] / "translated" / engine / "cc3m" / "validation.parquet")
        both = df.join(ref.select("segment_id", pl.col("text_pt").alias("ref")), on="segment_id")
        assert both.height == 40
        chrf[engine] = score_against_gold(both["text_pt"].to_list(), both["ref"].to_list())["chrf"]
    print(chrf)
    assert chrf["tiny-narrativa"] > 85 and 50 < chrf["tiny-llm"] < chrf["tiny-narrativa"] and chrf["tiny-madlad"] < 35


def test_models_are_trained_on_training_captions_and_ids_are_computed_offline(run):
    ready = json.loads((run["root"] / "models" / "_TRANSLATORS_READY.json").read_text())
    train = pl.read_parquet(run["root"] / "segments" / "cc3m" / "train.parquet")
    assert ready["pairs"] == train.height and sorted(ready["models"]) == sorted(r.name for r in RECIPES)
    settings = load_settings(run["profile"])
    for engine in TINY:
        stats = json.loads((run["root"] / "translated" / engine / "cc3m" / "_validation.stats.json").read_text())
        # What the pay-once memory is keyed by: the id the settings give without loading any model.
        assert settings.engines[engine].engine_id(engine) == stats["engine_id"]
    assert stats["engine_id"].startswith("ct2-narrativa:sample-narrativa-ct2@")
    llm_id = settings.engines["tiny-llm"].engine_id("tiny-llm")
    assert llm_id.startswith("llm-ct2:sample-llm-ct2@") and ":int8:beam1:prompt-" in llm_id


def test_review_disagreement_queue_has_rows(run):
    settings = load_settings(run["profile"])
    tables = RunTables(run["root"], ["reference", *TINY], settings.datasets.splits(), "tiny-madlad")
    queue = Queues(tables, size=20).get("disagree")
    assert len(queue.hashes) == 20 and queue.scores[0] < 50
