"""Every HTML page a run writes, rendered in a real headless Chromium (Debian's `chromium`, driven by
Playwright without its own browser download): each image is shown at its own aspect ratio (the old
`.ex{display:flex}` stretched every thumbnail to 64x215), and no link is broken.

Skipped, with the reason, where Chromium or Playwright is missing (`make setup` tries to install Chromium
with apt-get and goes on without it)."""
from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from PIL import Image

from tests.chromium import BROWSER_MARKS, launch, playwright
from tests.operator_run import TinyRun

pytestmark = BROWSER_MARKS

# In the page: every image's natural and rendered size, every link's target and whether an in-page
# anchor resolves.
PROBE = """() => ({
  images: Array.from(document.images).map(i => {
    const r = i.getBoundingClientRect();
    return {alt: i.alt, complete: i.complete, nw: i.naturalWidth, nh: i.naturalHeight, w: r.width, h: r.height};
  }),
  links: Array.from(document.querySelectorAll('a[href]')).map(a => ({
    href: a.getAttribute('href'), url: a.href,
    anchor_ok: a.getAttribute('href').startsWith('#') ? !!document.getElementById(a.getAttribute('href').slice(1)) : null,
  })),
})"""


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


def render(browser, page_path: Path) -> dict:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(page_path.resolve().as_uri(), wait_until="load")
        return page.evaluate(PROBE)
    finally:
        page.close()


def aspect_errors(found: dict) -> list[str]:
    """Images whose rendered height differs from width x natural ratio by more than a pixel and a half."""
    bad = []
    for im in found["images"]:
        assert im["complete"] and im["nw"] > 0, f"image {im['alt']!r} did not load"
        want_h = im["w"] * im["nh"] / im["nw"]
        if abs(im["h"] - want_h) > 1.5:
            bad.append(f"{im['alt']}: natural {im['nw']}x{im['nh']}, rendered {im['w']:.0f}x{im['h']:.0f}")
    return bad


def broken_links(found: dict) -> list[str]:
    bad = []
    for link in found["links"]:
        href, url = link["href"], urlparse(link["url"])
        if href.startswith("#"):
            if not link["anchor_ok"]:
                bad.append(href)
        elif url.scheme == "file":
            if not Path(unquote(url.path)).exists():
                bad.append(href)
        elif url.scheme not in ("http", "https", "mailto", "data"):
            bad.append(href)
    return bad


def test_every_page_of_a_run_renders_images_at_their_ratio_and_links_resolve(tiny_run: TinyRun, browser) -> None:
    pages = sorted(tiny_run.root.rglob("*.html"))
    names = {p.relative_to(tiny_run.root).as_posix() for p in pages}
    assert {"reports/compare/comparison.html", "train/vgloria/eval/coco/captions.html",
            "train/vgloria/eval/coco/retrieval.html", "train/vgloria/eval/visdial/visdial.html",
            "train/vgloria/eval/vqav2/vqa.html"} <= names
    images = 0
    for page in pages:
        found = render(browser, page)
        images += len(found["images"])
        assert not aspect_errors(found), (page, aspect_errors(found))
        assert not broken_links(found), (page, broken_links(found))
    assert images >= 20


def test_the_check_catches_a_stretched_thumbnail(tmp_path: Path, browser) -> None:
    """The same caption page with the old style sheet (a flex row that stretches its items) fails the
    check; with the page's own style sheet it passes.  A wide image beside a tall text block."""
    from eval import qualitative
    from eval.runners import CaptioningResult

    buf = io.BytesIO()
    Image.new("RGB", (64, 32), (200, 30, 30)).save(buf, "PNG")
    result = CaptioningResult(metrics={}, captions={"img/1": "um carro vermelho"},
                              references={"img/1": [f"referência número {i}" for i in range(12)]})
    good = qualitative.captions_page(result, {"img/1": buf.getvalue()}.get, tmp_path / "good.html")
    assert not aspect_errors(render(browser, good))
    old_css = ".ex{display:flex;gap:1.2em}.ex img{max-width:224px;max-height:224px}"
    stretched = tmp_path / "stretched.html"
    stretched.write_text(good.read_text().replace(qualitative._STYLE, old_css))
    assert aspect_errors(render(browser, stretched)), "the old style sheet must be caught"
    broken = tmp_path / "broken.html"
    broken.write_text(good.read_text().replace("</body>", '<a href="nowhere.html">x</a><a href="#nope">y</a></body>'))
    assert sorted(broken_links(render(browser, broken))) == ["#nope", "nowhere.html"]
