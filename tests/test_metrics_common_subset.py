"""Engines compared on the evaluation items they all have: re-scoring from stored items and cached indexes
must equal evaluating the common subset directly."""
from __future__ import annotations

import json

import pytest
import torch

from eval.common_subset import ITEMS_NAME, CommonSubsetError, common_subset_metrics, common_subset_runs
from eval.runners import (
    CaptionedImage,
    Dialog,
    DialogRound,
    VQAQuestion,
    dialog_text,
    run_retrieval,
    run_visdial,
    run_vqa,
)
from eval.settings import EvalSettings
from eval.tables import table_5_3, table_vqa
from tests.test_runners import TableModel, features_for

E = torch.eye(6)


def _save(folder, result):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ITEMS_NAME).write_text(json.dumps(result.items()))


# Engine A keeps every caption; engine B's filter dropped one caption of "b" and both of "c", and translated
# "a"'s first caption differently (another embedding).
ROWS_A = [CaptionedImage("a", ("um cão", "cão a correr"), ("a dog", "dog running")),
          CaptionedImage("b", ("um gato", "gato preto"), ("a cat", "black cat")),
          CaptionedImage("c", ("uma casa", "casa branca"), ("a house", "white house")),
          CaptionedImage("d", ("um carro",), ("a car",))]
ROWS_B = [CaptionedImage("a", ("um cachorro", "cão a correr"), ("a dog", "dog running")),
          CaptionedImage("b", ("gato preto",), ("black cat",)),
          CaptionedImage("d", ("um carro",), ("a car",))]
IMAGES = {"a": E[0], "b": E[1], "c": E[2], "d": E[3]}
TEXTS = {"um cão": E[0] + E[1], "cão a correr": E[0] + 0.3 * E[3], "um gato": E[1], "gato preto": E[1] + E[3],
         "uma casa": E[2] + E[0], "casa branca": E[2], "um carro": E[3] + 0.5 * E[1], "um cachorro": E[1] + 0.2 * E[0]}


def test_retrieval_common_subset_equals_direct_evaluation_of_the_subset(tmp_path):
    model = TableModel(IMAGES, TEXTS)
    for name, rows in (("A", ROWS_A), ("B", ROWS_B)):
        _save(tmp_path / name, run_retrieval(model, features_for, rows, cache_dir=tmp_path / name / "index"))
    got = common_subset_metrics({"A": tmp_path / "A", "B": tmp_path / "B"}, "coco")
    # Common: images a, b, d; references (a, "a dog"), (a, "dog running"), (b, "black cat"), (d, "a car").
    subset_a = [CaptionedImage("a", ("um cão", "cão a correr")), CaptionedImage("b", ("gato preto",)),
                CaptionedImage("d", ("um carro",))]
    assert got["A"] == pytest.approx(run_retrieval(model, features_for, subset_a).metrics)
    assert got["B"] == pytest.approx(run_retrieval(model, features_for, ROWS_B).metrics)  # B's own = common
    assert got["A"]["t2i_n"] == got["B"]["t2i_n"] == 4 and got["A"]["i2t_n"] == 3
    # The full evaluation of A differs: it has 7 queries and image c as a candidate.
    full = run_retrieval(model, features_for, ROWS_A).metrics
    assert full["t2i_n"] == 7 and full != pytest.approx(got["A"])


def _dialog(image: str, answers: tuple[str, str], gt: int) -> Dialog:
    return Dialog(image, f"imagem {image}", (DialogRound("é?", "sim", ("sim", answers[0], answers[1]), gt),
                                            DialogRound("e?", "não", ("não", "talvez", answers[1]), 1)),
                  dense_round=1, dense_relevance=(1.0, 0.5, 0.0))


def test_visdial_and_vqa_common_subsets(tmp_path):
    da = [_dialog("x", ("não", "si"), 0), _dialog("y", ("nunca", "s"), 1), _dialog("z", ("ok", "no"), 2)]
    db = [_dialog("x", ("nao", "si"), 0), _dialog("y", ("nunca", "s"), 1)]  # dialog z lost in B
    texts = {dialog_text(d): E[n] + 0.3 * E[(n + 1) % 3] for n, d in enumerate(da)}
    texts.update({dialog_text(db[0]): E[0] + 0.2 * E[2]})
    model = TableModel({"x": E[0], "y": E[1], "z": E[2]}, texts)
    ra = run_visdial(model, features_for, da, cache_dir=tmp_path / "A" / "index")
    rb = run_visdial(model, features_for, db, cache_dir=tmp_path / "B" / "index")
    _save(tmp_path / "A", ra)
    _save(tmp_path / "B", rb)
    got = common_subset_metrics({"A": tmp_path / "A", "B": tmp_path / "B"}, "visdial")
    direct = run_visdial(model, features_for, da[:2]).metrics  # A on x, y only, candidates x, y
    for key in ("it2t_r1", "it2t_mrr", "it2t_mean_rank", "it2t_r1_pess", "it2t_ndcg", "t2i_r1", "t2i_medr"):
        assert got["A"][key] == pytest.approx(direct[key]), key
        assert got["B"][key] == pytest.approx(rb.metrics[key]), key
    # The mean-loss ranking and both baselines are re-scored on the common rounds too.
    full = run_visdial(model, features_for, da[:2])
    runs = [{"llm": "G", "engine": e, "metrics": {"visdial": r.metrics}, "baselines": {"visdial": r.baselines},
             "expected": ["visdial"], "eval_dirs": {"visdial": str(tmp_path / n)}}
            for e, n, r in (("deepl", "A", ra), ("madlad", "B", rb))]
    common = common_subset_runs(runs)
    assert common[0]["metrics"]["visdial"]["it2t_meanloss_mrr"] == pytest.approx(full.metrics["it2t_meanloss_mrr"])
    for kind in ("no_image", "length"):
        for key in ("it2t_mrr", "it2t_r1_pess", "it2t_ndcg"):
            assert common[0]["baselines"]["visdial"][kind][key] == pytest.approx(full.baselines[kind][key])
            assert common[1]["baselines"]["visdial"][kind][key] == pytest.approx(rb.baselines[kind][key])
    assert common[0]["baselines"]["visdial"]["length"]["it2t_n_rounds"] == 4 != ra.baselines["length"]["it2t_n_rounds"]
    assert common[0]["expected"] == []  # the subset tables show what was re-scored, no "not evaluated" rows

    qa = [VQAQuestion(str(n), "i", "q", ("sim",) * 10 if n % 2 else ("2",) * 10, "yes/no" if n % 2 else "number")
          for n in range(6)]
    answers = TableModel({}, {}, answers={"i": "sim"})
    va = run_vqa(answers, features_for, qa)
    vb = run_vqa(answers, features_for, qa[:3])
    _save(tmp_path / "VA", va)
    _save(tmp_path / "VB", vb)
    got = common_subset_metrics({"A": tmp_path / "VA", "B": tmp_path / "VB"}, "vqav2")
    assert got["A"] == pytest.approx(got["B"], nan_ok=True) and got["A"]["n"] == 3 and got["A"]["overall"] == pytest.approx(1 / 3)
    assert va.metrics["overall"] == pytest.approx(0.5)
    vo = run_vqa(answers, features_for, qa[:3], settings=EvalSettings(vqa_mode="official"))
    _save(tmp_path / "VO", vo)
    with pytest.raises(CommonSubsetError, match="different modes"):
        common_subset_metrics({"A": tmp_path / "VA", "O": tmp_path / "VO"}, "vqav2")


def test_common_subset_runs_feed_labelled_tables(tmp_path):
    model = TableModel(IMAGES, TEXTS)
    runs = []
    for engine, rows in (("deepl", ROWS_A), ("madlad", ROWS_B)):
        folder = tmp_path / engine / "eval" / "coco"
        ret = run_retrieval(model, features_for, rows, cache_dir=folder / "index")
        _save(folder, ret)
        runs.append({"llm": "Glória", "engine": engine, "metrics": {"coco": ret.metrics},
                     "scoring": {"coco": {"tie_rule": EvalSettings().scoring_labels()["tie_rule"]}},
                     "eval_dirs": {"coco": str(folder)}})
    common = common_subset_runs(runs)
    assert [r["engine"] for r in common] == ["deepl", "madlad"] and all(r["subset"] == "common" for r in common)
    assert common[0]["metrics"]["coco"]["t2i_n"] == 4
    md = table_5_3(common)
    assert "(common subset of all engines)" in md and "Common subset:" in md and "expected value" in md
    assert "(common subset" not in table_5_3(runs) and "Ties: R@k = expected value" in table_5_3(runs)
    assert common_subset_runs(runs[:1]) == [] and table_vqa([]).startswith("**VQAv2")
    with pytest.raises(CommonSubsetError, match="missing"):
        common_subset_metrics({"A": tmp_path / "nowhere", "B": tmp_path / "deepl" / "eval" / "coco"}, "coco")


def test_ptvl_table_labels_the_rules_and_adds_the_common_subset(tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    model = TableModel(IMAGES, TEXTS, answers={"i": "Sim"})
    labels = EvalSettings().scoring_labels()
    qs = [VQAQuestion(str(n), "i", "q", ("sim",) * 10, "yes/no") for n in range(4)]
    run_dirs = []
    for engine, rows, questions in (("deepl", ROWS_A, qs), ("madlad", ROWS_B, qs[:3])):
        run_dir = tmp_path / engine
        for bench, result, scoring in (
            ("coco", run_retrieval(model, features_for, rows, cache_dir=run_dir / "eval" / "coco" / "index"),
             {"tie_rule": labels["tie_rule"]}),
            ("vqav2", run_vqa(model, features_for, questions),
             {"vqa_mode": labels["vqa_mode"], "vqa_rule": labels["vqa_rule"]}),
        ):
            _save(run_dir / "eval" / bench, result)
            (run_dir / "eval" / bench / "metrics.json").write_text(json.dumps(
                {"run": str(run_dir), "llm": "Glória", "engine": engine, "bridge": "cls", "layer": -1, "k": 1,
                 "benchmark": bench, "scoring": scoring, "metrics": result.metrics}))
        run_dirs.append(str(run_dir))
    out = CliRunner().invoke(app, ["table", *run_dirs, "--out", str(tmp_path / "tables.md")])
    assert out.exit_code == 0, out.output
    md = (tmp_path / "tables.md").read_text()
    own, common = md.split("## Common subset of all engines")
    assert "Ties: R@k = expected value under random tie-breaking" in own
    assert "VQA answers: Portuguese mode" in own and "| Glória | PT-PT DeepL | pt | – | finished | **100.00** |" in own
    assert "(common subset of all engines)" in common and common.count("VQA answers: Portuguese mode") == 1
    assert "Table 5.3" in common and "Table 5.5" not in common
