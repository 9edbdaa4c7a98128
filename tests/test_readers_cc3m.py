"""CC3M TSV reader: real-format quirks, every quarantine reason, stable ids, and the sample's TSVs."""
from __future__ import annotations

import json

import pytest

import pipeline.readers.cc3m as cc3m
from pipeline.contracts import ITEMS, QUARANTINE, SEGMENTS
from pipeline.readers.cc3m import read_cc3m_tsv
from pipeline.readers.common import SourceFormatError
from tests.helpers import small_sample
from translation.textkey import text_hash

QUOTED = 'actor "john smith" poses at the premiere of the film \'the quiet man\''
BAD_TSV = b"".join(
    [
        b"a dog on a beach\thttps://example.com/a.jpg\n",  # 0 ok
        b"\n",  # 1 blank
        b"  \t  \n",  # 2 whitespace only: caption and url empty -> empty_caption
        QUOTED.encode() + b"\thttp://example.com/q.jpg\n",  # 3 ok, quotes verbatim
        b"just a caption with no url\n",  # 4 missing_field
        b"\thttps://example.com/b.jpg\n",  # 5 empty_caption
        b"caf\xe9 in paris\thttps://example.com/c.jpg\n",  # 6 bad_utf8 (latin-1 byte)
        b"a\tb\tc\n",  # 7 too_many_fields
        b"a red bus\t\n",  # 8 empty_url
        b"a red bus\tftp://example.com/d.jpg\n",  # 9 bad_url
        b"  padded caption  \t  HTTPS://example.com/e.jpg  \r\n",  # 10 ok, CRLF, upper-case scheme
        b"   \n",  # 11 blank (whitespace only)
        "última fotografia\tfile:///data/x.jpg".encode(),  # 12 local_file_refused (ok where local files are allowed), no final newline
    ]
)


@pytest.fixture()
def bad_tsv(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_bytes(BAD_TSV)
    return path


def test_each_bad_row_is_quarantined_with_its_line_and_reason(bad_tsv):
    r = read_cc3m_tsv(bad_tsv, "train")
    got = [(row["line"], row["reason"]) for row in r.quarantine.to_pylist()]
    assert got == [
        (3, "empty_caption"),
        (5, "missing_field"),
        (6, "empty_caption"),
        (7, "bad_utf8"),
        (8, "too_many_fields"),
        (9, "empty_url"),
        (10, "bad_url"),
        (13, "local_file_refused"),
    ]
    bad_utf8 = r.quarantine.to_pylist()[3]
    assert "0xe9" in bad_utf8["detail"] and bad_utf8["raw"].startswith("caf\ufffd in paris")
    assert {row["source_file"] for row in r.quarantine.to_pylist()} == {str(bad_tsv)}
    assert r.stats == {
        "lines": 13, "blank_lines": 2, "rows_ok": 3, "quarantined": 8,
        "quarantined_bad_url": 1, "quarantined_bad_utf8": 1, "quarantined_empty_caption": 2,
        "quarantined_empty_url": 1, "quarantined_local_file_refused": 1, "quarantined_missing_field": 1,
        "quarantined_too_many_fields": 1,
    }
    # Table 4.1 counts every line of the file; each one is an item or a loss with its reason
    assert r.original == 13 == r.items.num_rows + sum(r.lost.values())
    assert r.lost["blank_line"] == 2 and r.lost["bad_utf8"] == 1


def test_good_rows_keep_quotes_and_line_index_ids(bad_tsv):
    r = read_cc3m_tsv(bad_tsv, "train", allow_local_files=True)
    seg = r.segments.to_pylist()
    assert [s["segment_id"] for s in seg] == ["cc3m/train/0", "cc3m/train/3", "cc3m/train/10", "cc3m/train/12"]
    assert [s["text_en"] for s in seg] == ["a dog on a beach", QUOTED, "padded caption", "última fotografia"]
    assert all(s["text_hash"] == text_hash(s["text_en"]) for s in seg)
    assert all(s["item_id"] == s["segment_id"] and s["field"] == "caption" and s["split"] == "train" for s in seg)
    items = r.items.to_pylist()
    assert [i["image_id"] for i in items] == [s["segment_id"] for s in seg]
    assert items[2]["url"] == "HTTPS://example.com/e.jpg" and items[3]["url"] == "file:///data/x.jpg"
    assert all(i["source_path"] is None for i in items)


def test_schemas_equal_the_contracts(bad_tsv):
    r = read_cc3m_tsv(bad_tsv, "validation")
    assert r.segments.schema == SEGMENTS and r.items.schema == ITEMS and r.quarantine.schema == QUARANTINE
    assert r.dialogs is None


def test_ids_do_not_move_when_earlier_rows_are_bad(tmp_path):
    good = tmp_path / "good.tsv"
    good.write_bytes(b"one\thttp://x/1\ntwo\thttp://x/2\nthree\thttp://x/3\n")
    broken = tmp_path / "broken.tsv"
    broken.write_bytes(b"one\thttp://x/1\ntw\xffo\thttp://x/2\nthree\thttp://x/3\n")

    def ids(path):
        seg = read_cc3m_tsv(path, "train").segments
        return dict(zip(seg["text_en"].to_pylist(), seg["segment_id"].to_pylist(), strict=True))

    assert ids(good)["three"] == ids(broken)["three"] == "cc3m/train/2"


def test_small_blocks_and_batches_give_the_same_tables(bad_tsv, tmp_path, monkeypatch):
    """Block and batch boundaries (including a bad UTF-8 line split across reads) change nothing."""
    big = tmp_path / "big.tsv"
    big.write_bytes((BAD_TSV + b"\n") * 6)
    whole = read_cc3m_tsv(big, "train", allow_local_files=True)
    monkeypatch.setattr(cc3m, "BLOCK_BYTES", 7)
    monkeypatch.setattr(cc3m, "BATCH_ROWS", 3)
    calls = []
    pieces = read_cc3m_tsv(big, "train", progress=calls.append, allow_local_files=True)
    assert pieces.segments.equals(whole.segments) and pieces.items.equals(whole.items)
    assert pieces.quarantine.equals(whole.quarantine) and pieces.stats == whole.stats
    assert whole.stats["rows_ok"] == 4 * 6 and whole.stats["quarantined"] == 7 * 6
    assert len(calls) > 3 and calls == sorted(calls) and calls[-1] == whole.stats["lines"]


def test_utf8_bom_and_empty_file(tmp_path):
    bom = tmp_path / "bom.tsv"
    bom.write_bytes(b"\xef\xbb\xbfa cat\thttp://x/1\n")
    assert read_cc3m_tsv(bom, "train").segments["text_en"].to_pylist() == ["a cat"]
    empty = tmp_path / "empty.tsv"
    empty.write_bytes(b"")
    with pytest.raises(SourceFormatError, match=r"empty.tsv: no data lines: the file is empty"):
        read_cc3m_tsv(empty, "train")


def test_missing_file_is_a_source_format_error(tmp_path):
    with pytest.raises(SourceFormatError, match="nope.tsv"):
        read_cc3m_tsv(tmp_path / "nope.tsv", "train")


def test_sample_tsvs(tmp_path):
    layout = small_sample(tmp_path)
    truth = json.loads(layout.truth.read_text())["cc3m"]
    train = read_cc3m_tsv(layout.cc3m_train_tsv, "train", allow_local_files=True)
    expected = sorted((int(i) + 1, reason) for i, reason in truth["train"]["malformed"].items() if reason != "blank")
    assert [(q["line"], q["reason"]) for q in train.quarantine.to_pylist()] == expected
    assert train.stats["rows_ok"] == 60 and train.stats["blank_lines"] == 1
    assert all(u.startswith("file:///") for u in train.items["url"].to_pylist())
    val = read_cc3m_tsv(layout.cc3m_validation_tsv, "validation", allow_local_files=True)
    assert val.stats["rows_ok"] == 20 and val.quarantine.num_rows == 0
    assert val.segments["segment_id"].to_pylist() == [f"cc3m/validation/{i}" for i in range(20)]
