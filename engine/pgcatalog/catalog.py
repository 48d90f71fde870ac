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

import datetime as _dt
import decimal
import math
import re
import threading
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import exp

from rusts.pgcatalog import generated_data as _data
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

SERVER_VERSION = "15.0 (rusts)"
SERVER_VERSION_NUM = 150000
VERSION_STRING = f"PostgreSQL {SERVER_VERSION} on x86_64-pc-linux-gnu, compiled by rusts, 64-bit"

Columns = list[tuple[str, str]]

OWNER_OID = 10  # the bootstrap superuser: the connected user owns everything
DATABASE_OID = 16384
PG_CATALOG_OID = 11
PUBLIC_OID = 2200
_FIRST_USER_OID = 16384
_OID_SLOTS = 1 << 28  # table oid = 16384 + 4 * slot; +1 row type, +2 its array type


class CatalogSchema(Protocol):
    """What the catalog needs from the database, as plain data.

    ``measurements`` maps each measurement to its columns in order: ``time`` (``timestamp``), then
    tag columns (``text``), then field columns (``float8``, ``int8``, ``numeric``, ``text``, ``bool``).
    """

    measurements: dict[str, list[tuple[str, str]]]


# ---------------------------------------------------------------------------------------------
# static facts
# ---------------------------------------------------------------------------------------------

_STATIC_TYPES = _data.STATIC["pg_type"]
_TYPE_COLS = [c for c, _ in _data.RELATIONS[("pg_catalog", "pg_type")][3]]
TYPE_OIDS: dict[str, int] = {r[1]: r[0] for r in _STATIC_TYPES}
"""PostgreSQL type name -> OID for every built-in type (``bool`` 16, ``int8`` 20, ``text`` 25...)."""
_TYPE_ROWS: dict[int, dict[str, Any]] = {r[0]: dict(zip(_TYPE_COLS, r)) for r in _STATIC_TYPES}
_FORMAT_TYPE: dict[int, str] = dict(_data.FORMAT_TYPE)
_NAMESPACES = {r[1]: r[0] for r in _data.STATIC["pg_namespace"]}
_INFO_SCHEMA_OID = _NAMESPACES["information_schema"]

_TYPE_ALIASES = {
    "integer": "int4", "int": "int4", "bigint": "int8", "smallint": "int2", "real": "float4",
    "double precision": "float8", "double": "float8", "float": "float8", "boolean": "bool",
    "character varying": "varchar", "decimal": "numeric", "timestamp without time zone": "timestamp",
    "timestamp with time zone": "timestamptz", "character": "bpchar", "string": "text",
    "time without time zone": "time", "time with time zone": "timetz", '"char"': "char",
}
for _oid, _name in _FORMAT_TYPE.items():
    _TYPE_ALIASES.setdefault(_name, _TYPE_ROWS[_oid]["typname"])

_CATALOG_NAMES = frozenset(rel for (nsp, rel) in _data.RELATIONS if nsp == "pg_catalog")
_INFO_NAMES = frozenset(rel for (nsp, rel) in _data.RELATIONS if nsp == "information_schema")

_SETTINGS_COLS = [c for c, _ in _data.RELATIONS[("pg_catalog", "pg_settings")][3]]
_SETTING_OVERRIDES = {
    "server_version": SERVER_VERSION,
    "server_version_num": str(SERVER_VERSION_NUM),
    "TimeZone": "UTC",
    "log_timezone": "UTC",
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "client_encoding": "UTF8",
    "server_encoding": "UTF8",
    "application_name": "",
    "search_path": '"$user", public',
    "integer_datetimes": "on",
    "standard_conforming_strings": "on",
    "port": "5432",
    "listen_addresses": "*",
    "default_transaction_isolation": "read committed",
    "transaction_isolation": "read committed",
    "transaction_read_only": "off",
    "is_superuser": "on",
}


def _settings_rows() -> list[tuple]:
    rows = []
    idx = {c: i for i, c in enumerate(_SETTINGS_COLS)}
    for r in _data.STATIC["pg_settings"]:
        r = list(r)
        name = r[idx["name"]]
        if name in _SETTING_OVERRIDES:
            r[idx["setting"]] = _SETTING_OVERRIDES[name]
            r[idx["reset_val"]] = _SETTING_OVERRIDES[name]
        rows.append(tuple(r))
    return rows


_SETTINGS = _settings_rows()
_SETTING_BY_LOWER: dict[str, tuple[str, str]] = {
    r[0].lower(): (r[0], r[1]) for r in _SETTINGS
}
# settings that are session state rather than pg_settings rows
_SETTING_BY_LOWER.setdefault("session_authorization", ("session_authorization", "rusts"))


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


def to_pg_text(value: Any, type_name: str) -> str | None:
    """``value`` in PostgreSQL's text output format for ``type_name`` (None stays None)."""
    if value is None:
        return None
    if type_name in ("int2vector", "oidvector"):
        return " ".join(str(v) for v in value)
    if isinstance(value, (list, tuple)):
        elem = type_name[1:] if type_name.startswith("_") else "text"
        return "{" + ",".join(_array_elem(to_pg_text(v, elem)) for v in value) + "}"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        if value == int(value) and abs(value) < 1e16:
            return str(int(value))
        return repr(value)
    if isinstance(value, _dt.datetime):
        text = value.isoformat(sep=" ")
        if value.tzinfo is not None:
            text = value.astimezone(_dt.timezone.utc).replace(tzinfo=None).isoformat(sep=" ") + "+00"
        return text
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dict):
        import json

        return json.dumps(value)
    return str(value)


def _array_elem(text: str | None) -> str:
    if text is None:
        return "NULL"
    if text == "" or re.search(r'[{},"\\\s]', text) or text.upper() == "NULL":
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


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
# the DuckDB catalog
# ---------------------------------------------------------------------------------------------

_DUCK_TYPES = {
    "bool": "BOOLEAN", "int2": "SMALLINT", "int4": "INTEGER", "int8": "BIGINT", "float4": "REAL",
    "float8": "DOUBLE", "numeric": "DOUBLE", "oid": "BIGINT", "regclass": "BIGINT", "regtype": "BIGINT",
    "regnamespace": "BIGINT", "regrole": "BIGINT", "regproc": "VARCHAR", "regprocedure": "VARCHAR",
    "xid": "BIGINT", "xid8": "BIGINT", "cid": "BIGINT", "timestamptz": "TIMESTAMPTZ",
    "timestamp": "TIMESTAMP", "date": "DATE", "int2vector": "SMALLINT[]", "oidvector": "BIGINT[]",
}
_ARROW_TYPES = {
    "BOOLEAN": pa.bool_(), "SMALLINT": pa.int16(), "INTEGER": pa.int32(), "BIGINT": pa.int64(),
    "REAL": pa.float32(), "DOUBLE": pa.float64(), "VARCHAR": pa.string(),
    "TIMESTAMPTZ": pa.timestamp("us", tz="UTC"), "TIMESTAMP": pa.timestamp("us"), "DATE": pa.date32(),
}


def _duck_type(pg: str) -> str:
    if pg in _DUCK_TYPES:
        return _DUCK_TYPES[pg]
    if pg.startswith("_"):
        return _duck_type(pg[1:]) + "[]"
    return "VARCHAR"


def _arrow_type(duck: str) -> pa.DataType:
    if duck.endswith("[]"):
        return pa.list_(_arrow_type(duck[:-2]))
    return _ARROW_TYPES[duck]


def _coerce(value: Any, duck: str) -> Any:
    if value is None:
        return None
    if duck.endswith("[]"):
        if isinstance(value, str):
            value = _parse_pg_array(value) if value.startswith("{") else value.split()
        return [_coerce(v, duck[:-2]) for v in value]
    if duck == "VARCHAR":
        return value if isinstance(value, str) else to_pg_text(value, "text")
    if duck in ("SMALLINT", "INTEGER", "BIGINT"):
        return int(value)
    if duck in ("REAL", "DOUBLE"):
        return float(value)
    if duck == "BOOLEAN":
        return value if isinstance(value, bool) else str(value).lower() in ("t", "true", "on", "1")
    return value


def _schema_name(nsp: str) -> str:
    return "pgc" if nsp == "pg_catalog" else "pgis"


def _assign_oids(names: Sequence[str]) -> dict[str, int]:
    used: set[int] = set()
    out = {}
    for name in names:
        slot = zlib.crc32(name.encode()) % _OID_SLOTS
        while slot in used:
            slot = (slot + 1) % _OID_SLOTS
        used.add(slot)
        out[name] = _FIRST_USER_OID + 4 * slot
    return out


class _Catalog:
    """One DuckDB database with the emulation tables; dynamic rows follow ``tables``."""

    def __init__(self) -> None:
        self.conn = duckdb.connect(":memory:")
        self.lock = threading.Lock()
        self.tables_key: object = None
        self.oids: dict[str, int] = {}
        self._create()
        from rusts.security.sandbox import lock_down

        lock_down(self.conn)  # no client SQL reaches the host's files, network or settings

    def _create(self) -> None:
        c = self.conn
        c.execute("SET threads = 1")
        c.execute("CREATE SCHEMA pgc")
        c.execute("CREATE SCHEMA pgis")
        for (nsp, rel), (_oid, _kind, _rt, cols) in _data.RELATIONS.items():
            body = ", ".join(f'"{n}" {_duck_type(t)}' for n, t in cols)
            c.execute(f'CREATE TABLE {_schema_name(nsp)}."{rel}" ({body})')
        for rel, rows in _data.STATIC.items():
            if rel in ("pg_type", "pg_settings", "pg_namespace"):
                continue
            self._insert("pg_catalog", rel, rows)
        self._insert("pg_catalog", "pg_settings", _SETTINGS)
        self._insert("pg_catalog", "pg_namespace", _data.STATIC["pg_namespace"])
        c.execute("CREATE TABLE pgc.pgx_format_type (oid BIGINT, name VARCHAR)")
        c.execute("CREATE TABLE pgc.pgx_keywords (word VARCHAR)")
        c.executemany("INSERT INTO pgc.pgx_keywords VALUES (?)", [[w] for w in sorted(_data.KEYWORDS)])
        for sql in _MACROS:
            c.execute(sql)
        self._create_static_rows()

    def _insert(self, nsp: str, rel: str, rows: Sequence[Sequence[Any]]) -> None:
        cols = _data.RELATIONS[(nsp, rel)][3]
        if not rows:
            return
        arrays = {}
        for i, (name, pg) in enumerate(cols):
            duck = _duck_type(pg)
            arrays[name] = pa.array([_coerce(r[i], duck) for r in rows], type=_arrow_type(duck))
        self._insert_arrow(f'{_schema_name(nsp)}."{rel}"', pa.table(arrays))

    def _insert_arrow(self, target: str, batch: pa.Table) -> None:
        # registered explicitly: the sandbox turns DuckDB's replacement scans of Python variables off
        self.conn.register("__rusts_batch", batch)
        try:
            self.conn.execute(f"INSERT INTO {target} SELECT * FROM __rusts_batch")
        finally:
            self.conn.unregister("__rusts_batch")

    def _insert_dicts(self, nsp: str, rel: str, rows: list[dict[str, Any]]) -> None:
        names = [n for n, _ in _data.RELATIONS[(nsp, rel)][3]]
        self._insert(nsp, rel, [[r.get(n) for n in names] for r in rows])

    def _create_static_rows(self) -> None:
        """Rows that never change: catalog relations, built-in types, schemata, roles."""
        t = _data.TEMPLATES
        classes, attrs = [], []
        for (nsp, rel), (oid, kind, reltype, cols) in _data.RELATIONS.items():
            nsp_oid = PG_CATALOG_OID if nsp == "pg_catalog" else _INFO_SCHEMA_OID
            classes.append({**t["pg_class"], "oid": oid, "relname": rel, "relnamespace": nsp_oid,
                            "reltype": reltype, "relkind": kind, "relnatts": len(cols),
                            "relfilenode": oid if kind == "r" else 0, "relam": 2 if kind == "r" else 0,
                            "reltoastrelid": 0, "relacl": None})
            attrs.extend(self._attributes(oid, cols))
        self._insert_dicts("pg_catalog", "pg_class", classes)
        self._insert_dicts("pg_catalog", "pg_attribute", attrs)
        self._insert("pg_catalog", "pg_type", _STATIC_TYPES)
        self._insert_dicts("information_schema", "schemata", t["schemata"])
        for rel in ("pg_database", "pg_user"):
            self._insert_dicts("pg_catalog", rel, [t[rel]])
        for rel in ("pg_roles", "pg_authid"):
            role = t[rel]
            self._insert_dicts("pg_catalog", rel, [role] + [
                {**role, "oid": oid, "rolname": name, "rolsuper": False, "rolcreaterole": False, "rolcreatedb": False,
                 "rolcanlogin": False, "rolreplication": False, "rolbypassrls": False}
                for oid, name in _PREDEFINED_ROLES])
        self.conn.executemany("INSERT INTO pgc.pgx_format_type VALUES (?, ?)", list(_FORMAT_TYPE.items()))

    def sync(self, tables: Mapping[str, list[tuple[str, str]]]) -> None:
        """Make the measurement rows match ``tables`` (a no-op when unchanged)."""
        key = tuple((name, tuple(map(tuple, cols))) for name, cols in sorted(tables.items()))
        if key == self.tables_key:
            return
        with self.lock:
            if key == self.tables_key:
                return
            oids = _assign_oids([k for k, _ in key])
            c = self.conn
            c.execute("BEGIN")
            try:
                c.execute(f"DELETE FROM pgc.pg_class WHERE relnamespace = {PUBLIC_OID}")
                c.execute(f"DELETE FROM pgc.pg_attribute WHERE attrelid >= {_FIRST_USER_OID}")
                c.execute(f"DELETE FROM pgc.pg_type WHERE typnamespace = {PUBLIC_OID}")
                c.execute(f"DELETE FROM pgc.pgx_format_type WHERE oid >= {_FIRST_USER_OID}")
                c.execute("DELETE FROM pgis.tables")
                c.execute("DELETE FROM pgis.columns")
                self._fill(dict(key), oids)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
            self.oids = oids
            self.tables_key = key

    def _fill(self, tables: dict[str, tuple], oids: dict[str, int]) -> None:
        t = _data.TEMPLATES
        classes, attrs, types, itables, icols, formats = [], [], [], [], [], []
        for name, cols in tables.items():
            oid = oids[name]
            classes.append({**t["pg_class"], "oid": oid, "relname": name, "reltype": oid + 1,
                            "relnatts": len(cols), "relfilenode": oid, "reltoastrelid": 0})
            types.append({**t["pg_type"], "oid": oid + 1, "typname": name, "typrelid": oid,
                          "typarray": oid + 2})
            types.append({**t["pg_type_array"], "oid": oid + 2, "typname": "_" + name, "typelem": oid + 1})
            formats += [(oid + 1, _quote_ident(name)), (oid + 2, _quote_ident(name) + "[]")]
            attrs.extend(self._attributes(oid, cols))
            itables.append({**t["tables"], "table_name": name})
            for i, (col, pg) in enumerate(cols, 1):
                tmpl = t.get("columns:" + pg, t["columns:text"])
                icols.append({**tmpl, "table_name": name, "column_name": col, "ordinal_position": i,
                              "dtd_identifier": str(i)})
        self._insert_dicts("pg_catalog", "pg_class", classes)
        self._insert_dicts("pg_catalog", "pg_attribute", attrs)
        self._insert_dicts("pg_catalog", "pg_type", types)
        self._insert_dicts("information_schema", "tables", itables)
        self._insert_dicts("information_schema", "columns", icols)
        if formats:
            self._insert_arrow("pgc.pgx_format_type",
                               pa.table({"oid": pa.array([f[0] for f in formats], pa.int64()),
                                         "name": pa.array([f[1] for f in formats], pa.string())}))

    @staticmethod
    def _attributes(relid: int, cols: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        out = []
        t = _data.TEMPLATES
        for num, (col, pg) in enumerate(cols, 1):
            tmpl = t.get("pg_attribute:" + pg)
            if tmpl is None:
                trow = _TYPE_ROWS.get(TYPE_OIDS.get(pg, 25), _TYPE_ROWS[25])
                tmpl = {**t["pg_attribute:text"], "atttypid": trow["oid"], "attlen": trow["typlen"],
                        "attbyval": trow["typbyval"], "attalign": trow["typalign"],
                        "attstorage": trow["typstorage"], "attcollation": trow["typcollation"]}
            out.append({**tmpl, "attrelid": relid, "attname": col, "attnum": num})
        return out


_PREDEFINED_ROLES = [
    (6171, "pg_database_owner"), (6181, "pg_read_all_data"), (6182, "pg_write_all_data"), (3373, "pg_monitor"),
    (3374, "pg_read_all_settings"), (3375, "pg_read_all_stats"), (3377, "pg_stat_scan_tables"),
    (4569, "pg_read_server_files"), (4570, "pg_write_server_files"), (4571, "pg_execute_server_program"),
    (4200, "pg_signal_backend"), (4544, "pg_checkpoint"),
]

_catalog: _Catalog | None = None
_catalog_lock = threading.Lock()


def _get_catalog(tables: Mapping[str, list[tuple[str, str]]]) -> _Catalog:
    global _catalog
    if _catalog is None:
        with _catalog_lock:
            if _catalog is None:
                _catalog = _Catalog()
    _catalog.sync(tables)
    return _catalog


def _quote_ident(name: str) -> str:
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) and name not in _data.KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


_KEYWORD_LIST = "[" + ", ".join("'" + w + "'" for w in sorted(_data.KEYWORDS)) + "]"

# DuckDB macros standing in for PostgreSQL system functions (prefixed pgx_ so DuckDB's own
# pg-compatibility functions of the same names never answer instead).
_MACROS = [
    f"""CREATE MACRO pgx_quote_ident(x) AS CASE WHEN regexp_full_match(x, '[a-z_][a-z0-9_$]*')
        AND NOT list_contains({_KEYWORD_LIST}, x) THEN x ELSE '"' || replace(x, '"', '""') || '"' END""",
    """CREATE MACRO pgx_format_type(t, m) AS
        coalesce((SELECT pgx_f.name FROM pgc.pgx_format_type pgx_f WHERE pgx_f.oid = t), CASE WHEN t IS NULL THEN NULL
        ELSE '???' END)""",
    """CREATE MACRO pgx_regclass_out(x) AS
        CASE WHEN x = 0 THEN '-' ELSE coalesce((SELECT pgx_quote_ident(pgx_c.relname) FROM pgc.pg_class pgx_c
        WHERE pgx_c.oid = x), CAST(x AS VARCHAR)) END""",
    """CREATE MACRO pgx_regtype_out(x) AS
        CASE WHEN x = 0 THEN '-' ELSE coalesce((SELECT pgx_f.name FROM pgc.pgx_format_type pgx_f WHERE pgx_f.oid = x),
        CAST(x AS VARCHAR)) END""",
    """CREATE MACRO pgx_regnamespace_out(x) AS
        coalesce((SELECT pgx_n.nspname FROM pgc.pg_namespace pgx_n WHERE pgx_n.oid = x), CAST(x AS VARCHAR))""",
    """CREATE MACRO pgx_table_is_visible(x) AS
        coalesce((SELECT pgx_c.relnamespace IN (11, 2200) FROM pgc.pg_class pgx_c WHERE pgx_c.oid = x), false)""",
    """CREATE MACRO pgx_type_is_visible(x) AS
        coalesce((SELECT pgx_t.typnamespace IN (11, 2200) FROM pgc.pg_type pgx_t WHERE pgx_t.oid = x), false)""",
    """CREATE MACRO pgx_current_setting(x) AS coalesce(
        (SELECT pgx_s.setting FROM pgc.pg_settings pgx_s WHERE lower(pgx_s.name) = lower(x)),
        error('unrecognized configuration parameter "' || x || '"'))""",
    """CREATE MACRO pgx_current_setting_missing_ok(x) AS
        (SELECT pgx_s.setting FROM pgc.pg_settings pgx_s WHERE lower(pgx_s.name) = lower(x))""",
    """CREATE MACRO pgx_size_pretty(x) AS CASE
        WHEN x IS NULL THEN NULL
        WHEN abs(x) < 10240 THEN CAST(x AS VARCHAR) || ' bytes'
        WHEN abs(x) < 10485760 THEN CAST(round(x / 1024) AS BIGINT) || ' kB'
        WHEN abs(x) < 10737418240 THEN CAST(round(x / 1048576) AS BIGINT) || ' MB'
        ELSE CAST(round(x / 1073741824) AS BIGINT) || ' GB' END""",
    """CREATE MACRO pgx_array_upper(a, d) AS CASE WHEN a IS NULL OR len(a) = 0 THEN NULL ELSE len(a) END""",
    """CREATE MACRO pgx_array_lower(a, d) AS CASE WHEN a IS NULL OR len(a) = 0 THEN NULL ELSE 1 END""",
    """CREATE MACRO pgx_array_length(a, d) AS CASE WHEN a IS NULL OR len(a) = 0 THEN NULL ELSE len(a) END""",
    """CREATE MACRO pgx_parse_ident(x) AS list_transform(string_split(x, '.'),
        lambda p: CASE WHEN p LIKE '"%"' THEN replace(p[2:-2], '""', '"') ELSE lower(p) END)""",
    """CREATE MACRO pgx_get_userbyid(x, u) AS CASE WHEN x = 10 THEN u ELSE coalesce(
        (SELECT pgx_r.rolname FROM pgc.pg_roles pgx_r WHERE pgx_r.oid = x),
        'unknown (OID=' || CAST(x AS VARCHAR) || ')') END""",
    """CREATE MACRO pgx_to_regtype(x) AS
        (SELECT pgx_t.oid FROM pgc.pg_type pgx_t WHERE pgx_t.typname = x OR pgx_t.oid = (SELECT pgx_f.oid FROM pgc.pgx_format_type pgx_f
         WHERE pgx_f.name = x LIMIT 1) LIMIT 1)""",
    """CREATE MACRO pgx_to_regclass(x) AS
        (SELECT pgx_c.oid FROM pgc.pg_class pgx_c WHERE pgx_c.relname = x OR 'public.' || pgx_c.relname = x LIMIT 1)""",
    """CREATE MACRO pgx_encoding_to_char(x) AS CASE WHEN x = 6 THEN 'UTF8' WHEN x = 0 THEN 'SQL_ASCII' ELSE '' END""",
]

# PostgreSQL function name -> (replacement, return type). A replacement is a DuckDB function name
# (arguments kept), or a callable building the replacement from (args, session).
def _const(value: Any) -> Any:
    return lambda args, s: _literal(value)


_FUNCTIONS: dict[str, tuple[Any, str]] = {
    "version": (_const(VERSION_STRING), "text"),
    "current_database": (lambda a, s: _literal(s[0]), "name"),
    "current_catalog": (lambda a, s: _literal(s[0]), "name"),
    "current_schema": (_const("public"), "name"),
    "current_schemas": (lambda a, s: _literal(["pg_catalog", "public"] if _truthy(a) else ["public"]), "_name"),
    "current_user": (lambda a, s: _literal(s[1]), "name"),
    "session_user": (lambda a, s: _literal(s[1]), "name"),
    "current_role": (lambda a, s: _literal(s[1]), "name"),
    "user": (lambda a, s: _literal(s[1]), "name"),
    "pg_get_userbyid": (lambda a, s: _call("pgx_get_userbyid", a[0], _literal(s[1])), "name"),
    "format_type": (lambda a, s: _call("pgx_format_type", *a[:2]), "text"),
    "current_setting": (lambda a, s: _current_setting(a), "text"),
    "set_config": (lambda a, s: a[1], "text"),
    "quote_ident": ("pgx_quote_ident", "text"),
    "parse_ident": (lambda a, s: _call("pgx_parse_ident", a[0]), "_text"),
    "pg_table_is_visible": ("pgx_table_is_visible", "bool"),
    "pg_type_is_visible": ("pgx_type_is_visible", "bool"),
    "pg_collation_is_visible": (_const(True), "bool"),
    "pg_function_is_visible": (_const(True), "bool"),
    "pg_opclass_is_visible": (_const(True), "bool"),
    "pg_operator_is_visible": (_const(True), "bool"),
    "pg_conversion_is_visible": (_const(True), "bool"),
    "pg_ts_config_is_visible": (_const(True), "bool"),
    "pg_statistics_obj_is_visible": (_const(True), "bool"),
    "pg_get_expr": (_const(None), "text"),
    "pg_get_constraintdef": (_const(None), "text"),
    "pg_get_indexdef": (_const(None), "text"),
    "pg_get_viewdef": (_const(None), "text"),
    "pg_get_triggerdef": (_const(None), "text"),
    "pg_get_ruledef": (_const(None), "text"),
    "pg_get_partkeydef": (_const(None), "text"),
    "pg_get_statisticsobjdef_columns": (_const(None), "text"),
    "pg_get_function_arguments": (_const(None), "text"),
    "pg_get_function_identity_arguments": (_const(None), "text"),
    "pg_get_function_result": (_const(None), "text"),
    "pg_get_serial_sequence": (_const(None), "text"),
    "pg_relation_is_publishable": (_const(False), "bool"),
    "obj_description": (_const(None), "text"),
    "col_description": (_const(None), "text"),
    "shobj_description": (_const(None), "text"),
    "pg_table_size": (_const(0), "int8"),
    "pg_relation_size": (_const(0), "int8"),
    "pg_total_relation_size": (_const(0), "int8"),
    "pg_indexes_size": (_const(0), "int8"),
    "pg_database_size": (_const(0), "int8"),
    "pg_size_pretty": ("pgx_size_pretty", "text"),
    "pg_encoding_to_char": ("pgx_encoding_to_char", "name"),
    "pg_backend_pid": (_const(0), "int4"),
    "pg_is_in_recovery": (_const(False), "bool"),
    "pg_postmaster_start_time": (lambda a, s: _call("now"), "timestamptz"),
    "pg_conf_load_time": (lambda a, s: _call("now"), "timestamptz"),
    "txid_current": (_const(1), "int8"),
    "pg_current_xact_id": (_const(1), "int8"),
    "inet_server_addr": (_const(None), "inet"),
    "inet_server_port": (_const(5432), "int4"),
    "inet_client_addr": (_const(None), "inet"),
    "pg_tablespace_location": (_const(""), "text"),
    "pg_get_keywords": (_const(None), "record"),
    "to_regtype": ("pgx_to_regtype", "regtype"),
    "to_regclass": ("pgx_to_regclass", "regclass"),
    "array_upper": ("pgx_array_upper", "int4"),
    "array_lower": ("pgx_array_lower", "int4"),
    "array_length": ("pgx_array_length", "int4"),
    "pg_has_role": (_const(True), "bool"),
    "row_security_active": (_const(False), "bool"),
}
for _priv in ("table", "schema", "database", "column", "any_column", "function", "sequence", "type",
              "language", "tablespace", "foreign_data_wrapper", "server"):
    _FUNCTIONS[f"has_{_priv}_privilege"] = (_const(True), "bool")

_FUNCTIONS["json_build_object"] = ("json_object", "json")
_FUNCTIONS["_pg_expandarray"] = (lambda a, s: _expandarray(a[0]), "record")
_FUNCTION_NAMES = frozenset(_FUNCTIONS)


def _expandarray(arg: exp.Expression) -> exp.Expression:
    """information_schema._pg_expandarray(a): one row (x, n) per element."""
    tmpl = exp.maybe_parse("unnest(list_transform(__a__, lambda pgx_v, pgx_i: {'x': pgx_v, 'n': pgx_i}))", dialect="duckdb")
    return tmpl.transform(lambda n: arg if isinstance(n, exp.Column) and n.name == "__a__" else n, copy=False)


def _is_expandarray(fn: exp.Expression) -> bool:
    return isinstance(fn, exp.Unnest | exp.Explode) and "list_transform" in fn.sql("duckdb").lower() and \
        "'x'" in fn.sql("duckdb")

# sqlglot parses some PostgreSQL functions into typed nodes: their PostgreSQL names
_NODE_NAMES: dict[type, str] = {
    exp.CurrentUser: "current_user", exp.CurrentSchema: "current_schema", exp.CurrentDatabase: "current_database",
    exp.CurrentCatalog: "current_catalog", exp.SessionUser: "session_user", exp.CurrentSchemas: "current_schemas",
}
for _cls_name, _pg_name in (("CurrentRole", "current_role"), ("Version", "version")):
    if hasattr(exp, _cls_name):
        _NODE_NAMES[getattr(exp, _cls_name)] = _pg_name


def _current_setting(args: Sequence[exp.Expression]) -> exp.Expression:
    missing_ok = len(args) > 1 and _truthy(args[1:])
    if isinstance(args[0], exp.Literal) and args[0].is_string:
        found = _SETTING_BY_LOWER.get(args[0].this.lower())
        if found is None:
            if missing_ok:
                return exp.Null()
            raise QueryError(f'unrecognized configuration parameter "{args[0].this}"', "42704")
        return exp.Literal.string(found[1])
    return _call("pgx_current_setting_missing_ok" if missing_ok else "pgx_current_setting", args[0])


def _truthy(args: Sequence[exp.Expression]) -> bool:
    if not args:
        return False
    a = args[0]
    if isinstance(a, exp.Boolean):
        return bool(a.this)
    if isinstance(a, exp.Literal):
        return str(a.this).lower() in ("t", "true", "on", "1", "yes")
    return False


def _call(name: str, *args: exp.Expression) -> exp.Expression:
    return exp.Anonymous(this=name, expressions=list(args))


def _literal(value: Any) -> exp.Expression:
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            return exp.cast(exp.Literal.string(str(value)), "DOUBLE")
        return exp.Literal.number(str(value))
    if isinstance(value, (list, tuple)):
        return exp.Array(expressions=[_literal(v) for v in value])
    if isinstance(value, _dt.datetime):
        return exp.cast(exp.Literal.string(value.isoformat(sep=" ")),
                        "TIMESTAMPTZ" if value.tzinfo else "TIMESTAMP")
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return exp.Literal.string(str(value))


# ---------------------------------------------------------------------------------------------
# statement rewrite
# ---------------------------------------------------------------------------------------------

_ARRAY_CAST = re.compile(r"(::\s*|\bAS\s+)((?:pg_catalog\s*\.\s*)?)(\"?[A-Za-z_][A-Za-z0-9_]*\"?)\s*\[\s*\]", re.I)
_REG_TYPES = ("regclass", "regtype", "regproc", "regprocedure", "regnamespace", "regrole", "regoper",
              "regoperator", "regconfig", "regdictionary", "regcollation")


def _pg_type_name(dt: exp.Expression) -> str:
    """Canonical PostgreSQL type name of a sqlglot type node (``_x`` for arrays)."""
    text = dt.sql("postgres").strip().lower()
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\bpg_catalog\s*\.\s*", "", text)
    arr = ""
    while text.endswith("[]"):
        text, arr = text[:-2].strip(), "_"
    text = re.sub(r"\(.*\)", "", text).strip()
    if text == '"char"':
        return arr + "char"
    text = text.strip('"')
    if text.startswith("_") and text[1:] in TYPE_OIDS:
        return text
    if text == "char":
        text = "bpchar"
    return arr + _TYPE_ALIASES.get(text, text)


def _parse_pg_array(text: str) -> list[Any]:
    """A one-dimensional PostgreSQL array literal (``{a,"b c",NULL}``) as a list of str/None."""
    text = text.strip()
    if not (text.startswith("{") and text.endswith("}")):
        raise QueryError(f'malformed array literal: "{text}"', "22P02")
    body = text[1:-1]
    out: list[Any] = []
    i, n = 0, len(body)
    while i < n:
        while i < n and body[i] == " ":
            i += 1
        if i >= n:
            break
        if body[i] == '"':
            i += 1
            buf = []
            while i < n and body[i] != '"':
                if body[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(body[i])
                i += 1
            i += 1
            out.append("".join(buf))
        else:
            j = body.find(",", i)
            j = n if j < 0 else j
            item = body[i:j].strip()
            out.append(None if item.upper() == "NULL" else item)
            i = j
        while i < n and body[i] in " ":
            i += 1
        if i < n and body[i] == ",":
            i += 1
    return out


class _Rewriter:
    """Rewrites one parsed PostgreSQL statement for the DuckDB emulation."""

    def __init__(self, catalog: _Catalog, database: str, user: str, params: Sequence | None) -> None:
        self.catalog = catalog
        self.session = (database, user)
        self.params = list(params or [])
        self.ctes: set[str] = set()

    def param(self, node: exp.Expression) -> exp.Expression:
        idx = int(node.this.this if isinstance(node.this, exp.Literal) else node.name) - 1
        if idx < 0 or idx >= len(self.params):
            raise QueryError(f"there is no parameter ${idx + 1}", "42P02")
        return _literal(self.params[idx])

    def rewrite(self, tree: exp.Expression) -> exp.Expression:
        for cte in tree.find_all(exp.CTE):
            self.ctes.add(cte.alias_or_name.lower())
        return self._walk(tree)

    def _walk(self, node: exp.Expression) -> exp.Expression:
        """Bottom-up rewrite: children first, so replacements see rewritten arguments."""
        for key, value in list(node.args.items()):
            if isinstance(value, exp.Expression):
                node.set(key, self._walk(value))
            elif isinstance(value, list):
                node.set(key, [self._walk(v) if isinstance(v, exp.Expression) else v for v in value])
        new = self._pre(node)
        if new is not node:
            return new
        return self._node(node)

    # parameters and escape strings first: later casts see literals
    def _pre(self, node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Parameter) or isinstance(node, exp.Placeholder) and node.name.isdigit():
            return self.param(node)
        if isinstance(node, exp.ByteString):
            return exp.Literal.string(node.this)
        if isinstance(node, exp.Collate):
            return node.this
        if isinstance(node, exp.Dot) and isinstance(node.this, exp.Identifier) and \
                node.this.name.lower() in ("pg_catalog", "information_schema") and \
                not isinstance(node.expression, exp.Identifier):
            return node.expression
        return node

    def _node(self, node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Table):
            return self._table(node)
        if isinstance(node, exp.Column):
            return self._column(node)
        if isinstance(node, exp.Cast):
            return self._cast(node)
        if isinstance(node, exp.Operator):
            return self._operator(node)
        if isinstance(node, exp.Anonymous):
            return self._function(node.name.lower(), node.expressions, node)
        if type(node) in _NODE_NAMES:
            args = [a for a in node.args.values() if isinstance(a, exp.Expression)]
            return self._function(_NODE_NAMES[type(node)], args, node)
        if isinstance(node, (exp.EQ, exp.NEQ)):
            return self._array_compare(node)
        if isinstance(node, exp.DPipe) and any(isinstance(x, exp.Array) for x in (node.this, node.expression)):
            return _call("list_concat", _call("coalesce", node.this, exp.Array(expressions=[])),
                         _call("coalesce", node.expression, exp.Array(expressions=[])))
        return node

    def _table(self, node: exp.Table) -> exp.Expression:
        if not isinstance(node.this, exp.Identifier):
            return self._table_function(node)
        db = node.db.lower() if node.db else ""
        name = node.name.lower() if not node.this.quoted else node.name
        if node.catalog:
            raise UnsupportedError("cross-database references are not implemented")
        if db == "pg_catalog" or (not db and name in _CATALOG_NAMES and name not in self.ctes):
            if name not in _CATALOG_NAMES:
                raise UnknownTableError(f'relation "pg_catalog.{name}" does not exist', "42P01")
            return self._relation(node, "pgc", name)
        if db == "information_schema":
            if name not in _INFO_NAMES:
                raise UnknownTableError(f'relation "information_schema.{name}" does not exist', "42P01")
            return self._relation(node, "pgis", name)
        if not db and name in self.ctes:
            return node
        raise UnknownTableError(f'relation "{node.sql("postgres")}" is not a catalog relation', "42P01")

    def _table_function(self, node: exp.Table) -> exp.Expression:
        """A function in FROM: PostgreSQL names its single column after the alias, and accepts
        scalar functions there (one row)."""
        node.set("db", None)
        fn = node.this
        alias = node.args.get("alias")
        srf = isinstance(fn, (exp.Unnest, exp.Explode, exp.ExplodingGenerateSeries, exp.GenerateSeries)) or (
            isinstance(fn, exp.Anonymous) and fn.name.lower() in ("generate_series", "generate_subscripts", "unnest")
        ) or _is_expandarray(fn)
        if not srf:
            name = alias.name if alias is not None and alias.name else self.name_of_function(fn)
            col = alias.columns[0] if alias is not None and alias.columns else exp.to_identifier(name)
            sub = exp.select(exp.alias_(fn, col, copy=False), copy=False)
            return exp.Subquery(this=sub, alias=exp.TableAlias(this=exp.to_identifier(name)))
        if alias is not None and alias.name and not alias.columns and not _is_expandarray(fn):
            alias.set("columns", [exp.to_identifier(alias.name)])
        return node

    @staticmethod
    def name_of_function(fn: exp.Expression) -> str:
        return fn.name.lower() if isinstance(fn, exp.Anonymous) else _NODE_FUNC_NAMES.get(type(fn), "f")

    def _relation(self, node: exp.Table, schema: str, name: str) -> exp.Expression:
        database, user = self.session
        subst = _SESSION_COLUMNS.get((schema, name))
        if subst and (database != "rusts" or user != "rusts"):
            repl = ", ".join(
                f"{_literal(user if v == 'user' else database).sql('duckdb')} AS \"{c}\"" for c, v in subst)
            sub = exp.maybe_parse(f'(SELECT * REPLACE ({repl}) FROM {schema}."{name}")', dialect="duckdb")
            alias = node.args.get("alias") or exp.TableAlias(this=exp.to_identifier(name))
            return exp.Subquery(this=sub.this if isinstance(sub, exp.Subquery) else sub, alias=alias)
        node.set("this", exp.to_identifier(name, quoted=True))
        node.set("db", exp.to_identifier(schema))
        return node

    def _column(self, node: exp.Column) -> exp.Expression:
        db = node.args.get("db")
        if db is not None and db.name.lower() in ("pg_catalog", "information_schema"):
            node.set("db", exp.to_identifier("pgc" if db.name.lower() == "pg_catalog" else "pgis"))
            return node
        if not node.table and not node.this.quoted and node.name.lower() in (
                "user", "current_role", "current_user", "session_user", "current_catalog", "current_schema"):
            return self._function(node.name.lower(), [], node)
        return node

    def _function(self, name: str, args: list[exp.Expression], node: exp.Expression) -> exp.Expression:
        spec = _FUNCTIONS.get(name)
        if spec is None:
            return node
        repl = spec[0]
        if isinstance(repl, str):
            return _call(repl, *args)
        return repl(args, self.session)

    def _operator(self, node: exp.Operator) -> exp.Expression:
        op = str(node.args.get("operator") or "").lower().replace(" ", "")
        op = op.removeprefix("pg_catalog.")
        left, right = node.this, node.expression
        if op == "~":
            return exp.RegexpLike(this=left, expression=right)
        if op == "!~":
            return exp.Not(this=exp.RegexpLike(this=left, expression=right))
        if op == "~*":
            return exp.RegexpILike(this=left, expression=right)
        if op == "!~*":
            return exp.Not(this=exp.RegexpILike(this=left, expression=right))
        if op in ("=", "<>", "!=", "<", ">", "<=", ">="):
            cls = {"=": exp.EQ, "<>": exp.NEQ, "!=": exp.NEQ, "<": exp.LT, ">": exp.GT, "<=": exp.LTE,
                   ">=": exp.GTE}[op]
            return cls(this=left, expression=right)
        raise UnsupportedError(f"operator {op} is not supported in catalog queries")

    def _array_compare(self, node: exp.Expression) -> exp.Expression:
        for side in ("this", "expression"):
            v = node.args.get(side)
            if isinstance(v, exp.Literal) and v.is_string and v.this.startswith("{") and v.this.endswith("}"):
                try:
                    node.set(side, _literal(_parse_pg_array(v.this)))
                except QueryError:
                    pass
        return node

    def _cast(self, node: exp.Cast) -> exp.Expression:
        target = _pg_type_name(node.to)
        arg = node.this
        literal = arg.this if isinstance(arg, exp.Literal) and arg.is_string else None
        if target in _REG_TYPES:
            return self._reg_cast(target, arg, literal, node)
        if target.startswith("_") or target in ("int2vector", "oidvector"):
            if literal is not None:
                items = _parse_pg_array(literal) if literal.startswith("{") else literal.split()
                duck = _duck_type(target)
                return exp.cast(_literal([_coerce(i, duck[:-2]) for i in items]), duck)
            return exp.cast(arg, _duck_type(target), copy=False)
        if target in ("oid", "xid", "cid") and literal is not None:
            return exp.Literal.number(int(literal))
        if target in ("bool",) and literal is not None:
            return exp.Boolean(this=literal.strip().lower() in ("t", "true", "on", "1", "yes", "y"))
        return exp.cast(arg, _duck_type(target) if target in _DUCK_TYPES or target.startswith("_")
                        else _DUCK_CAST.get(target, "VARCHAR"), copy=False)

    def _reg_cast(self, target: str, arg: exp.Expression, literal: str | None,
                  node: exp.Cast) -> exp.Expression:
        if target in ("regproc", "regprocedure"):  # stored as names in the emulation
            return exp.Literal.string(literal.split(".")[-1].split("(")[0]) if literal is not None else arg
        if literal is not None:
            arg = exp.Literal.number(self._reg_lookup(target, literal))
        displayed = _is_displayed(node)
        if isinstance(arg, exp.Literal) and not displayed:  # a number: the oid itself
            return arg
        if not displayed:
            return exp.cast(arg, "BIGINT", copy=False)
        fn = {"regclass": "pgx_regclass_out", "regtype": "pgx_regtype_out",
              "regnamespace": "pgx_regnamespace_out"}.get(target)
        if fn is None:
            return exp.cast(arg, "VARCHAR", copy=False)
        return _call(fn, arg)

    def _reg_lookup(self, target: str, text: str) -> int:
        if text.strip().isdigit():
            return int(text)
        if target == "regclass":
            name = _split_qualified(text)
            if name[-1] in self.catalog.oids and (len(name) == 1 or name[0] == "public"):
                return self.catalog.oids[name[-1]]
            for (nsp, rel), (oid, _k, _t, _c) in _data.RELATIONS.items():
                if rel == name[-1] and (len(name) == 1 and nsp == "pg_catalog" or name[0] == nsp):
                    return oid
            raise UnknownTableError(f'relation "{text}" does not exist', "42P01")
        if target == "regtype":
            t = _pg_type_name(exp.DataType.build(text, dialect="postgres", udt=True))
            if t in TYPE_OIDS:
                return TYPE_OIDS[t]
            if t in self.catalog.oids:
                return self.catalog.oids[t] + 1
            raise QueryError(f'type "{text}" does not exist', "42704")
        if target == "regnamespace":
            if text in _NAMESPACES:
                return _NAMESPACES[text]
            raise QueryError(f'schema "{text}" does not exist', "3F000")
        if target == "regrole":
            return OWNER_OID
        raise UnsupportedError(f"casts to {target} are not supported")


_DUCK_CAST = {"text": "VARCHAR", "varchar": "VARCHAR", "name": "VARCHAR", "char": "VARCHAR", "bpchar": "VARCHAR",
              "json": "JSON", "jsonb": "JSON", "interval": "INTERVAL", "bytea": "BLOB"}

# columns holding the session's database / user name, replaced when they differ from the default
_SESSION_COLUMNS = {
    ("pgc", "pg_database"): [("datname", "database")],
    ("pgc", "pg_roles"): [("rolname", "user")],
    ("pgc", "pg_authid"): [("rolname", "user")],
    ("pgc", "pg_user"): [("usename", "user")],
    ("pgis", "tables"): [("table_catalog", "database")],
    ("pgis", "columns"): [("table_catalog", "database"), ("udt_catalog", "database")],
    ("pgis", "schemata"): [("catalog_name", "database")],
}


def _split_qualified(text: str) -> list[str]:
    parts = re.findall(r'"((?:[^"]|"")*)"|([^."]+)', text)
    return [q.replace('""', '"') if q else u.strip().lower() for q, u in parts]


def _is_displayed(node: exp.Expression) -> bool:
    """Whether a reg* cast's value is shown (select list, ORDER BY, cast to text) not compared."""
    parent = node.parent
    while isinstance(parent, (exp.Paren, exp.Alias)):
        parent = parent.parent
    if isinstance(parent, exp.Cast):
        return _pg_type_name(parent.to) in ("text", "varchar", "name", "bpchar")
    if isinstance(parent, (exp.Select, exp.Ordered, exp.Order)):
        return True
    return False


# ---------------------------------------------------------------------------------------------
# result column names and types (PostgreSQL's FigureColname and the catalog column types)
# ---------------------------------------------------------------------------------------------

_RELATION_COLS: dict[tuple[str, str], list[tuple[str, str]]] = {
    (nsp, rel): cols for (nsp, rel), (_o, _k, _t, cols) in _data.RELATIONS.items()
}
_FUNC_TYPES: dict[str, str] = {name: spec[1] for name, spec in _FUNCTIONS.items()}
_FUNC_TYPES.update({
    "count": "int8", "string_agg": "text", "row_number": "int8", "rank": "int8", "dense_rank": "int8",
    "array_to_string": "text", "replace": "text", "lower": "text", "upper": "text", "concat": "text",
    "btrim": "text", "ltrim": "text", "rtrim": "text", "substring": "text", "trim": "text",
    "string_to_array": "_text", "json_build_object": "json", "json_agg": "json", "to_char": "text",
    "length": "int4", "char_length": "int4", "generate_subscripts": "int4", "now": "timestamptz",
    "bool_and": "bool", "bool_or": "bool", "every": "bool", "quote_literal": "text", "split_part": "text",
    "regexp_replace": "text", "left": "text", "right": "text", "position": "int4", "strpos": "int4",
})
# functions whose result type is their first argument's
_SAME_TYPE = {"min", "max", "coalesce", "nullif", "greatest", "least", "first", "last", "sum", "abs"}
_NODE_FUNC_NAMES: dict[type, str] = {
    exp.Trim: "btrim", exp.Coalesce: "coalesce", exp.Nullif: "nullif", exp.Count: "count", exp.Min: "min",
    exp.Max: "max", exp.Sum: "sum", exp.Avg: "avg", exp.ArrayAgg: "array_agg", exp.StringToArray: "string_to_array",
    exp.RowNumber: "row_number", exp.Lower: "lower", exp.Upper: "upper", exp.Replace: "replace",
    exp.ArraySize: "array_length", exp.LogicalAnd: "bool_and", exp.LogicalOr: "bool_or",
    exp.GroupConcat: "string_agg", exp.Explode: "unnest", exp.Greatest: "greatest", exp.Least: "least",
    exp.Length: "length", exp.Substring: "substring", exp.Concat: "concat", exp.Split: "string_to_array",
    exp.ArrayToString: "array_to_string", exp.JSONObject: "json_build_object",
}
_NODE_FUNC_NAMES.update({cls: name for cls, name in _NODE_NAMES.items()})
_BOOL_NODES = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.And, exp.Or, exp.Not, exp.Is, exp.In,
               exp.Like, exp.ILike, exp.RegexpLike, exp.RegexpILike, exp.Exists, exp.Between, exp.Boolean,
               exp.Any, exp.All, exp.NullSafeEQ, exp.NullSafeNEQ)


def _ident_name(ident: exp.Expression | None) -> str:
    if ident is None:
        return "?column?"
    if isinstance(ident, exp.Identifier):
        return ident.this if ident.quoted else ident.this.lower()
    return ident.name.lower()


class _Typer:
    """Infers PostgreSQL output column names and types of a parsed (original) statement."""

    def __init__(self, tree: exp.Expression) -> None:
        self.ctes: dict[str, exp.Expression] = {}
        for cte in tree.find_all(exp.CTE):
            self.ctes[cte.alias_or_name.lower()] = cte

    def columns(self, q: exp.Expression) -> list[tuple[str, str | None]]:
        if isinstance(q, exp.Subquery):
            return self.columns(q.this)
        if isinstance(q, exp.SetOperation):
            return self.columns(q.this)
        if isinstance(q, exp.Paren):
            return self.columns(q.this)
        if not isinstance(q, exp.Select):
            return []
        sources = self.sources(q)
        out: list[tuple[str, str | None]] = []
        for e in q.expressions:
            if isinstance(e, exp.Star):
                for cols in sources.values():
                    out.extend(cols)
            elif isinstance(e, exp.Column) and isinstance(e.this, exp.Star):
                out.extend(sources.get(e.table.lower(), []))
            elif isinstance(e, exp.Alias):
                out.append((_ident_name(e.args.get("alias")), self.type_of(e.this, sources)))
            else:
                out.append((self.name_of(e), self.type_of(e, sources)))
        return out

    def sources(self, q: exp.Select) -> dict[str, list[tuple[str, str | None]]]:
        out: dict[str, list[tuple[str, str | None]]] = {}
        items = []
        if q.args.get("from_") is not None:
            items.append(q.args["from_"].this)
        elif q.args.get("from") is not None:
            items.append(q.args["from"].this)
        for j in q.args.get("joins") or []:
            items.append(j.this)
        for item in items:
            alias = item.alias_or_name.lower() if item.alias_or_name else ""
            cols: list[tuple[str, str | None]] = []
            if isinstance(item, exp.Table) and isinstance(item.this, exp.Identifier):
                name = item.name.lower()
                db = item.db.lower() if item.db else ""
                if not db and name in self.ctes:
                    cte = self.ctes[name]
                    cols = self.columns(cte.this)
                    names = cte.args.get("alias") and cte.args["alias"].columns
                    if names:
                        cols = [(_ident_name(n), cols[i][1] if i < len(cols) else None) for i, n in enumerate(names)]
                else:
                    nsp = "information_schema" if db == "information_schema" else "pg_catalog"
                    cols = [(c, t) for c, t in _RELATION_COLS.get((nsp, name), [])]
            elif isinstance(item, exp.Subquery):
                cols = self.columns(item.this)
            elif isinstance(item, exp.Table):
                cols = []
            alias_cols = item.args.get("alias") and item.args["alias"].columns
            if alias_cols:
                kinds = [c[1] for c in cols] or ["int4"] * len(alias_cols)
                cols = [(_ident_name(n), kinds[i] if i < len(kinds) else None) for i, n in enumerate(alias_cols)]
            out[alias] = cols
        return out

    def name_of(self, e: exp.Expression) -> str:
        return self._figure(e)[0]

    def _figure(self, e: exp.Expression) -> tuple[str, int]:
        """PostgreSQL's FigureColnameInternal: (name, strength); 2 = a real name, 1 = a type
        name or ``case``, 0 = nothing (``?column?``)."""
        if isinstance(e, exp.Column):
            return _ident_name(e.this), 2
        if isinstance(e, exp.Dot):
            if isinstance(e.expression, exp.Identifier):
                return _ident_name(e.expression), 2
            return self._figure(e.expression)
        if isinstance(e, (exp.Paren, exp.Bracket, exp.Window)):
            return self._figure(e.this)
        if isinstance(e, exp.Cast):
            name, strength = self._figure(e.this)
            if strength >= 2:
                return name, strength
            return _pg_type_name(e.to).lstrip("_"), 1
        if isinstance(e, exp.Case):
            default = e.args.get("default")
            name, strength = self._figure(default) if default is not None else ("?column?", 0)
            return (name, 2) if strength >= 2 else ("case", 1)
        if isinstance(e, exp.If):
            return "case", 1
        if isinstance(e, exp.Array):
            return "array", 2
        if isinstance(e, exp.Exists):
            return "exists", 2
        if isinstance(e, exp.Subquery):
            cols = self.columns(e.this)
            return (cols[0][0], 2) if cols else ("?column?", 0)
        if isinstance(e, exp.Boolean):
            return "bool", 1
        if isinstance(e, exp.Anonymous):
            return e.name.lower(), 2
        if type(e) in _NODE_FUNC_NAMES:
            return _NODE_FUNC_NAMES[type(e)], 2
        if isinstance(e, exp.Func) and not isinstance(e, (exp.Binary, exp.Connector, exp.Not, exp.Neg)):
            return (e.sql_name().lower(), 2) if hasattr(e, "sql_name") else ("?column?", 0)
        return "?column?", 0

    def type_of(self, e: exp.Expression, sources: dict[str, list[tuple[str, str | None]]]) -> str | None:
        if isinstance(e, exp.Column):
            name = _ident_name(e.this)
            if e.table:
                for c, t in sources.get(e.table.lower(), []):
                    if c == name:
                        return t
                return None
            for cols in sources.values():
                for c, t in cols:
                    if c == name:
                        return t
            return None
        if isinstance(e, exp.Paren):
            return self.type_of(e.this, sources)
        if isinstance(e, exp.Cast):
            return _pg_type_name(e.to)
        if isinstance(e, exp.Literal):
            if e.is_string:
                return "text"
            text = str(e.this)
            if re.fullmatch(r"-?\d+", text):
                return "int4" if abs(int(text)) < 2**31 else "int8"
            return "numeric"
        if isinstance(e, exp.Null):
            return "text"
        if isinstance(e, _BOOL_NODES):
            return "bool"
        if isinstance(e, (exp.Case, exp.If)):
            branches = [i.args.get("true") for i in e.args.get("ifs") or []] + [e.args.get("default")]
            if isinstance(e, exp.If):
                branches = [e.args.get("true"), e.args.get("false")]
            for b in branches:
                if b is not None and not isinstance(b, exp.Null):
                    return self.type_of(b, sources)
            return "text"
        if isinstance(e, exp.Subquery):
            cols = self.columns(e.this)
            return cols[0][1] if cols else None
        if isinstance(e, exp.Array):
            if len(e.expressions) == 1 and isinstance(e.expressions[0], (exp.Select, exp.Subquery)):
                cols = self.columns(e.expressions[0])
                return "_" + cols[0][1] if cols and cols[0][1] else None
            if e.expressions:
                t = self.type_of(e.expressions[0], sources)
                return "_" + t if t else None
            return "_text"
        if isinstance(e, exp.Bracket):
            t = self.type_of(e.this, sources)
            if t in ("int2vector",):
                return "int2"
            if t in ("oidvector",):
                return "oid"
            return t[1:] if t and t.startswith("_") else None
        if isinstance(e, exp.DPipe):
            return "text"
        if isinstance(e, exp.Dot) and isinstance(e.expression, exp.Identifier) and \
                "_pg_expandarray" in e.this.sql("postgres").lower():
            return {"n": "int4", "x": "int2"}.get(e.expression.name.lower())
        if isinstance(e, exp.Window):
            return self.type_of(e.this, sources)
        if isinstance(e, (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod)):
            return self.type_of(e.this, sources)
        if isinstance(e, exp.ArrayAgg):
            inner = e.this
            if isinstance(inner, exp.Order):
                inner = inner.this
            t = self.type_of(inner, sources)
            return "_" + t if t else None
        name = self.name_of(e)
        if name in _SAME_TYPE:
            args = [a for a in ([e.this] if e.args.get("this") is not None else []) + list(e.expressions)]
            if args:
                return self.type_of(args[0], sources)
        if name in _FUNC_TYPES:
            return _FUNC_TYPES[name]
        if name == "avg":
            return "numeric"
        return None


_DUCK_TO_PG = {
    "BOOLEAN": "bool", "TINYINT": "int2", "SMALLINT": "int2", "INTEGER": "int4", "BIGINT": "int8",
    "HUGEINT": "numeric", "UTINYINT": "int2", "USMALLINT": "int4", "UINTEGER": "int8", "UBIGINT": "numeric",
    "FLOAT": "float4", "DOUBLE": "float8", "VARCHAR": "text", "DATE": "date", "TIMESTAMP": "timestamp",
    "TIMESTAMP WITH TIME ZONE": "timestamptz", "JSON": "json", "BLOB": "bytea", "INTERVAL": "interval",
}


def _pg_of_duck(duck: str) -> str:
    duck = str(duck)
    if duck.endswith("[]"):
        return "_" + _pg_of_duck(duck[:-2])
    if duck.startswith("DECIMAL"):
        return "numeric"
    return _DUCK_TO_PG.get(duck, "text")


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
