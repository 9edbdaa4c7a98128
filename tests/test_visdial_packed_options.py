"""VisDial reader at full size: answer_options packed while parsing and checked a dialog at a time with
numpy must give exactly what the per-option check gives (same kept dialogs, quarantine rows, reasons,
messages and Parquet bytes)."""
from __future__ import annotations

import copy
import json
import random
from array import array

import numpy as np
import pyarrow as pa
import pytest

import pipeline.readers.visdial as visdial
from pipeline.contracts import DIALOGS, ITEMS, QUARANTINE, SEGMENTS
from pipeline.io import write_parquet_atomic
from pipeline.readers.common import SourceFormatError, cap_raw, load_json
from pipeline.readers.visdial import _options_valid, _pack_options, read_visdial

URL = "file:///v/{image_id:012d}.jpg"
N_ANSWERS = 500


def _doc(n_dialogs: int, seed: int, split: str = "val") -> dict:
    """A valid VisDial file: train/val rounds with 100 options each; test dialogs of 1..10 rounds with
    options on the last round only."""
    rng = random.Random(seed)
    questions = [f"question {i}?" for i in range(300)]
    answers = [f"answer {i}" for i in range(N_ANSWERS)]
    dialogs = []
    for d in range(n_dialogs):
        if split == "test":
            n = rng.randint(1, 10)
            rounds = [{"question": rng.randrange(300), "answer": rng.randrange(N_ANSWERS)} for _ in range(n - 1)]
            rounds.append({"question": rng.randrange(300), "answer_options": rng.sample(range(N_ANSWERS), 100)})
            dialogs.append({"image_id": d + 1, "caption": f"scene {d}", "round_id": n, "dialog": rounds})
            continue
        rounds = []
        for _ in range(10):
            opts = rng.sample(range(N_ANSWERS), 100)
            gt = rng.randrange(100)
            rounds.append({"question": rng.randrange(300), "answer": opts[gt], "gt_index": gt, "answer_options": opts})
        dialogs.append({"image_id": d + 1, "caption": f"scene {d}", "dialog": rounds})
    return {"version": "1.0", "split": f"{split}2018", "data": {"questions": questions, "answers": answers,
                                                                "dialogs": dialogs}}


# Values an answer option may wrongly hold, each one the per-option check rejects.
BAD_OPTIONS = [N_ANSWERS, -1, 2**31, -(2**31) - 1, 2**70, True, False, 3.0, "7", None, [1], {"answer_options": [1, 2]}]


def _break(dialog: dict, rng: random.Random) -> None:
    """One random defect in a dialog (most of them in the options, which the fast path checks)."""
    rounds = dialog["dialog"]
    with_opts = [r for r in rounds if "answer_options" in r]
    kind = rng.randrange(6)
    if kind <= 2 and with_opts:
        r = rng.choice(with_opts)
        r["answer_options"][rng.randrange(100)] = rng.choice(BAD_OPTIONS)
    elif kind == 3 and with_opts:
        r = rng.choice(with_opts)
        r["answer_options"] = r["answer_options"][: rng.choice([0, 1, 99])] + rng.choice([[], [1, 2]])
    elif kind == 4:
        rng.choice(rounds)["question"] = rng.choice([10_000, True, None, {"answer_options": [3]}])
    elif "gt_index" in rounds[0]:
        rounds[rng.randrange(len(rounds))]["gt_index"] = rng.choice([100, -1, 1.0, None])
    else:
        rounds[-1]["answer_options"] = {"answer_options": list(range(100))}


def _tables(r) -> dict[str, pa.Table]:
    return {"segments": r.segments, "items": r.items, "quarantine": r.quarantine, "dialogs": r.dialogs}


def _per_option(monkeypatch) -> None:
    """Parse without packing: every option list stays Python ints, so every dialog goes through the
    per-option check (the reader's original path)."""
    monkeypatch.setattr(visdial, "_load_packed", load_json)


@pytest.mark.parametrize("split", ["val", "test"])
def test_packed_and_per_option_paths_agree(tmp_path, monkeypatch, split):
    rng = random.Random(11)
    doc = _doc(400, seed=3, split=split)
    broken = sorted(rng.sample(range(400), 120))
    for d in broken:
        _break(doc["data"]["dialogs"][d], rng)
    path = tmp_path / f"visdial_1.0_{split}.json"
    path.write_text(json.dumps(doc))
    fast = read_visdial(path, split, image_url_template=URL)
    with monkeypatch.context() as m:
        _per_option(m)
        slow = read_visdial(path, split, image_url_template=URL)
    assert 60 < fast.quarantine.num_rows <= 120 and fast.dialogs.num_rows >= 280
    assert fast.stats == slow.stats and fast.lost == slow.lost
    for name, schema in (("segments", SEGMENTS), ("items", ITEMS), ("quarantine", QUARANTINE), ("dialogs", DIALOGS)):
        a, b = _tables(fast)[name], _tables(slow)[name]
        assert a.equals(b), name
        write_parquet_atomic(tmp_path / f"fast_{name}.parquet", a, schema)
        write_parquet_atomic(tmp_path / f"slow_{name}.parquet", b, schema)
        assert (tmp_path / f"fast_{name}.parquet").read_bytes() == (tmp_path / f"slow_{name}.parquet").read_bytes()
    # the kept dialogs' options are the file's, round by round
    kept = {row["visdial_image_id"]: row for row in fast.dialogs.to_pylist()}
    for original in doc["data"]["dialogs"]:
        if original["image_id"] in kept:
            assert [x["answer_options"] for x in kept[original["image_id"]]["rounds"]] == [
                x.get("answer_options") for x in original["dialog"]]
    # the quarantine keeps each rejected dialog as the file had it
    by_line = {row["line"]: row for row in fast.quarantine.to_pylist()}
    for line, row in by_line.items():
        assert row["raw"] == cap_raw(doc["data"]["dialogs"][line])


@pytest.mark.parametrize("bad, shown", [(N_ANSWERS, "500"), (True, "True"), (2**40, str(2**40)), (4.0, "4.0"),
                                        (-3, "-3"), (None, "None")])
def test_bad_option_deep_in_a_large_file_keeps_the_old_message(tmp_path, bad, shown):
    doc = _doc(2000, seed=5)
    dialog = doc["data"]["dialogs"][1777]
    original = copy.deepcopy(dialog)
    original["dialog"][6]["answer_options"][63] = bad
    dialog["dialog"][6]["answer_options"][63] = bad
    path = tmp_path / "visdial_1.0_val.json"
    path.write_text(json.dumps(doc))
    r = read_visdial(path, "val", image_url_template=URL)
    assert r.quarantine.to_pylist() == [{
        "dataset": "visdial", "split": "val", "source_file": str(path), "line": 1777, "reason": "bad_dialog",
        "detail": f"data.dialogs[1777]: round 7: answer option {shown} not an integer, out of range or quarantined",
        "raw": cap_raw(original),
    }]
    assert r.dialogs.num_rows == 1999 and 1778 not in r.dialogs["visdial_image_id"].to_pylist()
    assert r.lost == {"bad_dialog": 1}


def test_quarantined_answer_makes_options_pointing_at_it_bad(tmp_path):
    """A usable index is one into a usable answer: an option naming an over-long answer is rejected."""
    doc = _doc(50, seed=7)
    target = doc["data"]["dialogs"][30]["dialog"][2]["answer_options"][10]
    doc["data"]["answers"][target] = "x" * 100
    path = tmp_path / "visdial_1.0_val.json"
    path.write_text(json.dumps(doc))
    r = read_visdial(path, "val", image_url_template=URL, max_chars=50)
    lines = [(q["line"], q["reason"]) for q in r.quarantine.to_pylist()]
    assert (target, "too_long") in lines
    dialog_rows = [q for q in r.quarantine.to_pylist() if q["source_file"] == str(path) and q["reason"] == "bad_dialog"]
    users = [i for i, d in enumerate(doc["data"]["dialogs"])
             if any(target in x["answer_options"] or x["answer"] == target for x in d["dialog"])]
    assert [q["line"] for q in dialog_rows] == users and 30 in users


def test_pack_options_keeps_anything_but_plain_int32_as_a_list():
    assert _pack_options({"answer_options": [0, 5, 2**31 - 1, -4]})["answer_options"] == array("i", [0, 5, 2**31 - 1, -4])
    for bad in (True, False, 1.0, "1", None, 2**31, -(2**31) - 1, [1]):
        packed = _pack_options({"answer_options": [1, bad, 2]})["answer_options"]
        assert type(packed) is list and packed[1] is bad
    assert _pack_options({"answer_options": "x", "a": 1}) == {"answer_options": "x", "a": 1}


def test_options_valid_matches_the_per_option_check():
    rng = np.random.default_rng(0)
    valid = set(rng.choice(1000, 700, replace=False).tolist())
    usable = np.zeros(1001, dtype=bool)
    usable[list(valid)] = True
    for _ in range(300):
        rounds = [{"answer_options": array("i", rng.integers(-5, 1010, size=100).tolist())} for _ in range(10)]
        if rng.random() < 0.7:  # most dialogs all valid
            for r in rounds:
                r["answer_options"] = array("i", rng.choice(sorted(valid), 100).tolist())
        expected = all(type(o) is int and o in valid for r in rounds for o in r["answer_options"])
        assert _options_valid(rounds, usable) is expected
    assert _options_valid([{"answer_options": [1, 2]}], usable) is False  # unpacked: the per-option check decides
    assert _options_valid([{"question": 1}, "not a round"], usable) is True  # nothing to check here


def test_a_file_that_does_not_parse_fails_as_before(tmp_path):
    path = tmp_path / "visdial_1.0_val.json"
    text = json.dumps(_doc(3, seed=1))
    path.write_text(text[:-500])
    with pytest.raises(Exception) as packed:
        read_visdial(path, "val", image_url_template=URL)
    with pytest.raises(Exception) as plain:
        load_json(path)
    assert type(packed.value) is type(plain.value) and str(packed.value) == str(plain.value)
    assert "file truncated?" in str(packed.value)
    with pytest.raises(SourceFormatError, match="file not found"):
        read_visdial(tmp_path / "missing.json", "val", image_url_template=URL)
    path.write_bytes(b'{"data": "\xff"}')
    with pytest.raises(SourceFormatError, match="not UTF-8 text: invalid byte at offset 10"):
        read_visdial(path, "val", image_url_template=URL)
