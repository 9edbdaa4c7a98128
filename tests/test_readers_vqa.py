"""VQAv2 reader: the sample's question/annotation pair becomes question segments, one segment per distinct
answer and a VQA_QUESTIONS table; bad records are quarantined, unreadable files fail clearly."""
from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pyarrow.parquet as pq
import pytest

from pipeline.contracts import ITEMS, QUARANTINE, SEGMENTS, VQA_QUESTIONS
from pipeline.readers.common import SourceFormatError
from pipeline.readers.vqa import answer_segment_id, read_vqav2
from tests.helpers import small_sample

N_VQA = 12


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return small_sample(tmp_path_factory.mktemp("sample"), n_vqa=N_VQA)


@pytest.fixture(scope="module")
def docs(sample):
    return json.loads(sample.vqav2_questions_json.read_text()), json.loads(sample.vqav2_annotations_json.read_text())


def _read(sample, questions: Path | None = None, annotations: Path | None = None):
    return read_vqav2(questions or sample.vqav2_questions_json, annotations or sample.vqav2_annotations_json,
                      "val", image_url_template=sample.vqav2_image_url_template)


def _write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def test_sample_round_trip(sample, docs):
    qdoc, adoc = docs
    r = _read(sample)
    assert r.segments.schema == SEGMENTS and r.items.schema == ITEMS and r.quarantine.schema == QUARANTINE
    assert r.extra.schema == VQA_QUESTIONS and r.dialogs is None
    assert r.quarantine.num_rows == 0
    assert len(qdoc["questions"]) == len(adoc["annotations"]) == r.extra.num_rows == 3 * N_VQA
    seg = {s["segment_id"]: s for s in r.segments.to_pylist()}
    ann = {a["question_id"]: a for a in adoc["annotations"]}
    for q, row in zip(qdoc["questions"], r.extra.to_pylist(), strict=True):
        a = ann[q["question_id"]]
        assert row["question_id"] == q["question_id"] and row["image_id"] == f"vqav2/{q['image_id']}"
        s = seg[row["question_segment_id"]]
        assert s["text_en"] == q["question"] and s["field"] == "question" and s["item_id"] == row["image_id"]
        assert row["answers"] == [x["answer"] for x in a["answers"]] and len(row["answers"]) == 10
        assert row["answer_type"] == a["answer_type"] and row["multiple_choice_answer"] == a["multiple_choice_answer"]
        for answer in row["answers"]:
            assert seg[answer_segment_id("val", answer)]["text_en"] == answer
    # Each distinct answer string is exactly one segment, whatever the number of annotators who gave it.
    answer_segs = [s for s in seg.values() if s["field"] == "answer"]
    all_answers = [x["answer"] for a in adoc["annotations"] for x in a["answers"]]
    assert sorted(s["text_en"] for s in answer_segs) == sorted(set(all_answers))
    assert all(s["item_id"] == "vqav2/val/answers" for s in answer_segs)
    assert len(answer_segs) < len(all_answers) / 10  # "yes"/"no"/digits are shared by many questions
    assert {"yes", "no"} <= {s["text_en"] for s in answer_segs}
    assert r.stats["answer_segments"] == len(answer_segs) and r.stats["question_segments"] == 3 * N_VQA
    # One item per image, its URL a file the sample wrote, under the COCO val2014 name.
    assert r.items.num_rows == N_VQA == len({q["image_id"] for q in qdoc["questions"]})
    for item in r.items.to_pylist():
        assert Path(url2pathname(urlparse(item["url"]).path)).is_file()
        assert item["source_path"] == f"val2014/COCO_val2014_{int(item['image_id'].split('/')[1]):012d}.jpg"


def test_sample_exercises_every_answer_type_and_disagreement(sample):
    rows = _read(sample).extra.to_pylist()
    assert Counter(r["answer_type"] for r in rows) == {"yes/no": N_VQA, "number": N_VQA, "other": N_VQA}
    majority = [Counter(r["answers"]).most_common(1)[0] for r in rows]
    assert all(r["multiple_choice_answer"] == m[0] and m[1] >= 8 for r, m in zip(rows, majority, strict=True))
    agree = Counter(m[1] for m in majority)
    assert agree[10] > 0 and agree[10] < len(rows)  # unanimous ones and ones with 1-2 dissenters
    assert all(r["answers"][0].isdigit() for r in rows if r["answer_type"] == "number")


def test_reference_memory_covers_vqa_segments(sample):
    memory = {r["text_hash"]: r for r in pq.read_table(sample.reference_memory).to_pylist()}
    segments = _read(sample).segments.to_pylist()
    assert {s["text_hash"] for s in segments} <= set(memory)
    pt = {s["text_en"]: memory[s["text_hash"]]["text_pt"] for s in segments}
    assert pt["yes"] == "sim" and pt["no"] == "não" and pt["how many shapes are there?"] == "quantas formas há?"
    assert all(pt[en] == en for en in pt if en.isdigit())  # PT answers keep VQA's digits


def test_ids_are_stable_across_reads(sample):
    a, b = _read(sample), read_vqav2(sample.vqav2_questions_json, sample.vqav2_annotations_json)
    assert a.segments.equals(b.segments) and a.extra.equals(b.extra)
    assert b.items["url"][0].as_py().startswith("http://images.cocodataset.org/val2014/COCO_val2014_0")


def test_bad_records_are_quarantined_and_the_rest_kept(tmp_path, sample, docs):
    qdoc, adoc = copy.deepcopy(docs[0]), copy.deepcopy(docs[1])
    qs, anns = qdoc["questions"], adoc["annotations"]
    del qs[0]["question"]  # bad_question
    qs[1]["question"] = "   "  # empty_question
    anns[2]["answers"] = anns[2]["answers"][:9]  # wrong_answer_count: the one reason question 2 is lost
    anns[3]["answer_type"] = "colour"  # bad_annotation
    del anns[4]["answers"][5]["answer"]  # bad_annotation
    qs[5]["image_id"] += 1  # image_mismatch
    qs.append(copy.deepcopy(qs[6]))  # duplicate_id (the first one is kept)
    orphan = anns.pop(7)  # question 7 loses its annotation...
    anns.append({**orphan, "question_id": 999_999_999})  # ...which now names a question nobody asked
    r = _read(sample, _write(tmp_path / "q.json", qdoc), _write(tmp_path / "a.json", adoc))
    got = sorted((row["source_file"].rsplit("/", 1)[1], row["line"], row["reason"]) for row in r.quarantine.to_pylist())
    assert got == sorted(
        [
            ("q.json", 0, "bad_question"),
            ("q.json", 1, "empty_question"),
            ("a.json", 2, "wrong_answer_count"),
            ("a.json", 3, "bad_annotation"),
            ("a.json", 4, "bad_annotation"),
            ("q.json", 5, "image_mismatch"),
            ("q.json", len(qs) - 1, "duplicate_id"),
            ("q.json", 7, "no_annotation"),
            ("a.json", len(anns) - 1, "no_question"),
        ]
    )
    assert r.extra.num_rows == 3 * N_VQA - 7
    assert r.stats["quarantined"] == 9 and r.stats["quarantined_no_annotation"] == 1
    kept = set(r.extra["question_id"].to_pylist())
    assert kept == {q["question_id"] for q in docs[0]["questions"][8:]} | {docs[0]["questions"][6]["question_id"]}
    assert all(isinstance(row["raw"], str) and row["raw"] for row in r.quarantine.to_pylist())


def test_truncated_and_wrong_schema_files_fail_clearly(tmp_path, sample):
    text = sample.vqav2_annotations_json.read_text()
    cut = tmp_path / "cut.json"
    cut.write_text(text[: len(text) // 2])
    with pytest.raises(SourceFormatError, match=r"cut\.json: invalid JSON at line 1"):
        _read(sample, annotations=cut)
    with pytest.raises(SourceFormatError, match=r"wrong\.json: missing key 'questions'"):
        _read(sample, questions=_write(tmp_path / "wrong.json", {"annotations": []}))
    with pytest.raises(SourceFormatError, match=r"list\.json: .*\['annotations'\] should be list, found dict"):
        _read(sample, annotations=_write(tmp_path / "list.json", {"annotations": {"0": {}}}))
    with pytest.raises(SourceFormatError, match="file not found"):
        _read(sample, questions=tmp_path / "absent.json")
    with pytest.raises(ValueError, match="bad image_url_template"):
        read_vqav2(sample.vqav2_questions_json, sample.vqav2_annotations_json, image_url_template="file:///{id}.jpg")
