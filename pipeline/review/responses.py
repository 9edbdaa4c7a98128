"""What every answer of the review server carries, and how it refuses a request: the security headers and
the one-line refusal (JSON for the API, the images and every action; a small HTML page for a page).

Used by the app's routes and by the middlewares in front of them (pipeline/review/guard.py,
pipeline/review/limits.py), which answer before any route runs."""
from __future__ import annotations

from html import escape

from starlette.responses import HTMLResponse, JSONResponse, Response

# The page loads only its own script and style, and images from this server; no other page may frame it.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def wants_json(path: str, method: str) -> bool:
    """Whether a refusal is JSON (the API, images, any action) rather than an HTML page."""
    return path.startswith(("/api/", "/image/", "/static/")) or method not in ("GET", "HEAD")


def refusal(path: str, method: str, status: int, message: str, *, close: bool = False) -> Response:
    """A 4xx with a one-line message.  `close`: the request's body was not read, so the connection is
    closed after the answer instead of reading (and discarding) whatever the client still sends."""
    headers = dict(SECURITY_HEADERS)
    if close:
        headers["Connection"] = "close"
    if wants_json(path, method):
        return JSONResponse({"error": message}, status_code=status, headers=headers)
    return HTMLResponse(f"<!doctype html><title>{status}</title><p>{escape(message)}</p>"
                        '<p><a href="/">queues</a></p>', status_code=status, headers=headers)
