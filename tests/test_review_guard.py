"""Who may talk to `ptvl review` and what it accepts (pipeline/review/guard.py, limits.py, actions.py),
through Starlette's TestClient and, for what only a socket shows (a body refused unread, a body that
never comes), a real uvicorn server: the token on every request, the cookie the link sets, actions only
from the server's own origin, Host names, body limits, the text rules, data embedded in pages, and no
accept over a human text the person did not name.  (Real pages in real Chromium, attackers included:
tests/test_review_attacks.py.)"""
from __future__ import annotations

import json
import re
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from starlette.testclient import TestClient

from pipeline.review.app import first_with_rows
from pipeline.review.guard import host_name, host_names
from pipeline.review.tables import RunTables
from tests.helpers import free_port
from tests.test_review_app import (
    AUTH,
    CC3M,
    SPLITS,
    TOKEN,
    VISDIAL,
    _translated,
    build_root,
    client_of,
    make_app,
)
from translation.overlay import HumanOverlay
from translation.textkey import text_hash

H = text_hash("a red car")
EDIT = {"text_hash": H, "action": "edit", "text_pt": "um carro encarnado", "replaces": ""}


@pytest.fixture
def served(tmp_path):
    root = build_root(tmp_path / "run")
    overlay = HumanOverlay(root / "memory" / "human.sqlite")
    app = make_app(root, RunTables(root, ["reference", "other"], SPLITS, "reference"), overlay)
    yield app, overlay, root
    overlay.close()


def _stored(overlay: HumanOverlay) -> int:
    return len(overlay.history("reference:v1", H)) + len(overlay.verdicts("reference:v1")) + len(overlay.gold())


# -- the token ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/q/sample/0", "/api/queues", f"/api/row/{H}", "/image/cc3m/train/cc3m/train/1",
                                  "/static/review.js"])
def test_every_page_api_and_image_needs_the_token(served, path) -> None:
    app, _, _ = served
    bare = TestClient(app)
    r = bare.get(path)
    assert r.status_code == 401, (path, r.status_code)
    assert "?token=" in r.text and TOKEN not in r.text
    assert bare.get(path, headers={"Authorization": "token wrong-token-0123456789"}).status_code == 401
    assert bare.get(path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 401
    assert bare.get(path, headers=AUTH).status_code == 200


def test_actions_without_the_token_store_nothing(served) -> None:
    app, overlay, _ = served
    r = TestClient(app).post("/api/correct", json=EDIT)
    assert r.status_code == 401 and _stored(overlay) == 0


def test_the_link_sets_an_httponly_strict_cookie_and_leaves_the_address_bar(served) -> None:
    app, overlay, _ = served
    browser = TestClient(app)
    r = browser.get(f"/q/sample/0?x=1&token={TOKEN}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/q/sample/0?x=1"
    cookie = r.headers["set-cookie"]
    assert re.search(r"HttpOnly", cookie, re.I) and re.search(r"SameSite=strict", cookie, re.I)
    assert "Path=/" in cookie and TOKEN not in cookie  # a value derived from the token, not the token
    assert browser.get("/q/sample/0").status_code == 200  # the cookie alone now
    assert browser.post("/api/correct", json=EDIT, headers={"origin": "http://testserver"}).status_code == 200
    assert _stored(overlay) == 1
    assert TestClient(app).get(f"/?token={TOKEN[:-1]}x").status_code == 403
    # the redirect stays on this server whatever the path looks like
    r = TestClient(app).get(f"http://testserver//evil.example/?token={TOKEN}", follow_redirects=False)
    assert r.headers["location"] == "/evil.example/"  # never "//evil.example/": another site


# -- origin and Host ------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers,message", [
    ({"origin": "null"}, "opaque origin"),
    ({"origin": "null", "sec-fetch-site": "cross-site"}, "opaque origin"),
    ({"origin": "http://127.0.0.1:9999"}, "cross-site request from http://127.0.0.1:9999"),
    ({"origin": "http://testserver.evil.example"}, "cross-site"),
    ({"origin": "file://"}, "cross-site"),
    ({"sec-fetch-site": "cross-site"}, "without an Origin"),
    ({"sec-fetch-site": "same-origin"}, "without an Origin"),
    ({"origin": "http://testserver", "sec-fetch-site": "same-site"}, "same-site request refused"),
])
@pytest.mark.parametrize("path,body", [("/api/correct", EDIT), ("/api/gold", {"text_hash": H}),
                                       ("/api/verdict", {"text_hash": H, "flag": "untranslated",
                                                         "verdict": "false_alarm"})])
def test_an_action_from_anywhere_but_this_servers_pages_is_refused(served, headers, message, path, body) -> None:
    app, overlay, _ = served
    for client in (client_of(app), TestClient(app, cookies={"ptvl_review_80": _session(app)})):
        r = client.post(path, json=body, headers=headers)
        assert r.status_code == 403 and message in r.json()["error"], (headers, r.text)
        r = client.post(path, data=body, headers=headers)  # a plain HTML form
        assert r.status_code == 403
    assert _stored(overlay) == 0


def _session(app) -> str:
    r = TestClient(app).get(f"/?token={TOKEN}", follow_redirects=False)
    return r.cookies["ptvl_review_80"]


def test_an_action_from_this_servers_page_or_a_script_with_the_token_is_stored(served) -> None:
    app, overlay, _ = served
    page = {"origin": "http://testserver", "sec-fetch-site": "same-origin", "sec-fetch-mode": "cors"}
    assert client_of(app).post("/api/verdict", json={"text_hash": H, "flag": "untranslated",
                                                     "verdict": "confirmed"}, headers=page).status_code == 200
    assert client_of(app).post("/api/correct", json=EDIT).status_code == 200  # curl: no Origin, no Sec-Fetch-*
    assert _stored(overlay) == 2


@pytest.mark.parametrize("headers,status", [
    ({"sec-fetch-site": "cross-site", "sec-fetch-mode": "cors"}, 403),
    ({"sec-fetch-site": "same-site", "sec-fetch-mode": "no-cors", "sec-fetch-dest": "image"}, 403),
    ({"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate"}, 200),  # a link from elsewhere opens a page
    ({"sec-fetch-site": "same-origin", "sec-fetch-mode": "no-cors"}, 200),
])
def test_other_sites_may_link_to_a_page_but_not_pull_its_data(served, headers, status) -> None:
    app, _, _ = served
    for path in ("/api/queues", "/image/cc3m/train/cc3m/train/1", "/"):
        assert client_of(app).get(path, headers=headers).status_code == status, path


def test_host_names_served() -> None:
    assert host_names("127.0.0.1") == ["127.0.0.1", "localhost", "::1"]
    assert host_names("127.0.0.2") == ["127.0.0.2"]  # 127.0.0.1 does not reach a server bound to .2
    assert host_names("0.0.0.0", ["Review.Lab.", "10.0.0.5"]) == ["0.0.0.0", "localhost", "127.0.0.1", "::1",
                                                                  "review.lab", "10.0.0.5"]
    assert [host_name(h) for h in ("[::1]:8765", "Example.ORG.:80", "localhost", "::1")] == [
        "::1", "example.org", "localhost", "::1"]


def test_a_request_for_another_name_is_refused_even_with_the_token(tmp_path) -> None:
    """DNS rebinding on 0.0.0.0: the attacker's page sends its own name; only the names given are served."""
    root = build_root(tmp_path / "run")
    with HumanOverlay(root / "memory" / "human.sqlite") as overlay:
        app = make_app(root, RunTables(root, ["reference"], SPLITS, "reference"), overlay,
                       hosts=host_names("0.0.0.0", ["review.lab"]))
        for base, status in (("http://rebind.attacker.example:8765", 403), ("http://0.0.0.0:8765", 200),
                             ("http://review.lab", 200), ("http://localhost:8765", 200)):
            assert client_of(app, base_url=base).get("/api/queues").status_code == status, base
        r = client_of(app, base_url="http://rebind.attacker.example:8765").post("/api/correct", json=EDIT)
        assert r.status_code == 403 and "not served" in r.json()["error"]
        assert _stored(overlay) == 0


# -- the text rules -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,described", [
    ("um carro\x00", "U+0000 (NUL, a control character) at position 8"),
    ("\x1b[31mum carro", "U+001B (ESC, a control character) at position 0"),
    ("um \u202ecarro", "U+202E (RIGHT-TO-LEFT OVERRIDE, a bidi control) at position 3"),
    ("um \u2066carro", "U+2066 (LEFT-TO-RIGHT ISOLATE, a bidi control) at position 3"),
    ("um carro\x85", "U+0085 (a control character) at position 8"),
    ("um carro \ud800", "U+D800 (a lone surrogate) at position 9"),
])
def test_control_bidi_and_surrogate_characters_get_a_422_naming_them(served, text, described) -> None:
    app, overlay, _ = served
    client = client_of(app)
    r = client.post("/api/correct", content=json.dumps({**EDIT, "text_pt": text}),
                    headers={"content-type": "application/json"})
    assert r.status_code == 422 and f"text_pt has {described}" in r.json()["error"], r.text
    form = client.post("/api/correct", content=f"text_hash={H}&replaces=&text_pt=".encode()
                       + text.encode("utf-8", "surrogatepass").replace(b"\x00", b"%00").replace(b"\x1b", b"%1B"),
                       headers={"content-type": "application/x-www-form-urlencoded"})
    assert form.status_code == 422 and described in form.json()["error"], form.text
    pct = "".join(f"%{b:02X}" for b in text.encode("utf-8", "surrogatepass"))  # as a browser's form sends it
    form = client.post("/api/correct", content=f"text_hash={H}&replaces=&text_pt={pct}".encode(),
                       headers={"content-type": "application/x-www-form-urlencoded"})
    assert form.status_code == 422 and described in form.json()["error"], form.text
    assert _stored(overlay) == 0


def test_tab_and_line_breaks_are_allowed(served) -> None:
    app, overlay, _ = served
    r = client_of(app).post("/api/correct", json={**EDIT, "text_pt": "um carro\tencarnado\r\nnovo"})
    assert r.status_code == 200 and overlay.corrections("reference:v1")[H].text_pt == "um carro\tencarnado\r\nnovo"


def test_a_machine_text_that_breaks_the_rules_cannot_be_accepted_or_made_gold(tmp_path) -> None:
    root = build_root(tmp_path / "run")
    rows = [r if r[3] != "a red car" else (*r[:4], "um carro\x1b[2J", *r[5:]) for r in CC3M]
    _translated(root / "translated" / "reference" / "cc3m" / "train.parquet", rows, "reference", 4, "cc3m", "train")
    with HumanOverlay(root / "memory" / "human.sqlite") as overlay:
        client = client_of(make_app(root, RunTables(root, ["reference"], SPLITS, "reference"), overlay))
        r = client.post("/api/correct", json={"text_hash": H, "action": "accept", "replaces": ""})
        assert r.status_code == 422 and "U+001B (ESC" in r.json()["error"]
        assert client.post("/api/gold", json={"text_hash": H}).status_code == 422
        assert _stored(overlay) == 0


# -- data embedded in pages -----------------------------------------------------------------------------

HOSTILE = ["</script><script>alert(1)</script>", "<!--<script>", "<!-- x", "a & b > c \u2028 \u2029 end"]


@pytest.mark.parametrize("payload", HOSTILE)
def test_page_data_cannot_end_or_comment_out_its_script_block(tmp_path, payload) -> None:
    """Both a machine text and a correction carry the payload; the JSON block holds neither `<` nor `>`,
    and parses back to the same texts."""
    root = build_root(tmp_path / "run")
    rows = [r if r[3] != "a red car" else (*r[:4], f"machine {payload}", *r[5:]) for r in CC3M]
    _translated(root / "translated" / "reference" / "cc3m" / "train.parquet", rows, "reference", 4, "cc3m", "train")
    with HumanOverlay(root / "memory" / "human.sqlite") as overlay:
        client = client_of(make_app(root, RunTables(root, ["reference"], SPLITS, "reference"), overlay))
        page = client.get("/q/flag:untranslated/0").text
        block = page.split('<script id="row-data" type="application/json">', 1)[1].split("</script>", 1)[0]
        assert not set(block) & set("<>&\u2028\u2029"), block
        assert json.loads(block)["machine"]["reference"] == f"machine {payload}"
        assert client.post("/api/correct", json={**EDIT, "text_pt": f"human {payload}"}).status_code == 200
        page = client.get("/q/flag:untranslated/0").text
        block = page.split('<script id="row-data" type="application/json">', 1)[1].split("</script>", 1)[0]
        assert json.loads(block)["current"] == f"human {payload}"
        assert page.count("<script") == 2  # the data block and review.js, nothing else


# -- no keypress loses work -----------------------------------------------------------------------------

def test_an_accept_over_a_human_text_must_name_it(served) -> None:
    app, overlay, _ = served
    client = client_of(app)
    edit = client.post("/api/correct", json=EDIT).json()
    accept = {"text_hash": H, "action": "accept", "source_engine": "reference"}
    r = client.post("/api/correct", json={**accept, "replaces": ""})
    assert r.status_code == 409 and f"#{edit['id']} by ana" in r.json()["error"]
    assert r.json()["current"]["text_pt"] == "um carro encarnado"
    assert client.post("/api/correct", json={**accept, "replaces": "999"}).status_code == 409  # no such id
    assert client.post("/api/correct", json={**accept, "replaces": "um carro encarnado"}).status_code == 409
    assert [x.text_pt for x in overlay.history("reference:v1", H)] == ["um carro encarnado"]
    ok = client.post("/api/correct", json={**accept, "replaces": str(edit["id"])})
    assert ok.status_code == 200 and overlay.corrections("reference:v1")[H].text_pt == "a red car"
    # a stale page (it saw the edit, someone accepted since): refused again
    assert client.post("/api/correct", json={**accept, "replaces": str(edit["id"])}).status_code == 409


def test_an_edit_may_still_name_the_text_it_replaces(served) -> None:
    """Clients that send the text shown (before ids): an edit is stored, compared by text."""
    app, overlay, _ = served
    client = client_of(app)
    first = client.post("/api/correct", json={**EDIT, "replaces": "a red car"}).json()
    assert first["superseded"] is None
    again = client.post("/api/correct", json={**EDIT, "text_pt": "um carro rubro", "replaces": "a red car"}).json()
    assert again["superseded"]["id"] == first["id"]  # it had not seen the first edit
    third = client.post("/api/correct", json={**EDIT, "text_pt": "2", "replaces": "um carro rubro"}).json()
    assert third["superseded"] is None
    assert [r.replaces for r in overlay.history("reference:v1", H)] == ["a red car", "a red car", "um carro rubro"]


def test_the_gold_row_holds_the_current_text(served) -> None:
    app, overlay, _ = served
    client = client_of(app)
    r = client.post("/api/gold", json={"text_hash": H, "text_pt": "outra coisa"})
    assert r.status_code == 409 and "current text ('a red car')" in r.json()["error"]
    edit = client.post("/api/correct", json=EDIT).json()
    assert client.post("/api/gold", json={"text_hash": H}).json()["text_pt"] == "um carro encarnado"
    client.post("/api/correct", json={"text_hash": H, "action": "edit", "text_pt": "um carro rubro",
                                      "replaces": str(edit["id"])})
    assert [g.text_pt for g in overlay.gold()] == ["um carro rubro"]


def test_the_index_starts_on_the_first_queue_with_rows(tmp_path) -> None:
    assert first_with_rows([{"name": "worst", "total": 0}, {"name": "disagree", "total": None},
                            {"name": "sample", "total": 4}]) == {"name": "sample", "total": 4}
    root = build_root(tmp_path / "run")
    # no scores, no flags: `worst` is empty, as for the sample's reference engine
    for dataset, split, rows in (("cc3m", "train", CC3M), ("visdial", "val", VISDIAL)):
        _translated(root / "translated" / "reference" / dataset / f"{split}.parquet",
                    [(*r[:6], None, []) for r in rows], "reference", 4, dataset, split)
    with HumanOverlay(root / "memory" / "human.sqlite") as overlay:
        page = client_of(make_app(root, RunTables(root, ["reference"], SPLITS, "reference"), overlay)).get("/").text
    assert re.search(r'<a id="start" href="/q/sample/0">start with random sample \(\d+ rows\)', page), page


# -- bodies, on a real server -----------------------------------------------------------------------------

@pytest.fixture
def server(tmp_path):
    """The app under uvicorn on a free port, with a short body timeout."""
    root = build_root(tmp_path / "run")
    overlay = HumanOverlay(root / "memory" / "human.sqlite")
    app = make_app(root, RunTables(root, ["reference"], SPLITS, "reference"), overlay, hosts=["127.0.0.1"],
                   body_timeout_s=0.5)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield port, overlay
    srv.should_exit = True
    thread.join(timeout=10)
    overlay.close()


def _raw(port: int, head: str, body: bytes = b"", wait_s: float = 5.0) -> tuple[str, float, bool]:
    """(response, seconds to its first byte, whether the server closed the connection after it)."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(head.encode() + body)
        s.settimeout(wait_s)
        t0 = time.monotonic()
        out = s.recv(65536)
        took = time.monotonic() - t0
        closed = False
        while True:
            try:
                more = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not more:
                closed = True
                break
            out += more
    return out.decode("utf-8", "replace"), took, closed


def _head(port: int, extra: str) -> str:
    return (f"POST /api/correct HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: token {TOKEN}\r\n"
            f"Content-Type: application/json\r\n{extra}\r\n")


def test_a_declared_300_mb_body_is_refused_before_a_byte_is_sent(server) -> None:
    port, overlay = server
    out, took, closed = _raw(port, _head(port, "Content-Length: 300000000\r\n"))  # the headers only
    assert out.startswith("HTTP/1.1 413") and "300,000,000 bytes; at most 65,536 (refused unread)" in out
    assert took < 2 and closed


def test_a_chunked_body_is_cut_at_the_cap_while_it_streams(server) -> None:
    port, overlay = server
    chunk = b"x" * 30_000
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(4))  # 120 KB, no terminating chunk
    out, _, closed = _raw(port, _head(port, "Transfer-Encoding: chunked\r\n"), body)
    assert out.startswith("HTTP/1.1 413") and "refused while it streamed" in out and closed


def test_a_body_that_never_comes_times_out(server) -> None:
    port, overlay = server
    out, took, closed = _raw(port, _head(port, "Content-Length: 100\r\n"), b'{"text_hash": ')
    assert out.startswith("HTTP/1.1 408") and "did not arrive within 0.5 s (14 bytes came)" in out
    assert 0.4 < took < 3 and closed
    assert _stored(overlay) == 0


def test_deep_json_is_a_400_not_a_crash(server) -> None:
    port, overlay = server
    body = b"[" * 60_000
    out, _, _ = _raw(port, _head(port, f"Content-Length: {len(body)}\r\nConnection: close\r\n"), body)
    assert out.startswith("HTTP/1.1 400") and "JSON nested more than 4 levels deep" in out
    body = json.dumps({"text_hash": H, "replaces": "", "text_pt": {"a": [[[["x"]]]]}}).encode()
    out, _, _ = _raw(port, _head(port, f"Content-Length: {len(body)}\r\nConnection: close\r\n"), body)
    assert out.startswith("HTTP/1.1 400") and _stored(overlay) == 0


def test_the_page_answers_carry_the_security_headers(served) -> None:
    app, _, root = served
    r = client_of(app).get("/q/sample/0")
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["cache-control"] == "no-store"
    assert Path(root).is_dir()
