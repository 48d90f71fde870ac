"""The HTTP API (quart-trio on hypercorn): writes, JSON and SQL queries, health, stats, metrics.

Every error is JSON with an ``error`` key and the status of the exception's ``http_status``.
See README "HTTP API" for the routes.
"""

from __future__ import annotations

import json
import logging
import time
import zlib

import trio
from quart import Response, request
from quart_trio import QuartTrio

from rusts.errors import AuthError, OverloadedError, ProtocolError, RustsError

log = logging.getLogger("rusts.http")

INFLUX_VERSION = "1.8.10-rusts"


def _json(obj, status: int = 200, headers: dict | None = None) -> Response:
    body = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    return Response(body, status=status, content_type="application/json", headers=headers)


def error_response(status: int, message: str, **extra) -> Response:
    headers = extra.pop("headers", None)
    return _json({"error": message, **extra}, status, headers)


def _gunzip(data: bytes, limit: int) -> bytes:
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as e:
        raise ProtocolError(f"invalid gzip body: {e}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise _TooLarge()
    if not d.eof:
        raise ProtocolError("invalid gzip body: truncated")
    return out


class _TooLarge(Exception):
    pass


def create_app(db, config=None) -> QuartTrio:
    """The ASGI app serving ``db``."""
    cfg = config or db.config
    app = QuartTrio("rusts")
    app.config["MAX_CONTENT_LENGTH"] = None
    app.config["JSONIFY_PRETTYPRINT_REGULAR"] = False
    max_body = int(cfg.server.max_body_size)
    auth_cfg = cfg.auth
    open_routes = {"/health", "/ready", "/ping", "/auth/token"}

    def check_auth() -> None:
        if not auth_cfg.enabled or request.path in open_routes:
            return
        from rusts.auth import verify_http

        verify_http(auth_cfg, request.headers.get("Authorization"), request.args)

    @app.before_request
    async def _auth():
        check_auth()

    async def drain(already: int) -> None:
        # Read (and drop) what the client is still sending, up to a bound, so the 413 reaches a
        # client that writes its whole body before reading; beyond the bound the connection closes.
        seen = already
        async for chunk in request.body:
            seen += len(chunk)
            if seen > max(64 << 20, 4 * max_body):
                break

    async def read_body() -> bytes:
        cl = request.headers.get("Content-Length")
        if cl is not None and cl.isdigit() and int(cl) > max_body:
            await drain(0)
            raise _TooLarge()
        chunks = []
        size = 0
        async for chunk in request.body:
            size += len(chunk)
            if size > max_body:
                await drain(size)
                raise _TooLarge()
            chunks.append(chunk)
        data = b"".join(chunks)
        if request.headers.get("Content-Encoding", "").lower() == "gzip":
            data = _gunzip(data, max_body * 10)
        return data

    @app.errorhandler(RustsError)
    async def _rusts_error(e: RustsError):
        headers = None
        if isinstance(e, OverloadedError):
            headers = {"Retry-After": str(max(1, int(round(e.retry_after))))}
        if isinstance(e, AuthError):
            headers = {"WWW-Authenticate": "Bearer"}
        body = {}
        pos = getattr(e, "position", None)
        if pos is not None:
            body["position"] = pos
        return error_response(e.http_status, str(e), headers=headers, **body)

    @app.errorhandler(_TooLarge)
    async def _too_large(e):
        return error_response(413, f"request body exceeds max_body_size ({max_body} bytes)",
                              headers={"Connection": "close"})

    @app.errorhandler(404)
    async def _not_found(e):
        return error_response(404, f"not found: {request.method} {request.path}")

    @app.errorhandler(405)
    async def _bad_method(e):
        return error_response(405, f"method {request.method} not allowed on {request.path}")

    @app.errorhandler(Exception)
    async def _internal(e):
        if hasattr(e, "code") and isinstance(getattr(e, "code"), int) and 400 <= e.code < 600:
            return error_response(e.code, getattr(e, "description", str(e)) or str(e))
        log.exception("internal error on %s %s", request.method, request.path)
        return error_response(500, f"internal error: {type(e).__name__}: {e}")

    async def do_write(precision: str):
        body = await read_body()
        result = await db.write(body, precision=precision)
        if result.errors:
            errs = [err.to_json() for err in result.errors]
            first = result.errors[0]
            msg = (f"partial write: {len(errs)} line(s) rejected, {result.points} point(s) written; "
                   f"line {first.line_number}: {first.error_message}")
            return _json({"error": msg, "points_written": result.points, "lines_rejected": len(errs),
                          "data": errs}, 400)
        return Response("", status=204)

    @app.route("/write", methods=["POST"])
    async def write():
        return await do_write(request.args.get("precision", "ns"))

    @app.route("/api/v2/write", methods=["POST"])
    async def write_v2():
        return await do_write(request.args.get("precision", "ns"))

    @app.route("/query", methods=["POST", "GET"])
    async def query():
        from rusts.executor import result_json

        t0 = time.perf_counter()
        body = await read_body()
        if not body.strip():
            return error_response(400, "empty query body: expected a JSON query object")
        try:
            obj = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            return error_response(400, f"invalid JSON: {e}")
        rs = await db.query(obj)
        return _json(await _rows_json(rs, t0))

    async def _rows_json(rs, t0):
        from rusts.executor import result_json
        if len(rs) > 20000:
            return await trio.to_thread.run_sync(result_json, rs, t0)
        return result_json(rs, t0)

    @app.route("/sql", methods=["POST", "GET"])
    async def sql():
        t0 = time.perf_counter()
        if request.method == "GET":
            text = request.args.get("q") or request.args.get("query") or ""
        else:
            body = await read_body()
            text = body.decode("utf-8", "replace")
            ctype = request.headers.get("Content-Type", "")
            if "json" in ctype or text.lstrip().startswith("{"):
                try:
                    obj = json.loads(text)
                except ValueError as e:
                    return error_response(400, f"invalid JSON: {e}")
                if not isinstance(obj, dict) or not isinstance(obj.get("query"), str):
                    return error_response(400, 'expected {"query": "<SQL>"}')
                text = obj["query"]
        if not text.strip():
            return error_response(400, "empty SQL query")
        from rusts.sql import run_sql_http

        out = await run_sql_http(db, text, t0)
        return _json(out)

    @app.route("/health", methods=["GET", "HEAD"])
    async def health():
        return _json({"status": "healthy"})

    @app.route("/ready", methods=["GET", "HEAD"])
    async def ready():
        if db.ready:
            return _json({"ready": True})
        return _json({"ready": False}, 503)

    @app.route("/ping", methods=["GET", "HEAD"])
    async def ping():
        return Response("", status=204, headers={"X-Influxdb-Version": INFLUX_VERSION,
                                                  "X-Influxdb-Build": "OSS"})

    @app.route("/stats", methods=["GET"])
    async def stats():
        return _json(db.statistics())

    async def json_body(what: str):
        body = await read_body()
        try:
            obj = json.loads(body or b"null")
        except (ValueError, UnicodeDecodeError) as e:
            raise ProtocolError(f"invalid JSON: {e}") from None
        if not isinstance(obj, dict):
            raise ProtocolError(f"{what} body must be a JSON object")
        return obj

    @app.route("/delete", methods=["POST"])
    async def delete():
        from rusts.query import from_json

        obj = await json_body("delete")
        unknown = sorted(set(obj) - {"measurement", "time_range", "tag_filters", "field_filters"})
        if unknown:
            raise ProtocolError(f"unknown delete key: {unknown[0]!r}")
        q = from_json({"measurement": obj.get("measurement"),
                       "time_range": obj.get("time_range", {"start": -(2**63), "end": 2**63 - 1}),
                       "tag_filters": obj.get("tag_filters", [])})
        ff = obj.get("field_filters") or []
        if not isinstance(ff, list):
            raise ProtocolError("field_filters must be a list of {field, op, value}")
        out = await db.delete(q.measurement, q.start, q.end, q.tag_filters, tuple(ff))
        return _json(out)

    @app.route("/measurements/<name>", methods=["DELETE"])
    async def drop_measurement(name):
        return _json(await db.drop_measurement(name))

    @app.route("/retention_policies", methods=["GET"])
    async def list_policies():
        return _json({"retention_policies": db.lifecycle.policies.to_json()})

    @app.route("/retention_policies", methods=["POST"])
    async def add_policy():
        from rusts.retention import make_policy

        obj = await json_body("retention policy")
        p = make_policy(obj.get("name"), obj.get("measurement", "*"), obj.get("duration"), obj.get("tier_after"))
        db.lifecycle.policies.add(p)
        db.lifecycle.poke_sweeper()
        return _json({"retention_policies": db.lifecycle.policies.to_json()}, 201)

    @app.route("/retention_policies/<name>", methods=["PUT", "PATCH"])
    async def update_policy(name):
        obj = await json_body("retention policy")
        db.lifecycle.policies.update(name, **obj)
        db.lifecycle.poke_sweeper()
        return _json({"retention_policies": db.lifecycle.policies.to_json()})

    @app.route("/retention_policies/<name>", methods=["DELETE"])
    async def remove_policy(name):
        db.lifecycle.policies.remove(name)
        return _json({"retention_policies": db.lifecycle.policies.to_json()})

    @app.route("/flush", methods=["POST"])
    async def flush():
        await db.flush()
        return Response("", status=204)

    @app.route("/metrics", methods=["GET"])
    async def metrics():
        from rusts.metrics import prometheus_text

        return Response(prometheus_text(db.statistics()), status=200,
                        content_type="text/plain; version=0.0.4; charset=utf-8")

    @app.route("/auth/token", methods=["POST"])
    async def token():
        from rusts.auth import issue_token

        body = await read_body()
        try:
            obj = json.loads(body or b"{}")
        except ValueError as e:
            return error_response(400, f"invalid JSON: {e}")
        if not isinstance(obj, dict):
            return error_response(400, 'expected {"username": ..., "password": ...}')
        return _json(issue_token(auth_cfg, obj.get("username"), obj.get("password")))

    return app
