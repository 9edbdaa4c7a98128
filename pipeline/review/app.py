"""The review web app (Starlette): server-rendered pages, a small vanilla-JS file for the keyboard, and
JSON actions that append to the human overlay (translation/overlay.py, memory/human.sqlite).

Routes:
  GET  /                          queues with their progress (reviewed / total); starts on the first with rows
  GET  /q/<queue>/<pos>           one row of a queue (the page people work on)
  GET  /api/queues, /api/row/<h>  the same data as JSON
  GET  /image/<dataset>/<split>/<image id>   image bytes, looked up by id (never a path)
  POST /api/correct, /api/verdict, /api/gold  the actions (pipeline/review/actions.py)

In front of every route (create_app): guard.Guard (Host, origin, token) and limits.BodyLimits (body size
and read timeout, before a byte of the body is read).  Data a page hands its script is embedded with
`script_json`, so no text can end or comment out the block it sits in.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from pipeline.review.actions import MAX_TEXT_CHARS, action_routes
from pipeline.review.dialogs import DialogIndex
from pipeline.review.guard import LOOPBACK_NAMES, Guard
from pipeline.review.images import ImageNotFound, ImageStore, OutsideRoot
from pipeline.review.limits import BODY_TIMEOUT_S, MAX_BODY_BYTES, BodyLimits
from pipeline.review.queues import Queue, Queues
from pipeline.review.responses import refusal
from pipeline.review.rows import Context, row_view
from pipeline.review.state import Review
from pipeline.review.tables import RunTables
from pipeline.review.vqa import QuestionIndex
from translation.overlay import HumanOverlay

__all__ = ["MAX_BODY_BYTES", "MAX_TEXT_CHARS", "create_app", "script_json"]

log = logging.getLogger("ptvl.review")

HERE = Path(__file__).resolve().parent
STATIC = {"review.js": "text/javascript; charset=utf-8", "review.css": "text/css; charset=utf-8"}
# Inside <script>, "</script>" ends the block and "<!--" followed by "<script" makes the parser swallow
# the rest of the page; as \u003c etc. they are the same JSON and nothing to the HTML parser.  U+2028/9
# end a line in older JavaScript.
_SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def script_json(data: object) -> Markup:
    """`data` as JSON safe to place inside a <script> element (see _SCRIPT_ESCAPES)."""
    text = json.dumps(data, ensure_ascii=False)
    return Markup("".join(_SCRIPT_ESCAPES.get(c, c) for c in text))


async def _http_error(request: Request, exc: HTTPException) -> Response:
    return refusal(request.url.path, request.method, exc.status_code, str(exc.detail))


def first_with_rows(queues: list[dict]) -> dict | None:
    """The queue the index starts on: the first that holds rows (an unscored engine's `worst` is empty)."""
    return next((q for q in queues if q["total"]), None)


def create_app(root: Path, tables: RunTables, overlay: HumanOverlay, *, who: str, token: str,
               hosts: Iterable[str] = LOOPBACK_NAMES, queue_size: int = 500, seed: int = 0,
               max_body: int = MAX_BODY_BYTES, body_timeout_s: float = BODY_TIMEOUT_S) -> Starlette:
    """The app over one run root; `tables.chosen` is the engine under review.  `token`: what every request
    must carry (guard.py); `hosts`: the Host names served (guard.host_names)."""
    context = Context(images=ImageStore(root, tables.splits), dialogs=DialogIndex(root), questions=QuestionIndex(root))
    review = Review(root=root, tables=tables, queues=Queues(tables, size=queue_size, seed=seed), overlay=overlay,
                    context=context, who=who)
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)

    def page(name: str, **ctx) -> HTMLResponse:
        return HTMLResponse(env.get_template(name).render(engine=tables.chosen.name, who=who, **ctx))

    def queue_or_404(name: str) -> Queue:
        try:
            return review.queues.get(name)
        except KeyError as e:
            raise HTTPException(404, e.args[0]) from None

    def view(text_hash: str) -> dict | None:
        return row_view(tables, overlay, context, text_hash)

    async def index(request: Request) -> Response:
        queues = await run_in_threadpool(review.all_progress)
        return page("index.html", queues=queues, start=first_with_rows(queues), engines=list(tables.engines),
                    root=str(root))

    async def queue_page(request: Request) -> Response:
        name = request.path_params["queue"]
        q = await run_in_threadpool(queue_or_404, name)
        pos = request.path_params["pos"]
        if q.hashes and pos >= len(q.hashes):
            raise HTTPException(404, f"queue {name!r} has {len(q.hashes)} rows; position {pos} is past its end")
        row = await run_in_threadpool(view, q.hashes[pos]) if q.hashes else None
        progress = await run_in_threadpool(review.progress, q)
        data = {"queue": name, "pos": pos, "total": len(q.hashes), "engine": tables.chosen.name,
                "text_hash": row["text_hash"] if row else None, "current": row["current"] if row else None,
                "human": ({"id": row["human"]["id"], "who": row["human"]["who"], "action": row["human"]["action"]}
                          if row and row["human"] else None),
                "flags": [f["flag"] for m in row["machine"] if m["reviewed"] for f in m["flags"]] if row else [],
                "engines": [m["engine"] for m in row["machine"]] if row else [],
                "machine": {m["engine"]: m["text_pt"] for m in row["machine"]} if row else {}}
        return page("row.html", q=q, pos=pos, row=row, progress=progress, data=script_json(data),
                    chrf=q.scores[pos] if row and q.scores else None)

    async def queue_start(request: Request) -> Response:
        return RedirectResponse(f"/q/{request.path_params['queue']}/0", status_code=303)

    async def api_queues(request: Request) -> Response:
        build = request.query_params.get("disagree") == "1"
        return JSONResponse({"engine": tables.chosen.name, "engine_id": tables.chosen.engine_id,
                             "queues": await run_in_threadpool(review.all_progress, build)})

    async def api_queue(request: Request) -> Response:
        q = await run_in_threadpool(queue_or_404, request.path_params["queue"])
        progress = await run_in_threadpool(review.progress, q)
        return JSONResponse({**progress, "hashes": list(q.hashes), "scores": list(q.scores)})

    async def api_row(request: Request) -> Response:
        row = await run_in_threadpool(view, request.path_params["text_hash"])
        if row is None:
            raise HTTPException(404, f"no row {request.path_params['text_hash']!r} for engine {tables.chosen.name!r}")
        return JSONResponse(row)

    async def image(request: Request) -> Response:
        p = request.path_params
        try:
            data = await run_in_threadpool(context.images.read, p["dataset"], p["split"], p["image_id"])
        except ImageNotFound as e:
            raise HTTPException(404, str(e)) from None
        except OutsideRoot:
            log.warning("refused an image outside the run root: %s/%s/%s", p["dataset"], p["split"], p["image_id"])
            raise HTTPException(403, "that image is stored outside the run root: refused") from None
        kind = "image/png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "image/jpeg"
        return Response(data, media_type=kind, headers={"Cache-Control": "private, max-age=3600"})

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            raise HTTPException(404, f"no static file {name!r}")
        return Response((HERE / "static" / name).read_bytes(), media_type=STATIC[name])

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
        *action_routes(review),
    ]
    middleware = [Middleware(Guard, token=token, hosts=hosts),
                  Middleware(BodyLimits, max_bytes=max_body, timeout_s=body_timeout_s)]
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={HTTPException: _http_error})
    app.state.review = review
    return app
