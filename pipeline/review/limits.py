"""Request bodies, bounded before they are read (an ASGI middleware) and parsed with a depth limit.

uvicorn reads a body only as the app asks for it (it pauses the socket past 64 KiB), but it has no limit
of its own on a body's size and no timeout while one trickles in.  So, before any route runs:

- a declared ``Content-Length`` over the cap is answered 413 without reading a byte of the body, and
  the connection is closed (the rest is never read);
- a chunked body is counted while it streams, and answered 413 as soon as it passes the cap;
- the whole body must arrive within `timeout_s` of the request, else 408 (a body promised and never
  sent no longer holds the connection);
- the body, now known to be small, is handed to the app from memory.

`parse_json_object` then refuses JSON nested deeper than a flat object needs (Python's parser recurses,
and 60 KB of ``[`` would end in a RecursionError).
"""
from __future__ import annotations

import asyncio
import json

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.review.responses import refusal

MAX_BODY_BYTES = 64 * 1024
BODY_TIMEOUT_S = 10.0
MAX_JSON_DEPTH = 4  # an action is one object of strings; a little room, nothing a parser could choke on


class BodyTooDeep(ValueError):
    """JSON nested deeper than `MAX_JSON_DEPTH`."""


class BodyLimits:
    """The ASGI middleware of the module docstring."""

    def __init__(self, app: ASGIApp, *, max_bytes: int = MAX_BODY_BYTES, timeout_s: float = BODY_TIMEOUT_S) -> None:
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        path, method = scope["path"], scope["method"]
        declared = headers.get("content-length")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if declared is None and not chunked:  # no body at all
            await self.app(scope, receive, send)
            return
        if declared is not None:
            if not declared.strip().isdigit():
                await refusal(path, method, 400, f"Content-Length {declared[:40]!r} is not a number",
                              close=True)(scope, receive, send)
                return
            if int(declared) > self.max_bytes:
                await refusal(path, method, 413, f"request body is {int(declared):,} bytes; at most "
                              f"{self.max_bytes:,} (refused unread)", close=True)(scope, receive, send)
                return
        body, problem = await self._read(receive)
        if problem is not None:
            status, message = problem
            await refusal(path, method, status, message, close=True)(scope, receive, send)
            return
        replay: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

        async def from_memory() -> Message:
            return replay.pop() if replay else await receive()  # afterwards: the disconnect, when it comes

        await self.app(scope, from_memory, send)

    async def _read(self, receive: Receive) -> tuple[bytes, tuple[int, str] | None]:
        """The whole body, or a refusal: over the cap (413), too slow (408), or the client gone (499)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        body = bytearray()
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
            except TimeoutError:
                return b"", (408, f"the request body did not arrive within {self.timeout_s:g} s "
                                  f"({len(body):,} bytes came)")
            if message["type"] == "http.disconnect":
                return b"", (499, "the client went away before its body arrived")
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                return b"", (413, f"request body passed {self.max_bytes:,} bytes; refused while it streamed")
            if not message.get("more_body", False):
                return bytes(body), None


def parse_json_object(text: str, max_depth: int = MAX_JSON_DEPTH) -> object:
    """`json.loads(text)`, after checking that no array or object nests deeper than `max_depth`
    (BodyTooDeep) and before the parser recurses; json.JSONDecodeError as usual."""
    if text.count("[") + text.count("{") > max_depth:  # only then can it be too deep: scan it
        depth, in_string, escaped = 0, False, False
        for c in text:  # one linear pass; brackets inside strings do not count
            if in_string:
                if escaped:
                    escaped = False
                elif c == "\\":
                    escaped = True
                elif c == '"':
                    in_string = False
            elif c == '"':
                in_string = True
            elif c in "[{":
                depth += 1
                if depth > max_depth:
                    raise BodyTooDeep(f"JSON nested more than {max_depth} levels deep; at most {max_depth}")
            elif c in "]}":
                depth -= 1
    return json.loads(text)
