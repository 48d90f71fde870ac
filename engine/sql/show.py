"""Schema discovery: ``SHOW ...`` statements and the ``information_schema`` tables.

* ``SHOW TABLES`` / ``SHOW MEASUREMENTS``: one row per measurement, column ``name``.
* ``SHOW COLUMNS FROM m``: ``name``, ``type`` (pg type name) and ``kind`` (time/tag/field).
* ``SHOW FIELD KEYS FROM m``: ``name``, ``type``. ``SHOW TAG KEYS FROM m``: ``name``.
* ``SHOW TAG VALUES FROM m WITH KEY = 'host'`` (or ``WITH KEY IN ('a', 'b')``): ``key``, ``value``.
* ``information_schema.tables`` / ``information_schema.columns``: Arrow tables registered in the
  DuckDB path, so any SQL over them works (``WHERE table_name = 'cpu'``, joins, ...).

sqlglot does not parse these SHOW forms, so they are recognised here with a small tokenizer-free
grammar before parsing; anything else starting with SHOW is an :class:`UnsupportedError`.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa

from rusts.errors import QueryError, UnknownTableError, UnsupportedError
from rusts.sql.output import KIND_FIELD, KIND_TAG, SqlColumn, SqlOutput, make_output
from rusts.sql.translate import Catalog

_IDENT = r'(?:"((?:[^"]|"")+)"|([A-Za-z_][A-Za-z0-9_.$-]*))'
_SHOW_TABLES = re.compile(r"^\s*SHOW\s+(TABLES|MEASUREMENTS)\s*;?\s*$", re.I)
_SHOW_FROM = re.compile(r"^\s*SHOW\s+(COLUMNS|FIELD\s+KEYS|TAG\s+KEYS)\s+(?:FROM|IN)\s+" + _IDENT + r"\s*;?\s*$", re.I)
_SHOW_TAG_VALUES = re.compile(
    r"^\s*SHOW\s+TAG\s+VALUES\s+(?:FROM|IN)\s+" + _IDENT +
    r"\s+WITH\s+KEY\s*(=|IN)\s*(.+?)\s*;?\s*$", re.I | re.S)
_STR = re.compile(r"'((?:[^']|'')*)'|\"((?:[^\"]|\"\")*)\"")


def is_show(text: str) -> bool:
    return bool(re.match(r"^\s*SHOW\b", text, re.I))


def _obj(values: list) -> np.ndarray:
    a = np.empty(len(values), dtype=object)
    a[:] = values
    return a


def _ident(quoted: str | None, bare: str | None) -> tuple[str, bool]:
    if quoted is not None:
        return quoted.replace('""', '"'), True
    return bare, False


def _table(cat: Catalog, name: str, quoted: bool) -> str:
    m = cat.resolve_table(name, quoted)
    if m is None:
        raise UnknownTableError(f'relation "{name}" does not exist')
    return m


def columns_of(cat: Catalog, m: str) -> list[tuple[str, str, str]]:
    """``(name, pg type, kind)`` of every column of ``m``: time, tags, then fields."""
    out = [("time", "timestamp", "time")]
    out += [(t, "text", KIND_TAG) for t in cat.tag_keys(m)]
    out += [(f, ft.sql_name, KIND_FIELD) for f, ft in cat.fields(m).items()]
    return out


def run_show(text: str, cat: Catalog, db=None) -> SqlOutput:
    """Answer a SHOW statement from the catalog (no data is read)."""
    m = _SHOW_TABLES.match(text)
    if m:
        names = cat.measurements()
        return make_output([SqlColumn("name", "text")], [_obj(names)], [None], "_tables", show=True)
    m = _SHOW_FROM.match(text)
    if m:
        what = re.sub(r"\s+", " ", m.group(1).upper())
        meas = _table(cat, *_ident(m.group(2), m.group(3)))
        if what == "COLUMNS":
            rows = columns_of(cat, meas)
            return make_output([SqlColumn("name", "text"), SqlColumn("type", "text"), SqlColumn("kind", "text")],
                               [_obj([r[0] for r in rows]), _obj([r[1] for r in rows]), _obj([r[2] for r in rows])],
                               [None, None, None], "_columns", show=True)
        if what == "FIELD KEYS":
            f = cat.fields(meas)
            return make_output([SqlColumn("name", "text"), SqlColumn("type", "text")],
                               [_obj(list(f)), _obj([t.sql_name for t in f.values()])], [None, None],
                               "_field_keys", show=True)
        return make_output([SqlColumn("name", "text")], [_obj(cat.tag_keys(meas))], [None], "_tag_keys", show=True)
    m = _SHOW_TAG_VALUES.match(text)
    if m:
        meas = _table(cat, *_ident(m.group(1), m.group(2)))
        op, rest = m.group(3).upper(), m.group(4)
        if op == "IN":
            if not (rest.startswith("(") and rest.endswith(")")):
                raise QueryError("SHOW TAG VALUES ... WITH KEY IN expects a parenthesised list")
            rest = rest[1:-1]
        keys = [a or b for a, b in _STR.findall(rest)]
        if not keys:
            keys = [k.strip() for k in rest.split(",") if k.strip()]
        if op == "=" and len(keys) != 1:
            raise QueryError("SHOW TAG VALUES ... WITH KEY = expects one key")
        out_k, out_v = [], []
        for k in keys:
            for v in tag_values(db, cat, meas, k):
                out_k.append(k)
                out_v.append(v)
        return make_output([SqlColumn("key", "text"), SqlColumn("value", "text")],
                           [_obj(out_k), _obj(out_v)], [None, None], "_tag_values", show=True)
    word = " ".join(text.split()[:3])
    raise UnsupportedError(f"{word} is not supported (try SHOW TABLES, SHOW COLUMNS FROM m, SHOW TAG KEYS "
                           f"FROM m, SHOW TAG VALUES FROM m WITH KEY = 'k')")


def tag_values(db, cat: Catalog, m: str, key: str) -> list[str]:
    """Distinct values of tag ``key`` in measurement ``m``, sorted."""
    if db is None:
        return []
    idx = db.index
    fn = getattr(idx, "tag_values", None)
    if fn is not None:
        try:
            return sorted(fn(m, key))
        except TypeError:
            pass
    vals = set()
    for sid in np.asarray(idx.series_of(m)).tolist():
        v = dict(idx.tags_of(int(sid))).get(key)
        if v is not None:
            vals.add(v)
    return sorted(vals)


def information_schema(cat: Catalog, which: str) -> pa.Table:
    """``information_schema.tables`` or ``.columns`` as an Arrow table."""
    ms = cat.measurements()
    if which == "tables":
        return pa.table({
            "table_catalog": pa.array(["rusts"] * len(ms), pa.string()),
            "table_schema": pa.array(["public"] * len(ms), pa.string()),
            "table_name": pa.array(ms, pa.string()),
            "table_type": pa.array(["BASE TABLE"] * len(ms), pa.string()),
        })
    tn, cn, pos, dt, kind = [], [], [], [], []
    for m in ms:
        for i, (name, t, k) in enumerate(columns_of(cat, m)):
            tn.append(m)
            cn.append(name)
            pos.append(i + 1)
            dt.append({"timestamp": "timestamp without time zone", "float8": "double precision",
                       "int8": "bigint", "text": "text", "bool": "boolean", "numeric": "numeric"}[t])
            kind.append(k)
    n = len(tn)
    return pa.table({
        "table_catalog": pa.array(["rusts"] * n, pa.string()),
        "table_schema": pa.array(["public"] * n, pa.string()),
        "table_name": pa.array(tn, pa.string()),
        "column_name": pa.array(cn, pa.string()),
        "ordinal_position": pa.array(pos, pa.int32()),
        "data_type": pa.array(dt, pa.string()),
        "is_nullable": pa.array(["NO" if c == "time" else "YES" for c in cn], pa.string()),
        "column_kind": pa.array(kind, pa.string()),
    })
