"""Vectorised aggregation over the cached block scan, for fast-path statements the executor would
answer by decoding everything.

The executor answers COUNT/SUM/MEAN/MIN/MAX from block pre-aggregates without decoding, which is
unbeatable when it applies. Time buckets that cut through blocks, percentiles, FIRST/LAST,
STDDEV/VARIANCE and field predicates (``WHERE trip_miles > 0``) need the values. This module reads
them through :mod:`rusts.sql_scan` (decoded blocks cached as Arrow) and aggregates with numpy:

1. Per series, the pieces (time ordered) are concatenated per needed column; field predicates are
   evaluated per piece with Arrow compute kernels (SQL NULL semantics: NULL compares false).
2. Buckets are ``t - t mod interval`` (epoch aligned, like the executor); since a series' rows are
   sorted by time, its buckets are sorted too and ``ufunc.reduceat`` gives per-(series, bucket)
   partials without any sort: count, sum, min, max, first/last (by time), and for STDDEV/VARIANCE
   count, mean and M2 (combined across series with Chan's formula, numerically stable).
3. Partials of the series of one group are combined per (group, bucket) key; percentiles and
   MEDIAN gather each key's value slices and use ``np.percentile`` (linear, = percentile_cont).

The answer is an executor :class:`~rusts.executor.ResultSet`, so output assembly, ORDER BY and
LIMIT are shared with the fast path. Differential tests run the same statements through the
executor, this module and DuckDB.
"""

from __future__ import annotations

import attrs
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import trio

from rusts.executor import ResultSet, select_series
from rusts.messages import cpu_limiter
from rusts.model import Column, FieldType
from rusts.query import AggFunc, Query
from rusts.sql_scan import CACHE, series_pieces

MAX_SLICES = 200_000  # percentile gathering beyond this many (series, bucket) slices: DuckDB


class TooManyKeys(Exception):
    """The statement would gather too many percentile slices; use the DuckDB path."""


_PC_OPS = {"=": pc.equal, "!=": pc.not_equal, "<": pc.less, "<=": pc.less_equal, ">": pc.greater,
           ">=": pc.greater_equal}


def _pred_mask(pieces, residual, n_total: int) -> np.ndarray:
    """AND of the residual field predicates over a series' pieces (NULL -> false)."""
    out = []
    for p in pieces:
        n = len(p.ts)
        keep = None
        for field, op, value in residual:
            arr = p.cols.get(field)
            if arr is None:
                m = np.ones(n, bool) if op == "isnull" else np.zeros(n, bool)
            elif op == "isnull":
                m = pc.is_null(arr).to_numpy(zero_copy_only=False)
            elif op == "notnull":
                m = pc.is_valid(arr).to_numpy(zero_copy_only=False)
            elif op == "between":
                lo, hi = value
                r = pc.and_(pc.greater_equal(arr, lo), pc.less_equal(arr, hi))
                m = r.fill_null(False).to_numpy(zero_copy_only=False)
            else:
                m = _PC_OPS[op](arr, value).fill_null(False).to_numpy(zero_copy_only=False)
            keep = m if keep is None else (keep & m)
        out.append(keep if keep is not None else np.ones(n, bool))
    return np.concatenate(out) if len(out) > 1 else out[0]


@attrs.define
class _Series:
    """One series after filtering: times, per-field values/validity and Arrow columns."""

    gid: int
    ts: np.ndarray
    vals: dict
    valid: dict
    arrow: dict
    rows: np.ndarray | None  # original positions kept by the predicates (None = all)


def _column(pieces, field: str, ft: FieldType, numeric: bool):
    arrs = []
    for p in pieces:
        a = p.cols.get(field)
        arrs.append(a if a is not None else pa.nulls(len(p.ts), _arrow_type(ft)))
    ch = pa.chunked_array(arrs, type=_arrow_type(ft))
    valid = np.concatenate([a.is_valid().to_numpy(zero_copy_only=False) if a.null_count else
                            np.ones(len(a), bool) for a in arrs]) if len(arrs) > 1 else (
        arrs[0].is_valid().to_numpy(zero_copy_only=False) if arrs[0].null_count else np.ones(len(arrs[0]), bool))
    vals = None
    if numeric:
        parts = []
        for a in arrs:
            if a.null_count:
                a = a.fill_null(0)
            parts.append(a.to_numpy(zero_copy_only=False))
        vals = np.concatenate(parts) if len(parts) > 1 else parts[0]
    return ch, vals, valid


def _arrow_type(ft: FieldType):
    from rusts.sql_scan import _ARROW_TYPES

    return _ARROW_TYPES[ft]


def aggregate(snap, q: Query, sids: np.ndarray, tags_of, ftypes: dict[str, FieldType],
              residual=(), cache=CACHE) -> ResultSet:
    """Run the aggregate query ``q`` (plus ``residual`` field predicates) over the scan."""
    aggs = q.aggregations
    iv = q.interval
    need = sorted({a.field for a in aggs if a.field is not None} | {r[0] for r in residual})
    need = [f for f in need if f in ftypes]
    numeric_need = {a.field for a in aggs if a.field is not None
                    and a.function not in (AggFunc.First, AggFunc.Last, AggFunc.Count)}
    group_keys: dict[tuple, int] = {}
    group_tags: list[dict] = []
    series: list[_Series] = []
    for sid in sids.tolist():
        tags = tags_of(int(sid))
        key = tuple(tags.get(k) for k in q.group_by)
        pieces = series_pieces(snap, int(sid), q.start, q.end, need, ftypes, cache)
        if not pieces:
            continue
        ts = np.concatenate([p.ts for p in pieces]) if len(pieces) > 1 else pieces[0].ts
        rows = None
        if residual:
            keep = _pred_mask(pieces, residual, len(ts))
            if not keep.all():
                rows = np.flatnonzero(keep)
                if len(rows) == 0:
                    continue
                ts = ts[rows]
        vals, valid, arrow = {}, {}, {}
        for f in need:
            ch, v, m = _column(pieces, f, ftypes[f], f in numeric_need)
            if rows is not None:
                m = m[rows]
                v = None if v is None else v[rows]
            vals[f], valid[f], arrow[f] = v, m, ch
        gid = group_keys.get(key)
        if gid is None:
            gid = group_keys[key] = len(group_tags)
            group_tags.append({k: v for k, v in zip(q.group_by, key) if v is not None})
        series.append(_Series(gid, ts, vals, valid, arrow, rows))
    # ---- per-series partials over sorted buckets
    part_g, part_b, part_rows = [], [], []
    partials: list[dict] = [dict() for _ in aggs]
    spans = []  # per series: (bucket starts, ends) for percentile gathering
    for si, s in enumerate(series):
        n = len(s.ts)
        b = s.ts - np.mod(s.ts, iv) if iv is not None else np.zeros(n, np.int64)
        starts = np.flatnonzero(np.r_[True, b[1:] != b[:-1]]) if n else np.zeros(0, np.int64)
        ends = np.r_[starts[1:], n]
        part_g.append(np.full(len(starts), s.gid, np.int64))
        part_b.append(b[starts])
        part_rows.append(ends - starts)
        spans.append((starts, ends))
        for a, acc in zip(aggs, partials):
            _partial(a, s, si, starts, ends, acc)
    return _combine(q, aggs, partials, part_g, part_b, part_rows, spans, series, group_tags, ftypes)


def _red(ufunc, x: np.ndarray, starts: np.ndarray) -> np.ndarray:
    if len(starts) == 0:
        return np.zeros(0, x.dtype)
    return ufunc.reduceat(x, starts)


def _partial(a, s: _Series, si: int, starts, ends, acc: dict) -> None:
    f = a.function
    lst = acc.setdefault("parts", [])
    if a.field is None:  # COUNT(*)
        lst.append({"n": ends - starts})
        return
    m = s.valid[a.field]
    cnt = _red(np.add, m.astype(np.int64), starts)
    if f == AggFunc.Count:
        lst.append({"n": cnt})
        return
    v = s.vals.get(a.field)
    if f in (AggFunc.Sum, AggFunc.Mean):
        z = np.where(m, v, 0) if not m.all() else v
        if z.dtype.kind == "b":
            z = z.astype(np.int64)
        lst.append({"n": cnt, "sum": _red(np.add, z, starts)})
    elif f in (AggFunc.Min, AggFunc.Max):
        if v.dtype.kind in "iu":
            info = np.iinfo(v.dtype)
            fill = info.max if f == AggFunc.Min else info.min
        else:
            fill = np.inf if f == AggFunc.Min else -np.inf
        z = np.where(m, v, fill) if not m.all() else v
        lst.append({"n": cnt, "v": _red(np.minimum if f == AggFunc.Min else np.maximum, z, starts)})
    elif f in (AggFunc.StdDev, AggFunc.Variance):
        x = v.astype(np.float64)
        sm = _red(np.add, np.where(m, x, 0.0), starts)
        mean = sm / np.maximum(cnt, 1)
        dev = np.where(m, x - np.repeat(mean, ends - starts), 0.0)
        lst.append({"n": cnt, "mean": mean, "m2": _red(np.add, dev * dev, starts)})
    elif f in (AggFunc.First, AggFunc.Last):
        n = len(m)
        ar = np.arange(n)
        if f == AggFunc.First:
            idx = _red(np.minimum, np.where(m, ar, n), starts)
            ok = idx < n
        else:
            idx = _red(np.maximum, np.where(m, ar, -1), starts)
            ok = idx >= 0
        idx = np.where(ok, idx, 0)
        t = s.ts[idx] if n else np.zeros(0, np.int64)
        lst.append({"n": cnt, "ok": ok, "t": t, "idx": idx, "series": si})
    else:  # Median / Percentile: gathered per key later
        lst.append({"n": cnt, "series": si})


def _combine(q, aggs, partials, part_g, part_b, part_rows, spans, series, group_tags, ftypes) -> ResultSet:
    iv = q.interval
    if part_g:
        g = np.concatenate(part_g)
        b = np.concatenate(part_b)
        rows = np.concatenate(part_rows)
    else:
        g = b = rows = np.zeros(0, np.int64)
    if len(g) == 0:
        if iv is None and not q.group_by:
            return _empty_one_row(q, aggs, ftypes)
        return ResultSet(q.measurement, None if iv is None else np.zeros(0, np.int64), np.zeros(0, np.int64),
                         group_tags or [{}], {a.output_name: Column(FieldType.FLOAT, np.zeros(0)) for a in aggs},
                         [a.output_name for a in aggs], True)
    ub, binv = np.unique(b, return_inverse=True)
    code = g * len(ub) + binv.reshape(-1)
    ucode, kinv = np.unique(code, return_inverse=True)
    kinv = kinv.reshape(-1)
    nk = len(ucode)
    key_g = ucode // len(ub)
    key_b = ub[ucode % len(ub)]
    cols = {}
    for a, acc in zip(aggs, partials):
        parts = acc.get("parts", [])
        cols[a.output_name] = _finish_agg(a, parts, kinv, nk, spans, series, ftypes)
    if not q.group_by and iv is None and not group_tags:
        group_tags = [{}]
    return ResultSet(q.measurement, key_b if iv is not None else None, key_g, group_tags or [{}], cols,
                     [a.output_name for a in aggs], True, {n: c.type for n, c in cols.items()})


def _cat(parts, k, dtype=None):
    xs = [p[k] for p in parts]
    return np.concatenate(xs) if xs else np.zeros(0, dtype or np.float64)


def _finish_agg(a, parts, kinv, nk, spans, series, ftypes) -> Column:
    f = a.function
    src = ftypes.get(a.field) if a.field is not None else None
    n = np.bincount(kinv, weights=_cat(parts, "n").astype(np.float64), minlength=nk).astype(np.int64)
    present = n > 0
    if f == AggFunc.Count:
        return Column(FieldType.INTEGER, n, None)
    if f in (AggFunc.Sum, AggFunc.Mean):
        sums = _cat(parts, "sum")
        if src in (FieldType.INTEGER, FieldType.UNSIGNED) and f == AggFunc.Sum:
            out = np.zeros(nk, np.int64)
            np.add.at(out, kinv, sums.astype(np.int64))
            return Column(FieldType.INTEGER, out, None if present.all() else present)
        tot = np.bincount(kinv, weights=sums.astype(np.float64), minlength=nk)
        if f == AggFunc.Sum:
            return Column(FieldType.FLOAT, tot, None if present.all() else present)
        with np.errstate(invalid="ignore", divide="ignore"):
            return Column(FieldType.FLOAT, np.where(present, tot / np.maximum(n, 1), 0.0),
                          None if present.all() else present)
    if f in (AggFunc.Min, AggFunc.Max):
        v = _cat(parts, "v")
        is_int = v.dtype.kind in "iu"
        if is_int:
            info = np.iinfo(v.dtype)
            out = np.full(nk, info.max if f == AggFunc.Min else info.min, v.dtype)
        else:
            out = np.full(nk, np.inf if f == AggFunc.Min else -np.inf)
        (np.minimum if f == AggFunc.Min else np.maximum).at(out, kinv, v)
        out = np.where(present, out, 0).astype(out.dtype)
        return Column(src or FieldType.FLOAT, out, None if present.all() else present)
    if f in (AggFunc.StdDev, AggFunc.Variance):
        cnt = _cat(parts, "n").astype(np.float64)
        mean = _cat(parts, "mean")
        m2 = _cat(parts, "m2")
        tot_n = np.bincount(kinv, weights=cnt, minlength=nk)
        gmean = np.bincount(kinv, weights=cnt * mean, minlength=nk) / np.maximum(tot_n, 1)
        d = mean - gmean[kinv]
        M2 = np.bincount(kinv, weights=m2 + cnt * d * d, minlength=nk)
        ok = tot_n >= 2
        with np.errstate(invalid="ignore", divide="ignore"):
            var = np.where(ok, M2 / np.maximum(tot_n - 1, 1), 0.0)
        var = np.maximum(var, 0.0)
        out = np.sqrt(var) if f == AggFunc.StdDev else var
        return Column(FieldType.FLOAT, out, None if ok.all() else ok)
    if f in (AggFunc.First, AggFunc.Last):
        ok = _cat(parts, "ok", bool).astype(bool)
        t = _cat(parts, "t", np.int64).astype(np.int64)
        idx = _cat(parts, "idx", np.int64).astype(np.int64)
        ser = np.concatenate([np.full(len(p["ok"]), p["series"], np.int64) for p in parts]) if parts else \
            np.zeros(0, np.int64)
        cand = np.flatnonzero(ok)
        # best candidate per key: earliest (First) / latest (Last) time
        tk = t[cand] if f == AggFunc.First else -t[cand]
        order = np.lexsort((tk, kinv[cand]))
        sk = kinv[cand][order]
        firsts = order[np.r_[True, sk[1:] != sk[:-1]]] if len(sk) else order
        win = cand[firsts]
        wkey = kinv[win]
        ftype = src or FieldType.FLOAT
        out = np.zeros(nk, ftype.dtype) if ftype != FieldType.STRING else np.full(nk, "", object)
        has = np.zeros(nk, bool)
        for si in np.unique(ser[win]).tolist():
            sel = ser[win] == si
            s = series[si]
            pos = idx[win][sel]
            if s.rows is not None:
                pos = s.rows[pos]
            vals = s.arrow[a.field].take(pa.array(pos, pa.int64()))
            py = vals.to_numpy(zero_copy_only=False)
            out[wkey[sel]] = py
            has[wkey[sel]] = True
        return Column(ftype, out, None if has.all() else has)
    # Median / Percentile
    p = 50.0 if f == AggFunc.Median else float(a.percentile or 0.0)
    if sum(len(spans[part["series"]][0]) for part in parts) > MAX_SLICES:
        raise TooManyKeys()
    out = np.zeros(nk)
    # each (series, bucket) partial's key, in the concatenation order used for kinv
    pos = 0
    gather: list[list] = [[] for _ in range(nk)]
    for part in parts:
        si = part["series"]
        starts, ends = spans[si]
        s = series[si]
        v, m = s.vals[a.field], s.valid[a.field]
        keys = kinv[pos:pos + len(starts)]
        pos += len(starts)
        for k, lo, hi in zip(keys.tolist(), starts.tolist(), ends.tolist()):
            seg = v[lo:hi]
            mm = m[lo:hi]
            gather[k].append(seg if mm.all() else seg[mm])
    has = np.zeros(nk, bool)
    for k in range(nk):
        if gather[k]:
            x = np.concatenate(gather[k]) if len(gather[k]) > 1 else gather[k][0]
            if len(x):
                out[k] = np.percentile(x.astype(np.float64), p)
                has[k] = True
    return Column(FieldType.FLOAT, out, None if has.all() else has)


def _empty_one_row(q, aggs, ftypes) -> ResultSet:
    cols = {}
    for a in aggs:
        if a.function == AggFunc.Count:
            cols[a.output_name] = Column(FieldType.INTEGER, np.zeros(1, np.int64), None)
        else:
            cols[a.output_name] = Column(FieldType.FLOAT, np.zeros(1), np.zeros(1, bool))
    return ResultSet(q.measurement, None, np.zeros(1, np.int64), [{}], cols, [a.output_name for a in aggs], True)


async def run_vector(db, q: Query, residual=()) -> ResultSet:
    """Snapshot in the loop, aggregate in a worker thread (may raise :class:`TooManyKeys`)."""
    sids = select_series(db.index, q)
    ftypes = db.schema.fields(q.measurement)
    for a in q.aggregations:
        if a.field is not None and a.field not in ftypes:
            from rusts.errors import UnknownColumnError
            raise UnknownColumnError(f'column "{a.field}" does not exist')
    snap = db.snapshot(sids, q.start, q.end)
    tags = db.tags_map(sids)
    return await trio.to_thread.run_sync(
        lambda: aggregate(snap, q, sids, tags.__getitem__, ftypes, residual),
        limiter=cpu_limiter(), abandon_on_cancel=True)
