"""Who may talk to the review server, checked before any route runs (an ASGI middleware), as Jupyter does:

1. ``Host`` must name this server (the names it was started with: ``--host``, the loopback names when it
   listens on them, and ``--allow-host``).  A web page that re-points its own domain name at the
   reviewer's machine (DNS rebinding) sends its own name, and is refused.
2. A request that changes something (any method but GET/HEAD/OPTIONS) must come from this server's own
   pages: its ``Origin`` must be this server (``null``, from a file:// page or a sandboxed or ``data:``
   frame, is refused), and a browser's ``Sec-Fetch-Site`` must say ``same-origin``; a browser request
   without an Origin is refused.  A client that is no browser (no Origin, no Sec-Fetch-Site) passes on
   to the token check.  Another site may link to a page (a navigation) but not load the server's
   images or data into its own page.
3. Every request carries the token: the ``HttpOnly``, ``SameSite=Strict`` cookie the first visit of
   ``/?token=...`` sets (the token is then dropped from the address bar by a redirect), or the header
   ``Authorization: token ...`` (scripts).

The token is random per start (`new_token`) unless the person sets one (`read_token`: an environment
variable or a file, never a command-line argument other users can read in ``ps``).  It is never logged.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
import secrets
from collections.abc import Iterable
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from starlette.datastructures import Headers
from starlette.responses import RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.review.responses import SECURITY_HEADERS, refusal

TOKEN_ENV = "PTVL_REVIEW_TOKEN"
TOKEN_RE = re.compile(r"[A-Za-z0-9._~-]{16,256}")  # URL-safe as it is, and too long to guess
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("0.0.0.0", "::", "")


class TokenError(ValueError):
    """A token the person set is unusable (one line, said before the server starts)."""


def new_token() -> str:
    """A fresh random token (256 bits), valid until the server stops."""
    return secrets.token_urlsafe(32)


def check_token(token: str, where: str) -> str:
    if not TOKEN_RE.fullmatch(token):
        raise TokenError(f"the token in {where} must be 16 to 256 characters from A-Z a-z 0-9 . _ ~ - "
                         f"(it has {len(token)}); `python -c 'import secrets; print(secrets.token_urlsafe(32))'` "
                         "makes one")
    return token


def read_token(token_file: Path | None, env: dict[str, str] | None = None) -> str | None:
    """The token the person set: the first line of `token_file`, else $PTVL_REVIEW_TOKEN; None: none set."""
    env = os.environ if env is None else env
    if token_file is not None:
        try:
            lines = Path(token_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise TokenError(f"cannot read the token file {token_file}: {e}") from None
        return check_token(lines[0].strip() if lines else "", str(token_file))
    if env.get(TOKEN_ENV):
        return check_token(env[TOKEN_ENV].strip(), f"${TOKEN_ENV}")
    return None


def host_names(host: str, allow: Iterable[str] = ()) -> list[str]:
    """The Host names a server bound to `host` answers to: `host` itself, the loopback names when it
    listens on loopback or on every address, and `allow` (a proxy's name)."""
    names = [host.lower().strip("[]")]
    bare = names[0]
    try:
        ip = ipaddress.ip_address(bare)
        local = bare in ("127.0.0.1", "::1") or ip.is_unspecified
    except ValueError:
        local = bare == "localhost"
    if local or bare in WILDCARDS:
        names += LOOPBACK_NAMES
    names += [a.lower().strip("[]").rstrip(".") for a in allow]
    return list(dict.fromkeys(n for n in names if n))


def host_name(header: str) -> str:
    """The name part of a Host header ('[::1]:8765' -> '::1', 'Example.org.:80' -> 'example.org')."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0].rstrip(".") if header.count(":") == 1 else header.rstrip(".")


def cookie_name(scope: Scope) -> str:
    """Per port: browsers share cookies between the ports of one host, and two servers must not clash."""
    server = scope.get("server") or ("", 0)
    return f"ptvl_review_{server[1] or 0}"


def with_security_headers(send: Send) -> Send:
    """`send`, adding SECURITY_HEADERS to every response that does not set them itself."""
    extra = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            present = {k.lower() for k, _ in message.get("headers", [])}
            message = {**message, "headers": [*message.get("headers", []), *(h for h in extra if h[0] not in present)]}
        await send(message)

    return sending


class Guard:
    """The ASGI middleware of the module docstring, in front of the whole app."""

    def __init__(self, app: ASGIApp, *, token: str, hosts: Iterable[str]) -> None:
        self.app = app
        self.token = token
        self.hosts = frozenset(hosts)
        # The cookie holds a value derived from the token, so the token itself never sits in the cookie jar.
        self.session = hmac.new(token.encode(), b"ptvl-review-session", hashlib.sha256).hexdigest()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # no websockets here
            await send({"type": "websocket.close", "code": 1008})
            return
        send = with_security_headers(send)
        headers = Headers(scope=scope)
        path, method = scope["path"], scope["method"]
        body_unread = bool(headers.get("content-length", "0") != "0" or "transfer-encoding" in headers)
        problem = self.problem(scope, headers)
        if problem is not None:
            status, message = problem
            await refusal(path, method, status, message, close=body_unread)(scope, receive, send)
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = [v for k, v in query if k == "token"]
        if given and method in ("GET", "HEAD"):
            if not hmac.compare_digest(given[-1].encode(), self.token.encode()):
                await refusal(path, method, 403, "wrong token: open the link `ptvl review` printed when it "
                              "started")(scope, receive, send)
                return
            await self.welcome(scope, path, query)(scope, receive, send)
            return
        if not self.authorized(scope, headers):
            await refusal(path, method, 401, "no token: open the link `ptvl review` printed when it started "
                          "(http://HOST:PORT/?token=...), or send the header 'Authorization: token ...'",
                          close=body_unread)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def problem(self, scope: Scope, headers: Headers) -> tuple[int, str] | None:
        """(status, message) when the Host or the request's origin is refused, else None."""
        host = headers.get("host")
        if not host:
            return 400, "no Host header: send the server's name (HTTP/1.1)"
        if host_name(host) not in self.hosts:
            # The names served are not listed: after DNS rebinding, the attacker's page reads this answer.
            return 403, (f"Host {host_name(host)!r} is not served here: only the names ptvl review was given "
                         "(--host, --allow-host NAME for a proxy's name)")
        site = headers.get("sec-fetch-site")
        if scope["method"] in SAFE_METHODS:
            # Another site may link to a page, not pull the server's data or images into its own page.
            if site in ("cross-site", "same-site") and headers.get("sec-fetch-mode") != "navigate":
                return 403, f"a {site} request for this server's resources refused"
            return None
        origin = headers.get("origin")
        if origin is None:
            if site is not None:
                return 403, f"a browser request without an Origin header (Sec-Fetch-Site: {site}) refused"
            return None  # no browser: the token decides
        if origin == "null":
            return 403, ("a request from an opaque origin (Origin: null: a file:// page, a sandboxed or data: "
                         "frame) refused: actions come from this server's own pages")
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or parts.netloc.lower() != host.lower():
            return 403, f"cross-site request from {origin} refused: actions come from this server's own pages"
        if site is not None and site != "same-origin":
            return 403, f"a {site} request refused (Sec-Fetch-Site): actions come from this server's own pages"
        return None

    def authorized(self, scope: Scope, headers: Headers) -> bool:
        auth = headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "token" and hmac.compare_digest(value.strip().encode(), self.token.encode()):
            return True
        jar = SimpleCookie()
        try:
            jar.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is no session (http.cookies raises CookieError)
            return False
        morsel = jar.get(cookie_name(scope))
        return morsel is not None and hmac.compare_digest(morsel.value.encode(), self.session.encode())

    def welcome(self, scope: Scope, path: str, query: list[tuple[str, str]]) -> RedirectResponse:
        """The first visit: the session cookie, and the same address without the token."""
        rest = urlencode([(k, v) for k, v in query if k != "token"])
        location = "/" + quote(path, safe="/:@!$&'()*+,;=-._~").lstrip("/")  # never //other.site
        response = RedirectResponse(location + (f"?{rest}" if rest else ""), status_code=303,
                                    headers=SECURITY_HEADERS)
        response.set_cookie(cookie_name(scope), self.session, httponly=True, samesite="strict", path="/")
        return response
