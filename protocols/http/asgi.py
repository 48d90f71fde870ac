"""The HTTP API as an ASGI application: a quart-trio app, served by hypercorn (:mod:`.serve`).

Every route of the API's :class:`~rusts.protocols.http.routing.App` is a Quart view. The hot
routes (writes, queries, SQL, ``/ping``, ``/health``) are answered one layer further out by
:class:`HotRoutes`, a plain ASGI callable in front of Quart, because Quart's per-request work
(request and response objects, context locals, signals) costs more than these routes' own work
(figures in docs/ARCHITECTURE.md, "Departures"). Both layers call the same handlers through
:func:`~rusts.protocols.http.routing.dispatch`, so a route answers identically either way.

A handler whose client disconnects is cancelled: its query worker stops the query
(:mod:`rusts.query.control`). Under our serving loop the connection cancels it (scope extension
``rusts.cancel_on_disconnect``); under another ASGI server a task listens for ``http.disconnect``.

Embedding: ``create_asgi_app(db)`` returns the ASGI app; mount it in another ASGI server, or serve
it with :func:`rusts.protocols.http.serve.serve_http` inside a trio nursery.
"""

from __future__ import annotations

import logging
import math

import trio

from rusts.protocols.http.routing import App, BodyTooLarge, Request, Response, dispatch

log = logging.getLogger("rusts.http")

HOT_PATHS = frozenset({"/write", "/api/v2/write", "/api/v1/write/arrow", "/query", "/sql", "/ping", "/health"})

_JSON = b"application/json"

# ASGI scope extension set by rusts.protocols.http.serve: ``with watch(cancel_scope):`` cancels the
# scope when the client disconnects, without a task per request listening for http.disconnect
DISCONNECT_EXTENSION = "rusts.cancel_on_disconnect"


def _headers_of(scope) -> dict:
    out: dict = {}
    for k, v in scope["headers"]:
        name = k.decode("latin-1").lower()
        val = v.decode("latin-1")
        out[name] = f"{out[name]}, {val}" if name in out else val
    return out


def _response_headers(resp: Response, head: bool) -> list:
    hs = []
    if resp.content_type is not None:
        hs.append((b"content-type", resp.content_type.encode("latin-1")))
    if resp.headers:
        for k, v in resp.headers.items():
            hs.append((k.lower().encode("latin-1"), str(v).encode("latin-1")))
    if resp.status not in (204, 304):
        hs.append((b"content-length", str(len(resp.body)).encode()))
    return hs


def _too_large(api: App) -> Response:
    return api.on_error(Request("POST", "", "", {}), BodyTooLarge())


async def _read_body(receive, limit: int) -> bytes | None:
    """The request body, or None when it exceeds ``limit`` bytes."""
    chunks = bytearray()
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise trio.BrokenResourceError("client disconnected")
        chunks += msg.get("body", b"")
        if len(chunks) > limit:
            return None
        if not msg.get("more_body", False):
            return bytes(chunks)


_INSTANT = frozenset({"/ping", "/health"})


async def _dispatch_watched(api: App, req: Request, receive) -> Response | None:
    """``dispatch`` cancelled when the client disconnects (None then): its query stops too."""
    resp = None
    async with trio.open_nursery() as nursery:

        async def watch_disconnect():
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    nursery.cancel_scope.cancel()
                    return

        nursery.start_soon(watch_disconnect)
        resp = await dispatch(api, req)
        nursery.cancel_scope.cancel()
    return resp


async def answer(api: App, scope, receive, send, body_timeout: float = math.inf) -> None:
    """Serve one HTTP request of ``api`` as a plain ASGI exchange; a body not received whole
    within ``body_timeout`` seconds is answered 408."""
    headers = _headers_of(scope)
    method = scope["method"]
    cl = headers.get("content-length")
    if cl is not None and cl.isascii() and cl.isdigit() and int(cl) > api.max_body:
        resp = _too_large(api)
    else:
        body = b""
        try:
            with trio.move_on_after(body_timeout) as cs:
                body = await _read_body(receive, api.max_body)
        except trio.BrokenResourceError:
            return
        if cs.cancelled_caught:
            resp = Response(408, b'{"error": "request body not received within server.request_timeout_secs"}',
                            "application/json", {"Connection": "close"})
        elif body is None:
            resp = _too_large(api)
        else:
            req = Request(method, scope["path"], scope.get("query_string", b"").decode("latin-1"), headers, body)
            resp = None
            watch = scope.get("extensions", {}).get(DISCONNECT_EXTENSION)
            if req.path in _INSTANT:  # answered at once: no disconnect watcher (a task per request)
                resp = await dispatch(api, req)
            elif watch is not None:  # the server cancels the scope when the client goes away
                with trio.CancelScope() as cs, watch(cs):
                    resp = await dispatch(api, req)
            else:
                resp = await _dispatch_watched(api, req, receive)
            if resp is None:
                return  # the client went away
    await send({"type": "http.response.start", "status": resp.status,
                "headers": _response_headers(resp, method == "HEAD")})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else resp.body})


def _host_for_quart(scope):
    """werkzeug binds Quart's URL map to the Host header and, for one that is not a valid name
    (".x"), raises outside Quart's error handlers (an empty 500): such a header is dropped, as the
    hot routes ignore it."""
    for k, v in scope["headers"]:
        if k == b"host":
            try:
                v.decode("latin-1").lower().encode("idna")
            except UnicodeError:
                return {**scope, "headers": [(a, b) for a, b in scope["headers"] if a != b"host"]}
    return scope


class HotRoutes:
    """ASGI middleware: answers the hot paths itself, passes everything else to ``inner``;
    ``poller`` (:class:`rusts.busypoll.BusyPoll` or None) is told about every request."""

    def __init__(self, api: App, inner, poller=None, hot=HOT_PATHS, body_timeout: float = math.inf) -> None:
        self.api = api
        self.inner = inner
        self.poller = poller
        self.hot = hot
        self.body_timeout = body_timeout

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.inner(scope, receive, send)
        if not scope["path"]:  # a request target of only a query ("?x"): Quart would index path[0]
            scope = {**scope, "path": "/"}
        poller = self.poller
        if poller is not None:
            poller.begin()
        try:
            if scope["path"] in self.hot:
                await answer(self.api, scope, receive, send, self.body_timeout)
            else:
                await self.inner(_host_for_quart(scope), receive, send)
        finally:
            if poller is not None:
                poller.end()


def create_asgi_app(db, config=None, *, poller=None, body_timeout: float = math.inf):
    """The quart-trio app serving ``db``'s HTTP API (hot routes answered in front of Quart)."""
    from rusts.protocols.http.app import create_app

    return asgi_app_for(create_app(db, config), poller=poller, body_timeout=body_timeout)


def asgi_app_for(api: App, *, poller=None, hot=HOT_PATHS, body_timeout: float = math.inf):
    """The quart-trio app serving the routes of ``api``; paths in ``hot`` are answered by
    :class:`HotRoutes` in front of Quart."""
    from quart import Response as QuartResponse
    from quart import request
    from quart_trio import QuartTrio
    from werkzeug.exceptions import HTTPException

    app = QuartTrio("rusts")
    app.config["MAX_CONTENT_LENGTH"] = api.max_body
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    if math.isfinite(body_timeout):
        app.config["BODY_TIMEOUT"] = body_timeout

    def to_quart(resp: Response) -> QuartResponse:
        out = QuartResponse(resp.body, status=resp.status, content_type=resp.content_type)
        if resp.headers:
            for k, v in resp.headers.items():
                out.headers[k] = str(v)
        return out

    async def view(**params):
        body = await request.get_data(cache=False)
        qs = request.query_string.decode("latin-1")
        headers: dict = {}
        for k, v in request.headers.items():
            k = k.lower()
            headers[k] = f"{headers[k]}, {v}" if k in headers else v
        req = Request(request.method, request.path, qs, headers, body)
        return to_quart(await dispatch(api, req))

    for path, methods in api.route_table():
        rule = path.replace("<", "<string:") if "<" in path else path
        app.add_url_rule(rule, endpoint=f"{path}:{','.join(methods)}", view_func=view, methods=methods)

    @app.errorhandler(HTTPException)
    async def http_error(e: HTTPException):
        req = Request(request.method, request.path, "", {})
        if e.code == 413:
            return to_quart(_too_large(api))
        from rusts.protocols.http.routing import MethodNotAllowed, NotFound

        err = NotFound() if e.code == 404 else MethodNotAllowed() if e.code == 405 else e
        if err is e:
            return to_quart(Response(e.code or 500, f'{{"error": "{e.name}"}}'.encode(), "application/json"))
        return to_quart(api.on_error(req, err))

    app.asgi_app = HotRoutes(api, app.asgi_app, poller, hot, body_timeout)
    return app
