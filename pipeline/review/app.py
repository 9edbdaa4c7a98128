"""The review web app (Starlette): server-rendered pages, a small vanilla-JS file for the keyboard, and
JSON actions that append to the human overlay (translation/overlay.py, memory/human.sqlite).

Routes:
  GET  /                          queues with their progress (reviewed / total)
  GET  /q/<queue>/<pos>           one row of a queue (the page people work on)
  GET  /api/queues, /api/row/<h>  the same data as JSON
  GET  /image/<dataset>/<split>/<image id>   image bytes, looked up by id (never a path)
  POST /api/correct   {text_hash, action: edit|accept, text_pt (edit), source_engine (accept), replaces}
  POST /api/verdict   {text_hash, flag, verdict: false_alarm|confirmed}
  POST /api/gold      {text_hash, text_pt (default: the current text)}
POST bodies are JSON or form-encoded; `engine` (default: the reviewed engine) names whose translation.

Safety: a request from another site (an Origin header that is not this server) is refused, so a web
page cannot post corrections through the reviewer's browser; bad requests get a 4xx with a message.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import escape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from pipeline.review.images import ImageNotFound, ImageStore, OutsideRoot
from pipeline.review.queues import Queue, Queues
from pipeline.review.rows import DialogIndex, gold_style, row_view
from pipeline.review.tables import RunTables
from translation.overlay import HumanOverlay

log = logging.getLogger("ptvl.review")

HERE = Path(__file__).resolve().parent
MAX_BODY_BYTES = 64 * 1024
MAX_TEXT_CHARS = 5000  # a caption, question or answer; far above any real one (CC3M max ~ 300)
STATIC = {"review.js": "text/javascript; charset=utf-8", "review.css": "text/css; charset=utf-8"}
# The page loads only its own script and style, and images from this server.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass
class Review:
    """What the routes share: the run's tables and queues, the overlay, the reviewer's name."""

    root: Path
    tables: RunTables
    queues: Queues
    overlay: HumanOverlay
    images: ImageStore
    dialogs: DialogIndex
    who: str

    def acted_on(self) -> tuple[set[str], set[tuple[str, str]]]:
        """What people did so far, read once per page: the strings with a correction or a gold row, and
        the (string, flag) pairs with a verdict (people act on thousands, queues may hold millions)."""
        eid = self.tables.chosen.engine_id
        done = set(self.overlay.corrections(eid)) | {g.text_hash for g in self.overlay.gold()}
        return done, set(self.overlay.verdicts(eid))

    def progress(self, queue: Queue, acted: tuple[set[str], set[tuple[str, str]]] | None = None) -> dict:
        """The queue's progress: its rows a person has acted on (a correction, a gold row, or a verdict;
        for a flag queue, a verdict on that flag).  `acted`: `acted_on()`, when several queues share it."""
        done, verdicts = acted or self.acted_on()
        done = done | {h for (h, f) in verdicts if queue.flag is None or f == queue.flag}
        return {"name": queue.name, "title": queue.title, "total": len(queue.hashes),
                "reviewed": len(done & set(queue.hashes)), "note": queue.note}


def _error(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    if request.url.path.startswith(("/api/", "/image/")) or request.method == "POST":
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=SECURITY_HEADERS)
    return HTMLResponse(f"<!doctype html><title>{exc.status_code}</title><p>{_escape(str(exc.detail))}</p>"
                        '<p><a href="/">queues</a></p>', status_code=exc.status_code, headers=SECURITY_HEADERS)


def _escape(s: str) -> str:

    return str(escape(s))


def create_app(root: Path, tables: RunTables, overlay: HumanOverlay, *, who: str, queue_size: int = 500,
               seed: int = 0, allowed_hosts: list[str] | None = None) -> Starlette:
    """The app over one run root; `tables.chosen` is the engine under review.  `allowed_hosts`: the Host
    headers served (None: any); on 127.0.0.1 the CLI passes the loopback names, so a web page that
    rebinds its own domain name to 127.0.0.1 (DNS rebinding) is refused."""
    review = Review(root=root, tables=tables, queues=Queues(tables, size=queue_size, seed=seed), overlay=overlay,
                    images=ImageStore(root, tables.splits), dialogs=DialogIndex(root), who=who)
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)

    def page(name: str, **ctx) -> HTMLResponse:
        return HTMLResponse(env.get_template(name).render(engine=tables.chosen.name, who=who, **ctx),
                            headers=SECURITY_HEADERS)

    def queue_or_404(name: str) -> Queue:
        try:
            return review.queues.get(name)
        except KeyError as e:
            raise _error(404, e.args[0]) from None

    def all_progress(build_disagree: bool = False) -> list[dict]:
        out, acted = [], review.acted_on()
        for name in review.queues.names():
            q = review.queues.get(name) if build_disagree else review.queues.peek(name)
            out.append(review.progress(q, acted) if q is not None else
                       {"name": name, "title": "engines disagree", "total": None, "reviewed": None,
                        "note": "chrF between engines, computed when first opened"})
        return out

    async def index(request: Request) -> Response:
        queues = await run_in_threadpool(all_progress)
        return page("index.html", queues=queues, engines=list(tables.engines), root=str(root))

    async def queue_page(request: Request) -> Response:
        name = request.path_params["queue"]
        q = await run_in_threadpool(queue_or_404, name)
        pos = request.path_params["pos"]
        if q.hashes and pos >= len(q.hashes):
            raise _error(404, f"queue {name!r} has {len(q.hashes)} rows; position {pos} is past its end")
        row = await run_in_threadpool(row_view, tables, overlay, review.dialogs, q.hashes[pos]) if q.hashes else None
        progress = await run_in_threadpool(review.progress, q)
        data = {"queue": name, "pos": pos, "total": len(q.hashes), "engine": tables.chosen.name,
                "text_hash": row["text_hash"] if row else None, "current": row["current"] if row else None,
                "flags": [f["flag"] for m in row["machine"] if m["reviewed"] for f in m["flags"]] if row else [],
                "engines": [m["engine"] for m in row["machine"]] if row else []}
        return page("row.html", q=q, pos=pos, row=row, progress=progress, data=json.dumps(data).replace("</", "<\\/"),
                    chrf=q.scores[pos] if row and q.scores else None)

    async def queue_start(request: Request) -> Response:
        return RedirectResponse(f"/q/{request.path_params['queue']}/0", status_code=303)

    async def api_queues(request: Request) -> Response:
        build = request.query_params.get("disagree") == "1"
        return JSONResponse({"engine": tables.chosen.name, "engine_id": tables.chosen.engine_id,
                             "queues": await run_in_threadpool(all_progress, build)})

    async def api_queue(request: Request) -> Response:
        q = await run_in_threadpool(queue_or_404, request.path_params["queue"])
        progress = await run_in_threadpool(review.progress, q)
        return JSONResponse({**progress, "hashes": list(q.hashes), "scores": list(q.scores)})

    async def api_row(request: Request) -> Response:
        row = await run_in_threadpool(row_view, tables, overlay, review.dialogs, request.path_params["text_hash"])
        if row is None:
            raise _error(404, f"no row {request.path_params['text_hash']!r} for engine {tables.chosen.name!r}")
        return JSONResponse(row)

    async def image(request: Request) -> Response:
        p = request.path_params
        try:
            data = await run_in_threadpool(review.images.read, p["dataset"], p["split"], p["image_id"])
        except ImageNotFound as e:
            raise _error(404, str(e)) from None
        except OutsideRoot:
            log.warning("refused an image outside the run root: %s/%s/%s", p["dataset"], p["split"], p["image_id"])
            raise _error(403, "that image is stored outside the run root: refused") from None
        kind = "image/png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "image/jpeg"
        return Response(data, media_type=kind, headers={**SECURITY_HEADERS, "Cache-Control": "private, max-age=3600"})

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            raise _error(404, f"no static file {name!r}")
        return Response((HERE / "static" / name).read_bytes(), media_type=STATIC[name], headers=SECURITY_HEADERS)

    # -- actions ----------------------------------------------------------------------------------

    async def fields(request: Request) -> dict[str, str]:
        origin = request.headers.get("origin")
        if origin and origin != "null" and urlparse(origin).netloc != request.headers.get("host"):
            raise _error(403, f"cross-site request from {origin} refused")
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in ("application/json", "application/x-www-form-urlencoded"):
            raise _error(415, f"send application/json or application/x-www-form-urlencoded, not {kind or 'nothing'!r}")
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise _error(413, f"request body is {len(raw):,} bytes; at most {MAX_BODY_BYTES:,}")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _error(400, "request body is not UTF-8") from None
        if kind == "application/json":
            try:
                body = json.loads(text)
            except json.JSONDecodeError as e:
                raise _error(400, f"malformed JSON: {e}") from None
            if not isinstance(body, dict):
                raise _error(400, f"the JSON body must be an object, not {type(body).__name__}")
        else:
            body = {k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()}
        bad = [k for k, v in body.items() if not isinstance(v, str)]
        if bad:
            raise _error(422, f"field(s) {', '.join(sorted(bad))} must be strings")
        return body

    def need(body: dict, name: str, hint: str = "") -> str:
        if name not in body:
            raise _error(422, f"missing field {name!r}{hint}")
        return body[name]

    def target(body: dict):
        """(engine table, row) named by the body's engine and text_hash."""
        name = body.get("engine", tables.chosen.name)
        if name not in tables.engines:
            raise _error(404, f"unknown engine {name!r}; this run has {', '.join(tables.engines)}")
        table = tables.engines[name]
        h = need(body, "text_hash")
        row = table.row(h)
        if row is None:
            raise _error(404, f"unknown text_hash {h!r}: no such source string in engine {name!r}'s tables")
        return table, row

    def checked_text(text: str, name: str = "text_pt") -> str:
        if not text.strip():
            raise _error(422, f"{name} is empty: type the translation (or accept an engine's output)")
        if len(text) > MAX_TEXT_CHARS:
            raise _error(422, f"{name} is {len(text):,} characters; at most {MAX_TEXT_CHARS:,}")
        return text

    async def correct(request: Request) -> Response:
        body = await fields(request)
        table, row = target(body)
        action = body.get("action", "edit")
        replaces = need(body, "replaces", " (the text shown as current when you acted)")
        if len(replaces) > MAX_TEXT_CHARS:
            raise _error(422, f"replaces is {len(replaces):,} characters; at most {MAX_TEXT_CHARS:,}")
        source_id = None
        if action == "edit":
            text = checked_text(need(body, "text_pt"))
        elif action == "accept":
            source = body.get("source_engine", table.name)
            if source not in tables.engines:
                raise _error(404, f"unknown source_engine {source!r}; this run has {', '.join(tables.engines)}")
            src_row = tables.engines[source].row(row["text_hash"])
            if src_row is None or not (src_row["text_pt"] or "").strip():
                raise _error(422, f"engine {source!r} has no text to accept for this row")
            text, source_id = src_row["text_pt"], tables.engines[source].engine_id
        else:
            raise _error(422, f"unknown action {action!r}: edit or accept")
        try:
            rec = await run_in_threadpool(
                overlay.record_correction, engine_id=table.engine_id, text_hash=row["text_hash"],
                text_en=row["text_en"], text_pt=text, replaces=replaces, who=who, action=action,
                source_engine=source_id)
        except ValueError as e:
            raise _error(422, str(e)) from None
        out = {"ok": True, "id": rec.id, "engine": table.name, "text_hash": rec.text_hash, "text_pt": rec.text_pt,
               "action": rec.action, "who": rec.who, "created_at": rec.created_at.isoformat(), "superseded": None,
               "message": f"saved ({rec.action}) as the human text of {table.name}"}
        if rec.superseded is not None:
            earlier = next((r for r in overlay.history(table.engine_id, rec.text_hash) if r.id == rec.superseded), None)
            out["superseded"] = {"id": rec.superseded, "text_pt": earlier.text_pt if earlier else None,
                                 "who": earlier.who if earlier else None}
            out["message"] = (f"saved; it overrides an edit you had not seen (#{rec.superseded}"
                              + (f" by {earlier.who}: {earlier.text_pt!r}" if earlier else "")
                              + "), which stays in the log")
            log.warning("row %s of %s: edit #%d by %s supersedes #%d%s (not seen by the editor); last write wins, "
                        "both are kept", rec.text_hash, table.name, rec.id, who, rec.superseded,
                        f" by {earlier.who}" if earlier else "")
        return JSONResponse(out)

    async def verdict(request: Request) -> Response:
        body = await fields(request)
        table, row = target(body)
        flag, value = need(body, "flag"), need(body, "verdict", " (false_alarm or confirmed)")
        if flag not in (row["flags"] or []):
            raise _error(422, f"this row has no flag {flag!r} (its flags: {', '.join(row['flags'] or []) or 'none'})")
        if value not in ("false_alarm", "confirmed"):
            raise _error(422, f"unknown verdict {value!r}: false_alarm or confirmed")
        rid = await run_in_threadpool(overlay.record_verdict, engine_id=table.engine_id, text_hash=row["text_hash"],
                                      flag=flag, verdict=value, who=who)
        return JSONResponse({"ok": True, "id": rid, "flag": flag, "verdict": value,
                             "message": f"flag {flag} marked {value.replace('_', ' ')}"})

    async def gold(request: Request) -> Response:

        body = await fields(request)
        table, row = target(body)
        where = await run_in_threadpool(tables.occurrences, row["text_hash"]) if table is tables.chosen else [row]
        style = next((st for o in where if (st := gold_style(o["dataset"], o["field"]))), None)
        if style is None:
            raise _error(422, f"{row['dataset']} {row['field']} rows have no gold-set style (gold styles: cc3m, "
                              "coco, visdial_q, visdial_a)")
        if "text_pt" in body:
            text = checked_text(body["text_pt"])
        else:
            human = overlay.corrections(table.engine_id, [row["text_hash"]]).get(row["text_hash"])
            text = human.text_pt if human else (row["text_pt"] or "")
            checked_text(text)
        try:
            rid = await run_in_threadpool(overlay.add_gold, text_hash=row["text_hash"], text_en=row["text_en"],
                                          text_pt=text, style=style, who=who, from_engine=table.engine_id)
        except ValueError as e:
            raise _error(422, str(e)) from None
        return JSONResponse({"ok": True, "id": rid, "style": style, "text_pt": text,
                             "message": f"added to the gold set (style {style})"})

    routes = [
        Route("/", index),
        Route("/q/{queue}", queue_start),
        Route("/q/{queue}/{pos:int}", queue_page),
        Route("/api/queues", api_queues),
        Route("/api/queue/{queue}", api_queue),
        Route("/api/row/{text_hash}", api_row),
        Route("/image/{dataset}/{split}/{image_id:path}", image),
        Route("/static/{name}", static),
        Route("/favicon.ico", lambda request: Response(status_code=204)),  # no icon; not a 404 in the log
        Route("/api/correct", correct, methods=["POST"]),
        Route("/api/verdict", verdict, methods=["POST"]),
        Route("/api/gold", gold, methods=["POST"]),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)] if allowed_hosts else []
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={HTTPException: _http_error})
    app.state.review = review
    return app
