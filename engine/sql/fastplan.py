"""SQL -> query model: the fast path, plus the pieces both planners share.

The fast path takes a parsed single-table ``SELECT`` that the query model can express exactly
(the original RusTs table: field/tag/time selection, ``*``, a conjunction of tag predicates and
time bounds, the model's aggregates, ``GROUP BY`` tags and one ``time_bucket``, ``ORDER BY``,
``LIMIT``/``OFFSET``) and turns it into a :class:`~rusts.query.model.Query` plus a description of the
output columns. Anything else makes :func:`plan_fast` return None and the statement goes to the
general (DuckDB) path, so a construct outside the table is never answered approximately.

SQL semantics the fast path must keep (checked by the differential test against DuckDB):

* ``tag != 'x'`` and ``tag NOT IN (...)`` are false for a series without that tag (NULL), so they
  translate to the model's NotEq/NotIn *plus* an Exists filter.
* Aggregates over zero rows without GROUP BY still answer one row (COUNT 0, the rest NULL);
  with GROUP BY they answer no rows.
* ``ORDER BY`` on anything but time is applied here after execution (aggregates are small), and
  then ``LIMIT``/``OFFSET``; for raw rows ordered by time both are pushed into the query.
* Time literals: ISO-8601 strings (naive = UTC, nanosecond fractions kept), integers (ns),
  ``now()``/``CURRENT_TIMESTAMP`` +/- ``INTERVAL``, ``'...'::timestamp`` and ``TIMESTAMP '...'``.
  ``now()`` is read once per statement, so every reference agrees.
"""

from __future__ import annotations


import re
from collections.abc import Sequence

import attrs
from sqlglot import exp

from rusts.model import FieldType
from rusts.query.model import AggFunc, Aggregation, Query
from rusts.sql.output import KIND_FIELD, KIND_TAG, KIND_TIME
from rusts.sql.literals import CalendarInterval, eval_interval
from rusts.sql.measurements import Catalog, TIME_COLUMN
from rusts.sql.naming import output_name
from rusts.sql.where import _NUMERIC, _OPS, _const, analyze_where, field_predicate, predicate_tree


# --------------------------------------------------------------------------- fast path plan

_AGG_CLASSES: dict[type, AggFunc] = {
    exp.Count: AggFunc.Count, exp.Sum: AggFunc.Sum, exp.Avg: AggFunc.Mean, exp.Min: AggFunc.Min,
    exp.Max: AggFunc.Max, exp.First: AggFunc.First, exp.Last: AggFunc.Last,
    exp.Stddev: AggFunc.StdDev, exp.StddevSamp: AggFunc.StdDev, exp.Variance: AggFunc.Variance,
    exp.Median: AggFunc.Median,
}
_AGG_NAMES = {"mean": AggFunc.Mean, "avg": AggFunc.Mean, "first": AggFunc.First, "last": AggFunc.Last,
              "stddev": AggFunc.StdDev, "stddev_samp": AggFunc.StdDev, "variance": AggFunc.Variance,
              "var_samp": AggFunc.Variance, "median": AggFunc.Median, "count": AggFunc.Count,
              "sum": AggFunc.Sum, "min": AggFunc.Min, "max": AggFunc.Max}
_PCT = re.compile(r"^percentile_(\d+(?:_\d+)?)$", re.IGNORECASE)
_STRING_OK = (AggFunc.Count, AggFunc.First, AggFunc.Last)


def percentile_of(name: str) -> float | None:
    """``PERCENTILE_95`` -> 95.0 (``PERCENTILE_99_9`` -> 99.9); None if not that form."""
    m = _PCT.match(name)
    if not m:
        return None
    p = float(m.group(1).replace("_", "."))
    return p if 0 <= p <= 100 else None


def agg_call(e: exp.Expression) -> tuple[AggFunc, exp.Expression | None, float | None] | None:
    """``(function, argument, percentile)`` when ``e`` is one of the model's aggregate calls."""
    if isinstance(e, exp.Anonymous):
        name = e.name.lower()
        args = e.expressions
        p = percentile_of(name)
        if p is not None:
            return (AggFunc.Percentile, args[0], p) if len(args) == 1 else None
        f = _AGG_NAMES.get(name)
        if f is None or len(args) != 1:
            return None
        return f, args[0], None
    f = _AGG_CLASSES.get(type(e))
    if f is None:
        return None
    extra = {k for k, v in e.args.items() if v not in (None, [], False) and k not in ("this", "big_int")}
    if extra:
        return None
    return f, e.this, None


def model_aggregate(e: exp.Expression, resolve, fields: dict) -> tuple[AggFunc, str | None, float | None] | None:
    """``(function, field or None for COUNT(*), percentile)`` when ``e`` is an aggregate call the
    query model computes (COUNT(*) / COUNT(time), a field of a type the function accepts)."""
    ac = agg_call(e)
    if ac is None:
        return None
    func, arg, pct = ac
    if isinstance(arg, exp.Star):
        return (func, None, pct) if func == AggFunc.Count else None
    if not isinstance(arg, exp.Column):
        return None
    r = resolve(arg)
    if r is None:
        return None
    if r[0] == KIND_TIME and func == AggFunc.Count:
        return func, None, pct
    if r[0] != KIND_FIELD:
        return None
    if fields[r[1]] in (FieldType.STRING, FieldType.BOOLEAN) and func not in _STRING_OK:
        return None
    return func, r[1], pct


def _bucket_interval(e: exp.Expression, resolve) -> int | None:
    """Interval of ``time_bucket('5 minutes', time)`` / ``date_trunc('hour', time)``, else None."""
    if isinstance(e, exp.Anonymous) and e.name.lower() == "time_bucket" and len(e.expressions) == 2:
        iv, col = e.expressions
        if isinstance(col, exp.Column) and (resolve(col) or ("", ""))[0] == KIND_TIME:
            try:
                n = eval_interval(iv)
            except CalendarInterval:
                return None
            return n if n and n > 0 else None
        return None
    if isinstance(e, exp.TimestampTrunc) and isinstance(e.this, exp.Column):
        if (resolve(e.this) or ("", ""))[0] != KIND_TIME or e.args.get("zone") is not None:
            return None
        unit = (e.args.get("unit").name if e.args.get("unit") is not None else "").lower()
        return {"second": 10**9, "minute": 60 * 10**9, "hour": 3600 * 10**9,
                "day": 86400 * 10**9}.get(unit)
    return None


@attrs.frozen
class OutCol:
    """One fast-path output column and where its values come from."""

    name: str
    kind: str
    pgtype: str
    src: str  # "time" | "tag" | "field" | "agg"
    key: str = ""


@attrs.frozen
class FastPlan:
    """A statement the query model answers exactly, plus the post-processing it needs."""

    query: Query
    outputs: tuple[OutCol, ...]
    sort: tuple[tuple[int, bool, bool], ...] = ()  # (output index, desc, nulls_first)
    limit: int | None = None
    offset: int = 0
    post_slice: bool = False
    residual: tuple = ()  # field predicates (field, op, value) or AND/OR trees of them: the vector path
    having: tuple = ()  # HAVING as a predicate tree over the answer (:func:`having_mask`)


def _agg_type(f: AggFunc, src: FieldType | None) -> str:
    if f == AggFunc.Count:
        return "int8"
    if f == AggFunc.Sum:
        return "int8" if src == FieldType.INTEGER else ("numeric" if src == FieldType.UNSIGNED else "float8")
    if f in (AggFunc.Min, AggFunc.Max, AggFunc.First, AggFunc.Last):
        return (src or FieldType.FLOAT).sql_name
    return "float8"


def _int_lit(node) -> int | None | bool:
    """Integer literal value; None when absent; False when not a literal integer."""
    if node is None:
        return None
    e = node.args.get("expression") if isinstance(node, (exp.Limit, exp.Offset)) else node
    if isinstance(e, exp.Literal) and not e.is_string:
        try:
            v = int(e.this)
        except ValueError:
            return False
        return v if v >= 0 else False
    if isinstance(e, exp.Null):
        return None
    return False


def single_table(sel: exp.Select) -> exp.Table | None:
    """The only source of a SELECT when it is one plain table (no joins, laterals, subquery)."""
    frm = sel.args.get("from_") or sel.args.get("from")
    if frm is None or sel.args.get("joins") or sel.args.get("laterals"):
        return None
    t = frm.this
    if not isinstance(t, exp.Table) or not isinstance(t.this, exp.Identifier):
        return None
    if t.args.get("joins") or t.args.get("pivots") or t.args.get("laterals"):
        return None
    return t


def column_resolver(cat: Catalog, m: str, table: exp.Table):
    alias = table.alias_or_name

    def resolve(col: exp.Column) -> tuple[str, str] | None:
        q = col.table
        if q and q != alias and q.lower() != alias.lower() and q != table.name:
            return None
        if col.args.get("db") is not None:
            return None
        ident = col.this
        if not isinstance(ident, exp.Identifier):
            return None
        return cat.resolve_column(m, ident.this, bool(ident.args.get("quoted")))

    return resolve


_BLOCKERS = ("with", "joins", "laterals", "qualify", "windows", "distinct", "into", "locks",
             "sample", "settings", "prewhere", "connect", "match", "kind", "pivots", "options",
             "cluster", "distribute", "sort")


def plan_fast(sel: exp.Expression, cat: Catalog, now_ns: int, names: Sequence[str] | None = None,
              allow_residual: bool = False) -> FastPlan | None:
    """Plan ``sel`` on the query model, or None when it needs the general path.

    ``names`` are the output names of the select items (:func:`item_names`). With
    ``allow_residual``, an aggregate statement may also carry simple field predicates
    (:func:`field_predicate`) in :attr:`FastPlan.residual`, for the vector path.
    """
    if not isinstance(sel, exp.Select):
        return None
    for k in _BLOCKERS:
        if sel.args.get(k):
            return None
    table = single_table(sel)
    if table is None or table.args.get("db") or table.args.get("catalog"):
        return None
    m = cat.resolve_table(table.name, bool(table.this.args.get("quoted")))
    if m is None:
        return None
    if any(isinstance(n, (exp.Subquery, exp.Window, exp.Select)) and n is not sel for n in sel.walk()):
        return None
    resolve = column_resolver(cat, m, table)
    fields = cat.fields(m)

    where = sel.args.get("where")
    b = analyze_where(where.this if where is not None else None, resolve, now_ns)
    residual: list[tuple] = []
    if not b.exact:
        if not allow_residual:
            return None
        for c in b.rest:
            fp = field_predicate(c, resolve, fields)
            if fp is None:
                fp = predicate_tree(c, resolve, fields)  # AND/OR of them: raw reads only
                if fp is None:
                    return None
            residual.append(fp)

    # ---- select list
    items = []  # (name, kind-of-item, payload, expr)
    if names is not None and len(names) != len(sel.expressions):
        names = None
    for ei, e in enumerate(sel.expressions):
        name = names[ei] if names is not None else output_name(e)
        inner = e.this if isinstance(e, exp.Alias) else e
        if isinstance(inner, exp.Star):
            items.append((name, "star", None, inner))
            continue
        if isinstance(inner, exp.Column):
            if isinstance(inner.this, exp.Star):
                items.append((name, "star", None, inner))
                continue
            r = resolve(inner)
            if r is None:
                return None
            items.append((name if isinstance(e, exp.Alias) else r[1], r[0], r[1], inner))
            continue
        iv = _bucket_interval(inner, resolve)
        if iv is not None:
            items.append((name, "bucket", iv, inner))
            continue
        ag = model_aggregate(inner, resolve, fields)
        if ag is None:
            return None
        items.append((name, "agg", ag, inner))

    group = sel.args.get("group")
    is_agg = bool(group) or any(kind == "agg" for _, kind, _, _ in items)

    def item_for(node: exp.Expression, order: bool = False):
        """A select item a GROUP BY / ORDER BY expression refers to (ordinal, alias, same text).

        In ORDER BY a bare name is an output column's name first (PostgreSQL), in GROUP BY an
        input column first."""
        iv = _int_lit(node)
        if isinstance(iv, int) and not isinstance(iv, bool) and not (isinstance(node, exp.Literal) and node.is_string):
            if 1 <= iv <= len(items):
                return iv - 1
            return -1
        if isinstance(node, exp.Column) and not node.table:
            aliased = [i for i, it in enumerate(items)
                       if it[0] == node.name and isinstance(sel.expressions[i], exp.Alias)]
            if order and len(aliased) == 1:
                return aliased[0]
            if resolve(node) is None:
                return aliased[0] if aliased else -1
        txt = node.sql(dialect="postgres")
        for i, it in enumerate(items):
            if it[3].sql(dialect="postgres") == txt:
                return i
        return None

    outputs: list[OutCol] = []
    if not is_agg:
        if any(k in ("bucket", "agg") for _, k, _, _ in items):
            return None
        fsel: list[str] = []
        for name, kind, payload, _ in items:
            if kind == "star":
                outputs.append(OutCol(TIME_COLUMN, KIND_TIME, "timestamp", "time"))
                for t in cat.tag_keys(m):
                    outputs.append(OutCol(t, KIND_TAG, "text", "tag", t))
                for f, ft in fields.items():
                    outputs.append(OutCol(f, KIND_FIELD, ft.sql_name, "field", f))
                    fsel.append(f)
            elif kind == KIND_TIME:
                outputs.append(OutCol(name, KIND_TIME, "timestamp", "time"))
            elif kind == KIND_TAG:
                outputs.append(OutCol(name, KIND_TAG, "text", "tag", payload))
            else:
                outputs.append(OutCol(name, KIND_FIELD, fields[payload].sql_name, "field", payload))
                fsel.append(payload)
        if not fsel:
            return None  # rows without any field: let the general path define them
        order = "Asc"
        ob = sel.args.get("order")
        if ob is not None:
            if len(ob.expressions) != 1:
                return None
            o = ob.expressions[0]
            node = o.this
            idx = item_for(node, order=True)
            ok = False
            if idx is not None and idx >= 0:
                ok = items[idx][1] == KIND_TIME
            elif isinstance(node, exp.Column):
                ok = (resolve(node) or ("", ""))[0] == KIND_TIME
            if not ok:
                return None
            order = "Desc" if o.args.get("desc") else "Asc"
        limit = _int_lit(sel.args.get("limit"))
        offset = _int_lit(sel.args.get("offset"))
        if limit is False or offset is False:
            return None
        uniq = tuple(dict.fromkeys(fsel))
        q = Query(m, b.start, b.end, tuple(b.tag_filters), uniq, (), None, (), order, limit, offset or 0,
                  tuple(residual))  # field predicates: the executor filters rows vectorised
        return FastPlan(q, tuple(outputs))

    # ---- aggregate mode
    group_tags: list[str] = []
    interval: int | None = None
    for g in (group.expressions if group else []):
        idx = item_for(g)
        if idx is not None:
            if idx < 0:
                return None
            name, kind, payload, _ = items[idx]
            if kind == KIND_TAG:
                group_tags.append(payload)
            elif kind == "bucket":
                if interval is not None and interval != payload:
                    return None
                interval = payload
            else:
                return None
            continue
        if isinstance(g, exp.Column):
            r = resolve(g)
            if r is None or r[0] != KIND_TAG:
                return None
            group_tags.append(r[1])
            continue
        iv = _bucket_interval(g, resolve)
        if iv is None or (interval is not None and interval != iv):
            return None
        interval = iv
    if len(set(group_tags)) != len(group_tags):
        group_tags = list(dict.fromkeys(group_tags))
    aggs: list[Aggregation] = []
    agg_of_item: dict[int, str] = {}
    for i, (name, kind, payload, _) in enumerate(items):
        if kind == "agg":
            func, field, pct = payload
            an = agg_of_item[i] = f"_a{len(aggs)}"
            aggs.append(Aggregation(func, field, pct, an))
            outputs.append(OutCol(name, KIND_FIELD, _agg_type(func, fields.get(field) if field else None),
                                  "agg", an))
        elif kind == KIND_TAG:
            if payload not in group_tags:
                return None
            outputs.append(OutCol(name, KIND_TAG, "text", "tag", payload))
        elif kind == "bucket":
            if interval != payload:
                return None
            outputs.append(OutCol(name, KIND_TIME, "timestamp", "time"))
        else:
            return None
    if not aggs:
        return None  # GROUP BY without aggregates (DISTINCT-like): general path
    sort: list[tuple[int, bool, bool]] = []
    ob = sel.args.get("order")
    for o in (ob.expressions if ob is not None else []):
        node = o.this
        idx = item_for(node, order=True)
        if idx is None and isinstance(node, exp.Column):
            r = resolve(node)
            if r is not None and r[0] == KIND_TIME and interval is not None:
                idx = next((i for i, it in enumerate(items) if it[1] == "bucket"), None)
            elif r is not None and r[0] == KIND_TAG:
                idx = next((i for i, it in enumerate(items) if it[1] == KIND_TAG and it[2] == r[1]), None)
        if idx is None or idx < 0:
            return None
        desc = bool(o.args.get("desc"))
        nf = o.args.get("nulls_first")
        nulls_first = bool(nf) if nf is not None else desc
        sort.append((idx, desc, nulls_first))
    limit = _int_lit(sel.args.get("limit"))
    offset = _int_lit(sel.args.get("offset"))
    if limit is False or offset is False:
        return None
    having: tuple = ()
    hv = sel.args.get("having")
    if hv is not None:
        having = _having(hv.this, items, agg_of_item, item_for, resolve, fields, group_tags, aggs)
        if having is None:
            return None
    if (group_tags or interval is not None) and not any(a.function == AggFunc.Count and a.field is None
                                                        for a in aggs):
        # SQL groups are the groups with rows; the executor's are those where an aggregate saw a
        # value. A hidden COUNT(*) (block statistics, no decoding) makes them the same.
        aggs.append(Aggregation(AggFunc.Count, None, None, "_rows"))
    q = Query(m, b.start, b.end, tuple(b.tag_filters), None, tuple(aggs), interval, tuple(group_tags))
    return FastPlan(q, tuple(outputs), tuple(sort), limit, offset or 0, True, tuple(residual), having)


_NUMERIC_AGGS = (AggFunc.Count, AggFunc.Sum, AggFunc.Mean, AggFunc.StdDev, AggFunc.Variance, AggFunc.Median,
                 AggFunc.Percentile)


def _having(node, items, agg_of_item, item_for, resolve, fields, group_tags, aggs) -> tuple | None:
    """HAVING as a predicate tree the fast path evaluates over its answer, or None (general path).

    Trees: ``("and"|"or", a, b)``, ``("not", a)``, ``("cmp", op, left, right)``,
    ``("isnull", operand, negate)``; operands ``("col", aggregation name, numeric)``,
    ``("tag", key)``, ``("lit", value)``. Aggregates that are not select items become hidden
    aggregations (``_hN``) of the query.
    """

    def operand(e):
        while isinstance(e, exp.Paren):
            e = e.this
        if isinstance(e, (exp.Literal, exp.Neg)):
            if isinstance(e, exp.Literal) and e.is_string:
                return ("lit", e.this)
            v = _const(e, FieldType.FLOAT)
            return None if v is None else ("lit", v)
        idx = item_for(e)
        if idx is not None and idx >= 0:
            name, kind, payload, _ = items[idx]
            if kind == "agg":
                func, field, _ = payload
                numeric = func in _NUMERIC_AGGS or (field is not None and fields[field] in _NUMERIC)
                return ("col", agg_of_item[idx], numeric)
            if kind == KIND_TAG and payload in group_tags:
                return ("tag", payload)
            return None
        if isinstance(e, exp.Column):
            r = resolve(e)
            if r is not None and r[0] == KIND_TAG and r[1] in group_tags:
                return ("tag", r[1])
            return None
        ag = model_aggregate(e, resolve, fields)
        if ag is None:
            return None
        func, field, pct = ag
        name = f"_h{len(aggs)}"
        aggs.append(Aggregation(func, field, pct, name))
        numeric = func in _NUMERIC_AGGS or (field is not None and fields[field] in _NUMERIC)
        return ("col", name, numeric)

    def tree(e):
        while isinstance(e, exp.Paren):
            e = e.this
        if isinstance(e, (exp.And, exp.Or)):
            a, b = tree(e.this), tree(e.expression)
            if a is None or b is None:
                return None
            return ("and" if isinstance(e, exp.And) else "or", a, b)
        if isinstance(e, exp.Not):
            a = tree(e.this)
            return None if a is None else ("not", a)
        if type(e) in _OPS:
            left, right = operand(e.this), operand(e.expression)
            if left is None or right is None or (left[0] == "lit" and right[0] == "lit"):
                return None

            def numeric(o):
                return isinstance(o[1], (int, float)) if o[0] == "lit" else (o[0] == "col" and o[2])

            def text(o):
                return isinstance(o[1], str) if o[0] == "lit" else (o[0] == "tag" or (o[0] == "col" and not o[2]))

            if not ((numeric(left) and numeric(right)) or (text(left) and text(right))):
                return None
            return ("cmp", _OPS[type(e)], left, right)
        if isinstance(e, exp.Is) and isinstance(e.expression, exp.Null):
            o = operand(e.this)
            if o is None or o[0] == "lit":
                return None
            return ("isnull", o, bool(e.args.get("negate")))
        return None

    return tree(node)


@attrs.frozen
class LatestPlan:
    """``SELECT DISTINCT ON (tags) ... ORDER BY tags, time DESC``: the last row per tag group."""

    raw: FastPlan  # the same SELECT without DISTINCT ON / ORDER BY / LIMIT (outputs, fields, pushdown)
    keys: tuple[str, ...]
    key_desc: tuple[bool, ...]
    limit: int | None
    offset: int


def plan_latest(sel: exp.Expression, cat: Catalog, now_ns: int, names: Sequence[str] | None = None
                ) -> LatestPlan | None:
    """Recognise the last-point-per-series query; None when it is anything else."""
    if not isinstance(sel, exp.Select):
        return None
    d = sel.args.get("distinct")
    if d is None or d.args.get("on") is None:
        return None
    table = single_table(sel)
    if table is None:
        return None
    m = cat.resolve_table(table.name, bool(table.this.args.get("quoted")))
    if m is None:
        return None
    resolve = column_resolver(cat, m, table)
    on = d.args["on"]
    on_exprs = on.expressions if isinstance(on, exp.Tuple) else [on]
    keys = []
    for e in on_exprs:
        if not isinstance(e, exp.Column):
            return None
        r = resolve(e)
        if r is None or r[0] != KIND_TAG:
            return None
        keys.append(r[1])
    ob = sel.args.get("order")
    if ob is None or len(ob.expressions) != len(keys) + 1:
        return None
    key_desc = []
    for o, k in zip(ob.expressions[:-1], keys):
        if not isinstance(o.this, exp.Column) or (resolve(o.this) or ("", ""))[1] != k:
            return None
        if o.args.get("nulls_first") not in (None, bool(o.args.get("desc"))):
            return None
        key_desc.append(bool(o.args.get("desc")))
    last = ob.expressions[-1]
    if not (isinstance(last.this, exp.Column) and (resolve(last.this) or ("", ""))[0] == KIND_TIME
            and last.args.get("desc")):
        return None
    limit = _int_lit(sel.args.get("limit"))
    offset = _int_lit(sel.args.get("offset"))
    if limit is False or offset is False:
        return None
    raw_sel = sel.copy()
    for k in ("distinct", "order", "limit", "offset"):
        raw_sel.set(k, None)
    raw = plan_fast(raw_sel, cat, now_ns, names)
    if raw is None or raw.query.aggregations:
        return None
    return LatestPlan(raw, tuple(keys), tuple(key_desc), limit, offset or 0)
