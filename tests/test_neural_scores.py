"""Neural scores around the port: the resumable score cache, COMET's bootstrap interval, the report section,
the min_qe drop reason and the variety classifier's evidence for `brazilian` (all fast, fake or tiny models)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from translation.neural_scoring import corpus_comet, score_cached
from translation.qe_store import NeuralScoreStore, pair_hash

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "comet"


class FakeScorer:
    """Scores len(mt) / 10; raises on the batch `fail_at` (0-based) to stand for a killed run."""

    def __init__(self, fail_at: int | None = None):
        self.batches, self.fail_at = 0, fail_at

    def score(self, src, mt, ref=None, *, batch_size=32, progress=None):
        if self.fail_at is not None and self.batches == self.fail_at:
            raise KeyboardInterrupt("killed")
        self.batches += 1
        return [len(m) / 10 for m in mt]


def _rows(n: int) -> pl.DataFrame:
    return pl.DataFrame({"text_hash": [f"h{i:03d}" for i in range(n)], "src": [f"source {i}" for i in range(n)],
                         "mt": ["x" * (i + 1) for i in range(n)]})


def test_a_killed_run_resumes_and_a_rerun_scores_nothing(tmp_path):
    path = tmp_path / "qe.sqlite"
    rows = _rows(10)
    with NeuralScoreStore(path) as store, pytest.raises(KeyboardInterrupt):
        score_cached(rows, store, "eng", "kiwi@1", lambda: FakeScorer(fail_at=2), batch_size=3)
    with NeuralScoreStore(path) as store:
        assert store.count("eng", "kiwi@1") == 6  # the two batches before the kill were committed
        seen: list[tuple[int, int]] = []
        run = score_cached(rows, store, "eng", "kiwi@1", FakeScorer, batch_size=3,
                           progress=lambda done, total: seen.append((done, total)))
        assert (run.computed, run.cached) == (4, 6) and seen == [(3, 4), (4, 4)]
        assert run.scores.sort("text_hash")["score"].to_list() == pytest.approx([(i + 1) / 10 for i in range(10)])

        def no_model():
            raise AssertionError("a rerun must not even load the model")

        again = score_cached(rows, store, "eng", "kiwi@1", no_model, batch_size=3)
        assert (again.computed, again.cached) == (0, 10)
        # another model id or engine id is another cache key
        other = score_cached(rows.head(2), store, "eng", "comet@2", FakeScorer)
        assert other.computed == 2 and store.count(model_id="comet@2") == 2


def test_a_changed_translation_is_scored_again(tmp_path):
    with NeuralScoreStore(tmp_path / "qe.sqlite") as store:
        score_cached(_rows(3), store, "eng", "m", FakeScorer)
        changed = _rows(3).with_columns(pl.when(pl.col("text_hash") == "h001").then(pl.lit("yyyyyyyyyy"))
                                        .otherwise(pl.col("mt")).alias("mt"))
        run = score_cached(changed, store, "eng", "m", FakeScorer)
        assert (run.computed, run.cached) == (1, 2)
        assert run.scores.filter(pl.col("text_hash") == "h001")["score"].item() == pytest.approx(1.0)
        assert store.count() == 3  # replaced, not added
    assert pair_hash("a", None) != pair_hash("a", "") and pair_hash("ab", "c") != pair_hash("a", "bc")


def test_corpus_comet_uses_sacrebleus_bootstrap():
    scores = list(np.linspace(-0.5, 1.0, 40) ** 2)
    got = corpus_comet(scores)
    # sacrebleu's resampling: default_rng(12345).choice(n, (1000, n)); interval half of the 2.5%-97.5% span
    idx = np.random.default_rng(12345).choice(40, size=(1000, 40), replace=True)
    means = np.sort(np.array(scores, dtype=np.float32)[idx].sum(1) / 40)
    expected_ci = 0.5 * (means[999 - 25] - means[25])
    assert got["comet"] == pytest.approx(np.mean(scores)) and got["n"] == 40
    assert got["ci"] == pytest.approx(expected_ci, rel=1e-5) and 0 < got["ci"] < 0.2
    assert got["low"] == pytest.approx(got["comet"] - got["ci"])
    with pytest.raises(ValueError, match="no segment scores"):
        corpus_comet([])


def test_report_section_says_what_is_off_and_shows_what_is_on():
    from pipeline.reports.neural_scores import neural_section

    off = neural_section(comet_model=None, qe_model=None, gold_comet=None, gold_scores={}, qe={}, min_qe=None)
    assert "COMET on the gold set and QE are off" in off.markdown and "[curate] qe_model" in off.markdown
    assert "<img" not in off.html
    gold = pl.DataFrame({"engine": ["deepl"] * 30 + ["madlad"] * 30,
                         "comet": [0.8 + 0.01 * (i % 5) for i in range(30)] + [0.6] * 30})
    qe = {"deepl": pl.DataFrame({"qe": [0.1, 0.5, 0.9, 0.7]}), "madlad": pl.DataFrame({"qe": [0.2, 0.3]})}
    on = neural_section(comet_model="wmt22-comet-da", qe_model=None, gold_comet=gold,
                        gold_scores={"deepl": {"chrf": 61.2, "bleu": 40.1}}, qe=qe, min_qe=None)
    assert "QE is off" in on.markdown and "| deepl | 0.8200 | ± 0.00" in on.markdown
    assert "| madlad | 0.6000 | ± 0.0000 | [0.6000, 0.6000] | n/a | n/a | 30 |" in on.markdown
    assert "61.20 | 40.10" in on.markdown
    both = neural_section(comet_model="c", qe_model="kiwi", gold_comet=gold, gold_scores={}, qe=qe, min_qe=0.4)
    assert "are off" not in both.markdown and "is off" not in both.markdown
    assert "| deepl | 4 | 0.5500 |" in both.markdown and "| 25.0% |" in both.markdown  # 1 of 4 below 0.4
    assert "| madlad | 2 | 0.2500 |" in both.markdown and "| 100.0% |" in both.markdown
    assert both.html.count("data:image/png;base64,") == 1 and "QE distribution per engine" in both.html


def test_min_qe_drops_machine_text_below_it_after_the_flags():
    from pipeline.shards.captions import _policy_reason
    from pipeline.shards.common import FilterPolicy

    rows = pl.DataFrame({
        "text_pt": ["bom", "mau", "mau mas corrigido", "vazio", "sem qe"],
        "flags": [[], [], [], ["untranslated"], []],
        "text_source": ["machine", "machine", "human", "machine", "machine"],
        "qe": [0.9, 0.1, 0.1, 0.1, None],
    })
    reason = _policy_reason("text_pt", "flags", FilterPolicy(), 0.5, human_text=True)
    assert rows.select(reason.alias("r"))["r"].to_list() == [None, "qe_below_min", None, "flag_untranslated", None]
    assert rows.select(_policy_reason("text_pt", "flags", FilterPolicy()).alias("r"))["r"].to_list() == \
        [None, None, None, "flag_untranslated", None]


def test_min_qe_needs_a_qe_model(tmp_path):
    from pipeline.settings import ConfigError, load_settings

    cfg = tmp_path / "p.toml"
    cfg.write_text("[shards]\nmin_qe = 0.5\n")
    with pytest.raises(ConfigError, match="shards.min_qe drops rows by their QE score, but curate.qe_model"):
        load_settings(cfg)
    cfg.write_text(f'[shards]\nmin_qe = 0.5\n[curate]\nqe_model = "{FIXTURE / "unified"}"\n')
    assert load_settings(cfg).shards.min_qe == 0.5


# --- the variety classifier ------------------------------------------------------------------------------

def _table(rows: list[tuple[str, list[str], list[str]]]) -> pl.DataFrame:
    return pl.DataFrame({"text_pt": [r[0] for r in rows], "flags": [r[1] for r in rows],
                         "flag_reasons": [r[2] for r in rows]},
                        schema={"text_pt": pl.String, "flags": pl.List(pl.String), "flag_reasons": pl.List(pl.String)})


def test_variety_probability_is_evidence_beside_the_rules():
    from translation.variety import add_variety_evidence

    table = _table([
        ("um ônibus", ["brazilian"], ["brazilian: ônibus (PT-PT autocarro)"]),
        ("ela mora lá", [], []),
        ("uma casa", [], []),
        ("a red car", ["untranslated"], ["untranslated: mostly English"]),
        ("ela mora lá", ["truncated", "repetitive"], ["truncated: x", "repetitive: y"]),
        ("", ["empty"], ["empty: blank output"]),
    ])
    probs = {"um ônibus": 0.97, "ela mora lá": 0.95, "uma casa": 0.1}
    asked: list[list[str]] = []

    def probability(texts):
        asked.append(texts)
        return [probs[t] for t in texts]

    out = add_variety_evidence(table, probability, threshold=0.9)
    assert asked == [["um ônibus", "ela mora lá", "uma casa"]]  # distinct, never empty/untranslated rows
    assert out["flags"].to_list() == [["brazilian"], ["brazilian"], [], ["untranslated"],
                                      ["brazilian", "truncated", "repetitive"], ["empty"]]
    reasons = out["flag_reasons"].to_list()
    assert reasons[0] == ["brazilian: ônibus (PT-PT autocarro); variety model P(PT-BR) 0.97"]
    assert reasons[1] == ["brazilian: variety model P(PT-BR) 0.95 (no lexical marker)"]
    assert reasons[4][0].startswith("brazilian: variety model") and reasons[4][1:] == ["truncated: x", "repetitive: y"]
    assert reasons[3] == ["untranslated: mostly English"] and reasons[2] == []


def _tiny_classifier(folder: Path, bias: tuple[float, float], labels=("PT-PT", "PT-BR")) -> Path:
    import torch
    from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaForSequenceClassification

    config = XLMRobertaConfig.from_pretrained(FIXTURE / "encoder")
    config.num_labels, config.id2label = 2, dict(enumerate(labels))
    config.label2id = {v: k for k, v in config.id2label.items()}
    torch.manual_seed(0)
    model = XLMRobertaForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.out_proj.bias.copy_(torch.tensor(bias))
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(FIXTURE / "encoder").save_pretrained(folder)
    return folder


def test_a_tiny_local_classifier_loads_and_finds_its_pt_br_class(tmp_path):
    from translation.errors import ConfigurationError
    from translation.variety import VarietyClassifier

    folder = _tiny_classifier(tmp_path / "variety", (0.0, 6.0))
    clf = VarietyClassifier(str(folder), "pt_br", batch_size=2)
    p = clf.probabilities(["um ônibus na rua", "um autocarro na rua", "olá"])
    assert len(p) == 3 and all(0.98 < x < 1.0 for x in p)  # the head's bias makes PT-BR near certain
    flipped = VarietyClassifier(str(_tiny_classifier(tmp_path / "flipped", (6.0, 0.0))))
    assert all(x < 0.02 for x in flipped.probabilities(["um ônibus na rua"]))
    with pytest.raises(ConfigurationError, match=r"no class 'pt-br' among its labels \['A', 'B'\]"):
        VarietyClassifier(str(_tiny_classifier(tmp_path / "ab", (0.0, 0.0), labels=("A", "B"))), "pt-br")
    with pytest.raises(ConfigurationError, match="cannot be loaded"):
        VarietyClassifier(str(tmp_path / "nowhere"))
    json.dumps(p)  # plain floats


def test_caption_shards_drop_low_qe_rows_and_count_them(tmp_path):
    import pyarrow.parquet as pq

    from pipeline.human_review import apply_review, load_review
    from pipeline.shards import FilterPolicy, build_caption_shards
    from tests.test_review_shards import CAPTIONS, E, _caption_inputs, _review
    from translation.textkey import text_hash

    translated, availability, images = _caption_inputs(tmp_path)
    _review(tmp_path)  # row 0 edited, row 1 corrected, row 2's flag a false alarm, row 4's brazilian a false alarm
    applied = apply_review(translated, *load_review(tmp_path, E))
    # QE of the machine texts: rows 0, 1 and 4 below 0.5, row 2 above, row 3 (untranslated, dropped first) low
    qe = pl.DataFrame({"text_hash": [text_hash(en) for en, _, _ in CAPTIONS], "qe": [0.1, 0.2, 0.9, 0.0, 0.3]})
    out = tmp_path / "shards"
    out.mkdir()
    stats = build_caption_shards(applied, availability, images, out, engine="opus", policy=FilterPolicy(),
                                 rows_per_shard=100, group_by_image=False, qe=qe, min_qe=0.5)
    kept = sorted(r["sample_id"] for r in pq.read_table(out / "part-00000.parquet").to_pylist())
    # 0 and 1 carry a person's text (kept whatever the machine's QE); 4's machine text is below min_qe
    assert kept == ["cc3m/train/0", "cc3m/train/1", "cc3m/train/2"]
    assert stats.as_dict() | {"files": []} == {
        "total": 5, "kept": 3, "dropped_flag_untranslated": 1, "dropped_qe_below_min": 1, "images": 3, "files": [],
        "human_corrected": 2, "kept_by_human_text": 2, "kept_by_false_alarm": 1}
    with pytest.raises(ValueError, match="min_qe needs the QE scores"):
        build_caption_shards(applied, availability, images, out, engine="opus", policy=FilterPolicy(),
                             rows_per_shard=100, group_by_image=False, min_qe=0.5)


def test_a_missing_local_model_folder_fails_at_start_up(tmp_path):
    from tests.test_pipeline import ptvl, write_config

    cfg = write_config(tmp_path, f'[curate]\nqe_model = "{tmp_path / "no-such-model"}"\n')
    res = ptvl("run", "--config", str(cfg), "--until", "curate")
    assert res.returncode != 0 and "[curate] qe_model" in res.stderr and "no such folder" in res.stderr
    assert not (tmp_path / "run").exists()  # nothing ran
    cfg = write_config(tmp_path, f'[curate]\ncomet_model = "{FIXTURE / "encoder"}"\n')
    res = ptvl("run", "--config", str(cfg), "--until", "curate")
    assert "not a COMET model folder" in res.stderr and not (tmp_path / "run").exists()
