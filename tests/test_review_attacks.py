"""`ptvl review` against hostile web pages, in real Chromium (Debian's `chromium` driven by Playwright).

The reviewer's browser is logged in (it opened the link with the token, so it holds the session cookie);
then it visits an attacker's page that tries to write corrections, gold rows and verdicts, and to read
the queues, through that browser:

- a page on another port of 127.0.0.1 (same site: the SameSite=Strict cookie IS sent, only the origin
  check stops it), a page on 127.0.0.2 (another site), a file:// page, a sandboxed iframe and a data:
  iframe (both `Origin: null`);
- DNS rebinding on a server bound to 0.0.0.0: the attacker's page is loaded from evil.test:PORT while
  that name points at the attacker's server, which then gives the address up to the review server on
  the same port; the page's own-origin requests then reach the review server under Host evil.test.

The victim app is wrapped in a recorder, so each test shows the attack's requests did arrive and were
refused (403), not merely that the browser dropped them.  Also here: text that tries to end or comment
out the page's data block (`</script>`, `<!--`, `<!--<script>`), and the keypresses that would replace a
person's edit with an engine's output."""
from __future__ import annotations

import base64
import html
import http.server
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn

from pipeline.review.guard import host_names
from pipeline.review.tables import RunTables
from tests.chromium import BROWSER_MARKS, launch, playwright
from tests.helpers import free_port
from tests.test_review_app import CC3M, SPLITS, TOKEN, _translated, build_root, make_app
from translation.overlay import HumanOverlay
from translation.textkey import text_hash

pytestmark = BROWSER_MARKS
H = text_hash("a red car")  # public: the hash of an English caption
ENGINE_ID = "reference:v1"


class Recorder:
    """ASGI wrapper: every request the app saw (method, path, Host, Origin, cookie?) and its status, but the
    browser's favicon requests."""

    def __init__(self, app) -> None:
        self.app, self.seen = app, []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/favicon.ico":  # the browser's own, whenever it likes: not part of any attack
            await self.app(scope, receive, send)
            return
        h = {k.decode(): v.decode() for k, v in scope["headers"]}
        entry = {"method": scope["method"], "path": scope["path"], "host": h.get("host"), "origin": h.get("origin"),
                 "site": h.get("sec-fetch-site"), "cookie": "ptvl_review_" in h.get("cookie", ""), "status": None}
        self.seen.append(entry)

        async def recording(message) -> None:
            if message["type"] == "http.response.start":
                entry["status"] = message["status"]
            await send(message)

        await self.app(scope, receive, recording)

    def posts(self, since: int = 0) -> list[dict]:
        return [e for e in self.seen[since:] if e["method"] == "POST"]


@contextmanager
def serving(app, host: str, port: int):
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def attacker(host: str, port: int, pages: dict[str, str]):
    """A plain web server for the attacker's pages (HTTP/1.0: every answer closes its connection)."""

    class Pages(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            body = pages.get(self.path.split("?")[0], "not here").encode()
            self.send_response(200 if self.path.split("?")[0] in pages else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer((host, port), Pages)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def attack_js(victim: str) -> str:
    """Every way a page can try to post to the victim (form-encoded no-cors fetches, a JSON fetch, a form
    submitted into a hidden frame) and to read from it; results in window.__results, then __done."""
    form = f"text_hash={H}&action=edit&text_pt=PWNED&replaces="
    return f"""
window.__results = [];
window.attack = async function () {{
  const V = {victim!r};
  const r = window.__results;
  for (const [path, body] of [["/api/correct", "{form}"], ["/api/gold", "text_hash={H}"],
                              ["/api/verdict", "text_hash={H}&flag=untranslated&verdict=false_alarm"]]) {{
    try {{
      await fetch(V + path, {{method: "POST", mode: "no-cors", credentials: "include",
                             headers: {{"Content-Type": "application/x-www-form-urlencoded"}}, body}});
      r.push(path + " sent");
    }} catch (e) {{ r.push(path + " blocked " + e); }}
  }}
  try {{
    const res = await fetch(V + "/api/correct", {{method: "POST", credentials: "include",
      headers: {{"Content-Type": "application/json"}},
      body: JSON.stringify({{text_hash: "{H}", action: "edit", text_pt: "PWNED", replaces: ""}})}});
    r.push("json " + res.status);
  }} catch (e) {{ r.push("json blocked"); }}
  try {{
    const res = await fetch(V + "/api/queues", {{credentials: "include"}});
    r.push("read " + res.status + " " + (await res.text()).slice(0, 40));
  }} catch (e) {{ r.push("read blocked"); }}
  const f = document.createElement("form");
  f.method = "POST"; f.action = V + "/api/correct"; f.target = "sink";
  for (const [k, v] of [["text_hash", "{H}"], ["action", "edit"], ["text_pt", "PWNED"], ["replaces", ""]]) {{
    const i = document.createElement("input"); i.name = k; i.value = v; f.appendChild(i);
  }}
  const sink = document.createElement("iframe"); sink.name = "sink"; document.body.appendChild(sink);
  document.body.appendChild(f); f.submit();
  window.__done = true;
}};
"""


def attack_page(victim: str, run: bool = True) -> str:
    return (f"<!doctype html><html><body><p>cute cats</p><script>{attack_js(victim)}"
            f"{'attack();' if run else ''}</script></body></html>")


def sandboxed_page(victim: str) -> str:
    return (f'<!doctype html><body><iframe sandbox="allow-scripts allow-forms" '
            f'srcdoc="{html.escape(attack_page(victim))}"></iframe></body>')


def data_page(victim: str) -> str:
    b64 = base64.b64encode(attack_page(victim).encode()).decode()
    return f'<!doctype html><body><iframe src="data:text/html;base64,{b64}"></iframe></body>'


def wait_done(page, timeout_s: float = 15) -> list[str]:
    """The attack's own report, from whichever frame ran it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for frame in page.frames:
            try:
                if frame.evaluate("window.__done === true"):
                    return frame.evaluate("window.__results")
            except playwright.Error:  # a frame navigating away (the form's sink)
                continue
        time.sleep(0.1)
    pytest.fail("the attack page did not finish")


def wait_posts(rec: Recorder, since: int, n: int, timeout_s: float = 10) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while len(rec.posts(since)) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # anything still in flight
    return rec.posts(since)


def stored(overlay: HumanOverlay) -> tuple:
    return (overlay.history(ENGINE_ID, H), overlay.verdicts(ENGINE_ID), overlay.gold())


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = launch(p, "--host-resolver-rules=MAP evil.test 127.0.0.2")
        yield b
        b.close()


@pytest.fixture
def victim(tmp_path):
    """The review app (small two-engine root) on 127.0.0.1, recorded."""
    root = build_root(tmp_path / "run")
    overlay = HumanOverlay(root / "memory" / "human.sqlite")
    rec = Recorder(make_app(root, RunTables(root, ["reference", "other"], SPLITS, "reference"), overlay,
                            hosts=host_names("127.0.0.1")))
    port = free_port()
    with serving(rec, "127.0.0.1", port):
        yield f"http://127.0.0.1:{port}", rec, overlay
    overlay.close()


def logged_in(browser, base: str):
    """A browser context whose reviewer opened the printed link (the session cookie is set)."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{base}/?token={TOKEN}")
    assert page.url == base + "/" and any(c["name"].startswith("ptvl_review_") and c["httpOnly"]
                                          and c["sameSite"] == "Strict" for c in context.cookies())
    return context, page


@pytest.mark.parametrize("kind", ["other-port", "other-site", "file", "sandboxed-iframe", "data-iframe"])
def test_attacker_pages_write_nothing_and_read_nothing(browser, victim, tmp_path, kind) -> None:
    base, rec, overlay = victim
    context, own = logged_in(browser, base)
    pages = {"/attack.html": attack_page(base), "/sandbox.html": sandboxed_page(base), "/data.html": data_page(base)}
    where = {"other-port": ("127.0.0.1", "/attack.html"), "other-site": ("127.0.0.2", "/attack.html"),
             "sandboxed-iframe": ("127.0.0.1", "/sandbox.html"), "data-iframe": ("127.0.0.1", "/data.html")}
    since = len(rec.seen)
    page = context.new_page()
    if kind == "file":
        (tmp_path / "attack.html").write_text(attack_page(base))
        page.goto((tmp_path / "attack.html").as_uri())
        results = wait_done(page)
    else:
        host, path = where[kind]
        port = free_port()
        with attacker(host, port, pages):
            page.goto(f"http://{host}:{port}{path}")
            results = wait_done(page)
    posts = wait_posts(rec, since, 4)
    # the attack ran and its requests reached the server: every one refused there, nothing stored
    assert len(posts) >= 4, (results, rec.seen[since:])
    assert {p["status"] for p in posts} == {403}, posts
    expected_origin = {"other-port": "http://127.0.0.1:", "other-site": "http://127.0.0.2:"}.get(kind, "null")
    assert all((p["origin"] or "").startswith(expected_origin) for p in posts), posts
    assert not any(r.startswith("read 200") for r in results), results
    assert all(e["status"] in (403, None) for e in rec.seen[since:]), rec.seen[since:]
    assert stored(overlay) == ([], {}, [])
    # the reviewer's own session still works: the refusals were the guard's, not a broken login
    own.goto(f"{base}/q/flag:untranslated/0")
    with own.expect_navigation():
        own.keyboard.press("f")
    assert own.locator("#status").inner_text() == "flag untranslated marked false alarm"
    assert overlay.verdicts(ENGINE_ID) == {(H, "untranslated"): "false_alarm"}
    context.close()


def _port_free_everywhere() -> int:
    for _ in range(50):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
                return port
            except OSError:
                continue
    pytest.fail("no port free on every address")


def test_dns_rebinding_on_0_0_0_0_is_refused_by_host(browser, tmp_path) -> None:
    root = build_root(tmp_path / "run")
    overlay = HumanOverlay(root / "memory" / "human.sqlite")
    rec = Recorder(make_app(root, RunTables(root, ["reference", "other"], SPLITS, "reference"), overlay,
                            hosts=host_names("0.0.0.0")))
    port = _port_free_everywhere()
    context = browser.new_context()
    evil = context.new_page()
    # 1. evil.test (-> 127.0.0.2 in this browser) serves the attacker's page on the port the victim will use
    with attacker("127.0.0.2", port, {"/": attack_page("", run=False)}):
        evil.goto(f"http://evil.test:{port}/")
    # 2. the attacker's server gives the address up; the review server listens there (0.0.0.0)
    with serving(rec, "0.0.0.0", port):
        own = context.new_page()
        own.goto(f"http://127.0.0.1:{port}/?token={TOKEN}")  # the reviewer logs in
        assert own.locator("h1").inner_text() == "Review queues"
        since = len(rec.seen)
        evil.evaluate("attack()")  # same-origin requests to evil.test:PORT now reach the review server
        results = wait_done(evil)
        posts = wait_posts(rec, since, 4)
        assert len(posts) >= 4 and {p["status"] for p in posts} == {403}, (results, rec.seen[since:])
        assert {e["host"] for e in rec.seen[since:]} == {f"evil.test:{port}"}
        assert all(e["status"] == 403 for e in rec.seen[since:])
        assert not any(r.startswith("read 200") for r in results), results
        assert stored(overlay) == ([], {}, [])
    context.close()
    overlay.close()


@pytest.mark.parametrize("payload", ["</script><script>document.title='owned'</script>", "<!--", "<!--<script>"])
def test_text_that_closes_or_comments_out_the_data_block_leaves_the_page_working(browser, tmp_path, payload) -> None:
    """The machine text and a correction both carry the payload: every section renders, no script error,
    and the keys still work (e opens the edit box with the text, Esc closes it)."""
    root = build_root(tmp_path / "run")
    rows = [r if r[3] != "a red car" else (*r[:4], f"machine {payload}", *r[5:]) for r in CC3M]
    _translated(root / "translated" / "reference" / "cc3m" / "train.parquet", rows, "reference", 4, "cc3m", "train")
    overlay = HumanOverlay(root / "memory" / "human.sqlite")
    rec = Recorder(make_app(root, RunTables(root, ["reference", "other"], SPLITS, "reference"), overlay,
                            hosts=["127.0.0.1"]))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with serving(rec, "127.0.0.1", port):
        context, page = logged_in(browser, base)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(f"{base}/q/flag:untranslated/0")
        assert page.locator(".engine.reviewed .pt").inner_text() == f"machine {payload}"
        page.keyboard.press("e")
        page.fill("#edit-text", f"human {payload}")
        with page.expect_navigation():
            page.keyboard.press("Control+Enter")
        page.goto(f"{base}/q/flag:untranslated/0")
        assert page.locator("#current-text").inner_text() == f"human {payload}"
        for section in (".source", ".engines", ".current", ".occurrences"):
            assert page.locator(section).count() == 1, section
        page.keyboard.press("e")
        assert page.locator("#edit-form").is_visible() and page.input_value("#edit-text") == f"human {payload}"
        page.keyboard.press("Escape")
        assert page.locator("#edit-form").is_hidden()
        assert page.title() != "owned" and not errors, errors
        context.close()
    assert overlay.corrections(ENGINE_ID)[H].text_pt == f"human {payload}"
    overlay.close()


def test_a_key_that_would_replace_a_human_edit_asks_first(browser, victim) -> None:
    base, rec, overlay = victim
    context, page = logged_in(browser, base)
    page.goto(f"{base}/q/flag:untranslated/0")
    page.keyboard.press("e")
    page.fill("#edit-text", "um carro encarnado")
    with page.expect_navigation():
        page.keyboard.press("Control+Enter")
    page.goto(f"{base}/q/flag:untranslated/0")
    asked: list[str] = []

    def refuse(dialog) -> None:
        asked.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", refuse)
    page.keyboard.press("a")  # the reviewed engine's output ("a red car")
    # Selectors, not wait_for_function("..."): the page's CSP forbids eval, which a string predicate can need.
    page.wait_for_selector("#status:has-text('kept')")
    assert "human edit by ana" in asked[0] and "um carro encarnado" in asked[0] and "a red car" in asked[0]
    page.once("dialog", refuse)
    page.keyboard.press("2")  # engine 2's output
    assert len(asked) == 2
    assert [r.text_pt for r in overlay.history(ENGINE_ID, H)] == ["um carro encarnado"]
    # confirmed: the accept names the edit it replaces and is stored
    page.once("dialog", lambda d: d.accept())
    with page.expect_navigation():
        page.keyboard.press("2")
    history = overlay.history(ENGINE_ID, H)
    assert [(r.text_pt, r.action) for r in history] == [("um carro encarnado", "edit"), ("um carro vermelho", "accept")]
    assert history[1].replaces == "um carro encarnado" and history[1].superseded is None
    context.close()


def test_a_stale_page_cannot_accept_over_an_edit_made_since(browser, victim) -> None:
    """Two tabs: one edits, the other (opened before) accepts with its key: no dialog could warn it (it
    saw no human text), so the server refuses (409) and the page says why."""
    base, rec, overlay = victim
    context, first = logged_in(browser, base)
    first.goto(f"{base}/q/flag:untranslated/0")
    second = context.new_page()
    second.goto(f"{base}/q/flag:untranslated/0")
    first.keyboard.press("e")
    first.fill("#edit-text", "um carro encarnado")
    with first.expect_navigation():
        first.keyboard.press("Control+Enter")
    second.keyboard.press("a")
    second.wait_for_selector("#status.error")
    assert "not saved" in second.locator("#status").inner_text()
    assert [r.text_pt for r in overlay.history(ENGINE_ID, H)] == ["um carro encarnado"]
    context.close()


def test_the_session_cookie_is_httponly(browser, victim) -> None:
    base, _, _ = victim
    context, page = logged_in(browser, base)
    assert page.evaluate("document.cookie") == ""  # no script, hostile or not, reads the session
    assert Path(__file__).is_file()
    context.close()
