"""Aggregation of many series' rows at once, for ranges held in memory (:mod:`rusts.memory.recent`).

Dashboards and alert rules aggregate the last minutes of thousands of small series ("average CPU
per site over the last 5 minutes", "devices whose average CPU is above 90"). Series by series
(:mod:`rusts.sql.vector`) that costs Python work per series; handing the rows to DuckDB costs a
registration, a plan and a thread hop per statement. Here the rows come from
:func:`rusts.memory.recent.scan` as one columnar result across series (sorted by series, then time, one
row per series and timestamp, last write wins) and every aggregate is a handful of numpy passes
over all rows:

1. Field predicates (the plan's residual) become one row mask; rows outside it are dropped
   (SQL: a group whose rows were all filtered out does not exist).
2. Each distinct series gets its group number from its tags (one small Python pass per *series*,
   never per row); each row gets ``group * buckets + bucket`` and ``np.unique`` numbers the
   (group, bucket) keys in (group, bucket) order.
3. COUNT/SUM/AVG are ``np.bincount`` with weights, MIN/MAX ``ufunc.at``, STDDEV/VARIANCE two
   passes (mean, then squared deviations), FIRST/LAST the earliest/latest valid row per key after
   one stable sort, PERCENTILE_N/MEDIAN a sort by (key, value) and a linear interpolation between
   the two ranks around ``p * (n - 1)`` (= ``percentile_cont``).

The answer is an executor :class:`~rusts.query.executor.ResultSet` shaped like
:func:`rusts.sql.vector.aggregate`'s, so output assembly, HAVING, ORDER BY and LIMIT are shared.
Differential tests run the same statements through this module, the series-by-series path and
DuckDB.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rusts.query.exact import checked_sum, int_mean
from rusts.query.executor import ResultSet, aggregate_of_nothing
from rusts.model import Column, FieldType
from rusts.query.model import AggFunc, Query

__all__ = ["aggregate_rows", "run_recent_aggregate"]

def _residual_mask(residual, cols: dict, n: int) -> np.ndarray | None:
    """Rows satisfying every predicate, plain or an AND/OR tree (NULL never matches a comparison)."""
    from rusts.sql.vector import _and, tree_mask

    def column(f):
        v, valid = cols[f]
        return v, valid, None

    keep = None
    for p in residual:
        keep = _and(keep, tree_mask(p, column, n))
    return keep


class GroupTags(Sequence):
    """The tags of each group as columns (one object array per group key, None where a group has
    no such tag); reads like the executor's list of tag dicts, without building one per group."""

    def __init__(self, keys: tuple, columns: list[np.ndarray], n: int) -> None:
        self.keys, self.columns, self.n = keys, columns, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        return {k: c[i] for k, c in zip(self.keys, self.columns) if c[i] is not None}

    def column(self, key: str) -> np.ndarray:
        for k, c in zip(self.keys, self.columns):
            if k == key:
                return c
        return np.full(self.n, None, dtype=object)


def _groups(usid: np.ndarray, group_by: tuple, tag_codes) -> tuple[np.ndarray, GroupTags]:
    """Group number of each distinct series and the tags of each group (numbered in the order of
    their tag value numbers)."""
    if not group_by:
        return np.zeros(len(usid), np.int64), GroupTags((), [], 1)
    digits = [tag_codes(k, usid) for k in group_by]  # (codes, names) per key
    radix = 1
    for _, names in digits:
        radix *= len(names) + 1
    if radix < 2**62:
        code = np.zeros(len(usid), np.int64)
        for codes, names in digits:
            code = code * (len(names) + 1) + (codes + 1)
        ucode, of_series = np.unique(code, return_inverse=True)
        per_key = []
        for codes, names in reversed(digits):
            base = len(names) + 1
            per_key.append(ucode % base - 1)
            ucode = ucode // base
        per_key.reverse()
    else:
        stacked = np.stack([c for c, _ in digits], axis=1)
        urows, of_series = np.unique(stacked, axis=0, return_inverse=True)
        per_key = [urows[:, j] for j in range(len(digits))]
    columns = []
    for (_, names), idx in zip(digits, per_key):
        words = np.empty(len(names) + 1, dtype=object)
        words[:len(names)] = names
        words[len(names)] = None
        columns.append(words[idx])  # -1 (absent) picks the trailing None
    return of_series.reshape(-1).astype(np.int64), GroupTags(tuple(group_by), columns, len(columns[0]))


def aggregate_rows(sid: np.ndarray, ts: np.ndarray, cols: dict, q: Query, ftypes: dict[str, FieldType],
                   tag_codes, residual=()) -> ResultSet:
    """Aggregate ``q`` over columnar rows (``sid``/``ts``/``{field: (values, valid)}`` sorted by
    series then time, as :func:`rusts.memory.recent.scan` returns them).

    ``tag_codes(key, sids)`` gives a tag of each series id as ``(value numbers, values)`` (-1
    where absent), as :meth:`rusts.storage.index.SeriesIndex.tag_codes` does. Pure function (worker-thread
    safe).
    """
    aggs = q.aggregations
    iv = q.interval
    n = len(ts)
    keep = _residual_mask(residual, cols, n) if residual else None
    if keep is not None and not keep.all():
        sid, ts = sid[keep], ts[keep]
        cols = {f: (v[keep], None if m is None else m[keep]) for f, (v, m) in cols.items()}
        n = len(ts)
    if n == 0:
        return aggregate_of_nothing(q)
    # ---- group of each row, then (group, bucket) keys, numbered densely in (group, bucket) order
    bounds = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]])
    g_series, group_tags = _groups(sid[bounds], q.group_by, tag_codes)
    ng = len(group_tags)
    g_row = np.repeat(g_series, np.diff(np.r_[bounds, n]))
    if iv is None:  # every group has rows (groups come from the series that have rows)
        kinv, nk, key_g, key_b = g_row, ng, np.arange(ng, dtype=np.int64), None
    else:
        b_row = ts - np.mod(ts, iv)
        bmin = int(b_row.min())
        bi = (b_row - bmin) // iv
        nb = int(bi.max()) + 1
        if ng * nb <= 8 * n + 4096:
            code = g_row * nb + bi
            present = np.bincount(code, minlength=ng * nb) > 0
            ucode = np.flatnonzero(present)
            kinv = (np.cumsum(present) - 1)[code]
        else:
            ucode, kinv = np.unique(g_row * nb + bi, return_inverse=True)
            kinv = kinv.reshape(-1)
        nk = len(ucode)
        key_g, key_b = ucode // nb, bmin + (ucode % nb) * iv
    out = {}
    order_by_time = None
    for a in aggs:
        if a.function in (AggFunc.First, AggFunc.Last) and order_by_time is None:
            order_by_time = np.lexsort((ts, kinv))  # stable: ties keep series order
        out[a.output_name] = _agg(a, kinv, nk, n, cols, ftypes, ts, order_by_time)
    return ResultSet(q.measurement, key_b, np.asarray(key_g, np.int64), group_tags, out,
                     [a.output_name for a in aggs], True, {k: c.type for k, c in out.items()})


def _agg(a, kinv: np.ndarray, nk: int, n: int, cols: dict, ftypes: dict, ts, order_by_time) -> Column:
    f = a.function
    if a.field is None:  # COUNT(*)
        return Column(FieldType.INTEGER, np.bincount(kinv, minlength=nk).astype(np.int64), None)
    src = ftypes.get(a.field)
    v, valid = cols[a.field]
    cnt = np.bincount(kinv, minlength=nk) if valid is None else \
        np.bincount(kinv, weights=valid, minlength=nk).astype(np.int64)
    present = cnt > 0
    pmask = None if present.all() else present
    if f == AggFunc.Count:
        return Column(FieldType.INTEGER, cnt.astype(np.int64), None)
    if f in (AggFunc.First, AggFunc.Last):
        order = order_by_time if valid is None else order_by_time[valid[order_by_time]]
        k = kinv[order]
        if f == AggFunc.First:
            first = np.r_[True, k[1:] != k[:-1]] if len(k) else np.zeros(0, bool)
        else:  # latest time; among equal times the first series in order (as the per-series path)
            last_t = np.r_[k[1:] != k[:-1], True] if len(k) else np.zeros(0, bool)
            t_last = np.zeros(nk, np.int64)
            t_last[k[last_t]] = ts[order[last_t]]
            at_last = ts[order] == t_last[k]
            kk = k[at_last]
            first = np.zeros(len(k), bool)
            first[np.flatnonzero(at_last)[np.r_[True, kk[1:] != kk[:-1]]] if len(kk) else []] = True
        rows = order[first]
        keys = k[first]
        ft = src or FieldType.FLOAT
        vals = np.zeros(nk, ft.dtype) if ft != FieldType.STRING else np.full(nk, "", object)
        vals[keys] = v[rows]
        return Column(ft, vals, pmask)
    if v.dtype.kind == "b":
        v = v.astype(np.int64)
    if f in (AggFunc.Sum, AggFunc.Mean):
        w = v.astype(np.float64, copy=False)
        if valid is not None:
            w = np.where(valid, w, 0.0)
        tot = np.bincount(kinv, weights=w, minlength=nk)
        if v.dtype.kind in "iu":  # exact: modulo 2^64, checked against the float sum
            wrapped = np.zeros(nk, v.dtype)
            np.add.at(wrapped, kinv, v if valid is None else np.where(valid, v, 0).astype(v.dtype))
            if f == AggFunc.Sum:
                ft = src if src in (FieldType.INTEGER, FieldType.UNSIGNED) else FieldType.INTEGER
                return Column(ft, checked_sum(wrapped, tot, present), pmask)
            if not (np.abs(tot) >= 2.0**62).any():
                return Column(FieldType.FLOAT, np.where(present, int_mean(wrapped, cnt), 0.0), pmask)
        if f == AggFunc.Sum:
            return Column(FieldType.FLOAT, tot, pmask)
        with np.errstate(invalid="ignore", divide="ignore"):
            return Column(FieldType.FLOAT, np.where(present, tot / np.maximum(cnt, 1), 0.0), pmask)
    if f in (AggFunc.Min, AggFunc.Max):
        from rusts.sql.vector import min_max

        ufunc, fill = min_max(f, v.dtype)
        res = np.full(nk, fill, v.dtype)
        if valid is None:
            ufunc.at(res, kinv, v)
        else:
            ufunc.at(res, kinv[valid], v[valid])
        res = np.where(present, res, 0).astype(v.dtype)
        return Column(src or FieldType.FLOAT, res, pmask)
    x = v.astype(np.float64, copy=False)
    if f in (AggFunc.StdDev, AggFunc.Variance):
        w = x if valid is None else np.where(valid, x, 0.0)
        mean = np.bincount(kinv, weights=w, minlength=nk) / np.maximum(cnt, 1)
        d = x - mean[kinv]
        if valid is not None:
            d = np.where(valid, d, 0.0)
        m2 = np.bincount(kinv, weights=d * d, minlength=nk)
        ok = cnt >= 2
        var = np.maximum(np.where(ok, m2 / np.maximum(cnt - 1, 1), 0.0), 0.0)
        return Column(FieldType.FLOAT, np.sqrt(var) if f == AggFunc.StdDev else var, None if ok.all() else ok)
    # Median / Percentile: linear interpolation between the ranks around p * (n - 1)
    p = 50.0 if f == AggFunc.Median else float(a.percentile or 0.0)
    k, xs = (kinv, x) if valid is None else (kinv[valid], x[valid])
    pos = (p / 100.0) * np.maximum(cnt - 1, 0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(cnt - 1, 0))
    frac = pos - lo
    a_lo, a_hi = _ranks(k, xs, cnt, nk, lo, hi)
    return Column(FieldType.FLOAT, np.where(present, a_lo + (a_hi - a_lo) * frac, 0.0), pmask)


def _ranks(k: np.ndarray, xs: np.ndarray, cnt: np.ndarray, nk: int, lo: np.ndarray, hi: np.ndarray):
    """The ``lo``-th and ``hi``-th smallest value of each key (0 where a key has no value)."""
    m = len(xs)
    out_lo, out_hi = np.zeros(nk), np.zeros(nk)
    if m == 0:
        return out_lo, out_hi
    has = cnt > 0
    by_key = np.argsort(k.astype(np.uint16) if nk <= 65536 else k, kind="stable")  # radix sort
    ks, xk = k[by_key], xs[by_key]
    start = np.r_[0, np.cumsum(cnt)[:-1]]
    width = int(cnt.max())
    if width <= 256 and nk * width <= 4 * m + 4096:  # small groups: one padded matrix, rows sorted at once
        mat = np.full((nk, width), np.inf)
        mat[ks, np.arange(m) - start[ks]] = xk
        mat.sort(axis=1)
        rows = np.arange(nk)
        out_lo[has] = mat[rows[has], lo[has]]
        out_hi[has] = mat[rows[has], hi[has]]
    elif nk <= 256:  # few big groups: a partition per group
        for g in np.flatnonzero(has).tolist():
            seg = xk[start[g]:start[g] + cnt[g]]
            part = np.partition(seg, (int(lo[g]), int(hi[g])))
            out_lo[g], out_hi[g] = part[lo[g]], part[hi[g]]
    else:
        order = np.lexsort((xk, ks))
        srt = xk[order]
        out_lo[has] = srt[(start + lo)[has]]
        out_hi[has] = srt[(start + hi)[has]]
    return out_lo, out_hi


def _frozen_tags(index, measurement: str, sids: np.ndarray, keys: tuple):
    """``tag_codes`` over the group keys of ``sids`` (sorted), read now (in the loop: the index
    changes there) so that the aggregation can run in a worker thread."""
    codes = {k: index.tag_codes(measurement, k, sids) for k in keys}

    def tag_codes(key: str, which: np.ndarray) -> tuple[np.ndarray, list[str]]:
        c, names = codes[key]
        return c[np.searchsorted(sids, which)], names

    return tag_codes


ROWS_ON_LOOP = 30_000
"""Statements over at most this many in-memory rows aggregate on the event loop: a thread hop
and the GIL handoffs around it cost more than the numpy passes (~1 ms per 20,000 rows)."""


async def run_recent_aggregate(db, q: Query, residual=(), sids: np.ndarray | None = None) -> ResultSet:
    """Answer aggregate ``q`` (retention applied; ``sids``: its series, when known) from the
    in-memory tables (the caller checked :func:`rusts.sql.scan.recent_covers`)."""
    from rusts.errors import UnknownColumnError
    from rusts.query.executor import select_series
    from rusts.query.control import offload
    from rusts.memory.recent import scan
    from rusts.sql.runner import _limited

    if sids is None:
        sids = select_series(db.index, q)
    ftypes = db.schema.fields(q.measurement)
    from rusts.sql.vector import residual_fields

    need = sorted({a.field for a in q.aggregations if a.field is not None} | set(residual_fields(residual)))
    for f in need:
        if f not in ftypes:
            raise UnknownColumnError(f'column "{f}" does not exist')
    pieces = db.recent.pieces(db.state.tables(), q.measurement, q.start, q.end)
    tag_codes = _frozen_tags(db.index, q.measurement, np.sort(np.asarray(sids, dtype=np.uint64)), q.group_by)

    which = None if len(sids) == len(db.index.series_of(q.measurement)) else sids  # None: all of them

    def work():
        sid, ts, cols = scan(pieces, which, q.start, q.end, need, ftypes)
        return aggregate_rows(sid, ts, cols, q, ftypes, tag_codes, residual)

    async with _limited(db):
        return await offload(work, small=sum(len(p.ts) for _, p in pieces) <= ROWS_ON_LOOP)
