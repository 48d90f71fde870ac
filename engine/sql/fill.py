"""Time-series extensions on top of the DuckDB path: gap filling and ``LATEST ON``.

Gap filling, two spellings:

* TimescaleDB style: ``time_bucket_gapfill('5 minutes', time[, start, finish])`` in the select
  list, with ``locf(agg)`` (last observation carried forward) or ``interpolate(agg)`` (linear) on
  aggregate columns; other aggregate columns stay NULL in empty buckets.
* QuestDB/InfluxQL style: a trailing ``FILL(NULL | PREVIOUS | LINEAR | <number>)`` clause after
  ``GROUP BY`` of a query with ``time_bucket``; the mode applies to every aggregate column.

Both run the query with plain ``time_bucket`` in DuckDB (HAVING included), then fill with numpy:
the bucket grid spans ``[start, finish)`` from the gapfill arguments, else the WHERE time bounds,
else the first and last bucket seen; it is crossed with every group (the non-aggregate,
non-bucket columns) present in the answer; ORDER BY/LIMIT/OFFSET apply after filling (default
order: group columns, then bucket).

``LATEST ON time PARTITION BY k1, k2`` (QuestDB) is rewritten to ``DISTINCT ON (k1, k2) ... ORDER
BY k1, k2, time DESC``: the last row per series.

Neither extension parses in sqlglot, so :func:`extract_extensions` cuts the clause out of the text
with sqlglot's tokenizer (quotes and comments respected) before parsing.
"""

from __future__ import annotations

import attrs
import numpy as np
from sqlglot import exp
from sqlglot.tokens import Tokenizer, TokenType

from rusts.errors import QueryError, UnsupportedError
from rusts.query.model import MAX_TIME, MIN_TIME
from rusts.sql.output import KIND_FIELD, KIND_TIME, SqlOutput, make_output
from rusts.sql.translate import analyze_where, column_resolver, eval_interval, eval_time, single_table


@attrs.frozen
class Extensions:
    """Clauses cut out of the statement text before parsing."""

    fill: str | None = None  # "null" | "previous" | "linear" | "value"
    fill_value: float | None = None
    latest_on: str | None = None
    latest_by: tuple[str, ...] = ()


def _tokens(text: str):
    try:
        return Tokenizer().tokenize(text)
    except Exception:
        return None


def extract_extensions(text: str) -> tuple[str, Extensions | None]:
    """Remove a top-level ``FILL(...)`` or ``LATEST ON ... PARTITION BY ...`` clause."""
    low = text.lower()
    if "fill" not in low and "latest" not in low:
        return text, None
    toks = _tokens(text)
    if not toks:
        return text, None
    depth = 0
    fill = fill_value = latest_on = None
    latest_by: list[str] = []
    cut: list[tuple[int, int]] = []
    i = 0
    while i < len(toks):
        t = toks[i]
        if t.token_type == TokenType.L_PAREN:
            depth += 1
        elif t.token_type == TokenType.R_PAREN:
            depth -= 1
        elif depth == 0 and t.text.lower() == "fill" and i + 1 < len(toks) \
                and toks[i + 1].token_type == TokenType.L_PAREN:
            j = i + 2
            arg = []
            while j < len(toks) and toks[j].token_type != TokenType.R_PAREN:
                arg.append(toks[j].text)
                j += 1
            if j >= len(toks):
                raise QueryError("syntax error: unterminated FILL(")
            a = "".join(arg).strip().lower()
            if a in ("null", "none"):
                fill = "null"
            elif a in ("previous", "prev", "locf"):
                fill = "previous"
            elif a in ("linear", "interpolate"):
                fill = "linear"
            else:
                try:
                    fill_value = float(a)
                except ValueError:
                    raise QueryError(f"FILL({a}): expected NULL, PREVIOUS, LINEAR or a number") from None
                fill = "value"
            cut.append((t.start, toks[j].end + 1))
            i = j + 1
            continue
        elif depth == 0 and t.text.lower() == "latest" and i + 1 < len(toks) and toks[i + 1].text.lower() == "on":
            if i + 2 >= len(toks):
                raise QueryError("syntax error: LATEST ON needs a time column")
            latest_on = toks[i + 2].text
            j = i + 3
            by = False
            if j < len(toks) and toks[j].token_type == TokenType.PARTITION_BY:
                j += 1
                by = True
            elif j + 1 < len(toks) and toks[j].text.lower() == "partition" and toks[j + 1].text.lower() == "by":
                j += 2
                by = True
            if by:
                while j < len(toks):
                    latest_by.append(toks[j].text)
                    if j + 1 < len(toks) and toks[j + 1].token_type == TokenType.COMMA:
                        j += 2
                        continue
                    j += 1
                    break
            end = toks[j - 1].end + 1
            cut.append((t.start, end))
            i = j
            continue
        i += 1
    if not cut:
        return text, None
    out = []
    pos = 0
    for a, b in cut:
        out.append(text[pos:a])
        out.append(" ")
        pos = b
    out.append(text[pos:])
    return "".join(out), Extensions(fill, fill_value, latest_on, tuple(latest_by))


def apply_latest(ast: exp.Expression, ext: Extensions, names: list[str] | None) -> exp.Expression:
    if not isinstance(ast, exp.Select):
        raise UnsupportedError("LATEST ON in a compound statement")
    if names is not None and len(names) == len(ast.expressions):
        ast.set("expressions", [e if isinstance(e, (exp.Alias, exp.Column, exp.Star))
                                else exp.alias_(e, names[i], quoted=True) for i, e in enumerate(ast.expressions)])
    if ast.args.get("distinct"):
        raise UnsupportedError("LATEST ON together with DISTINCT")
    keys = [exp.column(k) for k in ext.latest_by]
    tcol = exp.column(ext.latest_on)
    if keys:
        ast.set("distinct", exp.Distinct(on=exp.Tuple(expressions=[k.copy() for k in keys])))
        inner_order = [exp.Ordered(this=k.copy(), desc=False, nulls_first=False) for k in keys]
        inner_order.append(exp.Ordered(this=tcol, desc=True, nulls_first=False))
        outer = ast.args.get("order")
        limit, offset = ast.args.get("limit"), ast.args.get("offset")
        ast.set("order", exp.Order(expressions=inner_order))
        if outer is None and limit is None and offset is None:
            return ast
        ast.set("limit", None)
        ast.set("offset", None)
        wrapped = exp.select("*").from_(ast.subquery("__latest"))
        if outer is not None:
            wrapped.set("order", outer)
        if limit is not None:
            wrapped.set("limit", limit)
        if offset is not None:
            wrapped.set("offset", offset)
        return wrapped
    ast.set("order", exp.Order(expressions=[exp.Ordered(this=tcol, desc=True, nulls_first=False)]))
    ast.set("limit", exp.Limit(expression=exp.Literal.number(1)))
    return ast


async def run_with_extensions(db, cat, ast: exp.Expression, now_ns: int, ext: Extensions | None,
                              extra_tables=None, names: list[str] | None = None) -> SqlOutput:
    """The general path, with LATEST ON / gap filling when the statement asks for them."""
    from rusts.sql.runner import run_general
    from rusts.sql.duck import from_arrow

    if ext is not None and ext.latest_on:
        ast = apply_latest(ast, ext, names)
        names = None
    gap = _gapfill_spec(ast, ext, cat, now_ns, names)
    if gap is None:
        if ext is not None and ext.fill:
            raise QueryError("FILL needs a SELECT with time_bucket(...) in GROUP BY")
        ast, names, hidden = with_group_tags(ast, names)
        table, plan = await run_general(db, cat, ast, now_ns, extra_tables, names)
        out = from_arrow(table, plan.measurement, plan.tag_names)
        return split_group_tags(aggregated_times(out, ast), hidden, plan.tag_names)
    table, plan = await run_general(db, cat, gap.inner, now_ns, extra_tables)
    out = from_arrow(table, plan.measurement, plan.tag_names)
    return fill_gaps(out, gap)


HIDDEN_TAG = "__group_tag__"


def with_group_tags(ast: exp.Expression, names: list[str] | None):
    """``ast`` with each GROUP BY column that is not selected appended as a hidden output item
    (``SELECT AVG(usage) FROM cpu GROUP BY host`` also returns host), so that each JSON row can
    say which group it is (:func:`split_group_tags`). Returns ``(ast, names, hidden names)``."""
    if not isinstance(ast, exp.Select) or ast.args.get("distinct") or not ast.args.get("group"):
        return ast, names, ()
    items = ast.expressions
    if any(isinstance(e, exp.Star) or (isinstance(e, exp.Column) and isinstance(e.this, exp.Star))
           for e in items):
        return ast, names, ()
    shown = {e.alias_or_name for e in items}
    extra = []
    for g in ast.args["group"].expressions:
        if isinstance(g, exp.Column) and g.name not in shown and all(g.name != k for k, _ in extra):
            extra.append((g.name, g))
    if not extra:
        return ast, names, ()
    ast = ast.copy()
    hidden = []
    for k, g in extra:
        ast.append("expressions", exp.alias_(g.copy(), HIDDEN_TAG + k, quoted=True))
        hidden.append(HIDDEN_TAG + k)
    if names is not None:
        names = list(names) + hidden
    return ast, names, tuple(hidden)


def aggregated_times(out: SqlOutput, ast: exp.Expression) -> SqlOutput:
    """Timestamp columns that are aggregates (``MIN(time)``, ``MAX(time)``) are values, not the
    row's time: they go to ``fields`` (the row ``timestamp`` is a selected time or bucket)."""
    if not isinstance(ast, exp.Select) or len(ast.expressions) != len(out.columns):
        return out
    cols = list(out.columns)
    changed = False
    for i, (e, c) in enumerate(zip(ast.expressions, cols)):
        if c.kind == KIND_TIME and isinstance(e.unalias(), exp.AggFunc):
            cols[i] = attrs.evolve(c, kind=KIND_FIELD)
            changed = True
    return attrs.evolve(out, columns=tuple(cols)) if changed else out


def split_group_tags(out: SqlOutput, hidden, tag_names) -> SqlOutput:
    """Move the hidden GROUP BY columns of :func:`with_group_tags` out of the columns into
    ``row_tags`` (tag columns only)."""
    if not hidden:
        return out
    keep = [i for i, c in enumerate(out.columns) if c.name not in hidden]
    tags = tuple((c.name[len(HIDDEN_TAG):], out.values[i], out.masks[i]) for i, c in enumerate(out.columns)
                 if c.name in hidden and c.type == "text" and c.name[len(HIDDEN_TAG):] in tag_names)
    return attrs.evolve(out, columns=tuple(out.columns[i] for i in keep),
                        values=tuple(out.values[i] for i in keep), masks=tuple(out.masks[i] for i in keep),
                        row_tags=tags)


# --------------------------------------------------------------------------- gap filling

@attrs.frozen(eq=False)
class GapSpec:
    """How to fill: the inner statement, the bucket column, per-column modes and the grid."""

    inner: exp.Expression
    bucket_col: int
    interval: int
    modes: tuple[str | None, ...]  # per output column: None (group/bucket), "null", "previous", "linear", "value"
    group_cols: tuple[int, ...]
    fill_value: float | None
    start: int | None
    end: int | None
    sort: tuple[tuple[int, bool, bool], ...]
    limit: int | None
    offset: int


def _unwrap_alias(e):
    return e.this if isinstance(e, exp.Alias) else e


def _gapfill_spec(ast: exp.Expression, ext: Extensions | None, cat, now_ns: int,
                  names: list[str] | None = None) -> GapSpec | None:
    from rusts.sql.translate import output_name

    fill = ext.fill if ext is not None else None
    if not isinstance(ast, exp.Select):
        if fill:
            raise UnsupportedError("FILL in a compound statement")
        if any(isinstance(f, exp.Anonymous) and f.name.lower() == "time_bucket_gapfill"
               for f in ast.find_all(exp.Anonymous)):
            raise UnsupportedError("time_bucket_gapfill outside a top-level SELECT")
        return None
    items = list(ast.expressions)
    bucket_idx = None
    gapfill_call = None
    for i, e in enumerate(items):
        inner = _unwrap_alias(e)
        if isinstance(inner, exp.Anonymous) and inner.name.lower() == "time_bucket_gapfill":
            bucket_idx, gapfill_call = i, inner
        elif fill and bucket_idx is None and isinstance(inner, exp.Anonymous) and inner.name.lower() == "time_bucket":
            bucket_idx = i
    if gapfill_call is None and not fill:
        if any(isinstance(f, exp.Anonymous) and f.name.lower() in ("locf", "interpolate")
               for f in ast.find_all(exp.Anonymous)):
            raise QueryError("locf()/interpolate() need time_bucket_gapfill(...) in the select list")
        return None
    if bucket_idx is None:
        raise QueryError("FILL needs time_bucket(...) in the select list and GROUP BY")
    call = _unwrap_alias(items[bucket_idx])
    args = call.expressions
    if len(args) < 2:
        raise QueryError("time_bucket_gapfill(interval, time[, start, finish]) needs an interval and a time column")
    try:
        interval = eval_interval(args[0])
    except Exception:
        interval = None
    if not interval or interval <= 0:
        raise UnsupportedError("gap filling with a calendar (month/year) or non-constant interval")
    start = end = None
    if len(args) >= 4:
        start, end = eval_time(args[2], now_ns), eval_time(args[3], now_ns)
    if start is None or end is None:
        t = single_table(ast)
        m = cat.resolve_table(t.name, bool(t.this.args.get("quoted"))) if t is not None else None
        if m is not None and ast.args.get("where") is not None:
            b = analyze_where(ast.args["where"].this, column_resolver(cat, m, t), now_ns)
            start = start if start is not None else (b.start if b.start != MIN_TIME else None)
            end = end if end is not None else (b.end if b.end != MAX_TIME else None)
    inner = ast.copy()
    new_items = []
    modes: list[str | None] = []
    group_cols = []
    if names is not None and len(names) != len(inner.expressions):
        names = None
    for i, e in enumerate(inner.expressions):
        name = names[i] if names is not None else output_name(e)
        x = _unwrap_alias(e)
        if i == bucket_idx:
            x = exp.Anonymous(this="time_bucket", expressions=[a.copy() for a in x.expressions[:2]])
            modes.append(None)
        elif isinstance(x, exp.Anonymous) and x.name.lower() in ("locf", "interpolate") and len(x.expressions) == 1:
            modes.append("previous" if x.name.lower() == "locf" else "linear")
            x = x.expressions[0]
        elif x.find(exp.AggFunc) is not None or (isinstance(x, exp.Anonymous) and x.name.lower().startswith("percentile_")):
            modes.append(fill or "null")
        else:
            modes.append(None)
            group_cols.append(i)
        new_items.append(exp.alias_(x, name, quoted=True))
    inner.set("expressions", new_items)
    # GROUP BY references to the gapfill call or its alias keep working with time_bucket.
    for node in list(inner.find_all(exp.Anonymous)):
        if node.name.lower() == "time_bucket_gapfill":
            node.replace(exp.Anonymous(this="time_bucket", expressions=[a.copy() for a in node.expressions[:2]]))
    order = inner.args.get("order")
    limit, offset = inner.args.get("limit"), inner.args.get("offset")
    inner.set("order", None)
    inner.set("limit", None)
    inner.set("offset", None)
    names = names if names is not None else [output_name(e) for e in ast.expressions]
    sort = []
    for o in (order.expressions if order is not None else []):
        node = o.this
        idx = None
        if isinstance(node, exp.Literal) and not node.is_string:
            idx = int(node.this) - 1
        elif isinstance(node, exp.Column) and node.name in names:
            idx = names.index(node.name)
        else:
            txt = node.sql(dialect="postgres")
            for j, e in enumerate(ast.expressions):
                if _unwrap_alias(e).sql(dialect="postgres") == txt:
                    idx = j
        if idx is None or not 0 <= idx < len(names):
            raise UnsupportedError("ORDER BY of a gap-filled query must name an output column")
        desc = bool(o.args.get("desc"))
        nf = o.args.get("nulls_first")
        sort.append((idx, desc, bool(nf) if nf is not None else desc))
    lim = None
    off = 0
    if limit is not None:
        lim = int(limit.args["expression"].this)
    if offset is not None:
        off = int(offset.args["expression"].this)
    return GapSpec(inner, bucket_idx, interval, tuple(modes), tuple(group_cols),
                   ext.fill_value if ext is not None else None, start, end, tuple(sort), lim, off)


def _group_codes(out: SqlOutput, cols: tuple[int, ...]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Group id per row over the group columns, and the first row index of each group."""
    n = len(out)
    if not cols:
        return np.zeros(n, np.int64), [np.zeros(1, np.int64)]
    keys = []
    for c in cols:
        v, m = out.values[c], out.masks[c]
        vv = v.astype(str) if v.dtype == object else v
        _, codes = np.unique(vv, return_inverse=True)
        codes = codes.astype(np.int64) * 2
        if m is not None:
            codes = np.where(m, codes + 1, 0)
        keys.append(codes)
    stacked = np.stack(keys, axis=1)
    uniq, first, inv = np.unique(stacked, axis=0, return_index=True, return_inverse=True)
    return inv.reshape(-1).astype(np.int64), [first]


def fill_gaps(out: SqlOutput, g: GapSpec) -> SqlOutput:
    """Expand the answer to every (group, bucket) on the grid and fill aggregate columns."""
    from rusts.sql.runner import sort_index

    n = len(out)
    iv = g.interval
    bvals, bmask = out.values[g.bucket_col], out.masks[g.bucket_col]
    if bmask is not None:
        raise QueryError("gap filling: NULL time bucket")
    gid, (first,) = _group_codes(out, g.group_cols)
    ngroups = len(first) if n else (1 if not g.group_cols else 0)
    if g.start is not None:
        lo = g.start - np.mod(g.start, iv)
    elif n:
        lo = int(bvals.min())
    else:
        lo = None
    if g.end is not None:
        hi = g.end - 1 - np.mod(g.end - 1, iv)
    elif n:
        hi = int(bvals.max())
    else:
        hi = None
    if lo is None or hi is None or hi < lo or ngroups == 0:
        nb = 0
    else:
        nb = int((hi - lo) // iv) + 1
        if nb * max(ngroups, 1) > 10_000_000:
            raise QueryError(f"gap filling would produce {nb * ngroups} rows; narrow the time range")
    grid_b = lo + iv * np.arange(nb, dtype=np.int64) if nb else np.empty(0, np.int64)
    total = ngroups * nb
    # position of each answer row on the grid (rows outside the grid are dropped)
    if n and nb:
        bi = (bvals - lo) // iv
        inside = (bi >= 0) & (bi < nb) & ((bvals - lo) % iv == 0)
        pos = gid[inside] * nb + bi[inside]
        src = np.flatnonzero(inside)
    else:
        pos = np.empty(0, np.int64)
        src = np.empty(0, np.int64)
    cols, vals, masks = [], [], []
    row_group = np.repeat(np.arange(ngroups, dtype=np.int64), nb)
    for ci, (c, v, m) in enumerate(zip(out.columns, out.values, out.masks)):
        mode = g.modes[ci]
        if ci == g.bucket_col:
            nv = np.tile(grid_b, ngroups)
            nm = None
        elif mode is None:  # group column: constant per group
            rep = first[row_group] if total else np.empty(0, np.int64)
            nv = v[rep]
            nm = None if m is None else m[rep]
        else:
            nv = np.zeros(total, dtype=v.dtype) if v.dtype != object else np.full(total, None, dtype=object)
            nm = np.zeros(total, dtype=bool)
            nv[pos] = v[src]
            nm[pos] = True if m is None else m[src]
            if mode == "previous":
                nv, nm = _locf(nv, nm, ngroups, nb)
            elif mode == "linear":
                nv, nm, c = _interpolate(nv, nm, ngroups, nb, grid_b, c)
            elif mode == "value":
                if v.dtype.kind in "iu" and g.fill_value is not None and not float(g.fill_value).is_integer():
                    nv = nv.astype(np.float64)
                    c = attrs.evolve(c, type="float8")
                nv = np.where(nm, nv, np.asarray(g.fill_value).astype(nv.dtype) if nv.dtype != object else g.fill_value)
                nm = np.ones(total, dtype=bool)
        cols.append(c)
        vals.append(nv)
        masks.append(nm)
    if g.sort:
        order = sort_index(vals, masks, g.sort)
    else:
        order = np.lexsort((np.tile(np.arange(nb), ngroups), row_group))
    lo_i = g.offset
    hi_i = None if g.limit is None else g.offset + g.limit
    order = order[lo_i:hi_i]
    vals = [v[order] for v in vals]
    masks = [None if m is None else m[order] for m in masks]
    return make_output(cols, vals, masks, out.measurement, path="duckdb")


def _locf(v: np.ndarray, m: np.ndarray, ngroups: int, nb: int):
    """Carry the last present value forward within each group (vectorised)."""
    if not len(v):
        return v, m
    idx = np.where(m, np.arange(len(v)), -1).reshape(ngroups, nb)
    idx = np.maximum.accumulate(idx, axis=1).reshape(-1)
    ok = idx >= 0
    out = v.copy()
    out[ok] = v[idx[ok]]
    return out, ok


def _interpolate(v: np.ndarray, m: np.ndarray, ngroups: int, nb: int, grid_b: np.ndarray, col):
    """Linear interpolation between the neighbouring present values of the same group."""
    if not len(v):
        return v, m, col
    if v.dtype.kind not in "iuf":
        raise QueryError("interpolate()/FILL(LINEAR) needs a numeric column")
    n = len(v)
    ar = np.arange(n)
    prev = np.where(m, ar, -1).reshape(ngroups, nb)
    prev = np.maximum.accumulate(prev, axis=1).reshape(-1)
    nxt = np.where(m, ar, n).reshape(ngroups, nb)
    nxt = np.minimum.accumulate(nxt[:, ::-1], axis=1)[:, ::-1].reshape(-1)
    ok = m | ((prev >= 0) & (nxt < n))
    fv = v.astype(np.float64)
    out = fv.copy()
    gap = ~m & ok
    if gap.any():
        p, q = prev[gap], nxt[gap]
        tb = np.tile(grid_b, ngroups).astype(np.float64)
        frac = (tb[gap] - tb[p]) / (tb[q] - tb[p])
        out[gap] = fv[p] + (fv[q] - fv[p]) * frac
    if v.dtype.kind != "f":
        col = attrs.evolve(col, type="float8")
    return out, ok, col
