"""The HTTP API: writes, JSON and SQL queries, health, stats, metrics, lifecycle routes.

Served by rusts.protocols.http.server (h11 on trio). Every error is JSON with an ``error`` key and
the status of the exception's ``http_status``. See README "HTTP API" for the routes.
"""

from __future__ import annotations

import json
import logging
import time
import zlib

import orjson

from rusts.errors import AuthError, ProtocolError, RustsError
from rusts.protocols.http.routing import App, BodyTooLarge, MethodNotAllowed, NotFound, Request, Response
from rusts.storage.damage import answer_extra, collect_missing

log = logging.getLogger("rusts.http")

INFLUX_VERSION = "1.8.10-rusts"

_JSON = "application/json"


def _json(obj, status: int = 200, headers: dict | None = None) -> Response:
    try:  # orjson: ~5x faster than json on query answers; NaN/inf never reach here (to_json)
        body = orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:  # beyond orjson (ints over 64 bits): the standard library
        body = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
    return Response(status, body, _JSON, headers)


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
        raise BodyTooLarge()
    if not d.eof:
        raise ProtocolError("invalid gzip body: truncated")
    return out


def create_app(db, config=None) -> App:
    """The HTTP app serving ``db`` (routes and error mapping; the transport is httpserver.serve)."""
    cfg = config or db.config
    max_body = int(cfg.server.max_body_size)
    auth_cfg = cfg.auth

    def check_auth(req: Request) -> None:  # 401 / 403; the route -> action table is in authorize
        from rusts.security.authorize import authorize_http

        authorize_http(auth_cfg, req.method, req.path, req.headers, req.args, req.body)

    def on_error(req: Request, e: BaseException) -> Response:
        if isinstance(e, RustsError):
            headers = None
            if getattr(e, "retry_after", None) is not None:  # OverloadedError, StorageUnavailableError
                headers = {"Retry-After": str(max(1, int(round(e.retry_after))))}
            if isinstance(e, AuthError):
                headers = {"WWW-Authenticate": "Bearer"}
            extra = {}
            pos = getattr(e, "position", None)
            if pos is not None:
                extra["position"] = pos
            return error_response(e.http_status, str(e), headers=headers, **extra)
        if isinstance(e, BodyTooLarge):
            return error_response(413, f"request body exceeds max_body_size ({max_body} bytes)")
        if isinstance(e, NotFound):
            return error_response(404, f"not found: {req.method} {req.path}")
        if isinstance(e, MethodNotAllowed):
            return error_response(405, f"method {req.method} not allowed on {req.path}")
        log.error("internal error on %s %s", req.method, req.path, exc_info=e)
        return error_response(500, f"internal error: {type(e).__name__}: {e}")

    app = App(max_body=max_body, on_error=on_error, before=check_auth if auth_cfg.enabled else None)
    route = app.route

    def body_of(req: Request) -> bytes:
        data = req.body
        if req.headers.get("content-encoding", "").lower() == "gzip":
            data = _gunzip(data, max_body * 10)
        return data

    from rusts.cluster import frontend_of  # cluster mode: writes and queries go to the cluster node

    async def do_write(req: Request) -> Response:
        target = frontend_of(db) or db
        result = await target.write(body_of(req), precision=req.args.get("precision", "ns"))
        if result.errors:
            errs = [err.to_json() for err in result.errors]
            first = result.errors[0]
            msg = (f"partial write: {len(errs)} line(s) rejected, {result.points} point(s) written; "
                   f"line {first.line_number}: {first.error_message}")
            return _json({"error": msg, "points_written": result.points, "lines_rejected": len(errs),
                          "data": errs}, 400)
        return Response(204)

    route("/write", ("POST",))(do_write)
    route("/api/v2/write", ("POST",))(do_write)

    @route("/api/v1/write/arrow", ("POST",))
    async def write_arrow(req: Request) -> Response:  # Arrow IPC batches (rusts-import; docs/import.md)
        from rusts.importer.arrow_ingest import write_arrow

        return _json(*await write_arrow(db, body_of(req), req.args))

    async def rows_json(rs, t0):
        from rusts.query.control import offload
        from rusts.query.executor import result_json

        return await offload(lambda: result_json(rs, t0), small=len(rs) <= 20000)

    @route("/query", ("POST", "GET"))
    async def query(req: Request) -> Response:
        t0 = time.perf_counter()
        body = body_of(req)
        if not body.strip():
            return error_response(400, "empty query body: expected a JSON query object")
        try:
            obj = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            return error_response(400, f"invalid JSON: {e}")
        with collect_missing() as missing:  # damaged blocks are skipped and named in the answer
            rs = await (frontend_of(db) or db).query(obj)
        return _json({**await rows_json(rs, t0), **answer_extra(missing)})

    @route("/sql", ("POST", "GET"))
    async def sql(req: Request) -> Response:
        t0 = time.perf_counter()
        if req.method in ("GET", "HEAD"):
            text = req.args.get("q") or req.args.get("query") or ""
        else:
            text = body_of(req).decode("utf-8", "replace")
            ctype = req.headers.get("content-type", "")
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
        from rusts.sql.runner import run_sql_http

        if frontend_of(db) is not None:
            return _json(await frontend_of(db).sql(text, t0))
        with collect_missing() as missing:
            out = await run_sql_http(db, text, t0)
        return _json({**out, **answer_extra(missing)} if missing else out)

    @route("/cluster", ("GET",))
    async def cluster(req: Request) -> Response:
        if frontend_of(db) is None:
            return error_response(404, "this server is not a cluster node (start it with --cluster FILE)")
        return _json(await frontend_of(db).status())

    @route("/cluster/snapshot/<name>", ("POST", "GET", "DELETE"))
    async def cluster_snapshot(req: Request, name: str) -> Response:  # a peer's rebuild (rusts.cluster.rebuild)
        from rusts.cluster.rebuild import snapshot_route

        return await snapshot_route(frontend_of(db), req, name)

    @route("/health", ("GET",))
    async def health(req: Request) -> Response:
        return _json(db.health())

    @route("/ready", ("GET",))
    async def ready(req: Request) -> Response:
        if db.ready:
            return _json({"ready": True})
        return _json({"ready": False}, 503)

    ping_headers = {"X-Influxdb-Version": INFLUX_VERSION, "X-Influxdb-Build": "OSS"}

    @route("/ping", ("GET",))
    async def ping(req: Request) -> Response:
        return Response(204, headers=ping_headers)

    @route("/stats", ("GET",))
    async def stats(req: Request) -> Response:
        return _json(db.statistics())

    def json_body(req: Request, what: str) -> dict:
        try:
            obj = json.loads(body_of(req) or b"null")
        except (ValueError, UnicodeDecodeError) as e:
            raise ProtocolError(f"invalid JSON: {e}") from None
        if not isinstance(obj, dict):
            raise ProtocolError(f"{what} body must be a JSON object")
        return obj

    @route("/delete", ("POST",))
    async def delete(req: Request) -> Response:
        from rusts.query.model import from_json

        obj = json_body(req, "delete")
        unknown = sorted(set(obj) - {"measurement", "time_range", "tag_filters", "field_filters"})
        if unknown:
            raise ProtocolError(f"unknown delete key: {unknown[0]!r}")
        q = from_json({"measurement": obj.get("measurement"),
                       "time_range": obj.get("time_range", {"start": -(2**63), "end": 2**63 - 1}),
                       "tag_filters": obj.get("tag_filters", [])})
        ff = obj.get("field_filters") or []
        if not isinstance(ff, list):
            raise ProtocolError("field_filters must be a list of {field, op, value}")
        out = await (frontend_of(db) or db).delete(q.measurement, q.start, q.end, q.tag_filters, tuple(ff))
        return _json(out)

    @route("/measurements/<name>", ("DELETE",))
    async def drop_measurement(req: Request, name: str) -> Response:
        return _json(await (frontend_of(db) or db).drop_measurement(name))

    def policies(status: int = 200) -> Response:
        return _json({"retention_policies": db.lifecycle.policies.to_json()}, status)

    @route("/retention_policies", ("GET",))
    async def list_policies(req: Request) -> Response:
        if frontend_of(db) is not None:  # cluster mode: the cluster's policies (rusts.cluster.retention)
            return _json({"retention_policies": await frontend_of(db).retention_policies("list")})
        return policies()

    @route("/retention_policies", ("POST",))
    async def add_policy(req: Request) -> Response:
        from rusts.lifecycle.policies import make_policy

        obj = json_body(req, "retention policy")
        p = make_policy(obj.get("name"), obj.get("measurement", "*"), obj.get("duration"), obj.get("tier_after"))
        if frontend_of(db) is not None:
            return _json({"retention_policies": await frontend_of(db).retention_policies("add", p)}, 201)
        db.lifecycle.policies.add(p)
        db.lifecycle.poke_sweeper()
        return policies(201)

    @route("/retention_policies/<name>", ("PUT", "PATCH"))
    async def update_policy(req: Request, name: str) -> Response:
        obj = json_body(req, "retention policy")
        if frontend_of(db) is not None:
            return _json({"retention_policies": await frontend_of(db).retention_policies("update", name, obj)})
        db.lifecycle.policies.update(name, **obj)
        db.lifecycle.poke_sweeper()
        return policies()

    @route("/retention_policies/<name>", ("DELETE",))
    async def remove_policy(req: Request, name: str) -> Response:
        if frontend_of(db) is not None:
            return _json({"retention_policies": await frontend_of(db).retention_policies("remove", name)})
        db.lifecycle.policies.remove(name)
        return policies()

    @route("/flush", ("POST",))
    async def flush(req: Request) -> Response:
        await db.flush()
        return Response(204)

    @route("/metrics", ("GET",))
    async def metrics(req: Request) -> Response:
        from rusts.protocols.http.metrics import prometheus_text

        return Response(200, prometheus_text(db.statistics()).encode(),
                        "text/plain; version=0.0.4; charset=utf-8")

    @route("/auth/token", ("POST",))
    async def token(req: Request) -> Response:
        from rusts.security.auth import issue_token

        try:
            obj = json.loads(body_of(req) or b"{}")
        except ValueError as e:
            return error_response(400, f"invalid JSON: {e}")
        if not isinstance(obj, dict):
            return error_response(400, 'expected {"username": ..., "password": ...}')
        return _json(issue_token(auth_cfg, obj.get("username"), obj.get("password")))

    return app
