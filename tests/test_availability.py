"""Reason classes for the error messages img2dataset really writes, and the Table 4.1 / breakdown reports."""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.availability import (
    REASONS,
    TRANSIENT_REASONS,
    availability_counts,
    availability_table,
    classify,
    is_transient,
    reason_breakdown,
    reason_table,
    render_markdown,
    render_report,
)
from pipeline.contracts import AVAILABILITY
from pipeline.readers.cc3m import read_cc3m_tsv

# Messages copied from img2dataset 1.47 `error_message` values observed against the local faulty
# server (tests/test_images.py) and the host's resolver, plus the stdlib's own wording for the
# failures a loopback server cannot produce (reset, EAI_AGAIN, certificate).
OBSERVED = {
    "HTTP Error 404: Not Found": "http_404",
    "HTTP Error 403: Forbidden": "http_403",
    "HTTP Error 500: Internal Server Error": "http_500",
    "HTTP Error 503: Service Unavailable": "http_503",
    "HTTP Error 429: Too Many Requests": "http_429",
    "HTTP Error 302: The HTTP server returned a redirect error that would lead to an infinite loop.\n"
    "The last 30x error message was:\nFound": "too_many_redirects",
    "timed out": "timeout",
    "The read operation timed out": "timeout",
    "<urlopen error timed out>": "timeout",
    "<urlopen error [Errno -2] Name or service not known>": "dns",
    "<urlopen error [Errno -5] No address associated with hostname>": "dns",
    "<urlopen error [Errno -3] Temporary failure in name resolution>": "dns_temporary",
    "<urlopen error [Errno 111] Connection refused>": "connection_refused",
    "[Errno 104] Connection reset by peer": "connection_reset",
    "Remote end closed connection without response": "connection_reset",
    "IncompleteRead(677 bytes read, 100 more expected)": "incomplete_read",
    "<urlopen error [Errno 113] No route to host>": "unreachable",
    "<urlopen error [SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)>": "ssl",
    "<urlopen error [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local "
    "issuer certificate (_ssl.c:1006)>": "ssl",
    "<urlopen error [Errno 2] No such file or directory: '/tmp/exp/missing.jpg'>": "file_not_found",
    "unknown url type: 'notaurl'": "bad_url",
    "Use of image disallowed by X-Robots-Tag directive": "disallowed",
    "Image decoding error": "decode_error",
    "OpenCV(4.14.0) /io/opencv/modules/imgcodecs/src/loadsave.cpp:1310: error: (-215:Assertion failed) "
    "!buf.empty() in function 'imdecode_'\n": "not_an_image",
    "image too small": "too_small",
    "image area too large": "too_large",
    "aspect ratio too large": "bad_aspect_ratio",
    "hash mismatch": "hash_mismatch",
    "something nobody has seen before": "other",
}


@pytest.mark.parametrize("message,reason", OBSERVED.items())
def test_classify_real_messages(message: str, reason: str) -> None:
    assert classify(message) == reason
    assert reason in REASONS or reason.startswith("http_")


def test_success_is_ok() -> None:
    assert classify(None) == "ok" and classify("") == "ok"


def test_transient_reasons() -> None:
    for r in ("timeout", "http_500", "http_503", "http_599", "http_429", "connection_reset", "dns_temporary"):
        assert is_transient(r), r
    for r in ("http_404", "http_403", "dns", "not_an_image", "decode_error", "too_small", "ok", "http_5"):
        assert not is_transient(r), r
    assert is_transient("dns", {"dns"}) and not is_transient("http_500", {"timeout"})
    assert "http_5xx" in TRANSIENT_REASONS


def _frame(n_ok: int, fails: dict[str, int]) -> pl.DataFrame:
    reasons = ["ok"] * n_ok + [r for r, k in fails.items() for _ in range(k)]
    return pl.DataFrame(
        {"status": ["success" if r == "ok" else "failed" for r in reasons], "reason": reasons}
    )


def test_thesis_table_4_1_from_the_thesis_counts() -> None:
    # Frames with the thesis' counts: 3,318,333 train URLs of which 2,709,383 available, etc.
    train = pl.DataFrame(
        {"status": pl.Series(["success", "failed"]).repeat_by(pl.Series([2_709_383, 608_950])).explode()}
    ).with_columns(pl.lit("x").alias("reason"))
    val = _frame(12_702, {"http_404": 3_138})
    table = availability_table({"train": train, "validation": val})
    assert table.columns == ["", "train", "validation", "total"]
    assert table.rows() == [
        ("original", "3,318,333", "15,840", "3,334,173"),
        ("available", "2,709,383", "12,702", "2,722,085"),
        ("loss", "18.4%", "19.8%", "18.4%"),
    ]
    md = render_markdown(table)
    assert md.splitlines()[0] == "|  | train | validation | total |"
    assert "| loss | 18.4% | 19.8% | 18.4% |" in md


def _write(path: Path, df: pl.DataFrame) -> Path:
    n = df.height
    table = pa.table(
        {
            "image_id": [f"i{i}" for i in range(n)],
            "url": [f"http://h/{i}" for i in range(n)],
            "status": df["status"].to_list(),
            "reason": df["reason"].to_list(),
            "error_message": [None if r == "ok" else r for r in df["reason"].to_list()],
            "key": [None] * n,
            "shards_dir": [None] * n,
        },
        schema=AVAILABILITY,
    )
    path.mkdir(parents=True)
    pq.write_table(table, path / "availability.parquet")
    return path


def test_reports_read_availability_files(tmp_path: Path) -> None:
    train = _write(tmp_path / "train", _frame(6, {"http_404": 2, "timeout": 1, "not_an_image": 1}))
    val = _write(tmp_path / "val", _frame(3, {"http_404": 1}))
    counts = availability_counts({"train": train, "validation": val / "availability.parquet"})
    assert counts.rows() == [
        ("train", 10, 6, 4, 40.0),
        ("validation", 4, 3, 1, 25.0),
        ("total", 14, 9, 5, pytest.approx(500 / 14)),
    ]
    long = reason_breakdown({"train": train, "validation": val})
    assert long.filter(pl.col("split") == "train").rows() == [
        ("train", "ok", 6, 60.0), ("train", "http_404", 2, 20.0),
        ("train", "not_an_image", 1, 10.0), ("train", "timeout", 1, 10.0),
    ]
    total = long.filter(pl.col("split") == "total")
    assert dict(zip(total["reason"], total["count"], strict=True)) == {
        "ok": 9, "http_404": 3, "not_an_image": 1, "timeout": 1
    }
    assert total["share"].sum() == pytest.approx(100.0)
    wide = reason_table({"train": train, "validation": val})
    assert wide["reason"].to_list() == ["http_404", "not_an_image", "timeout"]  # losses only: no `ok` row
    assert wide.row(0) == ("http_404", "2 (20.0%)", "1 (25.0%)", "3 (21.4%)")
    assert wide.row(1)[2] == "0 (0.0%)"  # a reason a split never saw
    report = render_report({"train": train, "validation": val})
    assert "| ok |" not in report
    assert "| original | 10 | 4 | 14 |" in report and "| http_404 | 2 (20.0%) | 1 (25.0%) | 3 (21.4%) |" in report


def test_empty_split_has_zero_loss() -> None:
    counts = availability_counts({"train": _frame(0, {})})
    assert counts.row(0) == ("train", 0, 0, 0, 0.0)


def test_table_41_adds_up_from_the_tsv_line_count(tmp_path: Path) -> None:
    """`original` is the TSV's own line count (blank and malformed lines included); every line is an
    available image, a failed URL or a reader loss with its own reason."""
    lines = [f"caption {i}\thttp://h/{i}.jpg" for i in range(12)]
    lines[2] = ""  # blank
    lines[5] = "no tab here"  # missing_field
    lines[7] = "a\tb\tc"  # too_many_fields
    lines[9] = "bad url\tftp://h/9.jpg"  # bad_url
    tsv = tmp_path / "Train_GCC-training.tsv"
    tsv.write_bytes(("\n".join(lines) + "\n").encode() + b"caf\xe9\thttp://h/12.jpg\n")
    n_lines = tsv.read_bytes().count(b"\n")
    assert n_lines == 13
    read = read_cc3m_tsv(tsv, "train")
    stats = tmp_path / "read"
    stats.mkdir()
    (stats / "read_stats.json").write_text(json.dumps(read.read_stats()))
    # the download: every URL the reader kept, three of them lost (404, timeout, too_small)
    urls = read.items.num_rows
    reasons = ["ok"] * (urls - 3) + ["http_404", "timeout", "too_small"]
    images = _write(tmp_path / "images", pl.DataFrame(
        {"status": ["success" if r == "ok" else "failed" for r in reasons], "reason": reasons}))
    counts = availability_counts({"train": images}, {"train": stats})
    assert counts.row(0) == ("train", n_lines, urls - 3, n_lines - urls + 3, pytest.approx(100 * 8 / 13))
    long = reason_breakdown({"train": images}, {"train": stats}).filter(pl.col("split") == "train")
    got = dict(zip(long["reason"], long["count"], strict=True))
    assert got == {"ok": 5, "http_404": 1, "timeout": 1, "too_small": 1, "read:blank_line": 1,
                   "read:missing_field": 1, "read:too_many_fields": 1, "read:bad_url": 1, "read:bad_utf8": 1}
    assert sum(got.values()) == n_lines and long["share"].sum() == pytest.approx(100.0)
    report = render_report({"train": images}, {"train": stats})
    assert "| original | 13 | 13 |" in report and "| read:blank_line | 1 (7.7%) | 1 (7.7%) |" in report
    # without the reader's stats (a run ingested before they were written) the URLs are the original
    assert availability_counts({"train": images}, {"train": tmp_path / "absent"}).row(0)[1] == urls
