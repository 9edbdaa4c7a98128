"""A loopback image host with CC3M's faults: 17 kinds of URL, each with the reason ptvl must record for it.

    with FaultMixServer(timeout_s=2) as srv:
        rows = fault_mix(srv.base, 2_000)        # [(url, kind), ...], kinds interleaved by weight
        ... download ...
        srv.requests, srv.arrivals               # how many requests, and when each arrived (monotonic)

Kinds (`KINDS`: the expected reason and the share of a mix):

    ok        a photo-like JPEG                          ok
    redirect  302 to an ok image                         ok
    cmyk      a CMYK JPEG                                ok
    exif      a JPEG stored sideways, EXIF orientation 6 ok (re-encoded upright by pipeline/images/fixes.py)
    png16     a 16-bit PNG                               ok (re-encoded from 16 bits by fixes.py)
    gif       an animated GIF (3 frames)                 ok (the first frame)
    webp      a WebP                                     ok
    404 / 410 / 403 / 500                                http_404 / http_410 / http_403 / http_500
    timeout   headers, 16 bytes, then silence past the client's timeout       timeout
    reset     the connection is reset before any response                    connection_reset
    loop      302 to itself                              too_many_redirects
    html      a 200 text/html page                       not_an_image
    truncated a JPEG cut inside its headers              decode_error
    tiny      a 1x1 PNG (a dead host's placeholder)      too_small (with min_image_size > 1)

Used by the image tests (reasons, orphans after kill -9) and `bench/download_scale_bench.py` (200k URLs).
The server runs in the calling process (daemon threads) with a deep accept queue, so 128 client threads
are not refused.
"""
from __future__ import annotations

import io
import socket
import struct
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Kind:
    reason: str
    weight: float  # share of a mix, in percent


# The shares are CC3M-like: about two thirds available, 404 the commonest failure.
KINDS: dict[str, Kind] = {
    "ok": Kind("ok", 55), "redirect": Kind("ok", 4), "cmyk": Kind("ok", 2), "exif": Kind("ok", 2),
    "png16": Kind("ok", 1), "gif": Kind("ok", 1), "webp": Kind("ok", 3),
    "404": Kind("http_404", 12), "410": Kind("http_410", 2), "403": Kind("http_403", 3), "500": Kind("http_500", 2),
    "timeout": Kind("timeout", 1), "reset": Kind("connection_reset", 2), "loop": Kind("too_many_redirects", 1),
    "html": Kind("not_an_image", 4), "truncated": Kind("decode_error", 2), "tiny": Kind("too_small", 3),
}
EXT = {"png16": "png", "tiny": "png", "gif": "gif", "webp": "webp", "html": "html"}


def _photo(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """Smooth gradients plus noise: JPEG sizes and decode times like a small web photo (~20-30 KB)."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * (1 + seed % 3) + y) % 256, (y * 2 + seed * 40) % 256, (x + y * 3) % 256], axis=-1)
    noisy = np.clip(base + rng.normal(0, 18, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(noisy, "RGB")


def _encode(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _png16() -> bytes:
    arr = np.zeros((120, 160, 3), np.uint16)
    arr[:] = (0x2000, 0x8000, 0xC000)  # BGR, 16 bits per sample: img2dataset stores it white
    arr[:, :80] = (0xC000, 0x4000, 0x1000)
    import cv2  # tests only; cv2 comes with img2dataset

    ok, png = cv2.imencode(".png", arr)
    assert ok
    return png.tobytes()


def _bodies() -> dict[str, list[bytes]]:
    photos = [_photo(i) for i in range(8)]
    jpegs = [_encode(p, "JPEG", quality=85) for p in photos]
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways = [_encode(p, "JPEG", quality=85, exif=exif) for p in photos[:2]]
    gif_frames = [p.resize((160, 120)).convert("P") for p in photos[:3]]
    gif = _encode(gif_frames[0], "GIF", save_all=True, append_images=gif_frames[1:], duration=100, loop=0)
    return {
        "ok": jpegs,
        "cmyk": [_encode(p.convert("CMYK"), "JPEG", quality=85) for p in photos[:2]],
        "exif": sideways,
        "png16": [_png16()],
        "gif": [gif],
        "webp": [_encode(p, "WEBP", quality=80) for p in photos[:2]],
        "html": [b"<!doctype html><html><head><title>Moved</title></head><body>This image has moved.</body></html>"],
        # Cut before the scan data (inside the Huffman tables): no decoder can make an image of it.
        "truncated": [j[: j.index(b"\xff\xc4") + 40] for j in jpegs[:2]],
        "tiny": [_encode(Image.new("RGB", (1, 1), (255, 255, 255)), "PNG")],
    }


def fault_mix(base: str, n: int) -> list[tuple[str, str]]:
    """`n` (url, kind) rows; each kind's share follows its weight, spread evenly (deterministic)."""
    names = list(KINDS)
    weights = np.array([KINDS[k].weight for k in names], dtype=float)
    weights /= weights.sum()
    counts = np.zeros(len(names))
    rows = []
    for i in range(n):
        # Largest deficit first: every prefix of the list holds each kind close to its share.
        k = int(np.argmax(weights * (i + 1) - counts))
        counts[k] += 1
        kind = names[k]
        rows.append((f"{base}/{kind}/{i}.{EXT.get(kind, 'jpg')}", kind))
    return rows


class FaultMixServer(ThreadingHTTPServer):
    """Serves `fault_mix` URLs on 127.0.0.1.  `timeout_s`: the client's timeout (a `timeout` URL stalls
    longer).  `delay_s` holds every answer that long (a slower host, for kill tests)."""

    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, timeout_s: float = 10.0, delay_s: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stall_s = timeout_s + 2.0
        self.delay_s = delay_s
        self.bodies = _bodies()
        self.lock = threading.Lock()
        self.arrivals: list[float] = []  # time.monotonic() of every request, in arrival order
        self._thread: threading.Thread | None = None
        self.stopping = threading.Event()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    @property
    def requests(self) -> int:
        return len(self.arrivals)

    def start(self) -> FaultMixServer:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()

    def __enter__(self) -> FaultMixServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that time out or hang up are part of the mix


class _Handler(BaseHTTPRequestHandler):
    server: FaultMixServer

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        srv = self.server
        with srv.lock:
            srv.arrivals.append(time.monotonic())
        parts = self.path.split("?")[0].strip("/").split("/")
        kind = parts[0]
        index = int("0" + "".join(c for c in parts[1].split(".")[0] if c.isdigit())) if len(parts) > 1 else 0
        if srv.delay_s:
            time.sleep(srv.delay_s)
        if kind in ("404", "410", "403", "500"):
            return self._send(int(kind), b"<html>error</html>", "text/html")
        if kind == "redirect":
            return self._redirect(f"/ok/{index}r.jpg")
        if kind == "loop":
            return self._redirect(self.path)
        if kind == "reset":
            # SO_LINGER 0: close() sends RST, the client sees "Connection reset by peer".
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return None
        if kind == "timeout":
            body = srv.bodies["ok"][0]
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:16])
            self.wfile.flush()
            srv.stopping.wait(srv.stall_s)
            return None
        choices = srv.bodies.get(kind)
        if choices is None:
            return self._send(404, b"no such kind", "text/plain")
        ctype = {"html": "text/html", "png16": "image/png", "tiny": "image/png", "gif": "image/gif",
                 "webp": "image/webp"}.get(kind, "image/jpeg")
        return self._send(200, choices[index % len(choices)], ctype)

    def _redirect(self, to: str) -> None:
        self.send_response(302)
        self.send_header("Location", to)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
