"""VisDial v1.0 reader: the sample round-trips through indices; bad files fail clearly; bad dialogs are
quarantined while the rest is kept."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest

from pipeline.contracts import DIALOGS, ITEMS, QUARANTINE, SEGMENTS
from pipeline.readers.common import SourceFormatError
from pipeline.readers.visdial import read_visdial, rebuild_dialog


@pytest.fixture(scope="module")
def doc(sample):
    return json.loads(sample.visdial_val_json.read_text())


def _write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def test_sample_round_trip(sample, doc):
    r = read_visdial(sample.visdial_val_json, "val", sample.visdial_val_dense_json)
    assert r.segments.schema == SEGMENTS and r.items.schema == ITEMS
    assert r.quarantine.schema == QUARANTINE and r.dialogs.schema == DIALOGS
    assert r.quarantine.num_rows == 0 and r.dialogs.num_rows == 8
    data = doc["data"]
    # Each global string is one segment, whatever the number of rounds that use it.
    seg = {s["segment_id"]: s for s in r.segments.to_pylist()}
    assert sum(s["field"] == "answer" for s in seg.values()) == len(data["answers"])
    assert sum(s["field"] == "question" for s in seg.values()) == len(data["questions"])
    questions = [seg[f"visdial/val/question/{i}"]["text_en"] for i in range(len(data["questions"]))]
    answers = [seg[f"visdial/val/answer/{i}"]["text_en"] for i in range(len(data["answers"]))]
    for row, original in zip(r.dialogs.to_pylist(), data["dialogs"], strict=True):
        assert row["image_id"] == f"visdial/{original['image_id']}"
        assert seg[row["caption_segment_id"]]["text_en"] == original["caption"]
        rebuilt = rebuild_dialog(row, questions, answers)
        assert rebuilt == [
            (data["questions"][d["question"]], data["answers"][d["answer"]], [data["answers"][o] for o in d["answer_options"]])
            for d in original["dialog"]
        ]
        assert all(len(set(opts)) == 100 for _, _, opts in rebuilt)
        assert all(opts[rd["gt_index"]] == ans for (_, ans, opts), rd in zip(rebuilt, row["rounds"], strict=True))
    dense = {d["image_id"]: d for d in json.loads(sample.visdial_val_dense_json.read_text())}
    for row in r.dialogs.to_pylist():
        d = dense[row["visdial_image_id"]]
        assert row["dense_round"] == d["round_id"] and row["dense_relevance"] == d["gt_relevance"]
    for item in r.items.to_pylist():  # default URL template: the official zip's layout beside the JSON
        assert Path(url2pathname(urlparse(item["url"]).path)).is_file()
        assert item["source_path"].startswith("VisualDialog_val2018/VisualDialog_val2018_")
    assert r.stats["dense_rounds"] == 8


def test_ids_are_stable_across_reads(sample):
    a = read_visdial(sample.visdial_val_json, "val")
    b = read_visdial(sample.visdial_val_json, "val", image_url_template=sample.visdial_image_url_template)
    assert a.segments.equals(b.segments) and a.items.equals(b.items)
    assert a.dialogs["dense_round"].null_count == 8  # no dense file given


def test_bad_dialogs_are_quarantined_and_the_rest_kept(tmp_path, doc):
    bad = copy.deepcopy(doc)
    dialogs = bad["data"]["dialogs"]
    del dialogs[0]["caption"]
    dialogs[1]["dialog"][3]["question"] = 10_000
    dialogs[2]["dialog"][0]["gt_index"] = (dialogs[2]["dialog"][0]["gt_index"] + 1) % 100
    dialogs[3]["dialog"] = dialogs[3]["dialog"][:9]
    dialogs[4]["dialog"][5]["answer_options"] = dialogs[4]["dialog"][5]["answer_options"][:50]
    dialogs[5]["image_id"] = dialogs[6]["image_id"]
    path = _write(tmp_path / "visdial_1.0_val.json", bad)
    r = read_visdial(path, "val", image_url_template="file:///v/{image_id}.jpg")
    got = [(q["line"], q["reason"]) for q in r.quarantine.to_pylist()]
    assert got == [(0, "bad_dialog"), (1, "bad_dialog"), (2, "bad_dialog"), (3, "bad_dialog"), (4, "bad_dialog"),
                   (6, "duplicate_id")]
    details = r.quarantine["detail"].to_pylist()
    assert "missing caption" in details[0] and "question index 10000" in details[1]
    assert "not the answer" in details[2] and "9 rounds" in details[3] and "50 items" in details[4]
    assert r.dialogs["visdial_image_id"].to_pylist() == [dialogs[5]["image_id"], dialogs[7]["image_id"]]
    assert r.items.num_rows == 2 and r.segments["field"].to_pylist().count("caption") == 2


def test_bad_dense_records_are_quarantined(tmp_path, sample, doc):
    dense = json.loads(sample.visdial_val_dense_json.read_text())
    dense[0]["gt_relevance"] = dense[0]["gt_relevance"][:99]
    dense[1]["round_id"] = 11
    dense.append({"image_id": 123456789, "round_id": 1, "gt_relevance": [0.0] * 100})
    path = _write(tmp_path / "dense.json", dense)
    r = read_visdial(sample.visdial_val_json, "val", path)
    assert [(q["line"], q["reason"], q["source_file"]) for q in r.quarantine.to_pylist()] == [
        (0, "bad_dense", str(path)), (1, "bad_dense", str(path)), (8, "bad_dense", str(path)),
    ]
    assert r.dialogs["dense_round"].null_count == 2 and r.stats["dense_rounds"] == 6
    _write(path, {"image_id": 1})
    with pytest.raises(SourceFormatError, match="should be a JSON list"):
        read_visdial(sample.visdial_val_json, "val", path)


def test_truncated_and_wrong_schema_files(tmp_path, sample):
    text = sample.visdial_val_json.read_text()
    path = tmp_path / "visdial_1.0_val.json"
    path.write_text(text[: len(text) - 1000])
    with pytest.raises(SourceFormatError) as e:
        read_visdial(path, "val")
    assert str(path) in str(e.value) and "invalid JSON at line 1" in str(e.value)
    _write(path, {"version": "1.0", "split": "val2018", "data": {"questions": [], "answers": []}})
    with pytest.raises(SourceFormatError, match=r"missing key 'dialogs' in data"):
        read_visdial(path, "val")
    _write(path, {"version": "1.0", "questions": []})
    with pytest.raises(SourceFormatError, match=r"missing key 'data' in the top level"):
        read_visdial(path, "val")
    _write(path, {"split": "train", "data": {"questions": [], "answers": [], "dialogs": []}})
    with pytest.raises(SourceFormatError, match="read as 'val'"):
        read_visdial(path, "val")


def test_train_and_test_splits(tmp_path):
    dialog = {"image_id": 5, "caption": "a cat", "dialog": [
        {"question": 0, "answer": 1, "answer_options": list(range(100)), "gt_index": 1} for _ in range(10)
    ]}
    data = {"questions": ["is it a cat?"], "answers": [f"answer {i}" for i in range(100)],
            "dialogs": [dialog, {**dialog, "image_id": 6}]}
    path = _write(tmp_path / "train.json", {"split": "train", "data": data})
    with pytest.raises(ValueError, match="COCO 2014"):
        read_visdial(path, "train")
    with pytest.raises(ValueError, match="bad image_url_template"):
        read_visdial(path, "train", image_url_template="http://x/{id}.jpg")
    urls = {5: "http://images.cocodataset.org/val2014/COCO_val2014_000000000005.jpg"}
    r = read_visdial(path, "train", image_url_template=urls.__getitem__)
    assert r.items["url"].to_pylist() == [urls[5]] and r.items["source_path"].to_pylist() == [None]
    assert r.quarantine["reason"].to_pylist() == ["no_image_url"]
    # test split: the last round has no answer and no gt_index, and dialogs may be shorter
    rounds = [{"question": 0, "answer": 1, "answer_options": list(range(100)), "gt_index": 1} for _ in range(3)]
    rounds.append({"question": 0, "answer_options": list(range(100))})
    test = _write(tmp_path / "test.json", {"split": "test2018", "data": {**data, "dialogs": [
        {"image_id": 9, "caption": "a dog", "dialog": rounds}]}})
    r = read_visdial(test, "test", image_url_template="file:///t/{image_id:012d}.jpg")
    last = r.dialogs.to_pylist()[0]["rounds"][-1]
    assert r.quarantine.num_rows == 0 and last["answer"] is None and last["gt_index"] is None
    assert r.items["url"].to_pylist() == ["file:///t/000000000009.jpg"]


def test_official_test_layout(tmp_path):
    """visdial_1.0_test.json as released: dialogs stop at `round_id`; the rounds before it have a question
    and an answer and no options; only the last round has the 100 answer_options (and no answer)."""
    def dialog(image_id: int, n: int) -> dict:
        rounds = [{"question": k, "answer": k + 1} for k in range(n - 1)]
        rounds.append({"question": n - 1, "answer_options": list(range(100, 200))})
        return {"image_id": image_id, "caption": f"a scene {image_id}", "round_id": n, "dialog": rounds}

    data = {"questions": [f"question {i}?" for i in range(10)], "answers": [f"answer {i}" for i in range(200)],
            "dialogs": [dialog(1, 1), dialog(2, 4), dialog(3, 10)]}
    bad = dialog(4, 3)
    del bad["dialog"][-1]["answer_options"]  # the last round must carry the options
    wrong_count = dialog(5, 3) | {"round_id": 5}
    data["dialogs"] += [bad, wrong_count]
    path = _write(tmp_path / "visdial_1.0_test.json", {"version": "1.0", "split": "test2018", "data": data})
    r = read_visdial(path, "test")
    assert r.dialogs["visdial_image_id"].to_pylist() == [1, 2, 3]
    assert [(q["line"], q["reason"]) for q in r.quarantine.to_pylist()] == [(3, "bad_dialog"), (4, "bad_dialog")]
    assert "round 3: answer_options should be a list of 100" in r.quarantine["detail"][0].as_py()
    assert "round_id 5 but 3 rounds" in r.quarantine["detail"][1].as_py()
    rounds = r.dialogs.to_pylist()[1]["rounds"]
    assert [x["answer"] for x in rounds] == [1, 2, 3, None]
    assert [x["answer_options"] is None for x in rounds] == [True, True, True, False]
    assert all(x["gt_index"] is None for x in rounds)
    text = rebuild_dialog(r.dialogs.to_pylist()[1], data["questions"], data["answers"])
    assert text[0] == ("question 0?", "answer 1", []) and text[-1][1] is None and len(text[-1][2]) == 100
    # the default image location is the official zip's layout, extracted beside the JSON
    assert r.items["url"].to_pylist()[0].endswith("VisualDialog_test2018/VisualDialog_test2018_000000000001.jpg")
