"""Thesis-layout Markdown tables and the self-contained qualitative HTML pages."""
from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eval.common_subset import ITEMS_NAME
from eval.qualitative import captions_page, retrieval_page, thumbnail_data_uri, visdial_page
from eval.report_tables import render_run_tables, write_run_tables
from eval.runners import (
    CaptionedImage,
    CaptioningResult,
    Dialog,
    DialogRound,
    RetrievalResult,
    VisDialResult,
    run_retrieval,
)
from eval.settings import EvalSettings
from eval.tables import (
    TableInputError,
    ablation_table,
    layer_label,
    table_5_3,
    table_5_4,
    table_5_5,
    table_vqa,
)
from tests.helpers import jpeg
from tests.test_runners import TableModel, features_for

RUNS = [
    {"llm": "Glória 1.3B", "engine": "deepl", "bridge": "cls", "layer": -1, "k": 1, "steps": 5000,
     "steps_planned": 5000, "status": "finished",
     "metrics": {"cc3m-val": {"i2t_r5": 0.234, "i2t_r10": 0.459, "t2i_r5": 0.233, "t2i_r10": 0.459,
                              "bleu1": 0.118, "meteor_en": 0.137},
                 "coco": {"i2t_r5": 0.302, "i2t_r10": 0.411, "t2i_r5": 0.301, "t2i_r10": 0.407},
                 "visdial": {"it2t_r5": 0.042, "it2t_r10": 0.141, "t2i_r5": 0.173, "t2i_r10": 0.252}}},
    # Trained 20 of 500 steps; its COCO evaluation failed.
    {"llm": "Gervásio 7B", "engine": "madlad", "bridge": "cls", "layer": -2, "k": 1, "steps": 20,
     "steps_planned": 500, "status": "partial", "expected": ["cc3m-val", "coco", "visdial"],
     "errors": {"coco": "evaluation failed: RuntimeError: CUDA out of memory"},
     "metrics": {"cc3m-val": {"i2t_r5": 0.155, "i2t_r10": 0.338, "t2i_r5": 0.153, "t2i_r10": 0.344,
                              "bleu1": 0.096, "meteor_en": 0.123},
                 "visdial": {"it2t_r5": 0.040, "it2t_r10": 0.139, "t2i_r5": 0.082, "t2i_r10": 0.140}}},
]


def _cells(md: str, first: str) -> list[str]:
    line = next(x for x in md.splitlines() if x.startswith(f"| {first} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_table_5_3_layout_percentages_and_bold_best():
    md = table_5_3(RUNS)
    assert "| | LLM | Data Language | Steps | Status | IT2T R@5 | IT2T R@10 | T2I R@5 | T2I R@10 |" in \
        md.replace("|  |", "| |")
    assert _cells(md, "CC3M") == ["CC3M", "Glória 1.3B", "PT-PT DeepL", "5,000", "finished", "**23.4**", "**45.9**",
                                  "**23.3**", "**45.9**"]
    # The short run says how far it got.
    assert "| | Gervásio 7B | PT-PT MADLAD-400 | 20 of 500 | partial | 15.5 | 33.8 | 15.3 | 34.4 |" in \
        md.replace("|  |", "| |")
    # MSCOCO: Gervásio's evaluation failed, so it is listed with its error, and Glória is alone (not bold).
    assert _cells(md, "MSCOCO") == ["MSCOCO", "Glória 1.3B", "PT-PT DeepL", "5,000", "finished", "30.2", "41.1",
                                    "30.1", "40.7"]
    assert ("| | Gervásio 7B | PT-PT MADLAD-400 | 20 of 500 | partial: evaluation failed: RuntimeError: CUDA out "
            "of memory | – | – | – | – |") in md.replace("|  |", "| |")


def test_table_5_4_and_5_5():
    md = table_5_4(RUNS)
    assert _cells(md, "CC3M")[5:] == ["**11.8**", "–", "–", "–", "**13.7**"]
    md = table_5_5(RUNS)
    assert "| LLM Backbone | Data Language | Steps | Status | IT2T R@5 summed loss (thesis) | IT2T R@10 summed loss " \
           "(thesis) | IT2T R@5 mean loss | IT2T R@10 mean loss | T2I R@5 | T2I R@10 |" in md
    assert _cells(md, "Glória 1.3B") == ["Glória 1.3B", "PT-PT DeepL", "5,000", "finished", "**4.2**", "**14.1**",
                                         "–", "–", "**17.3**", "**25.2**"]
    assert _cells(md, "Gervásio 7B")[2:] == ["20 of 500", "partial", "4.0", "13.9", "–", "–", "8.2", "14.0"]
    assert "IT2T summed loss (thesis): every round's 100 options ranked by the summed token loss" in md


def test_ablation_rows_are_labelled_by_what_varies():
    md = ablation_table(RUNS, "cc3m-val", "cc3m")
    assert "| LLM | Layer | Steps | Status | BLEU-1 |" in md  # only the layer differs between the two runs
    assert _cells(md, "Glória 1.3B")[1:5] == ["L", "5,000", "finished", "**11.80**"]
    assert _cells(md, "Gervásio 7B")[1:5] == ["L-1", "20 of 500", "partial", "9.60"]
    assert layer_label(-4) == "L-3"
    with pytest.raises(TableInputError, match="lacks"):
        ablation_table([{"metrics": {"coco": {}}}], "coco", "captioning")
    with pytest.raises(ValueError, match="kind"):
        ablation_table(RUNS, "coco", "speed")


def _vd(r5: float, r10: float, mean5: float | None = None, collisions: float | None = None) -> dict:
    m = {"it2t_r5": r5, "it2t_r10": r10}
    if mean5 is not None:
        m["it2t_meanloss_r5"] = mean5
    if collisions is not None:
        m["it2t_translation_collisions"] = collisions
    return m


TINY = {"name": "tiny-lm", "model_type": "gpt_neo", "params": 1_234_567}
RANDOM = {"name": "tiny-lm-random", "model_type": "gpt_neo", "params": 1_234_567}


def _vd_run(name: str, facts: dict, metrics: dict, baselines: dict, **extra) -> dict:
    return {"run": f"/runs/train/{name}", "run_name": name, "llm": f"/runs/models/{facts['name']}", "llm_facts": facts,
            "engine": "reference", "bridge": "crossattn", "layer": -1, "k": 8, "steps": 500, "steps_planned": 500,
            "status": "finished", "errors": {}, "expected": ["visdial"], "metrics": {"visdial": metrics},
            "baselines": {"visdial": baselines}, **extra}


def test_visdial_table_shows_both_rankings_above_the_two_baselines():
    length = {"it2t_r5": 0.40, "it2t_r10": 0.60, "it2t_r5_pess": 0.10}
    runs = [_vd_run("pretrained", TINY, {**_vd(0.058, 0.12, 0.21, 0.0), "t2i_r5": 0.3},
                    {"no_image": _vd(0.05, 0.11, 0.19), "length": length}),
            _vd_run("random", RANDOM, _vd(0.344, 0.50, 0.02, 0.0), {"no_image": _vd(0.343, 0.5, 0.02), "length": length})]
    md = table_5_5(runs)
    assert _cells(md, "tiny-lm (gpt_neo, 1.2M)") == ["tiny-lm (gpt_neo, 1.2M)", "PT-PT reference", "500", "finished",
                                                     "5.8", "12.0", "**21.0**", "–", "30.0", "–"]
    # The random LLM's 34.4 is no better than its own no-image row, and the length baseline beats both: bold
    # goes to the best row, a baseline included, so nobody reads 34.4 as the best dialogue model.
    assert _cells(md, "tiny-lm-random (gpt_neo, 1.2M)")[4:6] == ["34.4", "50.0"]
    assert _cells(md, "tiny-lm-random (gpt_neo, 1.2M), no image") == [
        "tiny-lm-random (gpt_neo, 1.2M), no image", "PT-PT reference", "–", "baseline", "34.3", "50.0", "2.0", "–",
        "–", "–"]
    assert _cells(md, "tiny-lm (gpt_neo, 1.2M), no image")[4:8] == ["5.0", "11.0", "19.0", "–"]
    # Both runs scored the same rounds: one length row, expected R@5 with the pessimistic figure beside it.
    assert md.count("| options by length (no model) |") == 1
    assert _cells(md, "options by length (no model)")[3:6] == ["baseline", "**40.0** (10.0)", "**60.0**"]
    assert "\"options by length\" ranks options by character count, shortest first, with no model" in md
    # Collisions are the data's: one count per engine, naming the runs it was measured in.
    assert "PT-PT reference 0 (runs pretrained, random)." in md


def test_a_failed_run_is_listed_in_every_table_with_its_one_line_error():
    ok = {"run": "/r/train/ok", "llm": "/m/tiny-lm", "llm_facts": TINY, "engine": "reference", "bridge": "cls",
          "layer": -1, "k": 1, "steps": 500, "steps_planned": 500, "status": "finished", "errors": {},
          "expected": ["coco", "visdial", "vqav2"],
          "metrics": {"coco": {"i2t_r5": 0.5, "bleu1": 0.4}, "visdial": _vd(0.1, 0.2), "vqav2": {"overall": 0.3}}}
    failed = {"run": "/r/train/big", "llm": "/m/<big>|lm", "llm_facts": {"name": "<big>|lm", "model_type": "llama",
                                                                          "params": 7_000_000_000},
              "engine": "reference", "bridge": "cls", "layer": -1, "k": 1, "steps": None, "steps_planned": 500,
              "status": "failed", "expected": ["coco", "visdial", "vqav2"], "metrics": {},
              "errors": {"training": "training failed: OutOfMemoryError: CUDA out of memory <tried 2 GiB>"}}
    text = render_run_tables([ok, failed])
    row = ("| &lt;big&gt;&#124;lm (llama, 7.0B) | PT-PT reference | – | failed: training failed: OutOfMemoryError: "
           "CUDA out of memory &lt;tried 2 GiB&gt; |")
    # Tables 5.3 (COCO group), 5.4, 5.5, VQA and the COCO ablation each list it, escaped, with dashes.
    assert text.count(row) == 3 and text.count("| LLM | Bridge | Steps | Status |") == 1
    assert "| &lt;big&gt;&#124;lm (llama, 7.0B) | PT-PT reference | – | – | failed: training failed:" in text  # VQA
    assert "| &lt;big&gt;&#124;lm (llama, 7.0B) | cls | – | failed: training failed:" in text  # the ablation
    assert "<big>" not in text
    assert _cells(table_5_5([ok, failed]), "tiny-lm (gpt_neo, 1.2M)")[4] == "10.0"  # one figure: nothing to bold


def test_rows_alike_in_every_label_get_the_run_folder():
    a = {"run": "/r/train/tiny-a", "llm": "/m/tiny-lm", "engine": "reference", "bridge": "cls", "layer": -1, "k": 1,
         "steps": 20, "steps_planned": 20, "status": "finished", "metrics": {"visdial": _vd(0.1, 0.2)}}
    b = {**a, "run": "/r/train/tiny-b", "steps": 500, "steps_planned": 500, "metrics": {"visdial": _vd(0.2, 0.3)}}
    md = table_5_5([a, b])
    assert "| LLM Backbone | Run | Data Language | Steps | Status |" in md
    assert _cells(md, "/m/tiny-lm")[:4] == ["/m/tiny-lm", "tiny-a", "PT-PT reference", "20"]
    assert "| LLM Backbone | Data Language |" in table_5_5([a])  # one run: nothing to tell apart
    # Two LLM folders of one name, described alike, read alike: the folders tell them apart.
    c = {**a, "llm": "/other/tiny-lm", "llm_facts": TINY, "run": "/r/train/other"}
    assert "| Run |" in table_5_5([{**a, "llm_facts": TINY}, c])


LABELS = EvalSettings().scoring_labels()


def _labelled(run: dict, vqa_mode: str = "pt") -> dict:
    vqa = EvalSettings(vqa_mode=vqa_mode).scoring_labels()
    return {**run, "scoring": {b: ({"vqa_mode": vqa["vqa_mode"], "vqa_rule": vqa["vqa_rule"]} if b == "vqav2"
                                   else {"tie_rule": LABELS["tie_rule"]}) for b in run["metrics"]}}


def test_ranked_cells_show_the_pessimistic_figure_beside_and_tables_name_the_rules():
    runs = [_labelled(r) for r in RUNS]
    runs[0]["metrics"]["cc3m-val"] = {**runs[0]["metrics"]["cc3m-val"], "i2t_r5_pess": 0.2, "i2t_r10_pess": 0.459}
    md = table_5_3(runs)
    # Expected 23.4 (the headline, bold as the best), pessimistic 20.0 beside it; equal figures print once.
    assert _cells(md, "CC3M")[5:7] == ["**23.4** (20.0)", "**45.9**"]
    assert "Ties: R@k = expected value under random tie-breaking (headline); _pess = pessimistic" in md
    assert "floor(median)+1 (vsepp)" in md and "no scoring labels" not in md
    runs[1]["metrics"]["visdial"] = {**runs[1]["metrics"]["visdial"], "it2t_translation_collisions": 7.0}
    md = table_5_5(runs)
    assert "Translation collisions (rounds whose ground-truth PT option equals another option): " \
           "PT-PT MADLAD-400 7 (run Gervásio 7B)." in md and "Ties:" in md  # no folder: named by its LLM
    # Metrics written before the labels existed are called out, not passed off as labelled.
    assert "carry no scoring labels" in table_5_3(RUNS)


def test_vqa_table_labels_every_row_with_its_mode():
    runs = [_labelled({"llm": "Glória 1.3B", "engine": "deepl",
                       "metrics": {"vqav2": {"overall": 0.4512, "yes/no": 0.7, "number": 0.2, "other": 0.3}}}),
            _labelled({"llm": "Glória 1.3B", "engine": "deepl",
                       "metrics": {"vqav2": {"overall": 0.3, "yes/no": 0.6, "number": float("nan"), "other": 0.1}}},
                      vqa_mode="official")]
    md = table_vqa(runs)
    assert _cells(md, "Glória 1.3B") == ["Glória 1.3B", "PT-PT DeepL", "pt", "–", "–", "**45.12**", "**70.00**",
                                         "20.00", "**30.00**"]
    assert "| Glória 1.3B | PT-PT DeepL | official | – | – | 30.00 | 60.00 | – | 10.00 |" in md
    assert "VQA answers: official vqaEval.py (2021 revision" in md and "VQA answers: Portuguese mode" in md
    assert "VQA answers: Portuguese mode" in ablation_table([{**r, "bridge": "cls", "layer": -1, "k": n}
                                                             for n, r in enumerate(runs)], "vqav2", "vqa")


def test_comparison_report_states_the_evaluation_scoring_rules(tmp_path):
    import polars as pl

    from pipeline.reports.compare import render_comparison
    from translation.tokstats import token_stats

    df = pl.DataFrame({"segment_id": ["s1", "s2"], "dataset": "cc3m", "split": "validation", "item_id": ["s1", "s2"],
                       "field": "caption", "text_en": ["a red square", "a blue circle"], "text_hash": "h",
                       "engine": "e", "engine_id": "e:test", "text_pt": ["um quadrado vermelho", "um círculo azul"],
                       "score": pl.Series([None, None], dtype=pl.Float32)})
    paths = render_comparison(tmp_path, translated={"e": df}, token_stats=token_stats([df.lazy()]), gold_scores={},
                              billing={}, throughput={}, scoring=LABELS)
    md, page = paths.markdown.read_text(), paths.html.read_text()
    assert "## Evaluation scoring rules" in md and "- VQA answers (pt): Portuguese mode" in md
    assert "- Retrieval and VisDial ties: R@k = expected value under random tie-breaking" in md
    assert "<h2>Evaluation scoring rules</h2>" in page and "expected value under random tie-breaking" in page


IMAGES = {"a": jpeg((300, 200), "red"), "b": jpeg((300, 200), "blue")}


def test_thumbnails_are_small_decodable_jpegs():
    uri = thumbnail_data_uri(IMAGES["a"], size=64)
    im = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert im.format == "JPEG" and max(im.size) == 64
    assert thumbnail_data_uri(b"not an image") == "" and thumbnail_data_uri(None) == ""


def test_pages_are_self_contained_and_escaped(tmp_path):
    cap = CaptioningResult({}, {"a": "um <quadrado> vermelho", "b": ""}, {"a": ["um quadrado"], "b": ["azul"]})
    p = captions_page(cap, IMAGES.get, tmp_path / "captions.html")
    text = p.read_text()
    assert text.count("data:image/jpeg;base64,") == 2 and "&lt;quadrado&gt;" in text and "(empty)" in text
    assert not re.search(r'src="(?!data:)', text)  # nothing fetched from elsewhere

    emb = np.eye(2, dtype=np.float32)
    ret = RetrievalResult({}, ["a", "b"], ["vermelho", "azul"], np.array([0, 1]), emb, emb)
    text = retrieval_page(ret, IMAGES.get, tmp_path / "retrieval.html", k=2).read_text()
    assert text.count('class="hit"') == 4 and text.count("data:image/jpeg;base64,") == 2 + 4

    d = Dialog("a", "um quadrado", (DialogRound("cor?", "vermelho", ("azul", "vermelho"), 1),))
    vd = VisDialResult({}, {}, {"a": ["azul"]}, {"a": ["b", "a"]})
    text = visdial_page(vd, [d], IMAGES.get, tmp_path / "visdial.html").read_text()
    assert '<td class="miss">azul</td>' in text and "a ✓" in text
    assert not list(tmp_path.glob(".*.tmp"))


# ---------------------------------------------------------------------- every table of a set of runs


E = np.eye(4, dtype=np.float32)
# Engine A kept every caption; engine B's filter dropped image c's caption and translated a's differently.
EMBEDDINGS = {"a": E[0], "b": E[1], "c": E[2], "um cão": E[0] + E[1], "um gato": E[1], "uma casa": E[2],
              "um cachorro": E[1] + 0.2 * E[0]}
ENGINE_ROWS = ([CaptionedImage("a", ("um cão",), ("a dog",)), CaptionedImage("b", ("um gato",), ("a cat",)),
                CaptionedImage("c", ("uma casa",), ("a house",))],
               [CaptionedImage("a", ("um cachorro",), ("a dog",)), CaptionedImage("b", ("um gato",), ("a cat",))])


def _coco_runs(tmp_path, engines: tuple[str, ...] = ("deepl", "madlad")) -> list[dict]:
    """Runs of several engines evaluated on COCO retrieval with their per-item scores stored, as
    eval.benchmarks.collect_runs returns them."""
    vectors = {k: torch.from_numpy(v) for k, v in EMBEDDINGS.items()}
    model = TableModel({k: vectors[k] for k in "abc"}, vectors)
    runs = []
    for engine, rows in zip(engines, ENGINE_ROWS, strict=False):
        folder = tmp_path / engine / "eval" / "coco"
        ret = run_retrieval(model, features_for, rows, cache_dir=folder / "index")
        (folder / ITEMS_NAME).write_text(json.dumps(ret.items()))
        runs.append({"run": str(tmp_path / engine), "llm": "Glória 1.3B", "engine": engine, "bridge": "cls",
                     "layer": -1, "k": 1, "metrics": {"coco": ret.metrics},
                     "scoring": {"coco": {"tie_rule": LABELS["tie_rule"]}}, "eval_dirs": {"coco": str(folder)}})
    return runs


def test_run_tables_hold_every_table_and_a_table_that_fails_becomes_a_comment():
    runs = [{**r, "bridge": "cls", "layer": -1, "k": 1} for r in RUNS]
    text = render_run_tables(runs)
    for caption in ("Table 5.3", "Table 5.4", "Table 5.5", "VQAv2 accuracy", "MSCOCO captioning metrics"):
        assert f"**{caption}" in text, caption
    assert text == "\n\n".join([table_5_3(runs), table_5_4(runs), table_5_5(runs), table_vqa(runs),
                                ablation_table(runs, "coco", "captioning")]) + "\n"
    assert "<!--" not in text and "Common subset" not in text  # one engine each, no shared items to compare
    # A run record without its LLM: the tables that need it say why in a comment; the others are still there.
    broken = [*runs, {"engine": "deepl--x", "bridge": "cls", "layer": -2, "k": 1,
                      "metrics": {"visdial": {"it2t_r5": 0.1}}}]
    text = render_run_tables(broken)
    assert re.search(r"^<!-- table_5_5: run record lacks \['llm'\].* -->$", text, re.M)
    assert "**Table 5.3" in text and "**Table 5.4" in text and "MSCOCO captioning" in text
    assert "deepl--x" not in text and "deepl- -x" in text  # "--" cannot stay inside an HTML comment
    # Labels pass through; ablations are chosen by the caller (the run report adds COCO retrieval).
    assert "| Bridge | Layer |" in render_run_tables(runs, ("bridge", "layer"))
    both = render_run_tables(runs, ablations=(("coco", "captioning"), ("coco", "retrieval")))
    assert "MSCOCO captioning metrics" in both and "MSCOCO retrieval metrics" in both
    assert "retrieval metrics" not in render_run_tables(runs, ablations=(("vqav2", "retrieval"),))  # no run has it


def test_run_tables_add_the_common_subset_of_two_engines(tmp_path):
    runs = _coco_runs(tmp_path)
    text = render_run_tables(runs)
    own, common = text.split("## Common subset of all engines\n")
    assert "(common subset" not in own and "**Table 5.3: Retrieval results" in own
    assert "**Table 5.3: Retrieval results for CC3M and MSCOCO (common subset of all engines).**" in common
    assert "Common subset: every engine scored on the images" in common
    assert "Table 5.5" not in common and "VQAv2" not in common  # only what was re-scored
    # One engine: nothing to intersect, no section.
    assert "Common subset of all engines" not in render_run_tables(_coco_runs(tmp_path / "one", ("deepl",)))
    # Items missing for a run: the section says why in a comment instead of failing the whole output.
    (Path(runs[1]["eval_dirs"]["coco"]) / "items.json").unlink()
    text = render_run_tables(runs)
    assert "<!-- common subset: " in text and "items.json is missing" in text
    assert "## Common subset" not in text


def test_written_run_tables_equal_the_returned_text(tmp_path):
    runs = _coco_runs(tmp_path)
    out = tmp_path / "tables" / "results.md"
    text = write_run_tables(runs, out, ("bridge",))
    assert out.read_text(encoding="utf-8") == text == render_run_tables(runs, ("bridge",))
    assert not [p for p in out.parent.iterdir() if p.name != "results.md"]  # written atomically, no temp left
    assert write_run_tables(runs, None) == render_run_tables(runs)  # no file: only the text
