"""A local HTTP test server on 127.0.0.1: serves files (a dict or a folder), honours Range, injects faults.

Usage::

    with HTTPTestServer({"/a.tsv": b"x\\thttp://...\\n"}) as srv:
        srv.fail("/a.tsv", 500, times=2)        # two 500s, then the file
        srv.drop_after("/big.bin", 1000)        # send 1000 bytes of the body, then cut the connection
        srv.trickle("/slow.jpg", delay=0.5)     # one byte every 0.5 s
        srv.redirect_loop("/loop")
        requests.get(srv.url("/a.tsv"))
        srv.hits["/a.tsv"], srv.range_headers("/a.tsv"), srv.bytes_sent("/a.tsv")

Faults queue per path and are consumed in the order added; `times=None` means every request from then on.
A path with no pending fault is served normally (404 when there is no such file).
Used by the fetcher tests and the image-download tests (img2dataset against loopback).
"""
from __future__ import annotations

import mimetypes
import socket
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass
class Fault:
    """One injected behaviour for a path."""

    kind: str  # status | redirect | trickle | drop | content | ignore_range
    times: int | None = None  # None: forever
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    location: str = ""
    delay: float = 0.0
    chunk: int = 1
    after: int = 0


@dataclass
class RequestRecord:
    method: str
    path: str
    headers: dict[str, str]
    status: int = 0
    bytes_sent: int = 0


class HTTPTestServer:
    """Threaded HTTP/1.1 server on a free loopback port; a context manager."""

    def __init__(self, files: Mapping[str, bytes] | str | Path | None = None, *, host: str = "127.0.0.1"):
        self._files: dict[str, bytes] = {}
        self._root: Path | None = None
        if isinstance(files, (str, Path)):
            self._root = Path(files).resolve()
        elif files:
            for path, data in files.items():
                self.add(path, data)
        self._faults: dict[str, list[Fault]] = {}
        self._lock = threading.Lock()
        self.log: list[RequestRecord] = []
        self.hits: Counter[str] = Counter()
        self._stopping = threading.Event()
        self._server = _QuietServer((host, 0), _make_handler(self))
        self._thread: threading.Thread | None = None

    # ---- lifecycle

    def start(self) -> HTTPTestServer:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="HTTPTestServer")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> HTTPTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + _norm(path)

    # ---- content

    def add(self, path: str, data: bytes) -> None:
        self._files[_norm(path)] = bytes(data)

    def content(self, path: str) -> bytes | None:
        path = _norm(path)
        if path in self._files:
            return self._files[path]
        if self._root is not None:
            target = (self._root / path.lstrip("/")).resolve()
            if self._root in target.parents and target.is_file():
                return target.read_bytes()
        return None

    # ---- faults

    def add_fault(self, path: str, fault: Fault) -> None:
        with self._lock:
            self._faults.setdefault(_norm(path), []).append(fault)

    def fail(self, path: str, status: int, *, times: int | None = None, headers: dict[str, str] | None = None,
             body: bytes = b"") -> None:
        """Answer `status` (e.g. 404, 500, 429 with headers={"Retry-After": "0"})."""
        self.add_fault(path, Fault("status", times, status=status, headers=headers or {}, body=body))

    def redirect(self, path: str, to: str, *, status: int = 302, times: int | None = None) -> None:
        self.add_fault(path, Fault("redirect", times, status=status, location=to))

    def redirect_loop(self, path: str) -> None:
        """`path` redirects to itself forever."""
        self.redirect(path, _norm(path))

    def trickle(self, path: str, *, delay: float, chunk: int = 1, times: int | None = None) -> None:
        """Send the body `chunk` bytes at a time with `delay` seconds between chunks."""
        self.add_fault(path, Fault("trickle", times, delay=delay, chunk=chunk))

    def drop_after(self, path: str, n_bytes: int, *, times: int | None = 1) -> None:
        """Announce the full length, send `n_bytes` of the body, then close the connection."""
        self.add_fault(path, Fault("drop", times, after=n_bytes))

    def wrong_content(self, path: str, body: bytes, *, times: int | None = None,
                      content_type: str | None = None) -> None:
        """Serve `body` (e.g. an HTML error page) with status 200 instead of the file."""
        headers = {"Content-Type": content_type} if content_type else {}
        self.add_fault(path, Fault("content", times, body=body, headers=headers))

    def ignore_range(self, path: str, *, times: int | None = None) -> None:
        """Answer 200 with the whole file even when a Range is asked for."""
        self.add_fault(path, Fault("ignore_range", times))

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            queue = self._faults.get(path, [])
            while queue:
                f = queue[0]
                if f.times is None:
                    return f
                if f.times > 0:
                    f.times -= 1
                    if f.times == 0:
                        queue.pop(0)
                    return f
                queue.pop(0)
        return None

    # ---- inspection

    def requests_for(self, path: str) -> list[RequestRecord]:
        return [r for r in self.log if r.path == _norm(path)]

    def range_headers(self, path: str) -> list[str | None]:
        return [r.headers.get("range") for r in self.requests_for(path)]

    def bytes_sent(self, path: str) -> int:
        return sum(r.bytes_sent for r in self.requests_for(path))


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client never blocks stop()

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that time out or hang up mid-body are part of the tests, not errors


def _norm(path: str) -> str:
    path = unquote(urlsplit(path).path)
    return path if path.startswith("/") else "/" + path


def _parse_range(header: str | None, length: int) -> tuple[int, int] | None | str:
    """(start, end inclusive), None for no/ignored range, "unsatisfiable" for 416."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[6:].strip().partition("-")
    try:
        if first == "":
            n = int(last)
            return (max(0, length - n), length - 1) if n > 0 and length else "unsatisfiable"
        start = int(first)
        end = int(last) if last else length - 1
    except ValueError:
        return None
    if start >= length or end < start:
        return "unsatisfiable"
    return start, min(end, length - 1)


def _make_handler(server: HTTPTestServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

        def do_HEAD(self) -> None:
            self._serve(head=True)

        def do_GET(self) -> None:
            self._serve(head=False)

        def _serve(self, head: bool) -> None:
            path = _norm(self.path)
            rec = RequestRecord(self.command, path, {k.lower(): v for k, v in self.headers.items()})
            with server._lock:
                server.log.append(rec)
                server.hits[path] += 1
            fault = server._take_fault(path)
            try:
                self._respond(path, fault, rec, head)
            except (TimeoutError, BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                self.close_connection = True  # the client went away (e.g. it timed out): fine

        def _respond(self, path: str, fault: Fault | None, rec: RequestRecord, head: bool) -> None:
            kind = fault.kind if fault else None
            if kind == "status":
                return self._simple(rec, fault.status, fault.body, fault.headers, head)  # type: ignore[union-attr]
            if kind == "redirect":
                return self._simple(rec, fault.status, b"", {"Location": fault.location}, head)  # type: ignore[union-attr]
            data = fault.body if kind == "content" else server.content(path)  # type: ignore[union-attr]
            if data is None:
                return self._simple(rec, 404, b"not found", {}, head)
            ctype = (fault.headers.get("Content-Type") if kind == "content" else None) or \
                mimetypes.guess_type(path)[0] or "application/octet-stream"
            rng = None if kind in ("ignore_range", "content") else _parse_range(self.headers.get("Range"), len(data))
            if rng == "unsatisfiable":
                return self._simple(rec, 416, b"", {"Content-Range": f"bytes */{len(data)}"}, head)
            headers = {"Content-Type": ctype, "Accept-Ranges": "bytes"}
            status, body = 200, data
            if isinstance(rng, tuple):
                status, body = 206, data[rng[0]: rng[1] + 1]
                headers["Content-Range"] = f"bytes {rng[0]}-{rng[1]}/{len(data)}"
            if kind == "drop":
                self._headers(rec, status, len(body), headers)
                if not head:
                    self._write(rec, body[: fault.after])  # type: ignore[union-attr]
                # Cut the connection mid-body: the client sees fewer bytes than Content-Length.
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return None
            self._headers(rec, status, len(body), headers)
            if head:
                return None
            if kind == "trickle":
                for i in range(0, len(body), fault.chunk):  # type: ignore[union-attr]
                    if server._stopping.is_set():
                        self.close_connection = True
                        return None
                    self._write(rec, body[i: i + fault.chunk])  # type: ignore[union-attr]
                    time.sleep(fault.delay)  # type: ignore[union-attr]
                return None
            self._write(rec, body)
            return None

        def _simple(self, rec: RequestRecord, status: int, body: bytes, headers: dict[str, str], head: bool) -> None:
            self._headers(rec, status, len(body), {"Content-Type": "text/plain", **headers})
            if not head and body:
                self._write(rec, body)

        def _headers(self, rec: RequestRecord, status: int, length: int, headers: dict[str, str]) -> None:
            rec.status = status
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(length))
            self.end_headers()

        def _write(self, rec: RequestRecord, chunk: bytes) -> None:
            self.wfile.write(chunk)
            self.wfile.flush()
            rec.bytes_sent += len(chunk)

    return Handler
