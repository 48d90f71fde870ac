"""PostgreSQL catalog facts for the emulation: versions, OIDs, types, settings, and the DuckDB catalog
database with its macros and function table (:mod:`rusts.pgcatalog.catalog` explains the mechanism)."""

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
from sqlglot import exp

from rusts.pgcatalog import generated_data as _data
from rusts.errors import (QueryError)


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
