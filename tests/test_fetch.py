"""fetch_file / fetch_source against a local HTTP server with injected faults (fully offline)."""
from __future__ import annotations

import hashlib
import io
import json
import logging
import random
import zipfile
from pathlib import Path

import pytest

from pipeline.fetch import (
    FETCHED_MARKER,
    ChecksumMismatch,
    CountMismatch,
    FetchError,
    FetchSettings,
    FetchTimeout,
    SizeMismatch,
    VerifyError,
    fetch_file,
    fetch_source,
    verify_counts,
)
from pipeline.manifests import FileEntry, Manifest
from tests.httpserver import HTTPTestServer

pytestmark = pytest.mark.timeout(60)

PAYLOAD = random.Random(0).randbytes(200_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()
CHUNK = 8192
FAST = {"retries": 3, "backoff": 0.0, "chunk_size": CHUNK, "timeout": 5}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def manifest(files: list[dict]) -> Manifest:
    return Manifest.model_validate({
        "name": "toy", "description": "d", "licence": "l", "citation": "@misc{x}", "homepage": "http://x/",
        "files": files,
    })


@pytest.fixture
def server():
    with HTTPTestServer({"/data.bin": PAYLOAD}) as srv:
        yield srv


# ------------------------------------------------------------------------------------- basic download


def test_download_verifies_and_reports_progress(server: HTTPTestServer, tmp_path: Path) -> None:
    seen: list[tuple[int, int | None]] = []
    dest = tmp_path / "out" / "data.bin"
    rep = fetch_file(server.url("/data.bin"), dest, size=len(PAYLOAD), sha256=SHA,
                     progress=lambda d, t: seen.append((d, t)), **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert not dest.with_name("data.bin.part").exists()
    assert (rep.status, rep.size, rep.sha256, rep.sha256_pending) == ("downloaded", len(PAYLOAD), SHA, False)
    assert rep.bytes_transferred == len(PAYLOAD) and rep.attempts == 1
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_verified_file_is_not_downloaded_again(server: HTTPTestServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    fetch_file(server.url("/data.bin"), dest, size=len(PAYLOAD), sha256=SHA, **FAST)
    rep = fetch_file(server.url("/data.bin"), dest, size=len(PAYLOAD), sha256=SHA, **FAST)
    assert rep.status == "cached" and rep.bytes_transferred == 0
    assert server.hits["/data.bin"] == 1


def test_stale_file_failing_verification_is_replaced(server: HTTPTestServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    dest.write_bytes(b"old and wrong")
    rep = fetch_file(server.url("/data.bin"), dest, size=len(PAYLOAD), sha256=SHA, **FAST)
    assert rep.status == "downloaded" and dest.read_bytes() == PAYLOAD


def test_pending_checksum_is_computed_and_reported(server: HTTPTestServer, tmp_path: Path) -> None:
    rep = fetch_file(server.url("/data.bin"), tmp_path / "d.bin", **FAST)
    assert rep.sha256 == SHA and rep.sha256_pending and rep.sha256_expected is None


# --------------------------------------------------------------------------------- checksum and size


def test_checksum_mismatch_leaves_no_final_file(server: HTTPTestServer, tmp_path: Path) -> None:
    wrong = bytes(len(PAYLOAD))  # right length, wrong bytes
    server.wrong_content("/data.bin", wrong)
    dest = tmp_path / "data.bin"
    with pytest.raises(ChecksumMismatch) as e:
        fetch_file(server.url("/data.bin"), dest, size=len(PAYLOAD), sha256=SHA, **FAST)
    assert (e.value.expected, e.value.found) == (SHA, sha(wrong))
    assert e.value.url == server.url("/data.bin") and SHA in str(e.value)
    assert not dest.exists() and not dest.with_name("data.bin.part").exists()
    assert dest.with_name("data.bin.rejected").read_bytes() == wrong  # kept for inspection
    assert server.hits["/data.bin"] == 1  # a checksum mismatch is not retried


def test_size_mismatch(server: HTTPTestServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    with pytest.raises(SizeMismatch) as e:
        fetch_file(server.url("/data.bin"), dest, size=len(PAYLOAD) + 10, **FAST)
    assert (e.value.expected, e.value.found) == (len(PAYLOAD) + 10, len(PAYLOAD))
    assert not dest.exists()


def test_body_longer_than_expected_stops_early(server: HTTPTestServer, tmp_path: Path) -> None:
    with pytest.raises(SizeMismatch) as e:
        fetch_file(server.url("/data.bin"), tmp_path / "d.bin", size=1000, **FAST)
    assert e.value.expected == 1000 and e.value.found < len(PAYLOAD)  # did not read the whole body


# --------------------------------------------------------------------------------------------- resume


def test_interrupted_download_resumes_with_range(server: HTTPTestServer, tmp_path: Path) -> None:
    half = len(PAYLOAD) // 2
    server.drop_after("/data.bin", half)  # the first response is cut after `half` bytes
    dest = tmp_path / "data.bin"
    part = dest.with_name("data.bin.part")
    with pytest.raises(FetchError, match="gave up after 1 attempt"):
        fetch_file(server.url("/data.bin"), dest, size=len(PAYLOAD), sha256=SHA, **{**FAST, "retries": 0})
    kept = part.stat().st_size
    assert 0 < kept <= half and not dest.exists()

    rep = fetch_file(server.url("/data.bin"), dest, size=len(PAYLOAD), sha256=SHA, **FAST)
    assert dest.read_bytes() == PAYLOAD and not part.exists()
    assert (rep.status, rep.resumed_from, rep.bytes_transferred) == ("resumed", kept, len(PAYLOAD) - kept)
    assert server.range_headers("/data.bin") == [None, f"bytes={kept}-"]
    assert server.requests_for("/data.bin")[1].status == 206
    assert server.bytes_sent("/data.bin") < 2 * len(PAYLOAD)


def test_dropped_connection_is_retried_and_resumed_in_one_call(server: HTTPTestServer, tmp_path: Path) -> None:
    server.drop_after("/data.bin", 50_000)
    rep = fetch_file(server.url("/data.bin"), tmp_path / "d.bin", size=len(PAYLOAD), sha256=SHA, **FAST)
    assert rep.status == "resumed" and rep.attempts == 2
    assert server.range_headers("/data.bin")[1] == f"bytes={rep.resumed_from}-"


def test_server_ignoring_range_restarts_cleanly(server: HTTPTestServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    dest.with_name("data.bin.part").write_bytes(b"\xff" * 1000)  # stale, and wrong, partial bytes
    server.ignore_range("/data.bin")
    rep = fetch_file(server.url("/data.bin"), dest, size=len(PAYLOAD), sha256=SHA, **FAST)
    assert dest.read_bytes() == PAYLOAD and rep.status == "downloaded"
    assert server.range_headers("/data.bin") == ["bytes=1000-"]
    assert server.requests_for("/data.bin")[0].status == 200


def test_complete_part_is_renamed_without_a_request(server: HTTPTestServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    dest.with_name("data.bin.part").write_bytes(PAYLOAD)  # killed between the last byte and the rename
    fetch_file(server.url("/data.bin"), dest, size=len(PAYLOAD), sha256=SHA, **FAST)
    assert dest.read_bytes() == PAYLOAD and server.hits["/data.bin"] == 0


# --------------------------------------------------------------------------------------- HTTP faults


def test_404_fails_at_once_without_retries(server: HTTPTestServer, tmp_path: Path) -> None:
    with pytest.raises(FetchError) as e:
        fetch_file(server.url("/missing.bin"), tmp_path / "m.bin", **{**FAST, "backoff": 5.0})
    assert e.value.status == 404 and "HTTP 404" in str(e.value) and "/missing.bin" in str(e.value)
    assert server.hits["/missing.bin"] == 1
    assert not (tmp_path / "m.bin").exists()


def test_500_is_retried_then_succeeds(server: HTTPTestServer, tmp_path: Path) -> None:
    server.fail("/data.bin", 500, times=2)
    rep = fetch_file(server.url("/data.bin"), tmp_path / "d.bin", size=len(PAYLOAD), sha256=SHA, **FAST)
    assert rep.attempts == 3 and server.hits["/data.bin"] == 3


def test_persistent_500_gives_up_with_the_status(server: HTTPTestServer, tmp_path: Path) -> None:
    server.fail("/data.bin", 503)
    with pytest.raises(FetchError) as e:
        fetch_file(server.url("/data.bin"), tmp_path / "d.bin", **{**FAST, "retries": 2})
    assert e.value.status == 503 and "gave up after 3 attempt(s)" in str(e.value)
    assert server.hits["/data.bin"] == 3


def test_429_honours_retry_after(server: HTTPTestServer, tmp_path: Path) -> None:
    server.fail("/data.bin", 429, times=1, headers={"Retry-After": "0"})
    rep = fetch_file(server.url("/data.bin"), tmp_path / "d.bin", sha256=SHA, **{**FAST, "backoff": 30.0})
    assert rep.attempts == 2  # waited Retry-After (0 s), not the 30 s backoff


def test_redirect_loop_is_a_clear_error(server: HTTPTestServer, tmp_path: Path) -> None:
    server.redirect_loop("/loop")
    with pytest.raises(FetchError, match="redirect loop"):
        fetch_file(server.url("/loop"), tmp_path / "loop.bin", **FAST)
    assert not any(tmp_path.iterdir())


def test_redirect_is_followed(server: HTTPTestServer, tmp_path: Path) -> None:
    server.redirect("/old.bin", "/data.bin")
    rep = fetch_file(server.url("/old.bin"), tmp_path / "d.bin", sha256=SHA, **FAST)
    assert rep.size == len(PAYLOAD)


def test_slow_body_times_out(server: HTTPTestServer, tmp_path: Path) -> None:
    server.add("/slow.bin", b"x" * 50)
    server.trickle("/slow.bin", delay=0.4)
    with pytest.raises(FetchTimeout, match="gave up after 2 attempt"):
        fetch_file(server.url("/slow.bin"), tmp_path / "s.bin", **{**FAST, "timeout": 0.1, "retries": 1})
    assert server.hits["/slow.bin"] == 2
    assert not (tmp_path / "s.bin").exists()


# ------------------------------------------------------------------------------------------- file://


def test_file_url(tmp_path: Path) -> None:
    src = tmp_path / "src dir" / "data.bin"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    dest = tmp_path / "out" / "data.bin"
    rep = fetch_file(src.as_uri(), dest, size=len(PAYLOAD), sha256=SHA, chunk_size=CHUNK)
    assert dest.read_bytes() == PAYLOAD and rep.status == "downloaded"

    dest.unlink()
    dest.with_name("data.bin.part").write_bytes(PAYLOAD[:1234])
    rep = fetch_file(src.as_uri(), dest, size=len(PAYLOAD), sha256=SHA, chunk_size=CHUNK)
    assert (rep.status, rep.resumed_from, dest.read_bytes()) == ("resumed", 1234, PAYLOAD)

    with pytest.raises(FetchError, match="no such file"):
        fetch_file((tmp_path / "nope.bin").as_uri(), tmp_path / "n.bin")


# ------------------------------------------------------------------------------------------- counts


TSV = b"a cat\thttp://x/1.jpg\nA dog\thttp://x/2.jpg\n\nno newline at end\thttp://x/3.jpg"


def test_verify_counts_tsv_json_and_zip(tmp_path: Path) -> None:
    tsv = tmp_path / "a.tsv"
    tsv.write_bytes(TSV)
    entry = FileEntry(name="a.tsv", url="http://x/a.tsv", kind="tsv", rows=4, sha256_pending=True)
    assert verify_counts(tsv, entry) == {"a.tsv": 4}

    js = tmp_path / "a.json"
    js.write_text(json.dumps({"data": {"dialogs": [1, 2, 3]}}))
    entry = FileEntry(name="a.json", url="http://x/a.json", kind="json", records=3, count_path="data.dialogs",
                      sha256_pending=True)
    assert verify_counts(js, entry) == {"a.json": 3}
    with pytest.raises(CountMismatch, match=r"expected 4 records at 'data.dialogs', found 3") as e:
        verify_counts(js, entry.model_copy(update={"records": 4}))
    assert (e.value.expected, e.value.found) == (4, 3)
    with pytest.raises(VerifyError, match="no key 'turns'"):
        verify_counts(js, entry.model_copy(update={"count_path": "data.turns"}))

    js.write_text('{"data": {"dialogs": [1, 2')  # truncated
    with pytest.raises(VerifyError, match="not valid JSON"):
        verify_counts(js, entry)


def test_count_mismatch_tsv_leaves_no_final_file(server: HTTPTestServer, tmp_path: Path) -> None:
    server.add("/a.tsv", TSV)
    m = manifest([{"name": "a.tsv", "url": server.url("/a.tsv"), "kind": "tsv", "rows": 5,
                   "sha256": sha(TSV)}])
    with pytest.raises(CountMismatch, match="expected 5 rows, found 4") as e:
        fetch_source(m, tmp_path, settings=FetchSettings(backoff=0), progress=False)
    assert (e.value.expected, e.value.found) == (5, 4)
    assert not (tmp_path / "a.tsv").exists() and (tmp_path / "a.tsv.rejected").exists()
    assert not (tmp_path / FETCHED_MARKER).exists()


def test_count_mismatch_json(server: HTTPTestServer, tmp_path: Path) -> None:
    body = json.dumps({"images": [{"id": i} for i in range(3)]}).encode()
    server.add("/c.json", body)
    m = manifest([{"name": "c.json", "url": server.url("/c.json"), "kind": "json", "count_path": "images",
                   "records": 4, "sha256_pending": True}])
    with pytest.raises(CountMismatch, match="expected 4 records at 'images', found 3"):
        fetch_source(m, tmp_path, progress=False)
    assert not (tmp_path / "c.json").exists()


def test_count_mismatch_json_inside_zip(server: HTTPTestServer, tmp_path: Path) -> None:
    z = make_zip({"v/dialogs.json": json.dumps({"data": {"dialogs": [{}, {}]}}).encode()})
    server.add("/v.zip", z)
    m = manifest([{"name": "v.zip", "url": server.url("/v.zip"), "kind": "zip", "sha256": sha(z),
                   "members": [{"path": "v/dialogs.json", "kind": "json", "count_path": "data.dialogs",
                                "records": 3}]}])
    with pytest.raises(CountMismatch, match=r"v\.zip.part!v/dialogs\.json: expected 3 records .* found 2"):
        fetch_source(m, tmp_path, progress=False)
    assert not (tmp_path / "v.zip").exists() and not (tmp_path / "v").exists()


def test_zip_member_missing_or_escaping(server: HTTPTestServer, tmp_path: Path) -> None:
    z = make_zip({"other.json": b"[]", "../evil.txt": b"x"})
    server.add("/z.zip", z)
    missing = manifest([{"name": "z.zip", "url": server.url("/z.zip"), "kind": "zip", "sha256": sha(z),
                         "members": [{"path": "a.json", "kind": "json"}]}])
    with pytest.raises(VerifyError, match="member 'a.json' not in the archive"):
        fetch_source(missing, tmp_path / "a", progress=False)
    escaping = manifest([{"name": "z.zip", "url": server.url("/z.zip"), "kind": "zip", "sha256": sha(z),
                          "members": [{"path": "*.txt", "kind": "files"}]}])
    with pytest.raises(VerifyError, match="outside"):
        fetch_source(escaping, tmp_path / "b", progress=False)
    assert not (tmp_path / "evil.txt").exists()


# -------------------------------------------------------------------------------------- fetch_source


def test_fetch_source_end_to_end(server: HTTPTestServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dialogs = json.dumps({"data": {"dialogs": [{"image_id": i} for i in range(7)]}}).encode()
    z = make_zip({"visdial_val.json": dialogs, "imgs/1.jpg": b"\xff\xd8a", "imgs/2.jpg": b"\xff\xd8b",
                  "skip.txt": b"not extracted"})
    js = json.dumps([{"round_id": 1}, {"round_id": 2}]).encode()
    server.add("/a.tsv", TSV)
    server.add("/val.zip", z)
    server.add("/dense.json", js)
    server.fail("/val.zip", 500, times=1)
    m = manifest([
        {"name": "a.tsv", "url": server.url("/a.tsv"), "kind": "tsv", "rows": 4, "size": len(TSV),
         "sha256": sha(TSV)},
        {"name": "val.zip", "url": server.url("/val.zip"), "kind": "zip", "size": len(z), "sha256": sha(z),
         "members": [{"path": "visdial_val.json", "kind": "json", "count_path": "data.dialogs", "records": 7},
                     {"path": "imgs/*.jpg", "kind": "files", "files": 2}]},
        {"name": "dense.json", "url": server.url("/dense.json"), "kind": "json", "count_path": "",
         "records": 2, "sha256_pending": True},
    ])
    out = tmp_path / "sources" / "toy"
    with caplog.at_level(logging.WARNING, logger="pipeline.fetch"):
        reports = fetch_source(m, out, settings=FetchSettings(backoff=0, chunk_size=CHUNK), progress=True)

    assert [r.status for r in reports] == ["downloaded", "downloaded", "downloaded"]
    assert reports[1].attempts == 2  # the 500 was retried
    assert reports[0].counts == {"a.tsv": 4}
    assert reports[1].counts == {"val.zip!visdial_val.json": 7, "val.zip!imgs/*.jpg": 2}
    assert reports[2].counts == {"dense.json": 2}
    assert set(reports[1].extracted) == {"visdial_val.json", "imgs/1.jpg", "imgs/2.jpg"}
    assert json.loads((out / "visdial_val.json").read_bytes()) == json.loads(dialogs)
    assert (out / "imgs" / "2.jpg").read_bytes() == b"\xff\xd8b" and not (out / "skip.txt").exists()

    marker = json.loads((out / FETCHED_MARKER).read_text())
    assert marker["source"] == "toy" and [f["path"] for f in marker["files"]] == ["a.tsv", "val.zip", "dense.json"]
    assert marker["sha256_to_record"] == {"dense.json": sha(js)}
    assert f'sha256 = "{sha(js)}"' in caplog.text and "toy.toml" in caplog.text

    before = sum(server.hits.values())
    again = fetch_source(m, out, settings=FetchSettings(backoff=0), progress=False)
    assert [r.status for r in again] == ["cached"] * 3
    assert sum(server.hits.values()) == before  # nothing downloaded twice
    assert (out / FETCHED_MARKER).exists()


def test_fetch_source_logs_byte_progress_without_a_terminal(server: HTTPTestServer, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture, monkeypatch) -> None:
    """In a batch job or luigid's log there is no bar: each file's bytes come as ptvl.progress lines."""
    monkeypatch.setenv("TTY_COMPATIBLE", "0")  # rich: no terminal, whatever runs the tests
    monkeypatch.setenv("PTVL_PROGRESS_EVERY_S", "0")
    caplog.set_level(logging.INFO, logger="ptvl.progress")
    m = manifest([{"name": "data.bin", "url": server.url("/data.bin"), "kind": "tsv", "size": len(PAYLOAD),
                   "sha256": SHA}])
    fetch_source(m, tmp_path, settings=FetchSettings(backoff=0, chunk_size=CHUNK), progress=True)
    lines = [r.getMessage() for r in caplog.records if r.name == "ptvl.progress"]
    assert len(lines) > 3 and all(line.startswith("toy/data.bin: ") for line in lines)
    assert lines[-1].startswith("toy/data.bin: 200.0 kB/200.0 kB (100%)")
    caplog.clear()
    fetch_source(m, tmp_path, settings=FetchSettings(backoff=0), progress=False)
    assert not [r for r in caplog.records if r.name == "ptvl.progress"]
