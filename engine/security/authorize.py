"""Authorisation: which action each HTTP route and each SQL statement needs, and the checks.

HTTP (:func:`authorize_http`, the app's before-hook): the caller is authenticated
(:mod:`rusts.security.auth`), becomes the task's principal (:mod:`rusts.security.scopes`), and the
route's rule in :data:`ROUTES` is checked:

==========================================  ==============================================
route                                       needs
==========================================  ==============================================
/health, /ready, /ping, POST /auth/token    nothing (open)
POST /write, /api/v2/write                  write on every measurement in the body
POST /api/v1/write/arrow                    write on the ``measurement`` query parameter
GET|POST /query                             read on the query's measurement
GET|POST /sql                               checked per statement (below)
GET /stats, /metrics, /retention_policies   read
GET /cluster                                read
POST /delete                                admin, or write on the measurement
DELETE /measurements/<name>                 admin on <name>
POST|PUT|PATCH|DELETE /retention_policies   admin on every measurement
POST /flush                                 admin
==========================================  ==============================================

SQL (:func:`authorize_sql`, called by the /sql route and the pgwire session before a statement goes
to a query worker):
a SELECT needs read on every measurement it names (joins, subqueries, CTE bodies, UNION arms
included); ``information_schema`` needs read on every measurement; ``SHOW TABLES`` lists only the
readable measurements; ``SHOW COLUMNS/TAG KEYS/TAG VALUES FROM m`` need read on m; ``DELETE FROM m``
needs admin or write on m; ``DROP TABLE m`` admin on m. Every statement also passes the SQL
sandbox (:mod:`rusts.security.sandbox`). A refusal is a :class:`~rusts.errors.ForbiddenError`
(HTTP 403, SQLSTATE 42501) naming the principal, the action and the measurement.
"""

from __future__ import annotations

import functools
import json
import re
import zlib

import attrs
from sqlglot import exp

from rusts.errors import AuthError, ForbiddenError, QueryError, UnsupportedError
from rusts.security.scopes import ADMIN, READ, SYSTEM, WRITE, Principal, current, set_current

OPEN_ROUTES = frozenset({"/health", "/ready", "/ping", "/auth/token"})

#: (method, path or path prefix ending in "/") -> rule. A rule is an action, or
#: "write-body" / "write-arg" / "query-body" / "delete-body" / "sql" / "admin-path" (the name in
#: the path) / "admin-all".
ROUTES: dict[tuple[str, str], str] = {
    ("POST", "/write"): "write-body",
    ("POST", "/api/v2/write"): "write-body",
    ("POST", "/api/v1/write/arrow"): "write-arg",
    ("GET", "/query"): "query-body",
    ("POST", "/query"): "query-body",
    ("GET", "/sql"): "sql",
    ("POST", "/sql"): "sql",
    ("GET", "/stats"): READ,
    ("GET", "/metrics"): READ,
    ("GET", "/cluster"): READ,
    ("GET", "/retention_policies"): READ,
    ("POST", "/retention_policies"): "admin-all",
    ("PUT", "/retention_policies/"): "admin-all",
    ("PATCH", "/retention_policies/"): "admin-all",
    ("DELETE", "/retention_policies/"): "admin-all",
    ("POST", "/delete"): "delete-body",
    ("DELETE", "/measurements/"): "admin-path",
    ("POST", "/flush"): ADMIN,
}

_MAX_INFLATE = 256 << 20


def route_rule(method: str, path: str) -> tuple[str, str | None]:
    """(rule, name from the path) for a request; a route missing here needs admin (fail closed)."""
    method = "GET" if method == "HEAD" else method
    rule = ROUTES.get((method, path))
    if rule is not None:
        return rule, None
    head, sep, tail = path.rpartition("/")
    rule = ROUTES.get((method, head + sep))
    if rule is not None and tail:
        from urllib.parse import unquote

        return rule, unquote(tail)
    return ADMIN, None


def forbid(p: Principal, action: str, measurement: str | None = None) -> ForbiddenError:
    what = f" on measurement {measurement!r}" if measurement is not None else ""
    return ForbiddenError(f"permission denied: {p.describe()} may not {action}{what}")


def require(p: Principal, action: str, measurement: str | None = None) -> None:
    if not p.allows(action, measurement):
        raise forbid(p, action, measurement)


def require_delete(p: Principal, measurement: str) -> None:
    """A delete needs admin, or write, on the measurement."""
    if not (p.allows(ADMIN, measurement) or p.allows(WRITE, measurement)):
        raise forbid(p, "delete", measurement)


# --------------------------------------------------------------------------- HTTP

def authorize_http(cfg, method: str, path: str, headers, args, body: bytes | None = b"") -> Principal | None:
    """The HTTP before-hook: authenticate (401 :class:`AuthError`), remember the principal for the
    request's task, and check the route's rule (403 :class:`ForbiddenError`).

    ``cfg`` is the ``auth`` config section; ``headers`` a mapping with lower-case names; ``body``
    the request body (only read for measurement-limited principals on /write, /query, /delete).
    Returns the principal (None on open routes or with auth disabled).
    """
    if not cfg.enabled or path in OPEN_ROUTES:
        return None
    from rusts.security.auth import authenticate_http

    set_current(None)
    p = authenticate_http(cfg, headers.get("authorization"), args)
    set_current(p)
    rule, name = route_rule(method, path)
    if rule in (READ, WRITE, ADMIN):
        require(p, rule)
    elif rule == "admin-all":
        if not p.has(ADMIN) or not p.all_measurements:
            raise forbid(p, "change retention policies (needs admin on every measurement)")
    elif rule == "admin-path":
        require(p, ADMIN, name)
    elif rule == "sql":
        if not p.scopes:
            raise forbid(p, "run SQL")
    elif rule == "write-body":
        require(p, WRITE)
        if not p.all_measurements:
            for m in body_measurements(_body(headers, body)):
                require(p, WRITE, m)
    elif rule == "write-arg":
        require(p, WRITE)
        if not p.all_measurements:
            require(p, WRITE, str(args.get("measurement", "")))
    elif rule == "query-body":
        require(p, READ)
        if not p.all_measurements:
            require(p, READ, _json_measurement(_body(headers, body), args))
    elif rule == "delete-body":
        if not (p.has(ADMIN) or p.has(WRITE)):
            raise forbid(p, "delete")
        if not p.all_measurements:
            require_delete(p, _json_measurement(_body(headers, body), args))
    return p


def _body(headers, body: bytes | None) -> bytes:
    body = body or b""
    if headers.get("content-encoding", "").lower() == "gzip":
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            return d.decompress(body, _MAX_INFLATE)
        except zlib.error:
            return b""  # the route itself reports the bad body
    return body


def body_measurements(body: bytes) -> set[str]:
    """The measurements a line-protocol body writes (parsed exactly like the write path)."""
    from rusts.protocols.line_protocol import parse

    batch = parse(body)
    out: set[str] = set()
    for f in batch.frames:
        out.update(f.measurements)
    return out


def _json_measurement(body: bytes, args) -> str:
    try:
        obj = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        obj = None
    if not isinstance(obj, dict) and args is not None and args.get("q"):
        try:
            obj = json.loads(args["q"])
        except ValueError:
            obj = None
    m = obj.get("measurement") if isinstance(obj, dict) else None
    if not isinstance(m, str):
        raise QueryError("the request names no measurement")
    return m


# --------------------------------------------------------------------------- SQL

@attrs.frozen
class Access:
    """What a statement touches: ``kind`` and the table names it reads or changes, each as
    ``(name, quoted)``; ``info_schema`` when it reads information_schema."""

    kind: str  # select, show_tables, show_from, delete, drop, read
    tables: tuple[tuple[str, bool], ...] = ()
    info_schema: bool = False
    template_safe: bool = False  # no literal stands where a table is named (see statement_access)


_SHOW_TABLES = re.compile(r"^\s*SHOW\s+(TABLES|MEASUREMENTS)\s*;?\s*$", re.I)
_SHOW_RP = re.compile(r"^\s*show\s+retention\s+policies\b", re.I)


_TEMPLATES: dict[str, Access] = {}
_MAX_TEMPLATES = 4096


def statement_access(text: str) -> Access:
    """Analyse one statement's text. Raises :class:`SandboxError` for statements that would reach
    the host, and the executor's own error (same parser) for statements it would refuse anyway:
    nothing this analysis does not understand gets through.

    Cached by text, and by template: statements that differ only in their literals (dashboards,
    TSBS: new hosts and windows each time) call the same functions and read the same tables, so
    the first one's analysis (a sqlglot parse, ~0.7 ms) serves the others, unless a string
    stands where a table is named (``FROM 'cpu'``), which is never cached by template."""
    from rusts.sql.plancache import PlanCache, literals

    lits = literals(text)
    if not lits:
        return _statement_access(text)
    key = PlanCache._key(text, lits)
    acc = _TEMPLATES.get(key)
    if acc is None:
        acc = _statement_access(text)
        # a table named by a string (sqlglot reads FROM 'x' as a quoted name) must not template
        strings = {lit.text[1:-1].replace("''", "'") for lit in lits if lit.kind in ("s", "t")}
        if acc.template_safe and not any(name in strings for name, _ in acc.tables):
            if len(_TEMPLATES) >= _MAX_TEMPLATES:
                _TEMPLATES.clear()
            _TEMPLATES[key] = acc
    return acc


@functools.lru_cache(maxsize=4096)
def _statement_access(text: str) -> Access:
    """The analysis behind :func:`statement_access` (cached by text)."""
    from rusts.security.sandbox import check_statement, check_tokens
    from rusts.sql.dml import is_dml
    from rusts.sql.show import is_show

    if is_dml(text):
        if _SHOW_RP.match(text):
            return Access("read")
        from rusts.sql.dml import _parse

        stmt = _parse(text)  # run_dml's parser: its errors, word for word
        if isinstance(stmt, exp.Delete) and isinstance(stmt.this, exp.Table):
            return Access("delete", (_name(stmt.this),))
        if isinstance(stmt, exp.Drop):
            tables = stmt.args.get("tables") or ([stmt.this] if isinstance(stmt.this, exp.Table) else [])
            return Access("drop", tuple(_name(t) for t in tables if isinstance(t, exp.Table)))
        raise UnsupportedError(f"{stmt.key.upper()} statements are not supported")
    if is_show(text):
        if _SHOW_TABLES.match(text):
            return Access("show_tables")
        from rusts.sql import show

        m = show._SHOW_FROM.match(text)
        if m:
            return Access("show_from", (show._ident(m.group(2), m.group(3)),))
        m = show._SHOW_TAG_VALUES.match(text)
        if m:
            return Access("show_from", (show._ident(m.group(1), m.group(2)),))
        return Access("read")  # run_show refuses every other SHOW form
    from rusts.sql.fill import extract_extensions
    from rusts.sql.runner import parse_sql

    try:
        text2, _ = extract_extensions(text)
        ast = parse_sql(text2)
    except QueryError:
        check_tokens(text)  # a refused function the parser chokes on still gets the sandbox's error
        raise
    check_statement(ast)
    ctes = {c.alias_or_name.lower() for c in ast.find_all(exp.CTE)}
    tables, info = [], False
    safe = all(isinstance(t.this, exp.Identifier) and t.find(exp.Literal) is None
               for t in ast.find_all(exp.Table))
    for t in ast.find_all(exp.Table):
        if not isinstance(t.this, exp.Identifier):
            continue
        db = t.args.get("db")
        dbn = db.name.lower() if db is not None else ""
        if not dbn and t.name.lower() in ctes:
            continue
        if dbn in ("information_schema", "pg_catalog"):
            info = True
            continue
        tables.append(_name(t))
    return Access("select", tuple(dict.fromkeys(tables)), info, safe)


def _name(t: exp.Table) -> tuple[str, bool]:
    ident = t.this
    return t.name, bool(ident.args.get("quoted")) if isinstance(ident, exp.Identifier) else False


def _auth_enabled(db) -> bool:
    try:
        return bool(db.config.auth.enabled)
    except AttributeError:
        return False


def authorize_sql(db, text: str, *, enforce: bool = False):
    """Check one statement before it runs (sandbox always; scopes when auth is enabled).

    The adapters call it with ``enforce=True`` in the request's task, where the principal is
    known (:func:`rusts.security.scopes.current`; none with auth enabled: :class:`AuthError`), before
    handing the statement to a query worker. The worker's :func:`rusts.sql.runner.execute_sql`
    calls it again without ``enforce``: the sandbox check, plus the scopes when a principal is set
    (embedded callers using :func:`~rusts.security.scopes.acting_as`).

    Returns None, or for ``SHOW TABLES`` by a measurement-limited principal the answer itself
    (only the readable measurements). Raises :class:`SandboxError` / :class:`ForbiddenError`.
    """
    acc = statement_access(text)  # SandboxError for SQL that would reach the host
    if not _auth_enabled(db):
        return None
    p = current()
    if p is None:
        if enforce:
            raise AuthError("authentication required")
        return None
    if p is SYSTEM:
        return None
    from rusts.sql.translate import Catalog

    cat = Catalog.of_db(db)

    def resolve(name: str, quoted: bool) -> str:
        return cat.resolve_table(name, quoted) or name

    if acc.kind == "show_tables":
        require(p, READ)
        if p.all_measurements:
            return None
        from rusts.sql.output import SqlColumn, make_output
        from rusts.sql.show import _obj

        names = p.visible(cat.measurements())
        return make_output([SqlColumn("name", "text")], [_obj(names)], [None], "_tables", show=True)
    if acc.kind == "delete":
        for name, quoted in acc.tables:
            require_delete(p, resolve(name, quoted))
        return None
    if acc.kind == "drop":
        for name, quoted in acc.tables:
            require(p, ADMIN, resolve(name, quoted))
        return None
    require(p, READ)
    if acc.info_schema and not p.all_measurements:
        raise forbid(p, "read information_schema (it lists every measurement)")
    for name, quoted in acc.tables:
        require(p, READ, resolve(name, quoted))
    return None
