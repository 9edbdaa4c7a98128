"""Self-contained HTML pages of examples (images inlined as base64 JPEG): captions, retrieval top-5, VisDial, VQA.

Mirrors thesis figure 5.2 and tables 6.5/6.6: people would rather look at examples than read numbers.
Images come from an `image_bytes(image_id) -> bytes | None` callable (e.g. the shards' JPEG bytes);
they are re-encoded as small JPEG thumbnails so a page with dozens of examples stays a few MB.
Every text is HTML-escaped. Pages are written atomically.
"""
from __future__ import annotations

import base64
import html
import io
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image

from eval.runners import CaptioningResult, Dialog, RetrievalResult, VisDialResult, VQAQuestion, VQAResult
from ptvl_io import write_text_atomic

ImageBytes = Callable[[str], bytes | None]

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
.ex{display:flex;align-items:flex-start;gap:1.2em;margin:1em 0;padding:1em;border-bottom:1px solid #ddd}
img{flex:none;align-self:flex-start;width:auto;height:auto;object-fit:contain}
.ex img{max-width:224px;max-height:224px;border-radius:4px}
.small img{max-width:96px;max-height:96px}
.hit{color:#0a7d2c;font-weight:600}.miss{color:#555}
.gen{background:#eef5ff;padding:.2em .4em;border-radius:3px}
table{border-collapse:collapse}td{padding:.15em .6em;vertical-align:top}
"""


def thumbnail_data_uri(data: bytes | None, size: int = 224, quality: int = 85) -> str:
    """A JPEG data: URI of an image's thumbnail ('' when there is no image or it cannot be decoded)."""
    if not data:
        return ""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("RGB")
            im.thumbnail((size, size))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=quality)
    except (OSError, ValueError, Image.DecompressionBombError):
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _img(image_bytes: ImageBytes, image_id: str, size: int = 224) -> str:
    uri = thumbnail_data_uri(image_bytes(image_id), size)
    alt = html.escape(image_id)
    return f'<img src="{uri}" alt="{alt}" title="{alt}">' if uri else f"<div>[no image: {alt}]</div>"


def _page(title: str, body: str) -> str:
    t = html.escape(title)
    return (f'<!doctype html>\n<html lang="pt"><head><meta charset="utf-8"><title>{t}</title>'
            f"<style>{_STYLE}</style></head><body><h1>{t}</h1>\n{body}\n</body></html>\n")


def write_page(path: Path, title: str, body: str) -> Path:
    write_text_atomic(path, _page(title, body))
    return Path(path)


def captions_page(result: CaptioningResult, image_bytes: ImageBytes, path: Path, *, n: int = 24,
                  title: str = "Generated captions") -> Path:
    """Images with their ground-truth captions and the generated one."""
    parts = []
    for image_id in list(result.captions)[:n]:
        refs = "".join(f"<li>{html.escape(r)}</li>" for r in result.references.get(image_id, []))
        gen = html.escape(result.captions[image_id]) or "<i>(empty)</i>"
        parts.append(f'<div class="ex">{_img(image_bytes, image_id)}<div><b>{html.escape(image_id)}</b>'
                     f'<p>Generated: <span class="gen">{gen}</span></p><p>Ground truth:</p><ul>{refs}</ul>'
                     f"</div></div>")
    return write_page(path, title, "\n".join(parts))


def retrieval_page(result: RetrievalResult, image_bytes: ImageBytes, path: Path, *, n: int = 24, k: int = 5,
                   title: str = "Retrieval: top-5") -> Path:
    """For each image its top-k captions (image->text), and for one caption per image its top-k images."""
    parts = ["<h2>Image → text</h2>"]
    for i, image_id in enumerate(result.image_ids[:n]):
        items = "".join(f'<li class="{"hit" if hit else "miss"}">{html.escape(t)} <small>({s:.3f})</small></li>'
                        for t, s, hit in result.top_texts(i, k))
        parts.append(f'<div class="ex">{_img(image_bytes, image_id)}<div><b>{html.escape(image_id)}</b>'
                     f"<ol>{items}</ol></div></div>")
    parts.append("<h2>Text → image</h2>")
    first_text = {int(img): t for t, img in reversed(list(enumerate(result.text_to_image)))}
    for i in range(min(n, len(result.image_ids))):
        t = first_text.get(i)
        if t is None:
            continue
        cells = "".join(f'<td class="{"hit" if hit else "miss"}">{_img(image_bytes, img_id, 96)}<br>'
                        f"{s:.3f}{' ✓' if hit else ''}</td>" for img_id, s, hit in result.top_images(t, k))
        parts.append(f'<div class="ex small"><div><p><b>Query:</b> {html.escape(result.texts[t])}</p>'
                     f"<table><tr>{cells}</tr></table></div></div>")
    return write_page(path, title, "\n".join(parts))


def visdial_page(result: VisDialResult, dialogs: Sequence[Dialog], image_bytes: ImageBytes, path: Path, *,
                 n: int = 12, title: str = "VisDial: chosen answers") -> Path:
    """Each dialog: image, caption, and per round the question, the right answer and the model's choice."""
    parts = []
    for d in list(dialogs)[:n]:
        chosen = result.chosen.get(d.image_id, [])
        rows = []
        for k, r in enumerate(d.rounds):
            pick = chosen[k] if k < len(chosen) else ""
            cls = "hit" if pick == r.options[r.gt_index] else "miss"
            rows.append(f"<tr><td>{k + 1}</td><td>{html.escape(r.question)}</td><td>{html.escape(r.answer)}</td>"
                        f'<td class="{cls}">{html.escape(pick)}</td></tr>')
        top = ", ".join(html.escape(i) + (" ✓" if i == d.image_id else "") for i in result.t2i_top.get(d.image_id, []))
        parts.append(f'<div class="ex">{_img(image_bytes, d.image_id)}<div><b>{html.escape(d.caption)}</b>'
                     f"<table><tr><th>#</th><th>question</th><th>answer</th><th>model</th></tr>{''.join(rows)}"
                     f"</table><p>T2I top-5: {top}</p></div></div>")
    return write_page(path, title, "\n".join(parts))


def vqa_page(result: VQAResult, questions: Sequence[VQAQuestion], image_bytes: ImageBytes, path: Path, *,
             n: int = 24, title: str = "VQAv2: generated answers") -> Path:
    """Each image with its questions: the generated answer, what it was scored as, its VQA accuracy and the
    ten human answers (most frequent first)."""

    scored = {s.question_id: s for s in result.scored}
    by_image: dict[str, list[VQAQuestion]] = {}
    for q in questions:
        by_image.setdefault(q.image_id, []).append(q)
    parts = []
    for image_id, qs in list(by_image.items())[:n]:
        rows = []
        for q in qs:
            sc = scored.get(q.question_id)
            acc = sc.accuracy if sc else 0.0
            cls = "hit" if acc >= 1.0 else "miss"
            gen = html.escape(sc.answer) if sc and sc.answer else "<i>(empty)</i>"
            as_ = html.escape(sc.scored_as) if sc else ""
            humans = ", ".join(f"{html.escape(a)} ×{c}" if c > 1 else html.escape(a)
                               for a, c in Counter(q.answers).most_common())
            rows.append(f"<tr><td>{html.escape(q.question)}</td><td>{html.escape(q.answer_type)}</td>"
                        f'<td class="{cls}"><span class="gen">{gen}</span> <small>({as_})</small></td>'
                        f"<td>{acc:.2f}</td><td>{humans}</td></tr>")
        parts.append(f'<div class="ex">{_img(image_bytes, image_id)}<div><b>{html.escape(image_id)}</b>'
                     "<table><tr><th>question</th><th>type</th><th>model (scored as)</th><th>accuracy</th>"
                     f"<th>human answers</th></tr>{''.join(rows)}</table></div></div>")
    return write_page(path, title, "\n".join(parts))
