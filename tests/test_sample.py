"""The synthetic sample: deterministic bytes, real layouts, ~10% broken CC3M rows, one PT string per EN
string, and a reference memory that covers every segment the readers produce."""
from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.readers.cc3m import read_cc3m_tsv
from pipeline.readers.coco import read_karpathy
from pipeline.readers.visdial import read_visdial
from pipeline.readers.vqa import read_vqav2
from pipeline.sample.dialogs import all_pairs, answer_universe, question_groups, relevance
from pipeline.sample.scenes import COLOURS, POSITIONS, SHAPES, SIZES, Scene
from pipeline.sample.vqa import vqa_pairs
from pipeline.sample.write import REFERENCE_MEMORY, _Memory
from tests.helpers import small_sample
from translation.textkey import text_hash


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _scene(shape: int, colour: int, size: int, slots: tuple[int, ...]) -> Scene:
    return Scene(shape, colour, size, len(slots), slots[0], slots, 200, tuple((0.0, 0.0) for _ in slots))


def _path(url: str) -> Path:
    return Path(url2pathname(urlparse(url).path))


def test_same_seed_gives_byte_identical_files(tmp_path):
    import shutil

    first = small_sample(tmp_path / "s")
    before = _digests(first.root)
    shutil.rmtree(first.root)
    small_sample(tmp_path / "s")
    assert _digests(tmp_path / "s") == before
    assert len(before) > 60 + 20 + 10 + 8  # images and every data file were compared
    other = small_sample(tmp_path / "s", seed=1)
    assert _digests(other.root)["cc3m/Train_GCC-training.tsv"] != before["cc3m/Train_GCC-training.tsv"]


def test_sources_draw_from_independent_streams(tmp_path):
    a = _digests(small_sample(tmp_path / "a").root)
    b = _digests(small_sample(tmp_path / "a", n_coco=12).root)
    changed = {k for k in a if a[k] != b.get(k)}
    assert "coco/dataset_coco.json" in changed
    assert not {k for k in changed if k.startswith(("cc3m/", "visdial/", "images/", "vqav2/"))}
    c = _digests(small_sample(tmp_path / "a", n_vqa=7).root)
    changed = {k for k in a if a[k] != c.get(k)}
    assert {"vqav2/v2_OpenEnded_mscoco_val2014_questions.json", "vqav2/v2_mscoco_val2014_annotations.json"} <= changed
    assert not {k for k in changed if not k.startswith("vqav2/") and k != "reference_memory.parquet"}


def test_every_english_string_has_one_pt_string_over_all_scenes():
    mapping: dict[str, set[str]] = {}
    slot_sets = [c for k in (1, 2, 3) for c in itertools.combinations(range(len(POSITIONS)), k)]
    for shape, colour, size, slots in itertools.product(range(len(SHAPES)), range(len(COLOURS)), range(len(SIZES)), slot_sets):
        scene = _scene(shape, colour, size, slots)
        for en, pt in all_pairs(scene) + vqa_pairs(scene):
            mapping.setdefault(en, set()).add(pt)
    for en, pt in answer_universe():
        mapping.setdefault(en, set()).add(pt)
    conflicts = {en: pts for en, pts in mapping.items() if len(pts) > 1}
    assert not conflicts
    assert len(mapping) > 1000  # the enumeration really covered the scene space
    with pytest.raises(ValueError, match="map 'red' to both"):
        m = _Memory()
        m.add(("red", "vermelho"))
        m.add(("red", "vermelha"))


def test_pt_pt_grammar_of_questions_and_answers():
    two_red_stars = _scene(shape=3, colour=0, size=1, slots=(0, 4))
    qa = {q.question: q.answer for group in question_groups(two_red_stars) for q in group}
    assert qa[("how many shapes are there?", "quantas formas há?")] == ("two", "duas")
    assert qa[("are the shapes red?", "as formas são vermelhas?")] == ("yes", "sim")
    assert qa[("are the shapes orange?", "as formas são laranja?")] == ("no", "não")
    assert qa[("are the shapes blue?", "as formas são azuis?")] == ("no", "não")
    assert qa[("what shape are they?", "que forma têm?")] == ("stars", "estrelas")
    assert qa[("where are they?", "onde estão?")] == ("in the top left corner and in the center", "no canto superior esquerdo e no centro")
    assert qa[("is any shape in the center?", "alguma forma está no centro?")] == ("yes", "sim")
    assert qa[("are they large?", "são grandes?")] == ("yes", "sim")
    one_star = _scene(shape=3, colour=3, size=0, slots=(3,))
    qa = {q.question: q.answer for group in question_groups(one_star) for q in group}
    assert qa[("what shape is it?", "que forma tem?")] == ("a star", "uma estrela")
    assert qa[("what colour is the shape?", "qual é a cor da forma?")] == ("yellow", "amarelo")
    assert qa[("is the shape yellow?", "a forma é amarela?")] == ("yes", "sim")
    assert qa[("is it a circle?", "é um círculo?")] == ("no", "não")
    assert qa[("is it a star?", "é uma estrela?")] == ("yes", "sim")
    assert qa[("is it on the left?", "está à esquerda?")] == ("no", "não")
    assert qa[("where is it?", "onde está?")] == ("in the bottom right corner", "no canto inferior direito")
    assert qa[("are there any stars?", "há estrelas?")] == ("yes", "sim")
    assert qa[("is the background grey?", "o fundo é cinzento?")] == ("yes", "sim")
    assert relevance(("yes", "sim"), ("i think so", "acho que sim")) == 0.5
    assert relevance(("a star", "uma estrela"), ("a star, i think", "uma estrela, acho eu")) == 0.5
    assert relevance(("a star", "uma estrela"), ("a circle", "um círculo")) == 0.0


def test_cc3m_broken_rows_are_about_ten_percent(sample):
    truth = json.loads(sample.truth.read_text())["cc3m"]
    kinds_seen = set()
    for split, tsv in (("train", sample.cc3m_train_tsv), ("validation", sample.cc3m_validation_tsv)):
        r = read_cc3m_tsv(tsv, split, allow_local_files=True)
        broken = {}
        for seg_id, url in zip(r.items["image_id"].to_pylist(), r.items["url"].to_pylist(), strict=True):
            path, line = _path(url), int(seg_id.rsplit("/", 1)[1])
            if not path.exists():
                broken[line] = "dead"
                continue
            try:
                with Image.open(path) as im:
                    im.load()
                    if min(im.size) < 16:
                        broken[line] = "too_small"
            except OSError as e:  # PIL: UnidentifiedImageError for HTML bytes, OSError for a cut JPEG
                broken[line] = "not_image" if "identify" in str(e) else "truncated"
        assert broken == {int(k): v for k, v in truth[split]["broken"].items()}
        assert 0.05 <= len(broken) / r.items.num_rows <= 0.15
        kinds_seen |= set(broken.values())
    assert kinds_seen == {"dead", "truncated", "not_image", "too_small"}
    assert sorted(truth["train"]["malformed"].values()) == sorted(
        ["blank", "missing_field", "empty_caption", "bad_utf8", "too_many_fields", "bad_url"]
    )


def test_reference_memory_covers_every_segment(sample):
    table = pq.read_table(sample.reference_memory)
    assert table.schema == REFERENCE_MEMORY
    rows = table.to_pylist()
    assert len({r["text_hash"] for r in rows}) == len(rows) == len({r["text_en"] for r in rows})
    assert all(r["text_hash"] == text_hash(r["text_en"]) and r["text_pt"] for r in rows)
    memory = {r["text_hash"] for r in rows}
    results = [
        read_cc3m_tsv(sample.cc3m_train_tsv, "train", allow_local_files=True),
        read_cc3m_tsv(sample.cc3m_validation_tsv, "validation", allow_local_files=True),
        read_karpathy(sample.coco_karpathy_json, url_base=sample.coco_url_base),
        read_visdial(sample.visdial_val_json, "val", sample.visdial_val_dense_json),
        read_vqav2(sample.vqav2_questions_json, sample.vqav2_annotations_json, "val", sample.vqav2_image_url_template),
    ]
    hashes = {h for r in results for h in r.segments["text_hash"].to_pylist()}
    assert len(hashes) > 100 and hashes <= memory


def test_karpathy_and_visdial_layouts(sample):
    coco = json.loads(sample.coco_karpathy_json.read_text())
    assert coco["dataset"] == "coco" and len(coco["images"]) == 10
    for i, img in enumerate(coco["images"]):
        assert set(img) == {"filepath", "sentids", "filename", "imgid", "split", "sentences", "cocoid"}
        assert img["imgid"] == i and img["split"] == ("val" if i < 5 else "test") and len(img["sentences"]) == 5
        assert img["filename"] == f"COCO_val2014_{img['cocoid']:012d}.jpg"
        assert img["sentids"] == [s["sentid"] for s in img["sentences"]]
        assert all(s["tokens"] == s["raw"].split() and s["imgid"] == i for s in img["sentences"])
        assert (sample.root / "coco" / img["filepath"] / img["filename"]).is_file()
    vd = json.loads(sample.visdial_val_json.read_text())
    assert vd["version"] == "1.0" and vd["split"] == "val2018" and set(vd["data"]) == {"questions", "answers", "dialogs"}
    dense = json.loads(sample.visdial_val_dense_json.read_text())
    for dialog, d in zip(vd["data"]["dialogs"], dense, strict=True):
        assert len(dialog["dialog"]) == 10 and d["image_id"] == dialog["image_id"]
        for r in dialog["dialog"]:
            assert len(set(r["answer_options"])) == 100 and r["answer_options"][r["gt_index"]] == r["answer"]
        rel = d["gt_relevance"]
        right = dialog["dialog"][d["round_id"] - 1]["gt_index"]
        assert len(rel) == 100 and rel[right] == 1.0 and rel.count(1.0) == 1 and 0.5 in rel
        assert set(rel) <= {0.0, 0.5, 1.0}
        image = sample.root / "visdial" / "VisualDialog_val2018" / f"VisualDialog_val2018_{dialog['image_id']:012d}.jpg"
        with Image.open(image) as im:
            assert im.size == (32, 32)
