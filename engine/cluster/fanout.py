"""Cluster reads: one live owner per shard answers a partial result, the coordinator merges it.

Owner side (:func:`partial_answer`): for the shards asked, each shard's database runs

* for ``Count``/``Sum``/``Mean``/``Min``/``Max``: one engine aggregate per field with the query's
  filters, interval and group-by, asking for the mergeable states (count, sum, min, max) per
  (group, bucket), computed by the engine from block statistics where it can;
* for ``StdDev``/``Variance``/``Median``/``Percentile``: the raw values with their timestamps
  (exact answers; the cost grows with the rows: documented); for ``First``/``Last`` (alone on a
  field) only the rows at the earliest / latest time of each (group, bucket) (:func:`_extremes`);
* for raw queries: the rows, with ``limit + offset`` pushed down.

Coordinator side (:func:`merge_aggregate`, :func:`merge_raw`): the partial states feed the
executor's own accumulators (:class:`rusts.query.executor._Acc`) and its final step
(``_finish``/``_compute``), so the merged answer has the single-node semantics: the same
grouping (tag value ``""`` for a missing tag), bucket alignment, types (integer sums stay
integers), masks, ordering, ``limit``/``offset`` and empty-answer rule. Float sums are added in
another order than on one node, so they may differ in the last bits.

Raw rows are ordered by time, ties by series (sorted tag values); a single node breaks ties by
its internal series id, which no user can see or rely on.

Wire format (NATS request/reply, orjson): ``{"query": <JSON query>, "shards": [...]}`` ->
``{"field_types": {...}, "stats": [...], "values": [...], "raw": [...], "gkeys_table": [...]}``
(each entry's ``gkeys`` an index into the table: :func:`pack_gkeys`) or ``{"error", "status"}``.
"""

from __future__ import annotations

import attrs
import numpy as np
import trio

from rusts.errors import QueryError
from rusts.model import Column, FieldType
from rusts.query.model import AggFunc, Aggregation, Query, from_json
from rusts.query.reading import select_series

_STATS_FUNCS = (AggFunc.Count, AggFunc.Sum, AggFunc.Mean, AggFunc.Min, AggFunc.Max)


def _col_json(c: Column) -> dict:
    v = c.values
    return {"type": int(c.type), "values": v.tolist() if v.dtype == object else v,
            "mask": None if c.mask is None else c.mask}


def _col_of(d: dict) -> Column:
    ft = FieldType(d["type"])
    vals = np.array(d["values"], dtype=ft.dtype) if ft != FieldType.STRING else \
        np.array(d["values"], dtype=object)
    mask = None if d["mask"] is None else np.array(d["mask"], dtype=bool)
    return Column(ft, vals, mask)


def _gkeys(rs, group_by: tuple[str, ...]) -> list[list[str]]:
    """The group-by tag values of every group of ``rs`` (per group, not per row)."""
    return [[t.get(k, "") for k in group_by] for t in rs.group_tags]


def _stats_plan(q: Query) -> dict[str | None, list[AggFunc]]:
    """field -> engine functions whose per-key results are the mergeable states needed."""
    plan: dict[str | None, list[AggFunc]] = {}
    for a in q.aggregations:
        if a.function not in _STATS_FUNCS:
            continue
        fs = plan.setdefault(a.field, [AggFunc.Count])
        extra = {AggFunc.Sum: [AggFunc.Sum], AggFunc.Mean: [AggFunc.Sum], AggFunc.Min: [AggFunc.Min],
                 AggFunc.Max: [AggFunc.Max]}.get(a.function, [])
        for f in extra:
            if f not in fs:
                fs.append(f)
    return plan


def query_to_wire(q: Query) -> dict:
    """``q`` as JSON for the owners (every field of the query model, unlike the JSON API, which
    has one aggregate function per query: SQL plans carry several, with their output names)."""
    return {"measurement": q.measurement, "start": q.start, "end": q.end,
            "tag_filters": [[t.key, t.op.value, t.value, list(t.values)] for t in q.tag_filters],
            "fields": None if q.fields is None else list(q.fields),
            "aggregations": [[a.function.value, a.field, a.percentile, a.name] for a in q.aggregations],
            "interval": q.interval, "group_by": list(q.group_by), "order": q.order, "limit": q.limit,
            "offset": q.offset, "predicates": list(q.predicates)}


def query_from_wire(d: dict) -> Query:
    from rusts.query.model import TagFilter, TagOp

    return Query(d["measurement"], int(d["start"]), int(d["end"]),
                 tuple(TagFilter(k, TagOp(op), v, tuple(vs)) for k, op, v, vs in d["tag_filters"]),
                 None if d["fields"] is None else tuple(d["fields"]),
                 tuple(Aggregation(AggFunc(f), field, pct, name) for f, field, pct, name in d["aggregations"]),
                 d["interval"], tuple(d["group_by"]), d["order"], d["limit"], int(d["offset"]),
                 _tuples(d.get("predicates") or ()))


def _tuples(x):
    """JSON lists back to the tuples of :attr:`Query.predicates` (nested: BETWEEN, AND/OR)."""
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def catalog_answer(dbs: dict, shards: list[int]) -> dict:
    """``{measurement: {"tags": [...], "fields": {name: type}}}`` of ``shards``."""
    from rusts.sql.translate import db_tag_keys

    out: dict = {}
    for s in shards:
        db = dbs[s]
        for m in db.measurements():
            e = out.setdefault(m, {"tags": set(), "fields": {}})
            e["tags"].update(db_tag_keys(db, m))
            e["fields"].update({k: int(v) for k, v in db.schema.fields(m).items()})
    return {m: {"tags": sorted(e["tags"]), "fields": e["fields"]} for m, e in out.items()}


def tag_values_answer(dbs: dict, shards: list[int], measurement: str) -> dict[str, list[str]]:
    """``{tag key: sorted distinct values}`` of ``measurement`` over ``shards``."""
    out: dict[str, set] = {}
    for s in shards:
        idx = dbs[s].index
        if measurement not in idx.measurements():
            continue
        for k in idx.tag_keys(measurement):
            out.setdefault(k, set()).update(idx.tag_values(measurement, k))
    return {k: sorted(v) for k, v in out.items()}


def merge_tag_values(parts: list[dict]) -> dict[str, list[str]]:
    out: dict[str, set] = {}
    for p in parts:
        for k, vs in p.items():
            out.setdefault(k, set()).update(vs)
    return {k: sorted(v) for k, v in out.items()}


def merge_catalog(parts: list[dict]):
    """The SQL :class:`~rusts.sql.translate.Catalog` of the whole cluster."""
    from rusts.sql.translate import Catalog

    tables: dict[str, tuple[set, dict]] = {}
    for p in parts:
        for m, e in p.items():
            tags, fields = tables.setdefault(m, (set(), {}))
            tags.update(e["tags"])
            for k, v in e["fields"].items():
                fields.setdefault(k, FieldType(v))
    return Catalog.of_dicts({m: (sorted(t), f) for m, (t, f) in tables.items()})


async def partial_answer(dbs: dict, qjson, shards: list[int]) -> dict:
    """This owner's partial answer over ``shards`` (each in ``dbs``) of a query: a
    :class:`Query`, its wire form (:func:`query_to_wire`) or a JSON API body. The shards are
    asked concurrently (each its own database: the thread hops of one overlap another's work)
    and their parts joined in shard order."""
    if isinstance(qjson, Query):
        q = qjson
    elif isinstance(qjson, dict) and "aggregations" in qjson and "start" in qjson:
        q = query_from_wire(qjson)
    else:
        q = from_json(qjson)
    parts: dict[int, dict] = {}

    async def one(s: int) -> None:
        parts[s] = await _shard_part(dbs[s], q)

    async with trio.open_nursery() as n:
        for s in shards:
            n.start_soon(one, s)
    out: dict = {"field_types": {}, "stats": [], "values": [], "raw": []}
    for s in shards:
        for k, v in parts[s].items():
            if k == "field_types":
                out[k].update(v)
            else:
                out[k].extend(v)
    return out


async def _shard_part(db, q: Query) -> dict:
    """One shard database's part of :func:`partial_answer`."""
    out: dict = {"field_types": {}, "stats": [], "values": [], "raw": []}
    value_fields = sorted({a.field for a in q.aggregations
                           if a.function not in _STATS_FUNCS and a.field is not None})
    plan = _stats_plan(q) if q.is_aggregate else {}
    if not db.index.measurements() or q.measurement not in db.index.measurements():
        return out
    fts = db.schema.fields(q.measurement)
    out["field_types"].update({k: int(v) for k, v in fts.items()})
    if q.tag_filters and not len(select_series(db.index, q)):
        return out  # (a query for one host: most shards do not hold it)
    if not q.is_aggregate:
        want = None if q.limit is None else q.limit + q.offset
        rs = await db.query(attrs.evolve(q, limit=want, offset=0))
        if len(rs):
            out["raw"].append({"ts": rs.timestamps, "group": rs.row_group, "tags": rs.group_tags,
                               "cols": {n: _col_json(rs.fields[n]) for n in rs.field_order}})
        return out
    # one engine pass for the states of every field, one for the values of every field
    # (a pass per field cost a fixed overhead each: 10 fields, 10 passes per shard)
    fields = [(field, funcs) for field, funcs in plan.items() if field is None or field in fts]
    if fields:
        aggs = tuple(Aggregation(f, field, None, f"p{j}_{i}")
                     for j, (field, funcs) in enumerate(fields) for i, f in enumerate(funcs))
        sub = attrs.evolve(q, aggregations=aggs, order="Asc", limit=None, offset=0)
        rs = await db.query(sub)
        gkeys = _gkeys(rs, q.group_by) if len(rs) else []
        for j, (field, funcs) in enumerate(fields):
            if not len(rs):
                break
            cnt = rs.fields[f"p{j}_0"].values
            keep = cnt > 0
            if not keep.any():
                continue
            entry = {"field": field, "gkeys": gkeys, "group": rs.row_group[keep],
                     "bucket": (rs.timestamps[keep] if rs.timestamps is not None
                                else np.zeros(int(keep.sum()), np.int64)),
                     "count": cnt[keep]}
            for i, f in enumerate(funcs[1:], 1):
                entry[f.value.lower()] = rs.fields[f"p{j}_{i}"].values[keep].astype(np.float64)
            out["stats"].append(entry)
    vfields = [f for f in value_fields if f in fts]
    if vfields and q.interval is None:
        # First/Last alone on a field, over the whole range: the engine picks each group's
        # row (from the outermost blocks only) and says its time; the coordinator picks
        # among the owners' rows
        edge = {f: fs for f in vfields if (fs := _edge_funcs(q, f))}
        if edge:
            out["values"].extend(await _edge_values(db, q, edge))
            vfields = [f for f in vfields if f not in edge]
    if not vfields:
        return out
    sub = attrs.evolve(q, aggregations=(), interval=None, group_by=(), fields=tuple(vfields),
                       order="Asc", limit=None, offset=0)
    rs = await db.query(sub)
    if not len(rs):
        return out
    gkeys = _gkeys(rs, q.group_by)
    for field in vfields:
        c = rs.fields.get(field)
        if c is None:
            continue
        keep = np.ones(len(rs), bool) if c.mask is None else c.mask.copy()
        funcs = {a.function for a in q.aggregations if a.field == field}
        if funcs <= {AggFunc.First, AggFunc.Last}:  # only the candidates are needed
            keep &= _extremes(rs.timestamps, rs.row_group, gkeys, q.interval,
                              AggFunc.First in funcs, AggFunc.Last in funcs, keep)
        out["values"].append({"field": field, "gkeys": gkeys,
                              "group": rs.row_group[keep], "ts": rs.timestamps[keep],
                              "v": _col_json(Column(c.type, c.values[keep]))})
    return out


def _edge_funcs(q: Query, field: str) -> list[AggFunc]:
    """First and/or Last when they are the only functions asked of ``field``, else []."""
    funcs = {a.function for a in q.aggregations if a.field == field}
    return sorted(funcs, key=lambda f: f.value) if funcs <= {AggFunc.First, AggFunc.Last} else []


async def _edge_values(db, q: Query, fields: dict[str, list[AggFunc]]) -> list[dict]:
    """For each of ``fields`` (field -> its functions, First/Last only; no interval): each
    group's first/last row of this shard, with its time, as ``values`` entries. One engine pass
    per function, so that the engine's outermost-blocks path serves it (it needs every aggregate
    to be the same one)."""
    entries = []
    for func in (AggFunc.First, AggFunc.Last):
        want = [f for f, fs in fields.items() if func in fs]
        if not want:
            continue
        aggs = tuple(Aggregation(func, f, None, f"e{i}", with_time=True) for i, f in enumerate(want))
        rs = await db.query(attrs.evolve(q, aggregations=aggs, order="Asc", limit=None, offset=0))
        if not len(rs):
            continue
        gkeys = _gkeys(rs, q.group_by)
        for i, f in enumerate(want):
            c, t = rs.fields.get(f"e{i}"), rs.fields.get(f"e{i}@time")
            if c is None or t is None:
                continue
            keep = np.ones(len(rs), bool) if c.mask is None else c.mask
            if not keep.any():
                continue
            entries.append({"field": f, "gkeys": gkeys, "group": rs.row_group[keep], "ts": t.values[keep],
                            "v": _col_json(Column(c.type, c.values[keep]))})
    return entries


def _extremes(ts: np.ndarray, series: np.ndarray, gkeys: list, interval: int | None,
              first: bool, last: bool, present: np.ndarray) -> np.ndarray:
    """Rows (among ``present``: the rows having the field) whose time is the earliest
    (``first``) or latest (``last``) of their (group, bucket): the only candidates of
    ``First``/``Last``, so an owner ships those instead of every value. Every row tying the
    extreme time is kept, so the coordinator chooses among the same rows as one node would
    (columnar: one sort)."""
    from rusts.query.aggregate import _bucket

    n = len(ts)
    sel = np.zeros(n, bool)
    idx = np.flatnonzero(present)
    if not len(idx):
        return sel
    ids: dict[tuple, int] = {}
    gid = np.array([ids.setdefault(tuple(k), len(ids)) for k in gkeys] or [0], dtype=np.int64)
    g = gid[np.asarray(series, dtype=np.int64)[idx]]
    t = ts[idx]
    sel[idx] = _extreme_rows(t, g, _bucket(t, interval), first, last)
    return sel


def _extreme_rows(ts: np.ndarray, g: np.ndarray, b: np.ndarray, first: bool, last: bool) -> np.ndarray:
    n = len(ts)
    order = np.lexsort((ts, b, g))
    gs, bs, t_sorted = g[order], b[order], ts[order]
    new = np.empty(n, bool)
    new[0] = True
    new[1:] = (gs[1:] != gs[:-1]) | (bs[1:] != bs[:-1])
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], n) - 1
    key = np.empty(n, np.int64)
    key[order] = np.cumsum(new) - 1
    sel = np.zeros(n, bool)
    if first:
        sel |= ts == t_sorted[starts][key]
    if last:
        sel |= ts == t_sorted[ends][key]
    return sel


def pack_gkeys(part: dict) -> dict:
    """``part`` for the wire with each distinct group-key list sent once (``"gkeys"`` becomes an
    index into ``part["gkeys_table"]``): the entries of one engine pass share their list, and
    a shard's ten fields would otherwise send, decode and convert it ten times."""
    table: list = []
    ids: dict[int, int] = {}
    for k in ("stats", "values"):
        es = []
        for e in part[k]:
            gk = e["gkeys"]
            i = ids.get(id(gk))
            if i is None:
                i = ids[id(gk)] = len(table)
                table.append(gk)
            es.append({**e, "gkeys": i})
        part = {**part, k: es}
    return {**part, "gkeys_table": table}


def unpack_gkeys(part: dict) -> dict:
    """The inverse of :func:`pack_gkeys` (entries sharing a list share one object again)."""
    table = part.pop("gkeys_table", None)
    if table is not None:
        for k in ("stats", "values"):
            for e in part[k]:
                e["gkeys"] = table[e["gkeys"]]
    return part


def merge_aggregate(q: Query, parts: list[dict]):
    """The final aggregate :class:`~rusts.query.executor.ResultSet` of ``q`` from owners' parts."""
    from rusts.query.executor import _Acc, _bucket, _check_agg_types, _finish

    field_types = {}
    for p in parts:
        field_types.update({k: FieldType(v) for k, v in p["field_types"].items()})
    _check_agg_types(q, field_types)
    # every group key seen, sorted like the executor sorts them
    # the entries of one engine pass share their group-key list: each list converted once
    lists = {id(e["gkeys"]): e["gkeys"] for p in parts for e in p["stats"] + p["values"]}
    keys = {tuple(k) for gk in lists.values() for k in gk}
    uniq = sorted(keys) if q.group_by else [()]
    gmap = {k: i for i, k in enumerate(uniq)}
    group_tags = [dict(zip(q.group_by, k)) for k in uniq]
    local = {i: np.array([gmap[tuple(k)] for k in gk] or [0], dtype=np.int64) for i, gk in lists.items()}

    def gidx(e) -> np.ndarray:
        return local[id(e["gkeys"])][np.asarray(e["group"], dtype=np.int64)]

    accs = [_Acc() for _ in q.aggregations]
    for p in parts:
        for e in p["stats"]:
            g = gidx(e)
            b = np.asarray(e["bucket"], dtype=np.int64)
            cnt = np.asarray(e["count"], dtype=np.int64)
            n = len(cnt)
            for a, acc in zip(q.aggregations, accs):
                if a.function not in _STATS_FUNCS or a.field != e["field"]:
                    continue
                acc.st_g.append(g)
                acc.st_b.append(b)
                acc.st_count.append(cnt)
                acc.st_sum.append(np.asarray(e.get("sum", np.zeros(n)), dtype=np.float64))
                acc.st_min.append(np.asarray(e.get("min", np.zeros(n)), dtype=np.float64))
                acc.st_max.append(np.asarray(e.get("max", np.zeros(n)), dtype=np.float64))
        for e in p["values"]:
            g = gidx(e)
            t = np.asarray(e["ts"], dtype=np.int64)
            b = _bucket(t, q.interval)
            v = _col_of(e["v"]).values
            for a, acc in zip(q.aggregations, accs):
                if a.function in _STATS_FUNCS or a.field != e["field"]:
                    continue
                acc.v_g.append(g)
                acc.v_b.append(b)
                acc.v_t.append(t)
                acc.v_v.append(v)
                acc.k_g.append(g)
                acc.k_b.append(b)
    return _finish(q, q.aggregations, accs, group_tags, field_types)


def merge_raw(q: Query, parts: list[dict]):
    """The raw-rows :class:`~rusts.query.executor.ResultSet` of ``q`` from owners' parts."""
    from rusts.query.executor import ResultSet
    from rusts.query.rowset import concat_column

    field_types = {}
    for p in parts:
        field_types.update({k: FieldType(v) for k, v in p["field_types"].items()})
    raws = [r for p in parts for r in p["raw"]]
    if q.fields is not None:
        for f in q.fields:
            if field_types and f not in field_types:
                raise QueryError(f'unknown field "{f}" in measurement "{q.measurement}"', sqlstate="42703")
        names = list(q.fields)
    else:
        names = sorted({n for r in raws for n in r["cols"]})
    if not raws:
        return ResultSet(q.measurement, np.empty(0, np.int64), np.empty(0, np.int64), [], {}, names, False,
                         {n: field_types[n] for n in names if n in field_types})
    # series identity across shards: the sorted tag items
    series: dict[tuple, int] = {}
    for r in raws:
        for t in r["tags"]:
            series.setdefault(tuple(sorted(t.items())), 0)
    order_keys = sorted(series)
    for i, k in enumerate(order_keys):
        series[k] = i
    group_tags = [dict(k) for k in order_keys]
    ts = np.concatenate([np.asarray(r["ts"], dtype=np.int64) for r in raws])
    grp = np.concatenate([np.array([series[tuple(sorted(t.items()))] for t in r["tags"]] or [0],
                                   dtype=np.int64)[np.asarray(r["group"], dtype=np.int64)] for r in raws])
    lengths = [len(r["ts"]) for r in raws]
    cols = {}
    for n in names:
        ft = field_types.get(n)
        if ft is None:
            continue
        cols[n] = concat_column([_col_of(r["cols"][n]) if n in r["cols"] else None for r in raws], lengths, ft)
    names = [n for n in names if n in cols]
    order = np.lexsort((grp, -ts)) if q.order == "Desc" else np.lexsort((grp, ts))
    hi = None if q.limit is None else q.offset + q.limit
    order = order[q.offset:hi]
    cols = {n: c.take(order) for n, c in cols.items()}
    return ResultSet(q.measurement, ts[order], grp[order], group_tags, cols, names, False,
                     {n: field_types[n] for n in names})


def merge(q: Query, parts: list[dict]):
    return merge_aggregate(q, parts) if q.is_aggregate else merge_raw(q, parts)
