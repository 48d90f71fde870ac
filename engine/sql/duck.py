"""The general SQL path: scan into Arrow, run the statement in an in-process DuckDB.

Everything the query model cannot express (OR/NOT, field predicates, arithmetic, HAVING, CASE,
COUNT(DISTINCT), subqueries, CTEs, UNION, JOINs, window functions, DISTINCT ON) runs here:

1. Every measurement the statement reads is scanned with a raw :class:`~rusts.query.model.Query` that
   selects only the fields the statement names and carries the time range and the simple tag
   predicates of the WHERE conjunction of the SELECT that reads it (pushdown). The predicates stay
   in the SQL too, so pushdown only has to keep a superset of the rows.
2. The scan (:mod:`rusts.sql.scan`, decoded blocks cached) becomes an Arrow table - ``time``
   TIMESTAMP_NS, one dictionary-encoded string column per tag key (built from the per-series tags,
   no per-row Python), one column per field - registered (zero-copy) in a fresh DuckDB cursor.
3. The statement is rewritten with sqlglot from PostgreSQL to DuckDB: ``time_bucket('5 minutes',
   time)`` gets an explicit epoch origin (the fast path's buckets), ``PERCENTILE_95(x)`` becomes
   ``quantile_cont(x, 0.95)``, ``MEAN`` ``avg``, ``FIRST``/``LAST`` ``arg_min``/``arg_max`` by time,
   ``now()`` the statement's single timestamp, and time literals compared with ``time`` (ISO strings,
   ns integers) exact ns timestamps. Top-level select items are aliased with their output names.
4. DuckDB runs in a worker thread under :func:`rusts.messages.cpu_limiter`; its Arrow answer is
   converted to a :class:`~rusts.sql.output.SqlOutput`.

Why DuckDB rather than own operators: measured in docs/sql.md. The scan dominates; DuckDB's
relational work on a million rows costs a few milliseconds and covers all of SQL with correct NULL
semantics, which a home-grown operator set would take months to match.
"""

from __future__ import annotations

import re
import threading

import attrs
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp

from rusts.errors import QueryError, UnknownColumnError, UnknownTableError, UnsupportedError
from rusts.query.model import MAX_TIME, MIN_TIME, Query, TagFilter
from rusts.sql.output import KIND_FIELD, KIND_TAG, KIND_TIME, SqlColumn, SqlOutput, make_output
from rusts.sql.translate import (TIME_COLUMN, CalendarInterval, Catalog, analyze_where, column_resolver,
                                 eval_interval, eval_time, naming_select, output_name, percentile_of,
                                 single_table)

_DB_LOCK = threading.Lock()
_DUCK = None


_MEMORY_LIMIT_MB: int | None = None


def configure(memory_limit_mb: int | None) -> None:
    """DuckDB's working-memory limit (``query.memory_limit_mb``: past it a statement fails with
    an out-of-memory error instead of the process growing). Takes effect when the process-wide
    connection is made (the first general-path statement); the configuration is locked after."""
    global _MEMORY_LIMIT_MB
    _MEMORY_LIMIT_MB = memory_limit_mb


def _duck():
    """The process-wide in-memory DuckDB database (one cursor per statement), sandboxed
    (:mod:`rusts.security.sandbox`)."""
    global _DUCK
    with _DB_LOCK:
        if _DUCK is None:
            from rusts.security.sandbox import connect

            settings = [("TimeZone", "'UTC'")]
            if _MEMORY_LIMIT_MB:
                settings.append(("memory_limit", f"'{int(_MEMORY_LIMIT_MB)}MB'"))
            _DUCK = connect(tuple(settings))  # external access off, configuration locked
        return _DUCK


# --------------------------------------------------------------------------- analysis

@attrs.define
class Scan:
    """One measurement read by a statement: registered name, pushdown and needed fields."""

    measurement: str
    view: str
    start: int = MIN_TIME
    end: int = MAX_TIME
    tag_filters: tuple[TagFilter, ...] | None = None
    fields: set[str] = attrs.field(factory=set)
    all_fields: bool = False
    refs: int = 0


@attrs.frozen(eq=False)
class Plan:
    """A rewritten statement ready for DuckDB plus the scans it needs."""

    sql: str
    scans: tuple[Scan, ...]
    info_tables: tuple[str, ...]
    extra: dict
    measurement: str
    tag_names: frozenset


def _cte_names(ast: exp.Expression) -> set[str]:
    return {c.alias_or_name.lower() for c in ast.find_all(exp.CTE)}


def plan_general(ast: exp.Expression, cat: Catalog, now_ns: int, extra_tables: dict | None = None,
                 names: list[str] | None = None) -> Plan:
    """Analyse and rewrite a parsed statement for DuckDB (pure, no I/O).

    ``names`` are the output names of the top-level select items (:func:`item_names`).
    """
    ast = ast.copy()
    extra_tables = {k.lower(): v for k, v in (extra_tables or {}).items()}
    _alias_outputs(ast, names)
    ctes = _cte_names(ast)
    scans: dict[str, Scan] = {}
    info: list[str] = []
    extra: dict = {}
    tag_names: set[str] = set()
    first_measurement = ""
    tables = [t for t in ast.find_all(exp.Table) if isinstance(t.this, exp.Identifier)]
    for t in tables:
        name = t.name
        db = t.args.get("db")
        dbn = db.name.lower() if db is not None else ""
        if not dbn and name.lower() in ctes:
            continue
        full = f"{dbn}.{name.lower()}" if dbn else name.lower()
        if full in extra_tables or (not dbn and name.lower() in extra_tables):
            key = full if full in extra_tables else name.lower()
            view = f"__rusts_x_{re.sub(r'[^a-z0-9_]', '_', key)}"
            extra[view] = extra_tables[key]
            _rename(t, view)
            continue
        if dbn == "information_schema" and name.lower() in ("tables", "columns"):
            view = f"__rusts_is_{name.lower()}"
            if view not in info:
                info.append(view)
            _rename(t, view)
            continue
        if dbn and dbn not in ("public", "rusts"):
            raise UnknownTableError(f'relation "{t.sql(dialect="postgres")}" does not exist')
        m = cat.resolve_table(name, bool(t.this.args.get("quoted")))
        if m is None:
            raise UnknownTableError(f'relation "{name}" does not exist')
        first_measurement = first_measurement or m
        tag_names.update(cat.tag_keys(m))
        sc = scans.get(m)
        if sc is None:
            sc = scans[m] = Scan(m, f"__rusts_m{len(scans)}")
        _pushdown(sc, t, cat, m, now_ns)
        _rename(t, sc.view)
    _needed_fields(ast, cat, scans)
    _default_time_order(ast)
    _rewrite_functions(ast, now_ns)
    try:
        sql = ast.sql(dialect="duckdb")
    except sqlglot.errors.SqlglotError as e:
        raise UnsupportedError(f"cannot translate statement: {e}") from None
    return Plan(sql, tuple(scans.values()), tuple(info), extra, first_measurement, frozenset(tag_names))


def _default_time_order(ast: exp.Expression) -> None:
    """A top-level raw single-table SELECT with LIMIT/OFFSET but no ORDER BY returns the earliest
    rows, like the fast path (and the original): add ``ORDER BY time``."""
    if not isinstance(ast, exp.Select) or ast.args.get("order") is not None:
        return
    if not (ast.args.get("limit") or ast.args.get("offset")):
        return
    if ast.args.get("group") or ast.args.get("distinct") or ast.args.get("having") or ast.args.get("windows"):
        return
    t = single_table(ast)
    if t is None or not t.this.name.startswith("__rusts_m"):
        return
    if any(isinstance(n, (exp.AggFunc, exp.Window)) for n in ast.find_all(exp.AggFunc, exp.Window)):
        return
    ast.set("order", exp.Order(expressions=[exp.Ordered(this=exp.column(TIME_COLUMN, table=t.alias_or_name),
                                                        desc=False, nulls_first=False)]))


def _rename(t: exp.Table, view: str) -> None:
    if not t.alias:
        t.set("alias", exp.TableAlias(this=exp.to_identifier(t.name)))
    t.set("this", exp.to_identifier(view))
    t.set("db", None)
    t.set("catalog", None)


def _pushdown(sc: Scan, t: exp.Table, cat: Catalog, m: str, now_ns: int) -> None:
    sel = t.parent_select
    start, end, filters = MIN_TIME, MAX_TIME, ()
    if sel is not None and single_table(sel) is t:
        where = sel.args.get("where")
        if where is not None:
            b = analyze_where(where.this, column_resolver(cat, m, t), now_ns)
            start, end, filters = b.start, b.end, tuple(b.tag_filters)
    if sc.refs == 0:
        sc.start, sc.end, sc.tag_filters = start, end, filters
    else:
        sc.start, sc.end = min(sc.start, start), max(sc.end, end)
        if sc.tag_filters != filters:
            sc.tag_filters = ()
    sc.refs += 1


def _needed_fields(ast: exp.Expression, cat: Catalog, scans: dict[str, Scan]) -> None:
    star = False
    for s in ast.find_all(exp.Star):
        if isinstance(s.parent, exp.Count):
            continue
        star = True
    names = {c.name.lower() for c in ast.find_all(exp.Column) if not isinstance(c.this, exp.Star)}
    for m, sc in scans.items():
        if star:
            sc.all_fields = True
            sc.fields = set(cat.fields(m))
            continue
        sc.fields = {f for f in cat.fields(m) if f.lower() in names}


def _alias_outputs(ast: exp.Expression, names: list[str] | None) -> None:
    """Alias each top-level select item with its output name (lower-case SQL text)."""
    node = naming_select(ast)
    if node is None:
        return
    if names is not None and len(names) != len(node.expressions):
        names = None
    new = []
    for i, e in enumerate(node.expressions):
        if isinstance(e, (exp.Alias, exp.Column, exp.Star)):
            new.append(e)
        else:
            new.append(exp.alias_(e, names[i] if names else output_name(e), quoted=True))
    node.set("expressions", new)


def _ts_literal(ns: int) -> exp.Expression:
    return exp.Anonymous(this="make_timestamp_ns", expressions=[exp.Literal.number(int(ns))])


def _is_time_col(e: exp.Expression) -> bool:
    return isinstance(e, exp.Column) and e.name.lower() == TIME_COLUMN


def _interval_sql(ns: int) -> exp.Expression:
    us, rem = divmod(ns, 1000)
    if rem:
        raise UnsupportedError("time_bucket intervals finer than a microsecond")
    return sqlglot.parse_one(f"INTERVAL '{us} microseconds'", read="duckdb")


def _time_arg(e: exp.Expression, now_ns: int) -> exp.Expression:
    if isinstance(e, exp.Literal) or isinstance(e, (exp.Cast, exp.TryCast)) and isinstance(e.this, exp.Literal):
        t = eval_time(e, now_ns)
        if t is not None:
            return _ts_literal(t)
    return e


def _rewrite_functions(ast: exp.Expression, now_ns: int) -> None:
    def fn(node: exp.Expression) -> exp.Expression:
        if isinstance(node, (exp.CurrentTimestamp, exp.CurrentDatetime)) or (
                isinstance(node, exp.Anonymous) and node.name.lower() == "now" and not node.expressions):
            return _ts_literal(now_ns)
        if isinstance(node, exp.Anonymous):
            name = node.name.lower()
            args = node.expressions
            p = percentile_of(name)
            if p is not None and len(args) == 1:
                return exp.Anonymous(this="quantile_cont",
                                     expressions=[args[0], exp.Literal.number(p / 100.0)])
            if name == "mean" and len(args) == 1:
                return exp.Avg(this=args[0])
            if name in ("first", "last") and len(args) == 1:
                return _first_last(name, args[0])
            if name in ("time_bucket", "time_bucket_gapfill") and len(args) >= 2:
                return _time_bucket(args, now_ns)
            return node
        if isinstance(node, (exp.First, exp.Last)) and not node.args.get("ignore_nulls"):
            return _first_last("first" if isinstance(node, exp.First) else "last", node.this)
        if isinstance(node, (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)):
            if _is_time_col(node.this):
                node.set("expression", _time_arg(node.expression, now_ns))
            elif _is_time_col(node.expression):
                node.set("this", _time_arg(node.this, now_ns))
            return node
        if isinstance(node, exp.Between) and _is_time_col(node.this):
            node.set("low", _time_arg(node.args["low"], now_ns))
            node.set("high", _time_arg(node.args["high"], now_ns))
            return node
        if isinstance(node, exp.In) and _is_time_col(node.this):
            node.set("expressions", [_time_arg(x, now_ns) for x in node.expressions])
            return node
        return node

    ast.transform(fn, copy=False)


def _first_last(name: str, arg: exp.Expression) -> exp.Expression:
    tcol = exp.column(TIME_COLUMN, table=arg.table if isinstance(arg, exp.Column) and arg.table else None)
    return exp.Anonymous(this="arg_min" if name == "first" else "arg_max", expressions=[arg, tcol])


def _time_bucket(args, now_ns: int) -> exp.Expression:
    iv, ts = args[0], args[1]
    if isinstance(iv, exp.Literal) and iv.is_string or isinstance(iv, exp.Interval):
        try:
            n = eval_interval(iv)
        except CalendarInterval:
            text = iv.this if isinstance(iv, exp.Literal) else iv.sql(dialect="postgres")
            n = None
            iv_expr = exp.Cast(this=exp.Literal.string(text), to=exp.DataType.build("interval")) \
                if isinstance(iv, exp.Literal) else iv
        else:
            if n is None or n <= 0:
                raise QueryError(f"time_bucket: invalid interval {iv.sql(dialect='postgres')}")
            iv_expr = _interval_sql(n)
    else:
        iv_expr = iv
    origin = args[2] if len(args) >= 3 and not isinstance(args[2], exp.Null) else None
    if origin is None or len(args) > 3:
        origin_expr = sqlglot.parse_one("TIMESTAMP '1970-01-01 00:00:00'", read="duckdb")
    else:
        t = eval_time(origin, now_ns)
        origin_expr = _ts_literal(t) if t is not None else origin
    return exp.Anonymous(this="time_bucket", expressions=[iv_expr, ts, origin_expr])


# --------------------------------------------------------------------------- scan -> arrow

def scan_query(sc: Scan) -> Query:
    fields = tuple(sorted(sc.fields))
    return Query(sc.measurement, sc.start, sc.end, tuple(sc.tag_filters or ()), fields)


# --------------------------------------------------------------------------- run

_COL_NOT_FOUND = re.compile(r'Referenced column "([^"]+)" not found')
_TABLE_NOT_FOUND = re.compile(r"Table with name (\S+) does not exist")
_FUNC_NOT_FOUND = re.compile(r"(?:Scalar|Aggregate|Table) Function with name (\S+) does not exist")


def map_duck_error(e: Exception) -> QueryError:
    """A DuckDB exception as the rusts error a client should see (never a 500 for bad SQL)."""
    import duckdb

    from rusts.security.sandbox import is_permission_error, map_permission_error

    if is_permission_error(e):
        return map_permission_error(e)
    if isinstance(e, duckdb.OutOfMemoryException):
        from rusts.errors import QueryLimitError

        return QueryLimitError("query needs more working memory than query.memory_limit_mb allows: "
                               "narrow the time range, select fewer columns or aggregate")
    msg = str(e).split("\n")[0]
    for prefix in ("Binder Error: ", "Catalog Error: ", "Parser Error: ", "Conversion Error: ",
                   "Invalid Input Error: ", "Not implemented Error: ", "Out of Range Error: "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    m = _COL_NOT_FOUND.search(msg)
    if m:
        return UnknownColumnError(f'column "{m.group(1)}" does not exist')
    m = _TABLE_NOT_FOUND.search(msg)
    if m:
        return UnknownTableError(f'relation "{m.group(1)}" does not exist')
    m = _FUNC_NOT_FOUND.search(msg)
    if m:
        return QueryError(f"function {m.group(1)} does not exist", sqlstate="42883")
    if isinstance(e, duckdb.NotImplementedException):
        return UnsupportedError(msg)
    if isinstance(e, (duckdb.ConversionException, duckdb.InvalidInputException, duckdb.OutOfRangeException)):
        return QueryError(msg, sqlstate="22000")
    if isinstance(e, duckdb.BinderException) and "GROUP BY" in msg:
        return QueryError(msg, sqlstate="42803")
    return QueryError(msg)


def run_duck(sql: str, tables: dict[str, pa.Table]) -> pa.Table:
    """Run ``sql`` over the registered Arrow ``tables`` (worker thread)."""
    import duckdb

    from rusts.query.control import current

    cur = _duck().cursor()
    ctl = current()
    # a cancelled or timed-out query interrupts DuckDB at once (from the event loop's thread)
    unregister = ctl.add_interrupter(cur.interrupt) if ctl is not None else None
    try:
        for name, t in tables.items():
            cur.register(name, t)
        try:
            return cur.sql(sql).to_arrow_table()
        except duckdb.Error as e:
            if ctl is not None and ctl.cancelled:
                raise ctl.error() from None
            raise map_duck_error(e) from None
    finally:
        if unregister is not None:
            unregister()
        cur.close()


def _np_of(arr: pa.Array, fill) -> tuple[np.ndarray, np.ndarray | None]:
    valid = None
    if arr.null_count:
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        arr = arr.fill_null(fill)
    return arr.to_numpy(zero_copy_only=False), valid


def from_arrow(table: pa.Table, measurement: str, tag_names: frozenset | set = frozenset(),
               show: bool = False) -> SqlOutput:
    """Convert DuckDB's Arrow answer to a :class:`SqlOutput` (types -> pg names, kinds)."""
    cols, vals, masks = [], [], []
    for name, ch in zip(table.column_names, table.columns):
        arr = ch.combine_chunks() if ch.num_chunks != 1 else ch.chunk(0)
        t = arr.type
        if pa.types.is_dictionary(t):
            arr = arr.dictionary_decode()
            t = arr.type
        if pa.types.is_timestamp(t) or pa.types.is_date(t):
            if pa.types.is_date(t):
                arr = pc.cast(arr, pa.timestamp("s"))
            arr = pc.cast(arr, pa.timestamp("ns", tz=getattr(arr.type, "tz", None)))
            v, m = _np_of(arr.cast(pa.int64()), 0)
            pg, kind = "timestamp", KIND_TIME
        elif pa.types.is_floating(t):
            v, m = _np_of(arr.cast(pa.float64()), 0.0)
            pg, kind = "float8", KIND_FIELD
        elif pa.types.is_integer(t):
            if pa.types.is_uint64(t):
                v, m = _np_of(arr, 0)
                pg = "numeric"
            else:
                v, m = _np_of(arr.cast(pa.int64()), 0)
                pg = "int8" if t.bit_width == 64 else "int4"
            kind = KIND_FIELD
        elif pa.types.is_decimal(t):
            kind = KIND_FIELD
            if t.scale == 0:  # HUGEINT (DuckDB's SUM of integers): exact, as the fast paths
                try:
                    v, m = _np_of(arr.cast(pa.int64()), 0)
                    pg = "int8"
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    try:
                        v, m = _np_of(arr.cast(pa.uint64()), 0)
                        pg = "numeric"
                    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                        from rusts.query.exact import out_of_range
                        raise out_of_range() from None
            else:
                v, m = _np_of(arr.cast(pa.float64(), safe=False), 0.0)
                pg = "numeric"
        elif pa.types.is_boolean(t):
            v, m = _np_of(arr, False)
            pg, kind = "bool", KIND_FIELD
        elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t):
            if pa.types.is_null(t):
                arr = pa.nulls(len(arr), pa.string())
            v, m = _np_of(arr, "")
            v = v.astype(object)
            pg = "text"
            kind = KIND_TAG if name in tag_names else KIND_FIELD
        else:
            lst = arr.to_pylist()
            m = np.array([x is not None for x in lst], dtype=bool)
            v = np.array([str(x) if x is not None else "" for x in lst], dtype=object)
            pg, kind = "text", KIND_FIELD
        cols.append(SqlColumn(name, pg, kind))
        vals.append(v)
        masks.append(m)
    return make_output(cols, vals, masks, measurement, show, "duckdb")
