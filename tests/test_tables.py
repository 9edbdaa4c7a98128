"""Thesis-layout Markdown tables and the self-contained qualitative HTML pages."""
from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from eval.qualitative import captions_page, retrieval_page, thumbnail_data_uri, visdial_page
from eval.runners import CaptioningResult, Dialog, DialogRound, RetrievalResult, VisDialResult
from eval.tables import TableInputError, ablation_table, layer_label, table_5_3, table_5_4, table_5_5

RUNS = [
    {"llm": "Glória 1.3B", "engine": "deepl", "bridge": "cls", "layer": -1, "k": 1,
     "metrics": {"cc3m-val": {"i2t_r5": 0.234, "i2t_r10": 0.459, "t2i_r5": 0.233, "t2i_r10": 0.459,
                              "bleu1": 0.118, "meteor_en": 0.137},
                 "coco": {"i2t_r5": 0.302, "i2t_r10": 0.411, "t2i_r5": 0.301, "t2i_r10": 0.407},
                 "visdial": {"it2t_r5": 0.042, "it2t_r10": 0.141, "t2i_r5": 0.173, "t2i_r10": 0.252}}},
    {"llm": "Gervásio 7B", "engine": "madlad", "bridge": "cls", "layer": -2, "k": 1,
     "metrics": {"cc3m-val": {"i2t_r5": 0.155, "i2t_r10": 0.338, "t2i_r5": 0.153, "t2i_r10": 0.344,
                              "bleu1": 0.096, "meteor_en": 0.123},
                 "visdial": {"it2t_r5": 0.040, "it2t_r10": 0.139, "t2i_r5": 0.082, "t2i_r10": 0.140}}},
]


def _cells(md: str, first: str) -> list[str]:
    line = next(x for x in md.splitlines() if x.startswith(f"| {first} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_table_5_3_layout_percentages_and_bold_best():
    md = table_5_3(RUNS)
    assert "| | LLM | Data Language | IT2T R@5 | IT2T R@10 | T2I R@5 | T2I R@10 |" in md.replace("|  |", "| |")
    assert _cells(md, "CC3M") == ["CC3M", "Glória 1.3B", "PT-PT DeepL", "**23.4**", "**45.9**", "**23.3**",
                                  "**45.9**"]
    assert "| | Gervásio 7B | PT-PT MADLAD-400 | 15.5 | 33.8 | 15.3 | 34.4 |" in md.replace("|  |", "| |")
    # MSCOCO has a single run: nothing to compare, nothing bold.
    assert _cells(md, "MSCOCO") == ["MSCOCO", "Glória 1.3B", "PT-PT DeepL", "30.2", "41.1", "30.1", "40.7"]


def test_table_5_4_and_5_5():
    md = table_5_4(RUNS)
    assert _cells(md, "CC3M")[3:] == ["**11.8**", "–", "–", "–", "**13.7**"]
    md = table_5_5(RUNS)
    assert _cells(md, "Glória 1.3B") == ["Glória 1.3B", "PT-PT DeepL", "**4.2**", "**14.1**", "**17.3**",
                                         "**25.2**"]
    assert _cells(md, "Gervásio 7B")[2:] == ["4.0", "13.9", "8.2", "14.0"]


def test_ablation_rows_are_labelled_by_what_varies():
    md = ablation_table(RUNS, "cc3m-val", "cc3m")
    assert "| Layer | BLEU-1 |" in md  # only the layer differs between the two runs
    assert _cells(md, "L")[:2] == ["L", "**11.80**"] and _cells(md, "L-1")[1] == "9.60"
    assert layer_label(-4) == "L-3"
    with pytest.raises(TableInputError, match="lacks"):
        ablation_table([{"metrics": {"coco": {}}}], "coco", "captioning")
    with pytest.raises(ValueError, match="kind"):
        ablation_table(RUNS, "coco", "speed")


def _jpeg(colour: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (300, 200), colour).save(buf, "JPEG")
    return buf.getvalue()


IMAGES = {"a": _jpeg("red"), "b": _jpeg("blue")}


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
