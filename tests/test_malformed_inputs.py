"""Malformed-input corpus: every way a real source file can be wrong, fed to the real readers.

Each case asserts what a user gets: a quarantine row with its reason at the right line / record
(the rest of the file kept), a string cleaned with the line named in the log, or a SourceFormatError
naming the file and the position.  None of them may crash a read or pass silently.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from pipeline.readers.cc3m import read_cc3m_tsv
from pipeline.readers.coco import read_coco_captions, read_karpathy
from pipeline.readers.common import SourceFormatError
from pipeline.readers.visdial import read_visdial
from pipeline.readers.vqa import read_vqav2

GOOD = b"a dog on a beach\thttp://example.com/a.jpg\n"
MB = 1 << 20


def _rows(r) -> list[tuple[int, str]]:
    return [(q["line"], q["reason"]) for q in r.quarantine.to_pylist()]


# ---------------------------------------------------------------- CC3M TSV: (bad line, reason)

TSV_QUARANTINED = {
    "no_tab": (b"just a caption\n", "missing_field"),
    "three_fields": (b"a\tb\tc\n", "too_many_fields"),
    "empty_caption": (b"\thttp://example.com/b.jpg\n", "empty_caption"),
    "blank_caption": (b"   \thttp://example.com/b.jpg\n", "empty_caption"),
    "only_control_chars": (b"\x00\x1b\x07\thttp://example.com/b.jpg\n", "empty_caption"),
    "empty_url": (b"a red bus\t\n", "empty_url"),
    "ftp_url": (b"a red bus\tftp://example.com/d.jpg\n", "bad_url"),
    "not_a_url": (b"a red bus\tnot a url\n", "bad_url"),
    "scheme_only": (b"a red bus\thttp://\n", "bad_url"),
    "latin1_byte": (b"caf\xe9 in paris\thttp://example.com/c.jpg\n", "bad_utf8"),
    "cut_multibyte": (b"caf\xc3\thttp://example.com/c.jpg\n", "bad_utf8"),
    "utf8_encoded_surrogate": (b"x\xed\xa0\x80y\thttp://example.com/c.jpg\n", "bad_utf8"),
    "file_url": (b"secrets\tfile:///etc/passwd\n", "local_file_refused"),
    "file_url_upper_case": (b"secrets\tFILE:///etc/passwd\n", "local_file_refused"),
    "one_megabyte_caption": (b"x" * MB + b"\thttp://example.com/e.jpg\n", "too_long"),
}


@pytest.mark.parametrize("case", sorted(TSV_QUARANTINED))
def test_tsv_line_is_quarantined_with_its_line_number(tmp_path: Path, case: str) -> None:
    bad, reason = TSV_QUARANTINED[case]
    path = tmp_path / "Train_GCC-training.tsv"
    path.write_bytes(GOOD + bad + GOOD)
    r = read_cc3m_tsv(path, "train")
    assert _rows(r) == [(2, reason)]
    assert r.quarantine["source_file"].to_pylist() == [str(path)]
    assert r.segments["segment_id"].to_pylist() == ["cc3m/train/0", "cc3m/train/2"]  # the rest is kept
    assert r.original == 3 and r.lost == {reason: 1}


def test_tsv_too_long_limit_is_configurable(tmp_path: Path) -> None:
    path = tmp_path / "t.tsv"
    path.write_bytes(b"x" * 50 + b"\thttp://h/1\n" + b"y" * 51 + b"\thttp://h/2\n")
    r = read_cc3m_tsv(path, "train", max_chars=50)
    assert _rows(r) == [(2, "too_long")] and "51 characters" in r.quarantine["detail"][0].as_py()
    assert read_cc3m_tsv(path, "train", max_chars=51).quarantine.num_rows == 0


TSV_CLEANED = {
    "nul": (b"a dog\x00 on a beach", "a dog on a beach"),
    "esc": (b"a \x1bdog on a beach", "a dog on a beach"),
    "lone_cr": (b"a dog\ron a beach", "a dog on a beach"),
    "del_and_c1": ("a dog\x7f on a\u0085 beach".encode(), "a dog on a beach"),
}


@pytest.mark.parametrize("case", sorted(TSV_CLEANED))
def test_tsv_control_characters_are_stripped_and_the_line_logged(tmp_path: Path, caplog, case: str) -> None:
    raw, clean = TSV_CLEANED[case]
    path = tmp_path / "t.tsv"
    path.write_bytes(GOOD + raw + b"\thttp://example.com/x.jpg\r\n" + GOOD)
    with caplog.at_level(logging.WARNING, logger="ptvl"):
        r = read_cc3m_tsv(path, "train")
    assert r.quarantine.num_rows == 0 and r.segments["text_en"].to_pylist()[1] == clean
    assert r.stats["cleaned_control_chars"] == 1
    assert f"{path}: control characters removed from 1 strings (line / record 2)" in caplog.text


@pytest.mark.parametrize(
    ("url", "sent"),
    [
        (b"http://example.com/a photo.jpg", "http://example.com/a%20photo.jpg"),
        ("http://example.com/café.jpg".encode(), "http://example.com/caf%C3%A9.jpg"),
        (b"http://example.com/a%20b c.jpg?q=1&r=2", "http://example.com/a%20b%20c.jpg?q=1&r=2"),
    ],
    ids=["space", "non_ascii", "space_beside_escape"],
)
def test_tsv_url_is_percent_encoded(tmp_path: Path, url: bytes, sent: str) -> None:
    path = tmp_path / "t.tsv"
    path.write_bytes(b"a photo\t" + url + b"\n")
    r = read_cc3m_tsv(path, "train")
    assert r.quarantine.num_rows == 0 and r.items["url"].to_pylist() == [sent]


def test_tsv_file_urls_are_read_where_the_profile_allows_them(tmp_path: Path) -> None:
    path = tmp_path / "t.tsv"
    path.write_bytes(b"local\tfile:///data/x.jpg\n")
    assert read_cc3m_tsv(path, "train", allow_local_files=True).items["url"].to_pylist() == ["file:///data/x.jpg"]


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "the file is empty"), (b"\n\n   \n\r\n", "all 4 lines are blank"), (b"\xef\xbb\xbf", "the file is empty")],
    ids=["empty", "blank_lines_only", "bom_only"],
)
def test_tsv_without_data_lines_is_an_error_naming_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "Validation_GCC-1.1.0-Validation.tsv"
    path.write_bytes(content)
    with pytest.raises(SourceFormatError, match="no data lines") as e:
        read_cc3m_tsv(path, "validation")
    assert str(e.value).startswith(str(path)) and message in str(e.value)


# ---------------------------------------------------------------- COCO Karpathy


def _image(cocoid, split: str, sentences: list, **extra) -> dict:
    return {"filepath": "val2014", "filename": f"COCO_val2014_{cocoid:012d}.jpg", "cocoid": cocoid, "split": split,
            "sentences": [{"raw": s, "tokens": [], "sentid": i} for i, s in enumerate(sentences)], **extra}


def _karpathy(tmp_path: Path, bad: dict, splits=("val",)):
    images = [_image(1, "val", ["a cat"]), bad, _image(3, "val", ["a dog"])]
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"images": images, "dataset": "coco"}))
    return read_karpathy(path, splits=splits)


KARPATHY_QUARANTINED = {
    "split_validation": (_image(2, "validation", ["a bird"]), ["unknown_split"]),
    "split_Test": (_image(2, "Test", ["a bird"]), ["unknown_split"]),
    "no_sentences": (_image(2, "val", []), ["no_captions"]),
    "only_blank_sentences": (_image(2, "val", ["  ", ""]), ["empty_caption", "empty_caption", "no_captions"]),
    "cocoid_true": (_image(True, "val", ["a bird"]) | {"filename": "x.jpg"}, ["bad_record"]),
    "duplicate_cocoid": (_image(1, "val", ["again"]), ["duplicate_id"]),
    "one_megabyte_caption": (_image(2, "val", ["x" * MB, "a bird"]), ["too_long"]),
    "lone_surrogate": (_image(2, "val", ["a b\ud800rd", "a bird"]), ["bad_unicode"]),
    "filename_lone_surrogate": (_image(2, "val", ["a bird"]) | {"filename": "x\udfff.jpg"}, ["bad_record"]),
}


@pytest.mark.parametrize("case", sorted(KARPATHY_QUARANTINED))
def test_karpathy_record_is_quarantined_with_its_index(tmp_path: Path, case: str) -> None:
    bad, reasons = KARPATHY_QUARANTINED[case]
    r = _karpathy(tmp_path, bad)
    assert _rows(r) == [(1, reason) for reason in reasons]
    assert {"coco/1", "coco/3"} <= set(r.items["image_id"].to_pylist())


def test_karpathy_image_without_usable_captions_is_not_an_item(tmp_path: Path) -> None:
    r = _karpathy(tmp_path, _image(2, "val", ["\x00"]))
    assert _rows(r) == [(1, "empty_caption"), (1, "no_captions")]
    assert r.items["image_id"].to_pylist() == ["coco/1", "coco/3"] and r.lost == {"no_captions": 1}


def test_karpathy_json_control_characters_are_stripped(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="ptvl"):
        r = _karpathy(tmp_path, _image(2, "val", ["a\x00 bird\u001b on\r a\nbranch"]))
    assert r.quarantine.num_rows == 0
    texts = dict(zip(r.segments["item_id"].to_pylist(), r.segments["text_en"].to_pylist(), strict=True))
    assert texts["coco/2"] == "a bird on a branch"
    assert "line / record 1" in caplog.text


def test_karpathy_cocoid_in_two_splits_is_leakage_named_in_both(tmp_path: Path, caplog) -> None:
    images = [_image(1, "train", ["a cat"]), _image(2, "test", ["a dog"]), _image(1, "val", ["a cat again"]),
              _image(3, "val", ["a bird"])]
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"images": images}))
    with caplog.at_level(logging.WARNING, logger="ptvl"):
        val = read_karpathy(path, splits=("val",))
        train = read_karpathy(path, splits=("train",))
    assert _rows(val) == [(2, "split_leakage")] and _rows(train) == [(0, "split_leakage")]
    assert "cocoid 1 is also in split train" in val.quarantine["detail"][0].as_py()
    assert "cocoid 1 is also in split val" in train.quarantine["detail"][0].as_py()
    assert val.items["image_id"].to_pylist() == ["coco/3"] and train.items.num_rows == 0
    assert "1 cocoids are in more than one split" in caplog.text and "1 (train/val)" in caplog.text


def test_karpathy_truncated_file_names_the_position(tmp_path: Path) -> None:
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"images": [_image(1, "val", ["a cat"])]})[:40])
    with pytest.raises(SourceFormatError) as e:
        read_karpathy(path)
    assert str(e.value).startswith(str(path)) and "line 1 column 37 (char 36 of 40) (file truncated?)" in str(e.value)


# ---------------------------------------------------------------- COCO official captions


def _captions(tmp_path: Path, image: dict, annotations: list[dict], **kw):
    doc = {"images": [{"id": 1, "file_name": "a.jpg", "coco_url": "http://images.cocodataset.org/val2014/a.jpg"},
                      image],
           "annotations": [{"id": 10, "image_id": 1, "caption": "a cat"}, *annotations]}
    path = tmp_path / "captions_val2014.json"
    path.write_text(json.dumps(doc))
    return read_coco_captions(path, "val", **kw)


def test_official_coco_file_url_is_refused(tmp_path: Path) -> None:
    r = _captions(tmp_path, {"id": 2, "file_name": "b.jpg", "coco_url": "file:///etc/passwd"},
                  [{"id": 11, "image_id": 2, "caption": "secrets"}])
    assert _rows(r) == [(1, "local_file_refused")] and r.items["image_id"].to_pylist() == ["coco/1"]


def test_official_coco_image_without_annotation_is_quarantined(tmp_path: Path) -> None:
    r = _captions(tmp_path, {"id": 2, "file_name": "b.jpg", "coco_url": "http://h/b c.jpg"}, [])
    assert _rows(r) == [(1, "no_captions")] and r.items["image_id"].to_pylist() == ["coco/1"]


def test_official_coco_url_with_a_lone_surrogate_is_written_encoded(tmp_path: Path) -> None:
    r = _captions(tmp_path, {"id": 2, "file_name": "b.jpg", "coco_url": "http://h/b\udc80.jpg"},
                  [{"id": 11, "image_id": 2, "caption": "a dog"}])
    assert r.quarantine.num_rows == 0 and r.items["url"].to_pylist()[1] == "http://h/b%ED%B2%80.jpg"


def test_official_coco_url_with_a_space_is_encoded(tmp_path: Path) -> None:
    r = _captions(tmp_path, {"id": 2, "file_name": "b.jpg", "coco_url": "http://h/b c.jpg"},
                  [{"id": 11, "image_id": 2, "caption": "a dog"}])
    assert r.quarantine.num_rows == 0 and r.items["url"].to_pylist()[1] == "http://h/b%20c.jpg"


# ---------------------------------------------------------------- VisDial


def _round(k: int) -> dict:
    return {"question": k, "answer": k, "answer_options": list(range(100)), "gt_index": k}


def _visdial(tmp_path: Path, mutate, dense: list | None = None, split: str = "val"):
    """Three dialogs of 10 rounds; `mutate(doc)` breaks dialog 1 (or a global string)."""
    doc = {"version": "1.0", "split": f"{split}2018", "data": {
        "questions": [f"question {i}?" for i in range(10)],
        "answers": [f"answer {i}" for i in range(100)],
        "dialogs": [{"image_id": 100 + d, "caption": f"caption {d}", "dialog": [_round(k) for k in range(10)]}
                    for d in range(3)],
    }}
    mutate(doc)
    path = tmp_path / f"visdial_1.0_{split}.json"
    path.write_text(json.dumps(doc))
    dense_path = None
    if dense is not None:
        dense_path = tmp_path / f"visdial_1.0_{split}_dense_annotations.json"
        dense_path.write_text(json.dumps(dense))  # json writes NaN / Infinity literals, as a broken file would
    return read_visdial(path, split, dense_path, image_url_template="http://h/{image_id}.jpg")


def _set(path: str, value):
    def mutate(doc):
        obj = doc["data"]
        *parents, last = path.split(".")
        for p in parents:
            obj = obj[int(p)] if p.isdigit() else obj[p]
        obj[int(last) if last.isdigit() else last] = value
    return mutate


VISDIAL_QUARANTINED = {
    "question_index_true": (_set("dialogs.1.dialog.3.question", True), "bad_dialog", "round 4: question index True"),
    "answer_index_true": (_set("dialogs.1.dialog.0.answer", True), "bad_dialog", "round 1: answer index True"),
    "gt_index_true": (_set("dialogs.1.dialog.9.gt_index", True), "bad_dialog", "round 10: gt_index True"),
    "option_true": (_set("dialogs.1.dialog.2.answer_options.5", True), "bad_dialog", "answer option True"),
    "image_id_true": (_set("dialogs.1.image_id", True), "bad_dialog", "non-integer image_id"),
    "question_index_float": (_set("dialogs.1.dialog.3.question", 3.0), "bad_dialog", "question index 3.0"),
    "nine_rounds": (lambda d: d["data"]["dialogs"][1]["dialog"].pop(), "bad_dialog", "9 rounds, expected 10"),
    "caption_lone_surrogate": (_set("dialogs.1.caption", "a \ud800 cat"), "bad_unicode", "lone surrogate U+D800"),
    "caption_one_megabyte": (_set("dialogs.1.caption", "x" * MB), "too_long", "1,048,576 characters"),
    "caption_only_nul": (_set("dialogs.1.caption", "\x00"), "empty_caption", "caption is empty"),
}


@pytest.mark.parametrize("case", sorted(VISDIAL_QUARANTINED))
def test_visdial_dialog_is_quarantined_and_the_read_goes_on(tmp_path: Path, case: str) -> None:
    mutate, reason, detail = VISDIAL_QUARANTINED[case]
    r = _visdial(tmp_path, mutate)
    assert _rows(r) == [(1, reason)] and detail in r.quarantine["detail"][0].as_py()
    assert r.dialogs["visdial_image_id"].to_pylist() == [100, 102] and r.lost == {reason: 1}


def test_visdial_unusable_global_string_quarantines_the_dialogs_using_it(tmp_path: Path) -> None:
    r = _visdial(tmp_path, _set("questions.4", "q" * MB))
    assert _rows(r) == [(4, "too_long"), (0, "bad_dialog"), (1, "bad_dialog"), (2, "bad_dialog")]
    assert "round 5: question index 4" in r.quarantine["detail"][1].as_py()


def _dense(image_id, relevance) -> dict:
    return {"image_id": image_id, "round_id": 3, "gt_relevance": relevance}


@pytest.mark.parametrize(
    ("record", "detail"),
    [
        (_dense(101, [0.5] * 50 + [float("nan")] * 50), "gt_relevance[50] is nan"),
        (_dense(101, [float("inf")] + [0.0] * 99), "gt_relevance[0] is inf"),
        (_dense(True, [0.0] * 100), "non-integer image_id"),
        (_dense(101, [0.0] * 99), "found 99 items"),
        (_dense(101, [True] * 100), "should be 100 numbers"),
    ],
    ids=["nan", "infinity", "image_id_true", "99_scores", "bool_scores"],
)
def test_visdial_bad_dense_record_is_quarantined(tmp_path: Path, record: dict, detail: str) -> None:
    r = _visdial(tmp_path, lambda d: None, dense=[_dense(100, [1.0] * 100), record])
    assert _rows(r) == [(1, "bad_dense")] and detail in r.quarantine["detail"][0].as_py()
    assert r.quarantine["source_file"][0].as_py().endswith("visdial_1.0_val_dense_annotations.json")
    assert r.dialogs["dense_round"].to_pylist() == [3, None, None]


def test_visdial_truncated_file_names_the_position(tmp_path: Path) -> None:
    path = tmp_path / "visdial_1.0_val.json"
    path.write_text('{"data": {"questions": ["a", "b"')
    with pytest.raises(SourceFormatError) as e:
        read_visdial(path, "val", image_url_template="http://h/{image_id}.jpg")
    assert str(e.value).startswith(str(path)) and "line 1 column 33 (char 32 of 32)" in str(e.value)


# ---------------------------------------------------------------- VQAv2


def _vqa(tmp_path: Path, question: dict | None = None, annotation: dict | None = None):
    """Two questions on two images; question / annotation 1 replaced when given."""
    def ann(qid, image_id, n=10, answer="yes"):
        return {"question_id": qid, "image_id": image_id, "answer_type": "yes/no", "multiple_choice_answer": "yes",
                "answers": [{"answer": answer, "answer_confidence": "yes", "answer_id": k + 1} for k in range(n)]}
    qs = [{"question_id": 10, "image_id": 1, "question": "is it a cat?"},
          question or {"question_id": 20, "image_id": 2, "question": "is it a dog?"}]
    anns = [ann(10, 1), annotation or ann(20, 2)]
    qp, ap = tmp_path / "questions.json", tmp_path / "annotations.json"
    qp.write_text(json.dumps({"questions": qs}))
    ap.write_text(json.dumps({"annotations": anns}))
    return read_vqav2(qp, ap, "val", image_url_template="http://h/{image_id}.jpg")


def _answers(n: int, answer: str = "yes") -> list[dict]:
    return [{"answer": answer, "answer_confidence": "yes", "answer_id": k + 1} for k in range(n)]


VQA_ANNOTATION = {"question_id": 20, "image_id": 2, "answer_type": "yes/no", "multiple_choice_answer": "yes"}

VQA_QUARANTINED = {
    "nine_answers": (None, {**VQA_ANNOTATION, "answers": _answers(9)}, "wrong_answer_count", "annotations.json"),
    "eleven_answers": (None, {**VQA_ANNOTATION, "answers": _answers(11)}, "wrong_answer_count", "annotations.json"),
    "answer_one_megabyte": (None, {**VQA_ANNOTATION, "answers": _answers(10, "y" * MB)}, "too_long",
                            "annotations.json"),
    "answer_lone_surrogate": (None, {**VQA_ANNOTATION, "answers": _answers(10, "\udc00")}, "bad_unicode",
                              "annotations.json"),
    "image_id_true": ({"question_id": 20, "image_id": True, "question": "is it?"}, None, "bad_question",
                      "questions.json"),
    "question_text_true": ({"question_id": 20, "image_id": 2, "question": True}, None, "bad_question",
                           "questions.json"),
    "question_lone_surrogate": ({"question_id": 20, "image_id": 2, "question": "is \ud83d it?"}, None, "bad_unicode",
                                "questions.json"),
    "question_only_control_chars": ({"question_id": 20, "image_id": 2, "question": "\x00\x1b"}, None, "empty_question",
                                    "questions.json"),
}


@pytest.mark.parametrize("case", sorted(VQA_QUARANTINED))
def test_vqa_record_loss_is_one_quarantine_row(tmp_path: Path, case: str) -> None:
    question, annotation, reason, file = VQA_QUARANTINED[case]
    r = _vqa(tmp_path, question, annotation)
    assert _rows(r) == [(1, reason)]  # one reason: never a second no_annotation row for the same loss
    assert r.quarantine["source_file"][0].as_py().endswith(file)
    assert r.extra["question_id"].to_pylist() == [10] and r.items["image_id"].to_pylist() == ["vqav2/1"]
    assert r.original == r.items.num_rows + sum(r.lost.values())
    # Table 4.1 counts the lost image, unless the record does not say which image it is
    assert r.lost == ({} if case == "image_id_true" else {reason: 1})


# ---------------------------------------------------------------- the CLI on the full profile


def test_run_until_segments_on_the_full_profile_needs_no_engine(tmp_path: Path, monkeypatch) -> None:
    """configs/full.toml before any model is converted and without a DeepL key: `--until segments` reads
    the sources; `--until translate` stops at start-up naming the engine.  The sample's CC3M TSVs name
    file:// URLs, which the full profile refuses line by line."""
    from typer.testing import CliRunner

    from pipeline.cli import app
    from pipeline.sample.write import write_sample
    from pipeline.settings import REPO_ROOT

    monkeypatch.delenv("DEEPL_AUTH_KEY", raising=False)
    root = tmp_path / "run"
    write_sample(root / "sources", n_train=6, n_val=3, n_coco=4, n_dialogs=2, n_vqa=2, image_size=16)
    for d in ("cc3m", "coco", "visdial", "vqav2"):  # the official files are "fetched"
        (root / "sources" / d / "_FETCHED.json").write_text("{}")
    text = (REPO_ROOT / "configs" / "full.toml").read_text().replace('root = "runs/full"', f'root = "{root}"')
    config = tmp_path / "full.toml"
    config.write_text(text)
    runner = CliRunner()
    res = runner.invoke(app, ["run", "--config", str(config), "--until", "segments"])
    assert res.exit_code == 0, res.output
    assert (root / "segments" / "coco" / "test.parquet").exists()
    stats = json.loads((root / "sources" / "cc3m" / "train" / "read_stats.json").read_text())
    assert stats["items"] == 0 and stats["lost"]["local_file_refused"] == 6
    res = runner.invoke(app, ["run", "--config", str(config), "--until", "translate"])
    assert res.exit_code != 0 and "DeepL key for engine 'deepl'" in res.output
