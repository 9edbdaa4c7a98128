"""`ptvl review` end to end in a real browser (Debian's `chromium`, driven by Playwright without its own
browser download): a person opens a queue, edits one CC3M caption and accepts another with the page's
keys and buttons, then rebuilds the shards as a user would (`ptvl run --until shards`); the shard rows
carry the human text and the dataset card counts the human-corrected rows.  The test saves the review
page's screenshot to docs/review.png (shown in the README).

Runs on a copy of the shared tiny whole run (tests/operator_run.py), so the other tests' run root is not
reviewed under them.  Skipped, with the reason, where Chromium or Playwright is missing."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import polars as pl
import pytest

from tests.chromium import BROWSER_MARKS, launch, playwright
from tests.helpers import free_port
from tests.operator_run import TinyRun, ptvl
from translation.overlay import HumanOverlay

REPO = Path(__file__).resolve().parent.parent
SCREENSHOT = REPO / "docs" / "review.png"
pytestmark = BROWSER_MARKS
EDITED = "TEXTO HUMANO: um quadrado corrigido à mão"


def _get(url: str, token: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())


def _token(log: Path) -> str | None:
    """The token from the address `ptvl review` printed (`open http://127.0.0.1:PORT/?token=...`)."""
    found = re.search(r"\?token=(\S+)", log.read_text())
    return found.group(1) if found else None


@pytest.fixture
def reviewed_run(tiny_run: TinyRun, tmp_path: Path):
    """A copy of the tiny run (root and profile) and `ptvl review` serving it on a free port."""
    root = tmp_path / "run"
    shutil.copytree(tiny_run.root, root, symlinks=True)
    config = tmp_path / "tiny.toml"
    config.write_text(tiny_run.config.read_text().replace(str(tiny_run.root), str(root)))
    port = free_port()
    log = tmp_path / "review.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "review", "--config", str(config), "--port", str(port),
             "--reviewer", "browser-test"], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                token = _token(log)
                if token:
                    _get(base + "/api/queues", token)
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ptvl review did not start: {log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield root, config, base, server, token
    finally:
        server.terminate()
        server.wait(timeout=30)


def _cc3m_positions(base: str, token: str) -> list[tuple[int, dict]]:
    """Positions in the sample queue of rows that occur only in CC3M train (their shards hold one
    caption per row, and they show an image)."""
    hashes = _get(base + "/api/queue/sample", token)["hashes"]
    found = []
    for pos, h in enumerate(hashes):
        row = _get(f"{base}/api/row/{h}", token)
        if {(o["dataset"], o["split"]) for o in row["occurrences"]} == {("cc3m", "train")} and row["images"]:
            found.append((pos, row))
        if len(found) == 2:
            return found
    pytest.fail("the sample queue has fewer than two CC3M train rows")


def test_review_in_a_browser_then_the_shards_carry_the_human_text(reviewed_run) -> None:
    root, config, base, server, token = reviewed_run
    (edit_pos, edit_row), (accept_pos, accept_row) = _cc3m_positions(base, token)
    with playwright.sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

        # the printed link logs the browser in; open a queue from the index page: its progress reads 0 / N
        page.goto(f"{base}/?token={token}")
        assert page.url == base + "/"
        total = len(_get(base + "/api/queue/sample", token)["hashes"])
        assert page.locator("tr", has=page.locator("a[data-queue=sample]")).locator(".progress").inner_text() \
            == f"0 / {total}"
        page.click("a[data-queue=sample]")
        page.wait_for_url(base + "/q/sample/0")
        for _ in range(edit_pos):  # j: next row
            with page.expect_navigation():
                page.keyboard.press("j")
        assert page.url == f"{base}/q/sample/{edit_pos}"
        assert page.locator(".source .en").inner_text() == edit_row["text_en"]
        img = page.locator(".images img").first
        img.wait_for()
        assert page.evaluate("i => i.complete && i.naturalWidth > 0", img.element_handle())

        # e: edit; type the correction; the screenshot shows the page at work; Ctrl+Enter saves and moves on
        page.keyboard.press("e")
        page.fill("#edit-text", EDITED)
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        with page.expect_navigation():
            page.keyboard.press("Control+Enter")
        assert page.url == f"{base}/q/sample/{edit_pos + 1}"
        assert "saved (edit)" in page.locator("#status").inner_text()

        # accept another row's engine output with the page's button
        page.goto(f"{base}/q/sample/{accept_pos}")
        with page.expect_navigation():
            page.click(".engine.reviewed .btn-accept")
        assert "saved (accept)" in page.locator("#status").inner_text()

        # back on the edited row: the human text is current, and the queue counts both rows
        page.goto(f"{base}/q/sample/{edit_pos}")
        assert page.locator("#current-text").inner_text() == EDITED
        assert "by browser-test" in page.locator(".current .human").inner_text()
        assert page.locator("#progress").inner_text() == f"2 / {total} reviewed"
        assert not errors, errors
        browser.close()

    with HumanOverlay(root / "memory" / "human.sqlite", read_only=True) as ov:
        fixes = ov.corrections(edit_row["engine_id"])
    assert {h: (r.text_pt, r.action, r.who, r.replaces) for h, r in fixes.items()} == {
        edit_row["text_hash"]: (EDITED, "edit", "browser-test", edit_row["current"]),
        accept_row["text_hash"]: (accept_row["current"], "accept", "browser-test", accept_row["current"]),
    }
    server.terminate()
    server.wait(timeout=30)

    # rebuild the shards as a user would; only the reviewed engine's changed folders are rebuilt
    res = ptvl("run", "--config", str(config), "--until", "shards", cwd=REPO)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    folder = root / "shards" / "reference" / "cc3m" / "train"
    shard = pl.read_parquet(sorted(folder.glob("part-*.parquet")))
    translated = pl.read_parquet(root / "translated" / "reference" / "cc3m" / "train.parquet")
    uses = {h: translated.filter(pl.col("text_hash") == h).height for h in fixes}
    edited = shard.filter(pl.col("caption_en") == edit_row["text_en"])
    assert edited.height == uses[edit_row["text_hash"]] >= 1
    assert edited["caption"].to_list() == [EDITED] * edited.height
    assert edited["text_source"].to_list() == ["human"] * edited.height
    assert edited["caption_machine"].to_list() == [edit_row["machine_text"]] * edited.height
    accepted = shard.filter(pl.col("caption_en") == accept_row["text_en"])
    assert accepted["text_source"].to_list() == ["human"] * uses[accept_row["text_hash"]]
    human_rows = sum(uses.values())
    assert shard.filter(pl.col("text_source") == "human").height == human_rows
    assert shard.filter(pl.col("text_source") == "machine").height == shard.height - human_rows
    summary = json.loads((folder / "_SHARDS.json").read_text())
    assert summary["human_corrected"] == human_rows
    card = (folder / "README.md").read_text()
    assert f"| human-corrected rows | {human_rows:,} " in card
    assert SCREENSHOT.stat().st_size > 10_000


def test_flag_gold_engine_and_help_keys_in_a_browser(tmp_path: Path) -> None:
    """The other shortcuts, on the small two-engine root of tests/test_review_app.py served in-process:
    f marks the open flag a false alarm, g adds the row to the gold set, 2 accepts engine 2's output,
    ? opens the help."""
    import threading

    import uvicorn

    from pipeline.review.app import create_app
    from pipeline.review.tables import RunTables
    from tests.test_review_app import SPLITS, TOKEN, build_root

    root = build_root(tmp_path / "run")
    overlay = HumanOverlay(root / "memory" / "human.sqlite")
    app = create_app(root, RunTables(root, ["reference", "other"], SPLITS, "reference"), overlay, who="keys",
                     token=TOKEN, hosts=["127.0.0.1"])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        with playwright.sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{base}/?token={TOKEN}")
            page.click('a[data-queue="flag:untranslated"]')
            page.wait_for_selector(".engine.reviewed .flag")
            with page.expect_navigation():
                page.keyboard.press("f")
            assert page.locator("#status").inner_text() == "flag untranslated marked false alarm"
            assert page.locator(".engine.reviewed .flag .verdict").inner_text() == "false alarm"
            with page.expect_navigation():
                page.keyboard.press("g")
            assert page.locator("#status").inner_text() == "added to the gold set (style cc3m)"
            with page.expect_navigation():  # the queue's only row: it reloads instead of moving on
                page.keyboard.press("2")
            assert page.locator("#current-text").inner_text() == "um carro vermelho"
            assert page.locator("#progress").inner_text() == "1 / 1 reviewed"
            page.keyboard.press("?")
            assert page.evaluate("document.getElementById('help').open")
            assert not errors, errors
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    from translation.textkey import text_hash

    h = text_hash("a red car")
    assert overlay.verdicts("reference:v1") == {(h, "untranslated"): "false_alarm"}
    # g took the row's text then; the accept (2) since made engine 2's output current, and the gold row
    # follows it: the gold set and the shards read one current human text
    assert [(g.text_hash, g.text_pt, g.who) for g in overlay.gold()] == [(h, "um carro vermelho", "keys")]
    fix = overlay.corrections("reference:v1")[h]
    assert (fix.text_pt, fix.action, fix.source_engine, fix.replaces) == ("um carro vermelho", "accept", "other:v1",
                                                                         "a red car")
    overlay.close()
