"""HTTP routing, independent of the transport: requests, responses, the route table, and the
dispatch that turns every exception into the app's error answer.

An app is an :class:`App`: ``route(path, methods)`` decorators for exact paths and for
``"/prefix/<name>"`` (one trailing path parameter). Handlers take a :class:`Request` and return a
:class:`Response`. :mod:`rusts.protocols.http.asgi` serves an App under hypercorn.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable

import attrs
import trio


@attrs.define(slots=True)
class Request:
    method: str
    path: str
    query_string: str
    headers: dict  # lower-case name -> value (str); repeated headers joined with ", "
    body: bytes = b""
    _args: dict | None = None

    @property
    def args(self) -> dict:
        """Query parameters, first value of each name."""
        if self._args is None:
            out: dict = {}
            if self.query_string:
                for k, v in urllib.parse.parse_qsl(self.query_string, keep_blank_values=True):
                    out.setdefault(k, v)
            self._args = out
        return self._args


@attrs.define(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str | None = None
    headers: dict | None = None


class BodyTooLarge(Exception):
    """The request body exceeded the app's ``max_body`` (answered 413, then the connection closes)."""


Handler = Callable[[Request], Awaitable[Response]]


class App:
    """Routes plus the hooks the server calls: ``before`` (e.g. auth) and ``on_error``."""

    def __init__(self, *, max_body: int, on_error: Callable[[Request, BaseException], Response],
                 before: Callable[[Request], None] | None = None):
        self.max_body = max_body
        self.on_error = on_error
        self.before = before
        self._exact: dict[str, dict[str, Handler]] = {}
        self._prefix: list[tuple[str, dict[str, Handler]]] = []
        self._patterns: dict[str, list[str]] = {}

    def route_table(self) -> list[tuple[str, list[str]]]:
        """``(path pattern, methods)`` of every route, in registration order."""
        return [(p, sorted(ms)) for p, ms in self._patterns.items()]

    def route(self, path: str, methods: tuple[str, ...] = ("GET",)):
        def deco(fn: Handler) -> Handler:
            if path.endswith(">"):
                prefix = path[: path.index("<")]
                for p, table in self._prefix:
                    if p == prefix:
                        break
                else:
                    table = {}
                    self._prefix.append((prefix, table))
            else:
                table = self._exact.setdefault(path, {})
            for m in methods:
                table[m] = fn
            self._patterns.setdefault(path, []).extend(methods)
            if "GET" in methods and "HEAD" not in table:
                table["HEAD"] = fn
            return fn
        return deco

    def resolve(self, method: str, path: str) -> tuple[Handler | None, str | None, list[str]]:
        """(handler, path parameter, allowed methods); handler None when not found / not allowed."""
        table = self._exact.get(path)
        param = None
        if table is None:
            for prefix, t in self._prefix:
                if path.startswith(prefix) and len(path) > len(prefix) and "/" not in path[len(prefix):]:
                    table, param = t, urllib.parse.unquote(path[len(prefix):])
                    break
        if table is None:
            return None, None, []
        return table.get(method), param, sorted(table)


class NotFound(Exception):
    http_status = 404


class MethodNotAllowed(Exception):
    http_status = 405


async def dispatch(app: App, req: Request) -> Response:
    """The app's answer to ``req`` (its body read); every exception becomes an error answer."""
    try:
        handler, param, allowed = app.resolve(req.method, req.path)
        if handler is None:
            raise (MethodNotAllowed() if allowed else NotFound())
        if app.before is not None:
            app.before(req)
        return await (handler(req, param) if param is not None else handler(req))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        raise
    except trio.Cancelled:
        raise
    except Exception as e:  # noqa: BLE001 - every error becomes a JSON answer
        return app.on_error(req, e)
