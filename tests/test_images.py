"""Real img2dataset downloads against a local faulty HTTP server: reasons per URL, kill -9 resume,
retry of transient failures, parquet / webdataset output (the pyspark distributor: tests/test_spark.py)."""
from __future__ import annotations

import collections
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.availability import availability_counts, availability_table
from pipeline.contracts import AVAILABILITY, ITEMS
from pipeline.images.download import DownloadError, download_images, retry_failed
from pipeline.images.layout import FIXES_NAME, LOG_NAME, manifest_path
from pipeline.images.settings import DownloadSettings
from pipeline.images.store import iter_image_batches
from tests.faultmix import KINDS, FaultMixServer, fault_mix
from tests.helpers import jpeg

REPO = Path(__file__).resolve().parent.parent
SLOW_S = 2.5  # the slow route stalls longer than the 1 s download timeout


GOOD = jpeg((48, 40))
SMALL = jpeg((8, 8))


def _two_colour(size: tuple[int, int], exif_orientation: int | None = None) -> bytes:
    """A landscape JPEG, left half red and right half blue, optionally tagged with an EXIF orientation."""
    w, h = size
    im = Image.new("RGB", size, (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, w // 2, h))
    buf = io.BytesIO()
    exif = Image.Exif()
    if exif_orientation is not None:
        exif[0x0112] = exif_orientation
    im.save(buf, "JPEG", quality=95, exif=exif)
    return buf.getvalue()


def _png16(size: tuple[int, int], bgr16: tuple[int, int, int], alpha: int | None = None) -> bytes:
    """A 16-bit-per-channel PNG (what img2dataset's decoder turns white)."""
    import cv2
    import numpy as np

    channels = [*bgr16, alpha] if alpha is not None else list(bgr16)
    arr = np.zeros((size[1], size[0], len(channels)), np.uint16)
    arr[:] = channels
    ok, png = cv2.imencode(".png", arr)
    assert ok
    return png.tobytes()


EXIF_ROTATED = _two_colour((60, 40), exif_orientation=6)  # "Rotated 90 CW": a portrait photo stored sideways
PNG16 = _png16((60, 40), (0x2000, 0x8000, 0xC000))  # BGR: a light orange-ish colour, 16 bits per sample
PNG16_ALPHA = _png16((60, 40), (0x0000, 0x0000, 0xFFFF), alpha=0x8000)  # half-transparent red over white
WHITE = jpeg((60, 40), (255, 255, 255))  # a genuinely white 8-bit image: must stay as it is
TRICKLE_S = 0.6  # per chunk: under the 1 s timeout, yet the whole body takes ~2.4 s


class FaultServer(ThreadingHTTPServer):
    """Loopback server with one route per failure mode; counts requests per path."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.counts: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()
        self.flaky_failures = 1  # /flaky/* answers 503 this many times, then the image
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"


class _Handler(BaseHTTPRequestHandler):
    server: FaultServer

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?")[0]
        with self.server.lock:
            self.server.counts[path] += 1
            seen = self.server.counts[path]
        if path.startswith("/img/"):
            return self._send(200, GOOD, "image/jpeg")
        if path == "/small.jpg":
            return self._send(200, SMALL, "image/jpeg")
        if path.startswith("/status/"):
            return self._send(int(path.split("/")[2]), b"error page", "text/html")
        if path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if path.startswith("/slow/"):  # headers at once, then the body stalls past the timeout
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(GOOD)))
            self.end_headers()
            self.wfile.write(GOOD[:16])
            self.wfile.flush()
            time.sleep(SLOW_S)
            return
        if path == "/exif.jpg":
            return self._send(200, EXIF_ROTATED, "image/jpeg")
        if path == "/png16.png":
            return self._send(200, PNG16, "image/png")
        if path == "/png16a.png":
            return self._send(200, PNG16_ALPHA, "image/png")
        if path == "/white.jpg":
            return self._send(200, WHITE, "image/jpeg")
        if path == "/trickle.jpg":  # the body in 4 chunks, each within the timeout of the last
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(GOOD)))
            self.end_headers()
            step = len(GOOD) // 4 + 1
            for i in range(0, len(GOOD), step):
                self.wfile.write(GOOD[i:i + step])
                self.wfile.flush()
                time.sleep(TRICKLE_S)
            return
        if path == "/html":
            return self._send(200, b"<html><body>moved</body></html>", "text/html")
        if path == "/corrupt.jpg":  # a JPEG header followed by garbage
            return self._send(200, GOOD[:20] + bytes(300), "image/jpeg")
        if path == "/truncated.jpg":
            return self._send(200, GOOD[: len(GOOD) // 2], "image/jpeg")
        if path == "/empty.jpg":
            return self._send(200, b"", "image/jpeg")
        if path.startswith("/flaky/"):
            if seen <= self.server.flaky_failures:
                return self._send(503, b"busy", "text/plain")
            return self._send(200, GOOD, "image/jpeg")
        return self._send(404, b"no route", "text/plain")

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server() -> FaultServer:
    srv = FaultServer()
    yield srv
    srv.shutdown()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _items(path: Path, urls: list[str], split: str = "train") -> Path:
    ids = [f"cc3m/{split}/{i}" for i in range(len(urls))]
    table = pa.table(
        {
            "image_id": ids,
            "dataset": ["cc3m"] * len(urls),
            "split": [split] * len(urls),
            "url": urls,
            "source_path": [None] * len(urls),
        },
        schema=ITEMS,
    )
    pq.write_table(table, path)
    return path


def _settings(**kw: object) -> DownloadSettings:
    base = dict(
        processes_count=1, thread_count=4, image_size=32, timeout=1, min_image_size=16,
        number_sample_per_shard=5,
    )
    base.update(kw)
    return DownloadSettings(**base)


def _matrix(server: FaultServer, tmp: Path) -> list[tuple[str, str]]:
    """(url, expected reason) covering every fault; 5 shards of 5 (last 4), each with a slow URL so a
    shard takes at least one timeout (the kill test needs time to kill between shards)."""
    good_file = tmp / "good.jpg"
    good_file.write_bytes(GOOD)
    b = server.base
    faults = [
        (f"{b}/img/0.jpg", "ok"), (f"{b}/status/404", "http_404"), (f"{b}/small.jpg", "too_small"),
        (f"{b}/img/1.jpg", "ok"), (f"{b}/status/500", "http_500"), (f"{b}/html", "not_an_image"),
        (f"{b}/img/2.jpg", "ok"), (f"{b}/loop", "too_many_redirects"), (f"{b}/corrupt.jpg", "decode_error"),
        (good_file.as_uri(), "ok"), ((tmp / "missing.jpg").as_uri(), "file_not_found"),
        (f"{b}/truncated.jpg", "decode_error"), (f"{b}/img/3.jpg", "ok"), (f"{b}/status/403", "http_403"),
        (f"{b}/empty.jpg", "not_an_image"), (f"http://127.0.0.1:{_closed_port()}/x.jpg", "connection_refused"),
        ("http://no-such-host.invalid/x.jpg", "dns"), (f"{b}/img/4.jpg", "ok"), ("not a url", "bad_url"),
    ]
    rows = []
    for shard in range(5):
        rows.append((f"{b}/slow/{shard}", "timeout"))
        rows.extend(faults[shard * 4 : shard * 4 + 4])
    return rows


@pytest.fixture(scope="module")
def matrix_run(server: FaultServer, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("matrix")
    rows = _matrix(server, tmp)
    items = _items(tmp / "items.parquet", [u for u, _ in rows])
    out = tmp / "out"
    manifest = download_images(items, out, _settings())
    return tmp, rows, items, out, manifest


def _availability(out: Path) -> pl.DataFrame:
    table = pq.read_table(out / "availability.parquet")
    assert table.schema.equals(AVAILABILITY), table.schema
    return pl.from_arrow(table).sort("image_id")


def test_every_fault_gets_its_reason(matrix_run) -> None:
    _, rows, _, out, manifest = matrix_run
    av = _availability(out)
    expected = {f"cc3m/train/{i}": reason for i, (_, reason) in enumerate(rows)}
    got = dict(zip(av["image_id"].to_list(), av["reason"].to_list(), strict=True))
    assert got == expected
    ok = av.filter(pl.col("reason") == "ok")
    assert (ok["status"] == "success").all() and ok["key"].null_count() == 0 and ok["error_message"].null_count() == 6
    failed = av.filter(pl.col("reason") != "ok")
    assert (failed["status"] == "failed").all() and failed["key"].null_count() == failed.height
    assert failed["error_message"].null_count() == 0
    # the manifest agrees with the table and lists the 5 shards of the first pass
    assert (manifest.urls, manifest.available, manifest.failed) == (24, 6, 18)
    assert manifest.by_reason["timeout"] == 5 and manifest.by_reason["ok"] == 6
    assert len(manifest.attempts) == 1 and len(manifest.attempts[0].shards) == 5
    on_disk = json.loads(manifest_path(out).read_text())
    assert on_disk["available"] == 6 and on_disk["settings"]["thread_count"] == 4


def test_table_41_numbers_from_a_real_download(matrix_run) -> None:
    _, _, _, out, _ = matrix_run
    counts = availability_counts({"train": out})
    assert counts.row(0, named=True) == {
        "split": "train", "original": 24, "available": 6, "lost": 18, "loss_pct": 75.0
    }
    assert availability_table({"train": out})["train"].to_list() == ["24", "6", "75.0%"]


def test_changed_input_is_refused_before_downloading(matrix_run, server: FaultServer) -> None:
    tmp, rows, _, out, _ = matrix_run
    other = _items(tmp / "other.parquet", [u for u, _ in rows][:-1])
    before = (out / "availability.parquet").stat().st_mtime_ns
    with pytest.raises(DownloadError, match="differs"):
        download_images(other, out, _settings())
    assert (out / "availability.parquet").stat().st_mtime_ns == before


def test_rerun_of_a_complete_download_fetches_nothing(matrix_run, server: FaultServer) -> None:
    _, _, items, out, manifest = matrix_run
    before = _availability(out)
    requests = sum(server.counts.values())
    again = download_images(items, out, _settings())
    assert sum(server.counts.values()) == requests
    assert _availability(out).equals(before)
    assert again.model_dump(exclude={"created_at"}) == manifest.model_dump(exclude={"created_at"})


def test_bad_items_are_clear_errors(tmp_path: Path) -> None:
    dup = tmp_path / "dup.parquet"
    pq.write_table(pa.table({"image_id": ["a", "a"], "url": ["file:///x", "file:///y"]}), dup)
    with pytest.raises(DownloadError, match="duplicate image_id 'a'"):
        download_images(dup, tmp_path / "o1", _settings())
    nourl = tmp_path / "nourl.parquet"
    pq.write_table(pa.table({"image_id": ["a", "b"], "url": ["file:///x", None]}), nourl)
    with pytest.raises(DownloadError, match="without a URL, first at row 1"):
        download_images(nourl, tmp_path / "o2", _settings())
    with pytest.raises(DownloadError, match="not found"):
        download_images(tmp_path / "absent.parquet", tmp_path / "o3", _settings())


def test_kill_9_midway_then_rerun_matches_uninterrupted(matrix_run, tmp_path: Path) -> None:
    _, _, items, ref_out, _ = matrix_run
    out = tmp_path / "out"
    code = (
        "import sys, json; from pipeline.images.download import download_images; "
        "from pipeline.images.settings import DownloadSettings; "
        "download_images(sys.argv[1], sys.argv[2], DownloadSettings(**json.loads(sys.argv[3])))"
    )
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(items), str(out), _settings().model_dump_json()],
        cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300  # spawn + import of img2dataset is slow on a loaded machine
    while not list((out / "shards").glob("*_stats.json")):
        assert proc.poll() is None, "download ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole job: driver, img2dataset workers and logger
    proc.wait()
    done = len(list((out / "shards").glob("*_stats.json")))
    assert 1 <= done < 5
    assert not (out / "availability.parquet").exists() and not manifest_path(out).exists()

    manifest = download_images(items, out, _settings())
    assert sum(len(a.shards) for a in manifest.attempts) == 5
    assert _availability(out).equals(_availability(ref_out))


def test_retry_failed_fetches_only_transient_failures_webdataset(server: FaultServer, tmp_path: Path) -> None:
    """Also the webdataset output format: tars hold exactly the successful keys of each attempt."""
    b = server.base
    good_file = tmp_path / "g.jpg"
    good_file.write_bytes(GOOD)
    rows = [
        (f"{b}/flaky/a.jpg", "http_503"), (f"{b}/status/404/r", "http_404"), (f"{b}/img/r.jpg", "ok"),
        (f"{b}/flaky/b.jpg", "http_503"), (f"{b}/html?r", "not_an_image"), (f"{b}/corrupt.jpg?r", "decode_error"),
        (good_file.as_uri(), "ok"),
    ]
    items = _items(tmp_path / "items.parquet", [u for u, _ in rows])
    out = tmp_path / "out"
    settings = _settings(output_format="webdataset", number_sample_per_shard=10)
    first = download_images(items, out, settings)
    assert _availability(out)["reason"].to_list() == [r for _, r in rows]
    assert first.by_reason == {"http_503": 2, "ok": 2, "decode_error": 1, "http_404": 1, "not_an_image": 1}
    assert availability_table({"validation": out})["validation"].to_list() == ["7", "2", "71.4%"]
    with tarfile.open(out / "shards" / "00000.tar") as tf:
        first_keys = {m.name.rsplit(".", 1)[0] for m in tf if m.name.endswith(".jpg")}
    assert first_keys == set(_availability(out).filter(pl.col("status") == "success")["key"].to_list())

    manifest = retry_failed(out, settings)
    assert server.counts["/flaky/a.jpg"] == 2 and server.counts["/flaky/b.jpg"] == 2
    assert server.counts["/status/404/r"] == 1  # a permanent failure is not asked again
    assert server.counts["/img/r.jpg"] == 1
    assert manifest.by_reason == {"ok": 4, "decode_error": 1, "http_404": 1, "not_an_image": 1}
    assert [a.attempt for a in manifest.attempts] == [0, 1] and manifest.attempts[1].urls == 2
    av = _availability(out)
    assert av["status"].to_list() == ["success", "failed", "success", "success", "failed", "failed", "success"]
    history = pl.read_parquet(out / "attempts.parquet").filter(pl.col("image_id") == "cc3m/train/0")
    assert history["attempt"].to_list() == [0, 1] and history["reason"].to_list() == ["http_503", "ok"]
    assert history["shards_dir"].to_list() == ["shards", "retry-1/shards"]
    with tarfile.open(out / "retry-1" / "shards" / "00000.tar") as tf:
        retry_keys = {m.name.rsplit(".", 1)[0] for m in tf if m.name.endswith(".jpg")}
    assert retry_keys == set(av.filter(pl.col("image_id").is_in(["cc3m/train/0", "cc3m/train/3"]))["key"])

    again = retry_failed(out, settings)  # nothing transient left: no new round, no request
    assert server.counts["/status/404/r"] == 1 and len(again.attempts) == 2
    assert not (out / "retry-2").exists()


def _decoded(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def test_exif_orientation_and_16bit_pngs_are_fixed_after_download(server: FaultServer, tmp_path: Path) -> None:
    """img2dataset stores an EXIF-rotated photo sideways and a 16-bit PNG white; the fixes file
    corrects both, the store serves the corrected bytes, a real white image is left alone, and the
    timeout is per read: a body trickled over ~2.4 s with a 1 s timeout arrives."""

    b = server.base
    urls = [f"{b}/exif.jpg", f"{b}/png16.png", f"{b}/png16a.png", f"{b}/white.jpg", f"{b}/img/9.jpg",
            f"{b}/trickle.jpg"]
    items = _items(tmp_path / "items.parquet", urls)
    out = tmp_path / "out"
    started = time.monotonic()
    manifest = download_images(items, out, _settings(number_sample_per_shard=10))
    av = _availability(out)
    assert av["status"].to_list() == ["success"] * 6, av
    assert time.monotonic() - started > 4 * TRICKLE_S - 0.5  # the trickled body did take longer than the timeout
    assert manifest.fixed == {"16bit": 2, "exif_orientation": 1}
    keys = dict(zip(av["image_id"], av["key"], strict=True))

    raw = next(iter(iter_image_batches(out, fixed=False)))
    fixed = next(iter(iter_image_batches(out)))
    addr = {i: f"shards/{keys[f'cc3m/train/{i}']}" for i in range(6)}

    # what img2dataset stored: the portrait photo sideways (48 x 32), the 16-bit PNG white, the one
    # with alpha saturated to pure red
    assert _decoded(raw[addr[0]]).size == (48, 32)
    assert min(_decoded(raw[addr[1]]).getpixel((10, 10))) >= 250
    red = _decoded(raw[addr[2]]).getpixel((10, 10))
    assert red[0] >= 250 and max(red[1:]) <= 5
    # fixed: portrait (32 x 48), the red half on top (orientation 6 = rotate 90 degrees clockwise)
    portrait = _decoded(fixed[addr[0]])
    assert portrait.size == (32, 48)
    top, bottom = portrait.getpixel((16, 6)), portrait.getpixel((16, 42))
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60
    # fixed: the 16-bit colours scaled to 8 bits (RGB = 0xC0, 0x80, 0x20), alpha over white
    assert all(abs(c - e) <= 4 for c, e in zip(_decoded(fixed[addr[1]]).getpixel((10, 10)), (0xC0, 0x80, 0x20),
                                                strict=True))
    assert all(abs(c - e) <= 4 for c, e in zip(_decoded(fixed[addr[2]]).getpixel((10, 10)), (255, 128, 128),
                                                strict=True))
    # the white JPEG, the plain image and the trickled one are img2dataset's bytes
    for i in (3, 4, 5):
        assert fixed[addr[i]] == raw[addr[i]]
    assert server.counts["/white.jpg"] == 2  # fetched again to check its depth, then left alone
    # a rerun recomputes nothing and gives the same manifest
    before = (out / FIXES_NAME).stat().st_mtime_ns
    again = download_images(items, out, _settings(number_sample_per_shard=10))
    assert (out / FIXES_NAME).stat().st_mtime_ns == before and again.fixed == manifest.fixed


def test_orientation_fix_needs_exif() -> None:
    with pytest.raises(ValueError, match="set extract_exif = true"):
        DownloadSettings(extract_exif=False)
    assert DownloadSettings(extract_exif=False, fix_orientation=False).fix_16bit


# ------------------------------------------------------------------ the fault mix, quiet output, no orphans


def test_the_seventeen_fault_kinds_get_their_reasons_quietly(tmp_path: Path, capfd) -> None:
    """Every kind of tests/faultmix.py (the bench's host) gets its reason, and img2dataset's own output (its
    pool's "Sharding file", the logger's per-shard lines, the bar) goes to img2dataset.log, not the console."""
    with FaultMixServer(timeout_s=1) as srv:
        rows = fault_mix(srv.base, 100)  # every kind at least once (the rarest are 1%)
        items = _items(tmp_path / "items.parquet", [u for u, _ in rows])
        manifest = download_images(items, tmp_path / "out", _settings(thread_count=8, number_sample_per_shard=50))
    assert {k for _, k in rows} == set(KINDS)
    av = _availability(tmp_path / "out")
    got = dict(zip(av["image_id"].to_list(), av["reason"].to_list(), strict=True))
    wrong = [(kind, got[f"cc3m/train/{i}"]) for i, (_, kind) in enumerate(rows) if got[f"cc3m/train/{i}"] != KINDS[kind].reason]
    assert not wrong
    assert manifest.fixed == {"16bit": 1, "exif_orientation": 2}
    console = capfd.readouterr()
    log = (tmp_path / "out" / LOG_NAME).read_text()
    for line in ("Starting the downloading of this file", "Sharding file number 1 of 1", "worker  - success"):
        assert line in log and line not in console.out + console.err, line


def _children(pid: int) -> set[int]:
    """The live descendants of `pid` (Linux /proc)."""
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = {int(k) for k in (task / "children").read_text().split()}
            except OSError:
                continue
            todo += kids - found
            found |= kids
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the workers' tie to ptvl is Linux's prctl")
def test_kill_9_of_the_parent_leaves_no_worker_sending_requests(tmp_path: Path) -> None:
    """kill -9 of the process running download_images (as `ptvl run` does), not of its process group: the
    host sees no request once the requests in flight when it died are answered, and no worker survives.
    Without the tie the two workers went on with the remaining shards (seconds of requests)."""
    settings = _settings(processes_count=2, thread_count=2, number_sample_per_shard=10, min_image_size=0)
    with FaultMixServer(delay_s=0.1) as srv:  # 2 x 2 threads at 0.1 s a request: 400 URLs take ~10 s
        items = _items(tmp_path / "items.parquet", [f"{srv.base}/ok/{i}.jpg" for i in range(400)])
        out = tmp_path / "out"
        code = ("import sys, json; from pipeline.images.download import download_images; "
                "from pipeline.images.settings import DownloadSettings; "
                "download_images(sys.argv[1], sys.argv[2], DownloadSettings(**json.loads(sys.argv[3])))")
        proc = subprocess.Popen([sys.executable, "-c", code, str(items), str(out), settings.model_dump_json()],
                                cwd=REPO, env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONPATH": str(REPO)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        # 12 shards done: each worker has done its 5 tasks, and the live ones were started by the pool's
        # handler thread, not by the main thread
        while len(list((out / "shards").glob("*_stats.json"))) < 12:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        workers = _children(proc.pid)
        killed_at = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        while any(_alive(p) for p in workers) and time.monotonic() < killed_at + 5:
            time.sleep(0.02)
        survivors = [p for p in workers if _alive(p)]
        time.sleep(2.0)
        after = [t - killed_at for t in srv.arrivals if t > killed_at]
        for p in survivors:  # a failing run must not leave them behind
            os.kill(p, signal.SIGKILL)
    assert len(workers) >= 3 and not survivors  # 2 pool workers, img2dataset's logger, the resource tracker
    # At most one request per download thread was in flight; none arrived later.
    assert len(after) <= 4 and all(dt < 1.0 for dt in after), after
    assert len(list((out / "shards").glob("*_stats.json"))) < 40


def test_16bit_fixes_in_many_threads_leave_the_console_alone(tmp_path: Path) -> None:
    """img2dataset's Resizer points file descriptors 1 and 2 at /dev/null while it runs and back after:
    called from fixes' thread pool, two calls interleaved and left them at /dev/null for good (the rest
    of `ptvl run` printed nothing, and a bench child's result line vanished).  Calls are serialised."""
    from multiprocessing.pool import ThreadPool

    from pipeline.images.fixes import _from_16bit

    before = [(os.fstat(fd).st_dev, os.fstat(fd).st_ino) for fd in (1, 2)]
    saved = [os.dup(1), os.dup(2)]
    try:
        with FaultMixServer() as srv, ThreadPool(32) as pool:
            out = pool.map(lambda i: _from_16bit(f"{srv.base}/png16/{i}.png", _settings(image_size=64)), range(96))
        after = [(os.fstat(fd).st_dev, os.fstat(fd).st_ino) for fd in (1, 2)]
    finally:  # a failure must not leave pytest's own output at /dev/null
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)
    assert all(o is not None and o[:3] == b"\xff\xd8\xff" for o in out)
    assert after == before
