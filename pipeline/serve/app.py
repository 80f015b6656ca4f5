"""The ASGI application of ``musiclime serve`` and its safety rules.

- It binds to loopback unless told otherwise; on any other address it requires a token
  (``MUSICLIME_SERVE_TOKEN`` or a file, never the command line), sent as
  ``Authorization: Bearer`` or the cookie the sign-in form sets, never in a URL, and checked
  on every request but the sign-in form and the style sheet.
- The ``Host`` header must name an allowed host (a DNS-rebinding page cannot borrow it).
- Only GET and HEAD, and POST to the sign-in form; nothing writes to the output or the cache.
- Pages come from templates that escape every value; responses carry a strict
  Content-Security-Policy (no script at all, styles only from the server).
- A malformed parameter answers 400 with a message, an unknown id 404, and no answer ever
  carries a stack trace.
"""
from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs

from pipeline.serve import pages
from pipeline.serve.index import BadQuery
from pipeline.serve.search import ServeIndex

log = logging.getLogger("musiclime.serve")

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
COOKIE = "musiclime_token"
TOKEN_ENV = "MUSICLIME_SERVE_TOKEN"
CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; media-src 'self'; form-action 'self'; "
       "base-uri 'none'; frame-ancestors 'none'")
HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
           (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"),
           (b"cross-origin-resource-policy", b"same-origin")]
OPEN_PATHS = ("/login", "/static/musiclime.css")  # reachable without the token


def hostname(host_header: str) -> str:
    """The host of a ``Host`` header, without its port ("[::1]:8765" -> "::1")."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


class Guard:
    """ASGI middleware: the Host check, the methods, the token, the security headers."""

    def __init__(self, app, allowed_hosts: set[str], token: str | None, render: Callable[..., bytes]):
        self.app, self.allowed, self.token, self.render = app, {h.lower() for h in allowed_hosts}, token, render

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1")
        path, method = scope.get("path", "/"), scope.get("method", "GET")
        if hostname(host) not in self.allowed:
            return await self._answer(send, 400, "This server does not answer to that Host header (it guards "
                                                 "against DNS rebinding): use its own address, or start it with "
                                                 "--allow-host.")
        if method not in ("GET", "HEAD") and not (method == "POST" and path == "/login"):
            return await self._answer(send, 405, "This server is read-only: GET and HEAD only.")
        if self.token and path not in OPEN_PATHS and not self.authorised(headers):
            return await self._answer(send, 401, "Sign in with the server's token.", login=True)

        async def secured(message):
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers") or []) + HEADERS
            await send(message)
        return await self.app(scope, receive, secured)

    def authorised(self, headers: dict) -> bool:
        auth = headers.get(b"authorization", b"").decode("latin-1")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else cookie(headers, COOKIE)
        return bool(given and self.token) and hmac.compare_digest(str(given).encode(), str(self.token).encode())

    async def _answer(self, send, status: int, message: str, login: bool = False):
        body = self.render("message.html", title=f"{status}", message=message, login=login)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/html; charset=utf-8"),
                                (b"content-length", str(len(body)).encode()), *HEADERS]})
        await send({"type": "http.response.body", "body": body})


def cookie(headers: dict, name: str) -> str | None:
    from http.cookies import CookieError, SimpleCookie
    raw = headers.get(b"cookie", b"").decode("latin-1")
    try:
        c = SimpleCookie(raw)
    except CookieError:
        return None
    return c[name].value if name in c else None


def byte_range(data: bytes, header: str | None):
    """The whole body, or the one ``bytes=a-b`` range a media player asks for (206)."""
    from starlette.responses import Response
    head = {"accept-ranges": "bytes", "cache-control": "private, max-age=3600"}
    if header and header.startswith("bytes=") and "," not in header:
        a, _, b = header[6:].strip().partition("-")
        try:
            start, end = (int(a), int(b) if b else len(data) - 1) if a else (len(data) - int(b), len(data) - 1)
        except ValueError:
            start, end = -1, -1
        if not 0 <= start <= end < len(data) + (1 if not b else 0):
            return Response(b"", 416, headers={**head, "content-range": f"bytes */{len(data)}"})
        end = min(end, len(data) - 1)
        return Response(data[start:end + 1], 206, media_type="audio/wav",
                        headers={**head, "content-range": f"bytes {start}-{end}/{len(data)}"})
    return Response(data, media_type="audio/wav", headers=head)


def _audio_endpoint(ix: ServeIndex):
    """``/audio/{original|top}/{track_id}``: WAV bytes, by track id only, byte ranges honoured."""
    from starlette.responses import Response

    @functools.lru_cache(maxsize=8)  # a player asks again for ranges of what it just got
    def rendered(track_id: str, part: str, run: str, label: str) -> bytes:
        return pages.track_audio(ix, track_id, part, {"run": run, "label": label})

    def audio(request) -> Response:
        try:
            q = request.query_params
            data = rendered(request.path_params["track_id"], request.path_params["part"], q.get("run") or "",
                            q.get("label") or "")
            return byte_range(data, request.headers.get("range"))
        except pages.NotFound as e:
            return Response(str(e), 404, media_type="text/plain; charset=utf-8")
        except pages.Unavailable as e:
            return Response(str(e), 409, media_type="text/plain; charset=utf-8")
        except Exception:
            log.exception("%s failed", request.url.path)
            return Response("internal error", 500, media_type="text/plain")
    return audio


def _login_endpoint(token: str | None, render: Callable[..., bytes]):
    """``/login``: the form (GET), and the token posted in its body, set as an HttpOnly,
    SameSite=Strict cookie (POST): a browser never carries the token in a URL."""
    from starlette.responses import HTMLResponse, RedirectResponse, Response

    async def login(request) -> Response:
        if request.method != "POST":
            return HTMLResponse(render("message.html", title="Sign in", message="This server asks for a token.",
                                       login=True))
        body = (await request.body())[:4096]
        given = (parse_qs(body.decode("utf-8", "replace")).get("token") or [""])[0]
        if not token or not hmac.compare_digest(given.encode(), token.encode()):
            return HTMLResponse(render("message.html", title="401", message="Wrong token.", login=True), 401)
        r = RedirectResponse("/", 303)
        r.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
        return r
    return login


def _css() -> str:
    from pipeline.report import STYLE
    return (STYLE + "nav{margin-bottom:1em}.note{background:#fff4d6;padding:.5em}.error td{color:#a33}"
            "tr.current{background:#f3f3f3}form.search label{margin-left:.6em}svg text{font-family:inherit}"
            ".card h2{margin-top:.2em}")


def make_app(ix: ServeIndex, allowed_hosts: set[str], token: str | None = None):
    """The application over one index (see :func:`pipeline.serve.search.open_index`)."""
    import jinja2
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, Response
    from starlette.routing import Route
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
                             autoescape=True, undefined=jinja2.StrictUndefined)

    def render(template: str, **ctx) -> bytes:
        return env.get_template(template).render(out_name=ix.out, **ctx).encode("utf-8")

    def page(build: Callable[[Request], dict], template: str):
        def endpoint(request: Request) -> Response:
            try:
                ctx = build(request)
                return HTMLResponse(render(ctx.pop("template", template), **ctx))
            except BadQuery as e:
                return HTMLResponse(render("message.html", title="400", message=str(e), login=False), 400)
            except pages.NotFound as e:
                return HTMLResponse(render("message.html", title="404", message=str(e), login=False), 404)
            except Exception:
                log.exception("%s failed", request.url.path)
                return HTMLResponse(render("message.html", title="500", message="internal error (the server's log "
                                           "has the details)", login=False), 500)
        return endpoint

    def catalogue_row(request: Request) -> dict:
        raw = request.path_params["row"]
        if not raw.isdigit() or len(raw) > 12:
            raise BadQuery(f"a catalogue row is a whole number, not {raw[:40]!r}")
        return pages.catalogue_row(ix, request.path_params["run"], int(raw))

    css = _css()
    routes = [
        Route("/", page(lambda r: pages.search(ix, r.query_params), "search.html")),
        Route("/track/{track_id:path}", page(lambda r: pages.track(ix, r.path_params["track_id"], r.query_params),
                                             "track.html")),
        Route("/audio/{part}/{track_id:path}", _audio_endpoint(ix)),
        Route("/classes", page(lambda r: pages.classes(ix, r.query_params), "classes.html")),
        Route("/class/{label:path}", page(lambda r: pages.class_page(ix, r.path_params["label"], r.query_params),
                                          "class.html")),
        Route("/errors", page(lambda r: pages.errors(ix, r.query_params), "errors.html")),
        Route("/catalogue/{run}/{row}", page(catalogue_row, "catalogue_row.html")),
        Route("/static/musiclime.css", lambda r: Response(css, media_type="text/css")),
        Route("/favicon.ico", lambda r: Response(b"", 204)),
        Route("/login", _login_endpoint(token, render), methods=["GET", "POST"]),
    ]
    return Guard(Starlette(routes=routes), allowed_hosts, token, render)
