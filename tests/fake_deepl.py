"""A local fake of the DeepL API (/v2/translate, /v2/usage, /v2/glossaries) with faults to inject.

It speaks what the official `deepl` client sends (JSON body for /v2/translate; form bodies are also
accepted), enforces DeepL's request limits (50 texts -> 400, 128 KiB -> 413), counts billed
characters like DeepL (source characters of 200 responses only) and records every request.

Faults: `storm(status, n)` answers the next n translate requests with `status` (429, 500, 503...);
`storm_for(seconds)` answers 429 until `seconds` have passed on the server's `clock` (a test passes
a virtual clock that the client's back-off advances, so a 90-second spell takes no wall time);
`character_limit` answers 456 once a request would pass it; `slow_s` / `slow_next` / `slow_every`
delay the body after the headers are sent (billed already, as a request DeepL processed);
`echo_auth_in_errors` puts the Authorization header into error messages (a hostile server, to prove
the key is redacted downstream).

`character_count` is the server's own billing counter, the one `/v2/usage` reports: tests compare
the pipeline's figures with it, never with the pipeline's own.
"""
from __future__ import annotations

import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_TEXTS = 50
MAX_BODY_BYTES = 128 * 1024


def fake_translation(text: str, context: str | None = None, glossary_id: str | None = None,
                     formality: str | None = None) -> str:
    """The fake server's deterministic 'translation' (settings that change output change it)."""
    out = f"PT[{text}]"
    if context is not None:
        out += f"@ctx:{context}"
    if glossary_id is not None:
        out += f"@g:{glossary_id[:8]}"
    if formality is not None:
        out += f"@f:{formality}"
    return out


@dataclass
class Request:
    """One request the server received."""

    method: str
    path: str
    status: int
    body_bytes: int
    texts: list[str] = field(default_factory=list)
    context: str | None = None
    glossary_id: str | None = None
    options: dict = field(default_factory=dict)  # preserve_formatting, model_type, split_sentences as sent
    auth: str | None = None  # the Authorization header as received
    peer: int | None = None  # the client's port: one per kept-alive connection, i.e. per client process
    arrived: float = 0.0  # time.monotonic() when the request arrived (before its body was read)
    answered: float | None = None  # time.monotonic() once its answer was written (None: the client was gone)


class FakeDeepL:
    """Run with `with FakeDeepL(auth_key) as server:`; `server.url` is the client's `server_url`."""

    def __init__(self, auth_key: str, *, character_limit: int | None = None, slow_s: float = 0.0,
                 glossaries: list[dict] | None = None, clock=time.monotonic, port: int = 0) -> None:
        self.auth_key = auth_key
        self.character_limit = character_limit
        self.character_count = 0
        self.slow_s = slow_s  # delay of every translate body
        self.slow_next = 0  # number of next translate requests delayed by `slow_next_s`
        self.slow_next_s = 0.0
        self.slow_every: tuple[int, float] | None = None  # (k, s): every k-th translate request's body is s late
        self.clock = clock
        self._storm_until: float | None = None
        self._n_translate = 0
        self.echo_auth_in_errors = False
        self.reject_texts: set[str] = set()  # a request holding one of these is answered 400
        self.glossaries = glossaries or []
        self.requests: list[Request] = []
        self._storm: list[int] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    # -- control ----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeDeepL:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def storm(self, status: int, n: int) -> None:
        """Answer the next `n` translate requests with HTTP `status`."""
        with self._lock:
            self._storm.extend([status] * n)

    def storm_for(self, seconds: float) -> None:
        """Answer every translate request with 429 until `seconds` have passed on `clock`."""
        with self._lock:
            self._storm_until = self.clock() + seconds

    def translate_requests(self, status: int | None = 200) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == "/v2/translate" and (status is None or r.status == status)]

    def sent_texts(self) -> list[str]:
        """Every text of every successful translate request, in order (duplicates kept)."""
        return [t for r in self.translate_requests() for t in r.texts]

    # -- HTTP -------------------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                server._handle(self, "GET")

            def do_POST(self) -> None:
                server._handle(self, "POST")

        return Handler

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        arrived = time.monotonic()
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        path = urllib.parse.urlsplit(h.path).path
        auth = h.headers.get("Authorization")
        rec = Request(method=method, path=path, status=0, body_bytes=len(raw), auth=auth, peer=h.client_address[1],
                      arrived=arrived)
        delay = 0.0
        try:
            if auth != f"DeepL-Auth-Key {self.auth_key}":
                status, payload = 403, {"message": "Wrong endpoint or invalid key"}
            elif method == "GET" and path == "/v2/usage":
                with self._lock:
                    limit = self.character_limit if self.character_limit is not None else 10**12
                    status, payload = 200, {"character_count": self.character_count, "character_limit": limit}
            elif method == "GET" and path == "/v2/glossaries":
                status, payload = 200, {"glossaries": self.glossaries}
            elif method == "POST" and path == "/v2/translate":
                status, payload, delay = self._translate(h, raw, rec)
            else:
                status, payload = 404, {"message": f"no route {method} {path}"}
        except ValueError as e:
            status, payload = 400, {"message": f"bad request: {e}"}
        if status >= 400 and self.echo_auth_in_errors:
            payload = {**payload, "message": f"{payload.get('message', '')} (you sent Authorization: {auth})"}
        rec.status = status
        with self._lock:
            self.requests.append(rec)
        if self._send(h, status, payload, delay):
            rec.answered = time.monotonic()

    def _translate(self, h: BaseHTTPRequestHandler, raw: bytes, rec: Request) -> tuple[int, dict, float]:
        ctype = h.headers.get("Content-Type", "")
        if ctype.startswith("application/json"):
            body = json.loads(raw.decode("utf-8"))
        else:  # form encoding, as older clients send it: repeated text=...
            form = urllib.parse.parse_qs(raw.decode("utf-8"), keep_blank_values=True)
            body = {k: (v if k == "text" else v[0]) for k, v in form.items()}
        texts = body.get("text")
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise ValueError("'text' must be a list of strings")
        rec.texts, rec.context, rec.glossary_id = texts, body.get("context"), body.get("glossary_id")
        rec.options = {k: body[k] for k in ("preserve_formatting", "model_type", "split_sentences") if k in body}
        if body.get("target_lang") != "PT-PT" or body.get("source_lang") != "EN":
            raise ValueError(f"unexpected languages {body.get('source_lang')}->{body.get('target_lang')}")
        if len(raw) > MAX_BODY_BYTES:
            return 413, {"message": "Request Entity Too Large"}, 0.0
        if len(texts) > MAX_TEXTS:
            return 400, {"message": f"Too many texts: {len(texts)} > {MAX_TEXTS}"}, 0.0
        if self.reject_texts & set(texts):
            return 400, {"message": "Value for 'text' not supported."}, 0.0
        with self._lock:
            if self._storm_until is not None and self.clock() < self._storm_until:
                return 429, {"message": "Too many requests"}, 0.0
            if self._storm:
                status = self._storm.pop(0)
                return status, {"message": "Too many requests" if status == 429 else "Internal error"}, 0.0
            chars = sum(len(t) for t in texts)  # DeepL bills source characters; context is free
            if self.character_limit is not None and self.character_count + chars > self.character_limit:
                return 456, {"message": "Quota Exceeded"}, 0.0
            self.character_count += chars
            delay = self.slow_s
            self._n_translate += 1
            if self.slow_every is not None and self._n_translate % self.slow_every[0] == 0:
                delay = max(delay, self.slow_every[1])
            if self.slow_next > 0:
                self.slow_next -= 1
                delay = max(delay, self.slow_next_s)
        translations = [
            {
                "detected_source_language": "EN",
                "text": fake_translation(t, rec.context, rec.glossary_id, body.get("formality")),
                "billed_characters": len(t),
            }
            for t in texts
        ]
        return 200, {"translations": translations}, delay

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, payload: dict, delay: float) -> bool:
        """Write the answer; False when the client was gone before it was written."""
        data = json.dumps(payload).encode("utf-8")
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.flush()
            if delay:
                time.sleep(delay)  # a slow body: headers are out, the payload is late
            h.wfile.write(data)
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout, or killed)
            return False
        return True
