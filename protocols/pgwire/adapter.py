"""The PostgreSQL wire protocol served from the database: psql, drivers, ORMs, Grafana.

:class:`DbBackend` is the per-connection :class:`~rusts.protocols.pgwire.backend.SqlBackend`:
introspection statements (pg_catalog, information_schema, system functions, SET/SHOW of settings)
go to :mod:`rusts.pgcatalog.catalog`; everything else runs through the same SQL planner as ``POST /sql``
(:func:`rusts.sql.runner.execute_sql`), so both answer identically.

``describe`` infers parameter types from where ``$n`` stands (compared with ``time`` ->
timestamptz, with a field -> its type, with a tag -> text, in LIMIT/OFFSET -> int8), because strict
drivers (asyncpg) encode arguments by the type the server announces. Result columns come from
:func:`rusts.sql.runner.describe_sql` (no data read); for catalog statements, from running the statement
once with the parameters NULL (kept for the ``execute`` that follows when it had no parameters,
no write came in between and it is fresh).
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Sequence
from functools import partial

import attrs
import trio
from sqlglot import exp

from rusts.errors import AuthError, QueryError, RustsError
from rusts.storage.damage import collect_missing, missing_notice

log = logging.getLogger("rusts.pgserver")

OID_TEXT, OID_INT8, OID_FLOAT8, OID_BOOL, OID_TIMESTAMPTZ, OID_NUMERIC = 25, 20, 701, 16, 1184, 1700
_PARAM = re.compile(r"\$(\d+)")
_FIELD_OIDS = {"float8": OID_FLOAT8, "int8": OID_INT8, "numeric": OID_NUMERIC, "text": OID_TEXT,
               "bool": OID_BOOL}


def _command_tag(sql: str, nrows: int) -> str:
    word = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
    if word in ("SET", "RESET", "DISCARD"):
        return word
    if word == "SHOW":
        return "SHOW"
    return f"SELECT {nrows}"


class DbBackend:
    """One pgwire session's SQL engine over the shared database."""

    def __init__(self, db, startup: dict, poller=None) -> None:
        self.db = db
        self.poller = poller  # rusts.busypoll.BusyPoll (or None): told about each statement
        self.user = startup.get("user", "rusts")
        self.principal = _principal(db, startup)  # checked per statement (rusts.security.authorize)
        self.database = startup.get("database", "rusts")
        self._described: tuple[str, object] | None = None

    def _stamp(self) -> tuple:
        # no write and no time passed (to the 100 ms) since describe ran: the result is current
        import time

        return (self.db.write_stats["requests"], int(time.monotonic() * 10))

    # ---------------------------------------------------------------- catalog
    def _tables(self) -> dict[str, list[tuple[str, str]]]:
        db = self.db
        out = {}
        names = db.measurements()
        if self.principal is not None:
            names = self.principal.visible(names)  # the catalog shows only readable measurements
        for m in names:
            cols = [("time", "timestamp")]  # as SQL results type it (UTC values)
            for k in db.index.tag_keys(m):
                cols.append((k, "text"))
            for f, ft in sorted(db.schema.fields(m).items()):
                cols.append((f, ft.sql_name))
            out[m] = cols
        return out

    async def _catalog(self, sql: str, params) -> object:
        from rusts.pgcatalog.catalog import run_catalog_query
        from rusts.protocols.pgwire import result_from_rows
        from rusts.query.control import offload

        from rusts.cluster import frontend_of

        fe = frontend_of(self.db)  # cluster mode: the cluster's tables (rusts.cluster.sqlfront)
        tables = self._tables() if fe is None else await fe.pg_tables(self.principal)
        cols, rows = await offload(
            lambda: run_catalog_query(sql, tables, database=self.database, user=self.user, params=params))
        return result_from_rows(cols, rows, _command_tag(sql, len(rows)))

    # ---------------------------------------------------------------- SqlBackend
    async def execute(self, sql: str, params: Sequence[object] | None = None):
        from rusts.security.scopes import acting_as

        _IN_FLIGHT[0] += 1
        if self.poller is not None:
            self.poller.begin()
        try:
            # damaged blocks are skipped and named in a notice (HTTP: the answer's "missing")
            with acting_as(self.principal), collect_missing() as missing:
                result = await self._execute(sql, params)
            return attrs.evolve(result, notices=(*result.notices, missing_notice(missing))) if missing else result
        finally:
            _IN_FLIGHT[0] -= 1
            if self.poller is not None:
                self.poller.end()

    async def _execute(self, sql: str, params: Sequence[object] | None):
        if self._described is not None:
            cached_sql, result, stamp = self._described
            self._described = None
            if cached_sql == sql and not params and stamp == self._stamp():
                return result
        from rusts.pgcatalog.catalog import is_catalog_query

        if is_catalog_query(sql):
            from rusts.security.sandbox import check_text

            check_text(sql)  # no host files/settings through the catalog emulation either
            return await self._catalog(sql, params)
        from rusts.security.authorize import authorize_sql
        from rusts.sql.runner import to_pg_result

        answer = authorize_sql(self.db, sql, enforce=True)  # the caller's scopes, here (not in the worker)
        if answer is not None:  # SHOW TABLES for a measurement-limited principal
            return to_pg_result(answer)
        from rusts.cluster import frontend_of

        fe = frontend_of(self.db)  # cluster mode: fan-out and merge (rusts.cluster.sqlfront)
        out = await (self.db.sql(sql, params) if fe is None else fe.sql_output(sql, params))
        return to_pg_result(out)

    def _param_types(self, sql: str, given: Sequence[int]) -> list[int]:
        n = max((int(m) for m in _PARAM.findall(sql)), default=0)
        types = [given[i] if i < len(given) and given[i] else 0 for i in range(n)]
        if n == 0 or all(types):
            return types
        try:
            import sqlglot

            ast = sqlglot.parse_one(sql, read="postgres")
        except Exception:
            return types
        fields: dict[str, str] = {}
        tags: set[str] = set()
        for t in ast.find_all(exp.Table):
            m = t.name
            for f, ft in self.db.schema.fields(m).items():
                fields[f] = ft.sql_name
            tags.update(self.db.index.tag_keys(m))
        for p in ast.find_all(exp.Parameter):
            try:
                i = int(p.this.this if isinstance(p.this, exp.Literal) else p.name) - 1
            except (TypeError, ValueError):
                continue
            if not 0 <= i < n or types[i]:
                continue
            parent = p.parent
            if isinstance(parent, (exp.Limit, exp.Offset)):
                types[i] = OID_INT8
                continue
            if isinstance(parent, exp.Cast):
                continue
            other = None
            if isinstance(parent, exp.Binary):
                other = parent.right if parent.left is p else parent.left
            elif isinstance(parent, exp.In):
                other = parent.this
            elif isinstance(parent, exp.Between):
                other = parent.this
            if isinstance(other, exp.Column):
                name = other.name
                if name == "time":
                    types[i] = OID_TIMESTAMPTZ
                elif name in tags:
                    types[i] = OID_TEXT
                elif name in fields:
                    types[i] = _FIELD_OIDS.get(fields[name], OID_TEXT)
        return types

    async def describe(self, sql: str, param_types: Sequence[int]):
        from rusts.pgcatalog.catalog import is_catalog_query

        types = self._param_types(sql, param_types)
        from rusts.sql.dml import is_dml

        if is_dml(sql) and not sql.lstrip().lower().startswith("show"):
            return types, None  # DELETE / DROP TABLE return no rows
        from rusts.cluster import frontend_of

        if not is_catalog_query(sql) and frontend_of(self.db) is None:
            from rusts.security.authorize import authorize_sql
            from rusts.security.scopes import acting_as

            with acting_as(self.principal):
                authorize_sql(self.db, sql, enforce=True)  # the caller's scopes, here (not in the worker)
            _, cols = await self.db.describe_sql(sql)  # names and types without reading data
            return types, (cols or None)
        params = [None] * len(types) if types else None
        if frontend_of(self.db) is not None:
            from rusts.cluster.sqlfront import describe_params

            params = describe_params(types)
        try:
            result = await self.execute(sql, params)
        except QueryError:
            raise
        except RustsError:
            raise
        if not types:
            self._described = (sql, result, self._stamp())
        return types, (result.columns or None)

    def split_statements(self, sql: str) -> list[str]:
        from rusts.sql.runner import split_statements

        return split_statements(sql)


def _principal(db, startup: dict):
    """The session's principal: a token login's (from the password check), else the configured
    user's; None when auth is off."""
    from rusts.protocols.pgwire.server import IDENTITY_KEY
    from rusts.security.auth import user_principal
    from rusts.security.scopes import Principal

    cfg = getattr(getattr(db, "config", None), "auth", None)
    if cfg is None or not cfg.enabled:
        return None
    ident = startup.get(IDENTITY_KEY)
    if isinstance(ident, Principal):
        return ident
    p = user_principal(cfg, startup.get("user", ""))
    if p is None:
        raise AuthError(f'no such user "{startup.get("user", "")}"')
    return p


def _tls_context(cfg) -> ssl.SSLContext | None:
    if not cfg.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    return ctx


_IN_FLIGHT = [0]  # statements being executed, over every session (the drain waits for them)


async def serve_postgres(db, config, *, poller=None, shutdown_trigger=None,
                         task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve pgwire for ``db`` on ``config.postgres``; ``task_status.started(port)``. ``poller``:
    the server's :class:`rusts.busypoll.BusyPoll`, told about each statement. When
    ``shutdown_trigger()`` returns, statements in flight finish (at most 5 s), then every session
    is closed."""
    from rusts.security.auth import token_principal
    from rusts.protocols.pgwire import PgAuth, serve_pgwire

    pg = config.postgres
    auth = None
    if config.auth.enabled:  # never trust: SCRAM-SHA-256 for users, or a token as the password
        users = {u.username: u.password for u in config.auth.users}

        def token_login(token: str):
            try:
                return token_principal(config.auth, token)
            except RustsError:
                return None

        auth = PgAuth(users=users, method="scram-sha-256", jwt_verifier=token_login)
    serving = partial(serve_pgwire, lambda startup: DbBackend(db, startup, poller), host=pg.host, port=pg.port,
                      max_connections=pg.max_connections, auth=auth, tls_context=_tls_context(pg),
                      require_tls=pg.require_tls)
    if shutdown_trigger is None:
        await serving(task_status=task_status)
        return
    async with trio.open_nursery() as nursery:
        task_status.started(await nursery.start(serving))
        await shutdown_trigger()
        with trio.move_on_after(5.0):
            while _IN_FLIGHT[0]:
                await trio.sleep(0.02)
        nursery.cancel_scope.cancel()
