"""PostgreSQL catalog emulation: answers the introspection queries pgwire clients send.

psql (``\\dt``, ``\\d cpu``, ``\\l``, ``\\dn``), JDBC/DataGrip ``DatabaseMetaData``, SQLAlchemy's dialect
initialisation and ``inspect()``, asyncpg's and psycopg's type introspection and Grafana's query
editor all read ``pg_catalog`` / ``information_schema`` and call PostgreSQL system functions before
(or instead of) touching data. rusts answers those statements here, not in its SQL engine.

Mechanism
---------
An in-process DuckDB database holds one table per PostgreSQL 15 catalog relation (schema ``pgc``
for ``pg_catalog``, ``pgis`` for ``information_schema``) with PostgreSQL's exact column lists;
every relation exists so every client query binds. The built-in content (types with their real
OIDs, namespaces, access methods, collations, ranges, settings, key words) is generated from a real
PostgreSQL 15 into :mod:`rusts.pgcatalog.generated_data`. The content that depends on the database (one
``pg_class`` / ``pg_attribute`` / ``pg_type`` row set and ``information_schema`` rows per
measurement) is rebuilt, in one DuckDB transaction, only when the ``tables`` argument changes.

A statement is parsed with sqlglot (PostgreSQL dialect), rewritten for DuckDB and run on a DuckDB
cursor. The rewrite maps catalog relations to the emulation tables, turns ``::regclass`` /
``::regtype`` / ``::regproc`` casts into OID lookups (literals, resolved in Python) or name lookups
(displayed values), strips ``COLLATE`` and ``pg_catalog.`` prefixes, turns ``OPERATOR(pg_catalog.~)``
into regex matches, converts PostgreSQL array literals, inlines bind parameters, and replaces system
functions (``format_type``, ``pg_get_userbyid``, ``current_setting``, ``quote_ident``,
``has_table_privilege``...) by DuckDB macros or constants. Result column names follow PostgreSQL's
rules (``?column?``, function names, cast target names) and result column types are inferred from
the statement (catalog column types, casts, function return types) because DuckDB's own types
cannot say ``name``, ``oid``, ``"char"`` or ``regclass``; clients decode by those type OIDs.

``SHOW`` answers from the settings table with PostgreSQL's column naming; ``SET`` / ``RESET`` are
accepted as no-ops (the answer is stateless: one catalog serves every session).

Table OIDs are derived from the measurement name (a CRC), so they stay stable while measurements
come and go, and clients that cache an OID between two statements (psql's ``\\d``) find it again.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import duckdb
import sqlglot
from sqlglot import exp

from rusts.pgcatalog import generated_data as _data
from rusts.pgcatalog.columns import _Typer, _pg_of_duck
from rusts.pgcatalog.facts import (
    Columns, _CATALOG_NAMES, _Catalog, _FIRST_USER_OID, _FORMAT_TYPE, _FUNCTION_NAMES, _NAMESPACES,
    _OID_SLOTS, _SETTINGS, _SETTINGS_COLS, _SETTING_BY_LOWER, _assign_oids, _get_catalog,
    _quote_ident, to_pg_text,
)
from rusts.pgcatalog.rewrite import _ARRAY_CAST, _Rewriter
from rusts.pgcatalog.facts import SERVER_VERSION, SERVER_VERSION_NUM, TYPE_OIDS, CatalogSchema
from rusts.errors import QueryError, RustsError, UnknownTableError, UnsupportedError


__all__ = [
    "CatalogSchema",
    "SERVER_VERSION",
    "SERVER_VERSION_NUM",
    "TYPE_OIDS",
    "is_catalog_query",
    "relation_oid",
    "run_catalog_query",
    "to_pg_text",
]

# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------

_QUICK_WORDS = ("pg_", "information_schema", "version", "current_", "session_user", "show", "set", "privilege",
                "format_type", "quote_ident", "description", "to_reg", "user", "parse_ident", "discard", "config")
_STRIP_LITERALS = re.compile(r"'(?:[^']|'')*'")
_STRIP_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)
_RUSTS_SHOW = re.compile(
    r"^\s*show\s+(tables|columns|tag\s+keys|tag\s+values|field\s+keys|measurements|retention\s+policies"
    r"|databases|series|stats|diagnostics|queries|users|shards)\b",
    re.I,
)
_FUNCTION_WORDS = re.compile(
    r"\b(version|current_schema|current_schemas|current_database|current_setting|set_config|current_user"
    r"|session_user|current_catalog|current_role|has_\w+_privilege|pg_\w+|format_type|obj_description"
    r"|col_description|shobj_description|quote_ident|to_regclass|to_regtype|to_regnamespace|parse_ident"
    r"|array_upper|array_lower)\b",
    re.I,
)
_PG_WORDS = re.compile(r"\b(pg_catalog|information_schema|pg_\w+)\b", re.I)


def is_catalog_query(sql: str) -> bool:
    """Whether ``sql`` is answered by :func:`run_catalog_query` rather than the SQL engine.

    True for statements that read ``pg_catalog`` / ``information_schema`` / ``pg_*`` relations or
    call system functions (``version()``, ``current_schema()``, ``current_setting()``,
    ``has_table_privilege``...), for ``SHOW <setting>`` and for ``SET`` / ``RESET``. False for rusts'
    own ``SHOW TABLES`` / ``SHOW COLUMNS`` / ``SHOW TAG KEYS`` / ``SHOW MEASUREMENTS`` /
    ``SHOW RETENTION POLICIES`` and for everything else. Cheap: a regex pre-check first.
    """
    lowered = sql.lower()
    if not any(w in lowered for w in _QUICK_WORDS):
        return False
    text = _STRIP_COMMENTS.sub(" ", sql)
    head = text.lstrip().lstrip("(").lstrip()
    word = head[:8].lower()
    if word.startswith("show"):
        return not _RUSTS_SHOW.match(head)
    if word.startswith(("set ", "set\t", "set\n", "reset", "discard")):
        return True
    if not word.startswith(("select", "with", "values", "table")):
        return False
    text = _STRIP_LITERALS.sub("''", text)
    for m in _PG_WORDS.finditer(text):
        w = m.group(1).lower()
        if w in ("pg_catalog", "information_schema") or w in _CATALOG_NAMES:
            return True
    for m in _FUNCTION_WORDS.finditer(text):
        w = m.group(1).lower()
        if w.startswith("pg_") and w not in _FUNCTION_NAMES:
            continue
        return True
    return False


def relation_oid(name: str, tables: Mapping[str, object] | None = None) -> int:
    """The OID rusts gives measurement ``name`` (stable across calls; pgwire's RowDescription
    table OID). ``tables`` (all measurement names) resolves the rare hash collision."""
    if tables is None:
        return _FIRST_USER_OID + 4 * (zlib.crc32(name.encode()) % _OID_SLOTS)
    return _assign_oids(sorted(tables))[name]


def run_catalog_query(sql: str, tables: dict[str, list[tuple[str, str]]], *, database: str = "rusts",
                      user: str = "rusts", params: Sequence | None = None) -> tuple[Columns, list[list]]:
    """Answer one catalog statement.

    Args:
        sql: one statement for which :func:`is_catalog_query` is true.
        tables: measurement -> [(column, pg type name)], ``time`` first.
        database: the connection's database name (``current_database()``, ``pg_database``).
        user: the connected user (``current_user``, owner of every relation, OID 10).
        params: bind parameter values for ``$1..$n`` (Python values; text is accepted for any type).

    Returns:
        ``(columns, rows)``: ``[(name, pg type name)]`` and rows as lists of Python values (None =
        NULL; arrays are lists). ``SET`` / ``RESET`` return ``([], [])``.

    Raises:
        QueryError: (with a SQLSTATE) for statements that cannot be answered;
        UnknownTableError (42P01) for unknown relations; UnsupportedError (0A000).
    """
    try:
        return _run(sql, tables, database, user, params)
    except RustsError:
        raise
    except duckdb.Error as e:
        raise _translate_duckdb_error(e) from None
    except (sqlglot.errors.SqlglotError, RecursionError) as e:
        raise QueryError(f"syntax error in catalog query: {str(e).splitlines()[0][:200]}", "42601") from None
    except Exception as e:  # noqa: BLE001 - the contract: only rusts errors leave this module
        raise QueryError(f"cannot answer catalog query: {type(e).__name__}: {e}", "XX000") from None


# ---------------------------------------------------------------------------------------------
# SHOW / SET
# ---------------------------------------------------------------------------------------------

_SHOW = re.compile(r"^\s*show\s+(.+?)\s*;?\s*$", re.I | re.S)
_SHOW_ALIASES = {
    "transaction isolation level": "transaction_isolation",
    "time zone": "timezone",
    "session authorization": "session_authorization",
}


def _show(sql: str, user: str) -> tuple[Columns, list[list]]:
    m = _SHOW.match(_STRIP_COMMENTS.sub(" ", sql))
    if not m:
        raise QueryError("syntax error in SHOW", "42601")
    what = re.sub(r"\s+", " ", m.group(1).strip().strip('"')).lower()
    what = _SHOW_ALIASES.get(what, what)
    if what == "all":
        return ([("name", "text"), ("setting", "text"), ("description", "text")],
                [[r[0], r[1], r[_SETTINGS_COLS.index("short_desc")]] for r in sorted(_SETTINGS)])
    if what == "session_authorization":
        return [("session_authorization", "text")], [[user]]
    found = _SETTING_BY_LOWER.get(what)
    if found is None:
        raise QueryError(f'unrecognized configuration parameter "{what}"', "42704")
    name, value = found
    return [(name, "text")], [[value]]



# ---------------------------------------------------------------------------------------------
# execution
# ---------------------------------------------------------------------------------------------

_SET = re.compile(r"^\s*(set|reset|discard)\b", re.I)


def _run(sql: str, tables: dict, database: str, user: str, params: Sequence | None) -> tuple[Columns, list[list]]:
    text = _STRIP_COMMENTS.sub(" ", sql).strip().rstrip(";").strip()
    if _SET.match(text):
        return [], []
    if re.match(r"show\b", text, re.I):
        return _show(text, user)
    catalog = _get_catalog(tables)
    prepared = _ARRAY_CAST.sub(lambda m: f"{m.group(1)}{m.group(2)}_{m.group(3).strip(chr(34))}", text)
    trees = [t for t in sqlglot.parse(prepared, read="postgres") if t is not None]
    if len(trees) != 1:
        raise QueryError("exactly one catalog statement expected", "42601")
    tree = trees[0]
    if not isinstance(tree, exp.Query):
        raise UnsupportedError(f"{type(tree).__name__.upper()} is not supported on the catalog")
    shape = _Typer(tree).columns(tree)
    rewritten = _Rewriter(catalog, database, user, params).rewrite(tree.copy())
    duck_sql = rewritten.sql("duckdb")
    cur = catalog.conn.cursor()
    try:
        result = cur.execute(duck_sql)
        rows = result.fetchall()
        desc = result.description or []
    finally:
        cur.close()
    columns: Columns = []
    for i, d in enumerate(desc):
        name, typ = shape[i] if i < len(shape) else (None, None)
        columns.append((name or str(d[0]).lower(), typ or _pg_of_duck(d[1])))
    out_rows = [[_output(v, columns[i][1], catalog) for i, v in enumerate(r)] for r in rows]
    return columns, out_rows


def _output(value: Any, pg: str, catalog: _Catalog) -> Any:
    if value is None:
        return None
    if pg in ("regclass", "regtype", "regnamespace") and isinstance(value, int):
        return _reg_display(pg, value, catalog)
    if pg in ("oid", "regclass", "regtype", "regnamespace", "regrole", "xid", "cid") and isinstance(value, str):
        return value
    if pg in ("int2", "int4", "int8", "oid") and isinstance(value, float) and value == int(value):
        return int(value)
    if pg in ("text", "name", "varchar", "char", "bpchar") and not isinstance(value, str):
        return to_pg_text(value, "text")
    return value


def _reg_display(pg: str, oid: int, catalog: _Catalog) -> str:
    """How PostgreSQL shows a reg* value: the object's name (``-`` for 0, the number if unknown)."""
    if oid == 0:
        return "-"
    if pg == "regtype":
        if oid in _FORMAT_TYPE:
            return _FORMAT_TYPE[oid]
        names = {v + 1: k for k, v in catalog.oids.items()}
        return _quote_ident(names[oid]) if oid in names else str(oid)
    if pg == "regnamespace":
        return next((n for n, o in _NAMESPACES.items() if o == oid), str(oid))
    for name, o in catalog.oids.items():
        if o == oid:
            return _quote_ident(name)
    for (nsp, rel), (o, _k, _t, _c) in _data.RELATIONS.items():
        if o == oid:
            return rel if nsp == "pg_catalog" else f"{nsp}.{rel}"
    return str(oid)


_DUCK_ERRORS = {
    duckdb.CatalogException: ("42P01", UnknownTableError),
    duckdb.BinderException: ("42703", QueryError),
    duckdb.ParserException: ("42601", QueryError),
    duckdb.ConversionException: ("22P02", QueryError),
    duckdb.InvalidInputException: ("22023", QueryError),
}


def _translate_duckdb_error(e: duckdb.Error) -> QueryError:
    from rusts.security.sandbox import is_permission_error, map_permission_error

    if is_permission_error(e):
        return map_permission_error(e)
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "unrecognized configuration parameter" in msg:
        return QueryError(msg.split("Error: ", 1)[-1], "42704")
    for cls, (state, err) in _DUCK_ERRORS.items():
        if isinstance(e, cls):
            return err(f"catalog query failed: {msg}", state)
    return QueryError(f"catalog query failed: {msg}", "XX000")
