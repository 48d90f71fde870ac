"""SQL statements that change data or lifecycle settings: ``DELETE FROM``, ``DROP TABLE``,
``SHOW RETENTION POLICIES``.

``DELETE FROM m WHERE <conjunction>``: the conjunction may hold time bounds, tag predicates
(=, !=, IN, NOT IN, IS [NOT] NULL, regex) and simple field predicates (=, !=, <, <=, >, >=);
OR, subqueries and expressions are refused with a message naming them, because a delete must say
exactly what it removes. A DELETE without WHERE deletes every point of the measurement.
The points vanish from answers at once (a tombstone) and from disk at the next compaction.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import sqlglot
from sqlglot import exp

from rusts.errors import QueryError, UnknownColumnError, UnknownTableError, UnsupportedError
from rusts.sql.output import KIND_FIELD, SqlColumn, SqlOutput

_DML = re.compile(r"^\s*(delete\b|drop\s+(table|measurement)\b|show\s+retention\s+policies\b)", re.I)


def is_dml(text: str) -> bool:
    return _DML.match(text) is not None


def _output(command: str, names: Sequence[str], types: Sequence[str], values: list[np.ndarray],
            masks: Sequence | None = None) -> SqlOutput:
    cols = tuple(SqlColumn(n, t, KIND_FIELD) for n, t in zip(names, types))
    return SqlOutput(columns=cols, values=tuple(values),
                     masks=tuple(masks) if masks is not None else tuple(None for _ in values),
                     command_tag=command, measurement="_retention_policies" if names else "", show=bool(names),
                     path="dml")


def _parse(text: str) -> exp.Expression:
    try:
        stmts = [s for s in sqlglot.parse(text, dialect="postgres") if s is not None]
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError) as e:
        raise QueryError(f"syntax error: {e}") from None
    if len(stmts) != 1:
        raise UnsupportedError("one statement at a time")
    return stmts[0]


async def run_dml(db, text: str, params: Sequence | None = None) -> SqlOutput:
    from rusts.sql.runner import bind_params

    if re.match(r"^\s*show\s+retention\s+policies\b", text, re.I):
        pols = db.lifecycle.policies.to_json()
        tier = np.array([p["tier_after"] or 0 for p in pols], dtype=np.int64)
        tier_mask = np.array([p["tier_after"] is not None for p in pols], dtype=bool)
        return _output(f"SHOW {len(pols)}", ["name", "measurement", "duration_secs", "tier_after_secs"],
                       ["text", "text", "int8", "int8"],
                       [np.array([p["name"] for p in pols], dtype=object),
                        np.array([p["measurement"] for p in pols], dtype=object),
                        np.array([p["duration"] for p in pols], dtype=np.int64), tier],
                       [None, None, None, None if tier_mask.all() else tier_mask])
    stmt = bind_params(_parse(text), params)
    if isinstance(stmt, exp.Drop):
        kind = str(stmt.args.get("kind") or "").upper()
        if kind not in ("TABLE", ""):
            raise UnsupportedError(f"DROP {kind} is not supported (DROP TABLE drops a measurement)")
        tables = stmt.args.get("tables") or ([stmt.this] if isinstance(stmt.this, exp.Table) else [])
        names = [t.name for t in tables if isinstance(t, exp.Table)]
        if not names:
            raise UnsupportedError("DROP TABLE needs a measurement name")
        for name in names:  # check all first: drop nothing if one is unknown
            if name not in db.measurements() and not stmt.args.get("exists"):
                raise UnknownTableError(f'relation "{name}" does not exist')
        for name in names:
            if name in db.measurements():
                await db.drop_measurement(name)
        return _output("DROP TABLE", [], [], [])
    if isinstance(stmt, exp.Delete):
        return await _delete(db, stmt)
    raise UnsupportedError(f"{stmt.key.upper()} statements are not supported")


async def _delete(db, stmt: exp.Delete) -> SqlOutput:
    from rusts.sql.translate import Catalog, analyze_where, column_resolver, field_predicate

    table = stmt.this
    if not isinstance(table, exp.Table):
        raise UnsupportedError("DELETE needs one measurement: DELETE FROM m WHERE ...")
    if stmt.args.get("using") or stmt.args.get("returning"):
        raise UnsupportedError("DELETE ... USING / RETURNING is not supported")
    cat = Catalog.of_db(db)
    m = cat.resolve_table(table.name, bool(table.this.args.get("quoted")) if table.this else False)
    if m is None:
        raise UnknownTableError(f'relation "{table.name}" does not exist')
    where = stmt.args.get("where")
    cond = where.this if where is not None else None
    resolve = column_resolver(cat, m, table)
    for col in (cond.find_all(exp.Column) if cond is not None else ()):
        if resolve(col) is None:
            raise UnknownColumnError(f'column "{col.name}" does not exist')
    import time

    bounds = analyze_where(cond, resolve, time.time_ns())
    preds = []
    fields = cat.fields(m)
    for c in bounds.rest:
        fp = field_predicate(c, resolve, fields)
        if fp is None or fp[1] not in ("=", "!=", "<", "<=", ">", ">="):
            raise UnsupportedError(
                f"DELETE supports AND-ed time bounds, tag predicates and simple field comparisons; "
                f"not: {c.sql(dialect='postgres')}")
        preds.append({"field": fp[0], "op": fp[1], "value": fp[2]})
    if bounds.end <= bounds.start:
        return _output("DELETE 0", [], [], [])
    out = await db.delete(m, bounds.start, bounds.end, tuple(bounds.tag_filters), tuple(preds))
    n = out.get("points_deleted")
    return _output(f"DELETE {n if n is not None else 0}", [], [], [])
