"""The review app's actions: POST handlers that append to the human overlay (translation/overlay.py).

  POST /api/correct   {text_hash, action: edit|accept, text_pt (edit), source_engine (accept), replaces}
  POST /api/verdict   {text_hash, flag, verdict: false_alarm|confirmed}
  POST /api/gold      {text_hash, text_pt (optional: it must be the row's current text)}

Bodies are JSON objects of strings or form-encoded; `engine` (default: the reviewed engine) names whose
translation.  ``replaces`` is the id of the human correction the person saw as current, or "" when they
saw the machine text (the text itself, as older clients sent it, still works for an edit).  An accept over
a human text the person did not name by its id is refused with 409 (one keypress must not undo someone's
edit); an edit over an unseen edit is stored, last write wins, and says so.  Every text field follows translation/sendable.py's rules (422 naming the character and its
position), the same rules as the texts sent to an engine.  Whoever may post at all (token, origin,
host) and how big a body may be were checked before a handler runs (guard.py, limits.py).
"""
from __future__ import annotations

import json
import logging
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pipeline.review.limits import MAX_BODY_BYTES, BodyTooDeep, parse_json_object
from pipeline.review.rows import gold_style
from pipeline.review.state import Review
from translation.overlay import HumanRecord, NotCurrent
from translation.sendable import first_unsafe

log = logging.getLogger("ptvl.review")

MAX_TEXT_CHARS = 5000  # a caption, question or answer; far above any real one (CC3M max ~ 300)
MAX_FIELDS = 32
KINDS = ("application/json", "application/x-www-form-urlencoded")


def error(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


def clean(name: str, value: str) -> str:
    """`value` if it follows the text rules, else 422 naming the field, the character and its position."""
    found = first_unsafe(value)
    if found is not None:
        raise error(422, f"{name} has {found.describe()}: such characters are refused (tab and line breaks "
                         "are allowed)")
    return value


async def fields(request: Request) -> dict[str, str]:
    """The body's fields: JSON object or form, every value a string that follows the text rules."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in KINDS:
        raise error(415, f"send application/json or application/x-www-form-urlencoded, not {kind or 'nothing'!r}")
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:  # limits.BodyLimits refuses it unread; this holds without it too
        raise error(413, f"request body is {len(raw):,} bytes; at most {MAX_BODY_BYTES:,}")
    try:
        # surrogatepass: the UTF-8 form of a lone surrogate gets its own 422 below, naming it
        text = raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        raise error(400, "request body is not UTF-8") from None
    if kind == "application/json":
        try:
            body = parse_json_object(text)
        except BodyTooDeep as e:
            raise error(400, str(e)) from None
        except json.JSONDecodeError as e:
            raise error(400, f"malformed JSON: {e}") from None
        if not isinstance(body, dict):
            raise error(400, f"the JSON body must be an object, not {type(body).__name__}")
    else:
        try:
            pairs = parse_qs(text, keep_blank_values=True, errors="surrogatepass", max_num_fields=MAX_FIELDS)
        except UnicodeDecodeError:
            raise error(400, "a form field is not UTF-8") from None
        except ValueError as e:
            raise error(400, f"malformed form: {e}") from None
        body = {k: v[-1] for k, v in pairs.items()}
    bad = [k for k, v in body.items() if not isinstance(v, str)]
    if bad:
        raise error(422, f"field(s) {', '.join(sorted(map(str, bad)))} must be strings")
    for k, v in body.items():
        clean(repr(k), k)
        clean(k, v)
    return body


def need(body: dict, name: str, hint: str = "") -> str:
    if name not in body:
        raise error(422, f"missing field {name!r}{hint}")
    return body[name]


def checked_text(text: str, name: str = "text_pt") -> str:
    if not text.strip():
        raise error(422, f"{name} is empty: type the translation (or accept an engine's output)")
    if len(text) > MAX_TEXT_CHARS:
        raise error(422, f"{name} is {len(text):,} characters; at most {MAX_TEXT_CHARS:,}")
    return clean(name, text)


def _record_json(r: HumanRecord) -> dict:
    return {"id": r.id, "text_pt": r.text_pt, "action": r.action, "who": r.who,
            "created_at": r.created_at.isoformat(timespec="seconds")}


def action_routes(review: Review) -> list[Route]:
    tables, overlay, who = review.tables, review.overlay, review.who

    def target(body: dict):
        """(engine table, row) named by the body's engine and text_hash."""
        name = body.get("engine", tables.chosen.name)
        if name not in tables.engines:
            raise error(404, f"unknown engine {name!r}; this run has {', '.join(tables.engines)}")
        table = tables.engines[name]
        h = need(body, "text_hash")
        row = table.row(h)
        if row is None:
            raise error(404, f"unknown text_hash {h!r}: no such source string in engine {name!r}'s tables")
        return table, row

    def seen(body: dict, engine_id: str, row: dict) -> tuple[dict, str]:
        """(what the person saw, as record_correction's `seen` keyword or none; the text they saw).

        ``replaces``: "" (the machine text), the id of one of the row's corrections, or, as clients sent
        before ids, the text itself; such a text identifies no correction, so an edit is compared by text
        (last write wins) and an accept over a human text is refused."""
        value = need(body, "replaces", " (the id of the human correction shown as current, or '' for the "
                                       "machine text)")
        if not value.strip():
            return {"seen": None}, row["text_pt"] or ""
        if len(value) > MAX_TEXT_CHARS:
            raise error(422, f"replaces is {len(value):,} characters; at most {MAX_TEXT_CHARS:,}")
        if value.strip().isdigit():
            earlier = next((r for r in overlay.history(engine_id, row["text_hash"]) if str(r.id) == value.strip()),
                           None)
            if earlier is not None:
                return {"seen": earlier.id}, earlier.text_pt
        return ({"seen": None} if body.get("action") == "accept" else {}), value

    async def correct(request: Request) -> Response:
        body = await fields(request)
        table, row = target(body)
        action = body.get("action", "edit")
        saw, replaces = await run_in_threadpool(seen, body, table.engine_id, row)
        source_id = None
        if action == "edit":
            text = checked_text(need(body, "text_pt"))
        elif action == "accept":
            source = body.get("source_engine", table.name)
            if source not in tables.engines:
                raise error(404, f"unknown source_engine {source!r}; this run has {', '.join(tables.engines)}")
            src_row = tables.engines[source].row(row["text_hash"])
            if src_row is None or not (src_row["text_pt"] or "").strip():
                raise error(422, f"engine {source!r} has no text to accept for this row")
            text, source_id = checked_text(src_row["text_pt"], f"engine {source!r}'s text"), \
                tables.engines[source].engine_id
        else:
            raise error(422, f"unknown action {action!r}: edit or accept")
        try:
            rec = await run_in_threadpool(
                overlay.record_correction, engine_id=table.engine_id, text_hash=row["text_hash"],
                text_en=row["text_en"], text_pt=text, replaces=replaces, who=who, action=action,
                source_engine=source_id, strict=action == "accept", **saw)
        except NotCurrent as e:
            cur = e.current
            return JSONResponse({"error": f"not saved: the row's current text is a human {cur.action} (#{cur.id} "
                                          f"by {cur.who}: {cur.text_pt[:80]!r}); accepting would replace it. "
                                          f"Send replaces={cur.id} to replace it on purpose",
                                 "current": _record_json(cur)}, status_code=409)
        except ValueError as e:
            raise error(422, str(e)) from None
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
            raise error(422, f"this row has no flag {flag!r} (its flags: {', '.join(row['flags'] or []) or 'none'})")
        if value not in ("false_alarm", "confirmed"):
            raise error(422, f"unknown verdict {value!r}: false_alarm or confirmed")
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
            raise error(422, f"{row['dataset']} {row['field']} rows have no gold-set style (gold styles: cc3m, "
                             "coco, visdial_q, visdial_a)")
        human = overlay.corrections(table.engine_id, [row["text_hash"]]).get(row["text_hash"])
        current = human.text_pt if human else (row["text_pt"] or "")
        # One current human text: the gold row holds the row's current text, which the shards use too.
        text = checked_text(body["text_pt"]) if "text_pt" in body else checked_text(current, "the current text")
        if text != current:
            raise error(409, f"the gold set takes the row's current text ({current[:80]!r}); save your text as "
                             "an edit first, then add the row")
        try:
            rid = await run_in_threadpool(overlay.add_gold, text_hash=row["text_hash"], text_en=row["text_en"],
                                          text_pt=text, style=style, who=who, from_engine=table.engine_id)
        except ValueError as e:
            raise error(422, str(e)) from None
        return JSONResponse({"ok": True, "id": rid, "style": style, "text_pt": text,
                             "message": f"added to the gold set (style {style})"})

    return [Route("/api/correct", correct, methods=["POST"]), Route("/api/verdict", verdict, methods=["POST"]),
            Route("/api/gold", gold, methods=["POST"])]
