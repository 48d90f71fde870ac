"""Vectorised aggregation over the cached block scan, for fast-path statements the executor would
answer by decoding everything.

The executor answers COUNT/SUM/MEAN/MIN/MAX from block pre-aggregates without decoding, which is
unbeatable when it applies. Time buckets that cut through blocks, percentiles, FIRST/LAST,
STDDEV/VARIANCE and field predicates (``WHERE trip_miles > 0``) need the values. This module reads
them through :mod:`rusts.sql.scan` (decoded blocks cached as Arrow) and aggregates with numpy:

1. Per series, the pieces (time ordered) are concatenated per needed column; field predicates are
   evaluated per piece with Arrow compute kernels (SQL NULL semantics: NULL compares false).
2. Buckets are ``t - t mod interval`` (epoch aligned, like the executor); since a series' rows are
   sorted by time, its buckets are sorted too and ``ufunc.reduceat`` gives per-(series, bucket)
   partials without any sort: count, sum, min, max, first/last (by time), and for STDDEV/VARIANCE
   count, mean and M2 (combined across series with Chan's formula, numerically stable).
3. Partials of the series of one group are combined per (group, bucket) key; percentiles and
   MEDIAN gather each key's value slices and use ``np.percentile`` (linear, = percentile_cont).

The answer is an executor :class:`~rusts.query.executor.ResultSet`, so output assembly, ORDER BY and
LIMIT are shared with the fast path. Differential tests run the same statements through the
executor, this module and DuckDB.
"""

from __future__ import annotations

import attrs
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rusts.query.exact import checked_sum, int_mean
from rusts.query.executor import ResultSet, aggregate_of_nothing, select_series
from rusts.query.rowset import concat_column
from rusts.query.control import checkpoint, offload
from rusts.model import Column, FieldType
from rusts.query.model import AggFunc, Query
from rusts.sql.scan import CACHE, series_columns, series_pieces

MAX_SLICES = 200_000  # percentile gathering beyond this many (series, bucket) slices: DuckDB


class TooManyKeys(Exception):
    """The statement would gather too many percentile slices; use the DuckDB path."""


_PC_OPS = {"=": pc.equal, "!=": pc.not_equal, "<": pc.less, "<=": pc.less_equal, ">": pc.greater,
           ">=": pc.greater_equal}
COMPARE = {"=": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal, ">": np.greater,
           ">=": np.greater_equal}


@attrs.define
class _Series:
    """One series: times (when needed), per-field values/validity (validity already ANDed with the
    row filter) and the row filter itself."""

    gid: int
    n: int
    ts: np.ndarray | None
    keep: np.ndarray | None
    vals: dict
    valid: dict


def _chunked(pieces, field: str, ft: FieldType) -> pa.ChunkedArray:
    """A field over the pieces as Arrow (string predicates use Arrow's kernels; a block's Arrow
    form is made once and kept in the block cache)."""
    from rusts.storage.blockcache import ARROW_TYPES

    at = ARROW_TYPES[ft]
    return pa.chunked_array([c.arrow() if (c := p.cols.get(field)) is not None else pa.nulls(len(p.ts), at)
                             for p in pieces], type=at)


def _arrays(cols: dict, need: list[str], ftypes: dict, n: int) -> tuple[dict, dict]:
    """Per field: values and presence (None: all present) of a series' ``n`` rows, from
    ``{field: Column or None}`` (None: no value in the range)."""
    vals, valid = {}, {}
    for f in need:
        c = cols[f]
        vals[f], valid[f] = (ftypes[f].zeros(n), np.zeros(n, bool)) if c is None else (c.values, c.mask)
    return vals, valid


def fits_one_series(q: Query, sids: np.ndarray, residual=()) -> bool:
    """Whether :func:`one_series` answers ``q``: one series, no row filter, no GROUP BY, only
    COUNT/SUM/AVG/MIN/MAX."""
    return (len(sids) == 1 and not residual and not q.group_by
            and all(a.function in _ONE_PARTIAL for a in q.aggregations))


def _and(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return b
    if b is None:
        return a
    return a & b


def _predicate(field: str, op: str, value, ch, vals, valid, n: int) -> np.ndarray:
    """One residual predicate as a row mask (SQL: NULL never matches a comparison); numpy over
    ``vals``, or Arrow kernels over ``ch`` when given."""
    if op == "isnull":
        return np.zeros(n, bool) if valid is None else ~valid
    if op == "notnull":
        return np.ones(n, bool) if valid is None else valid.copy()
    if ch is None:
        if op == "between":
            m = (vals >= value[0]) & (vals <= value[1])
        else:
            m = np.asarray(COMPARE[op](vals, value), dtype=bool)
    else:  # strings: Arrow kernels over the chunked column
        if op == "between":
            r = pc.and_(pc.greater_equal(ch, value[0]), pc.less_equal(ch, value[1]))
        else:
            r = _PC_OPS[op](ch, value)
        m = r.fill_null(False).to_numpy(zero_copy_only=False)
    return m if valid is None else (m & valid)


def residual_fields(residual) -> list[str]:
    """The fields the residual predicates read (AND/OR trees flattened)."""
    out: list[str] = []
    for p in residual:
        if p[1] is None and p[0] in ("and", "or"):
            out.extend(residual_fields(p[2]))
        else:
            out.append(p[0])
    return out


def tree_mask(p: tuple, column, n: int) -> np.ndarray:
    """Rows where predicate ``p`` holds: ``(field, op, value)`` or an AND/OR tree
    ``("and" | "or", None, (p, ...))``; ``column(field)`` gives ``(values, valid, Arrow chunked
    column or None)``. Only AND and OR combine leaves, so "true" composes without tracking
    unknowns (a comparison with NULL is never true)."""
    f, op, value = p
    if op is None and f in ("and", "or"):
        out = tree_mask(value[0], column, n)
        for q in value[1:]:
            m = tree_mask(q, column, n)
            out = (out & m) if f == "and" else (out | m)
        return out
    vals, valid, ch = column(f)
    return _predicate(f, op, value, ch, vals, valid, n)


_PRUNE_OPS = {">", ">=", "<", "<=", "=", "between", "notnull"}


def block_filter(residual, ftypes: dict[str, FieldType]):
    """A function ``(reader, sid, lo, hi) -> keep`` saying which segment blocks ``lo..hi-1`` of a
    series may hold a row the residual predicates accept, from the blocks' min/max statistics
    (a block whose maximum is 50 has no row with ``usage > 90``); None when no predicate can
    prune. Conservative: float statistics of integers are widened by one step, a block with
    values but NaN statistics is kept."""

    def prunable(p) -> bool:
        if p[1] is None and p[0] in ("and", "or"):
            sub = [prunable(q) for q in p[2]]
            return all(sub) if p[0] == "or" else any(sub)
        return p[1] in _PRUNE_OPS and ftypes.get(p[0]) in (FieldType.FLOAT, FieldType.INTEGER, FieldType.UNSIGNED)

    preds = [p for p in residual if prunable(p)]
    if not preds:
        return None

    def keep(reader, sid: int, lo: int, hi: int) -> np.ndarray:
        stats: dict = {}

        def of(f):
            got = stats.get(f)
            if got is None:
                fs = reader.field_stats(sid, f)
                mn, mx, cnt = fs.min[lo:hi], fs.max[lo:hi], fs.count[lo:hi]
                if ftypes[f] != FieldType.FLOAT:
                    mn, mx = np.nextafter(mn, -np.inf), np.nextafter(mx, np.inf)
                got = stats[f] = (mn, mx, cnt > 0, (cnt > 0) & (np.isnan(mn) | np.isnan(mx)))
            return got

        def may(p) -> np.ndarray:
            f, op, v = p
            if op is None and f in ("and", "or"):
                parts = [may(q) for q in v if prunable(q)] if f == "and" else [may(q) for q in v]
                out = parts[0]
                for m in parts[1:]:
                    out = (out & m) if f == "and" else (out | m)
                return out
            mn, mx, has, unknown = of(f)
            with np.errstate(invalid="ignore"):
                if op == ">":
                    m = mx > v
                elif op == ">=":
                    m = mx >= v
                elif op == "<":
                    m = mn < v
                elif op == "<=":
                    m = mn <= v
                elif op == "=":
                    m = (mn <= v) & (mx >= v)
                elif op == "between":
                    m = (mx >= v[0]) & (mn <= v[1])
                else:  # notnull
                    m = has.copy()
            return m | unknown

        out = may(preds[0])
        for p in preds[1:]:
            out = out & may(p)
        return out

    return keep


def aggregate(snap, q: Query, sids: np.ndarray, tags_of, ftypes: dict[str, FieldType],
              residual=(), cache=CACHE) -> ResultSet:
    """Run the aggregate query ``q`` (plus ``residual`` field predicates: plain or AND/OR trees)
    over the scan; segment blocks the predicates rule out by their min/max are not read."""
    aggs = q.aggregations
    iv = q.interval
    pfields = residual_fields(residual)
    need = sorted({a.field for a in aggs if a.field is not None} | set(pfields))
    need = [f for f in need if f in ftypes]
    strings = {f for f in need if ftypes[f] == FieldType.STRING}
    string_preds = any(f in strings for f in pfields)
    prune = block_filter(residual, ftypes) if residual else None
    need_ts = iv is not None or any(a.function in (AggFunc.First, AggFunc.Last) for a in aggs)
    group_keys: dict[tuple, int] = {}
    group_tags: list[dict] = []
    series: list[_Series] = []
    for sid in sids.tolist():
        checkpoint()
        tags = tags_of(int(sid))
        key = tuple(tags.get(k) for k in q.group_by)
        pieces = None
        if string_preds:  # Arrow kernels over the pieces' (cached) Arrow forms
            pieces = series_pieces(snap, int(sid), q.start, q.end, need, ftypes, cache, q.measurement)
            if not pieces:
                continue
            lengths = [len(p.ts) for p in pieces]
            ts = np.concatenate([p.ts for p in pieces]) if len(pieces) > 1 else pieces[0].ts
            cols = {f: concat_column([p.cols.get(f) for p in pieces], lengths, ftypes[f]) for f in need}
        else:
            got = series_columns(snap, int(sid), q.start, q.end, need, ftypes, cache, q.measurement, prune)
            if got is None:
                continue
            ts, cols = got
        n = len(ts)
        vals, valid = _arrays(cols, need, ftypes, n)
        keep = None

        def column(f, vals=vals, valid=valid, pieces=pieces):
            if f not in vals:  # a field this measurement does not have: NULL everywhere
                return np.zeros(n), np.zeros(n, bool), None
            return vals[f], valid[f], (_chunked(pieces, f, ftypes[f]) if f in strings else None)

        for p in residual:
            keep = _and(keep, tree_mask(p, column, n))
        if keep is not None and not keep.any():
            continue
        gid = group_keys.get(key)
        if gid is None:
            gid = group_keys[key] = len(group_tags)
            group_tags.append({k: v for k, v in zip(q.group_by, key) if v is not None})
        series.append(_Series(gid, n, ts if need_ts else None, keep, vals, {f: _and(valid[f], keep) for f in need}))
    if len(series) > 1 and all(a.function in _BATCHED for a in aggs):
        part_g, part_b, partials = _batched_partials(aggs, series, iv)
        return _combine(q, aggs, partials, part_g, part_b, [], series, group_tags, ftypes, distinct=False)
    # ---- per-series partials over sorted buckets
    part_g, part_b = [], []
    partials: list[dict] = [dict() for _ in aggs]
    spans = []  # per series: (bucket starts, ends) for percentile gathering
    for si, s in enumerate(series):
        n = s.n
        starts, ends, ub = _buckets(s.ts, iv, n)
        rows = _red(np.add, s.keep.astype(np.int64), starts) if s.keep is not None else ends - starts
        nz = rows > 0
        mine = []
        for a, acc in zip(aggs, partials):
            _partial(a, s, si, starts, ends, rows, acc)
            mine.append(acc["parts"][-1])
        if not nz.all():  # buckets whose rows were all filtered out do not exist
            for part in mine:
                for k, v in list(part.items()):
                    if isinstance(v, np.ndarray):
                        part[k] = v[nz]
            starts, ends, ub, rows = starts[nz], ends[nz], ub[nz], rows[nz]
        part_g.append(np.full(len(starts), s.gid, np.int64))
        part_b.append(ub)
        spans.append((starts, ends))
    return _combine(q, aggs, partials, part_g, part_b, spans, series, group_tags, ftypes)


_BATCHED = (AggFunc.Count, AggFunc.Sum, AggFunc.Mean, AggFunc.Min, AggFunc.Max, AggFunc.StdDev,
            AggFunc.Variance)
"""Aggregates whose partials :func:`_batched_partials` computes for all series at once."""


def _batched_partials(aggs, series: list[_Series], iv: int | None):
    """The partials of every series' time buckets in one pass: the series' rows concatenated
    (series after series, each in time order), runs of one (series, bucket) found at once and
    each aggregate reduced once over them (``ufunc.reduceat``), instead of a dozen numpy calls
    per series and aggregate (100 series x 10 fields: 2,000 calls). The runs are the per-series
    path's, in the same order, so the values are the same. Returns ``(part_g, part_b,
    partials)`` for :func:`_combine` (keys not distinct: several series may share a group)."""
    series = [s for s in series if s.n]
    if not series:
        return [], [], [dict() for _ in aggs]
    ns = np.fromiter((s.n for s in series), np.int64, len(series))
    total = int(ns.sum())
    offs = np.cumsum(ns) - ns
    gid_of = np.fromiter((s.gid for s in series), np.int64, len(series))
    if iv is None:  # one run per series
        ts, starts, ends = None, offs, offs + ns
        keys, gids = np.zeros(len(starts), np.int64), gid_of
    else:
        brk = np.zeros(total, bool)
        brk[offs] = True  # a series' first row starts a run
        ts = np.concatenate([s.ts for s in series])
        b = ts - ts % iv
        brk[1:] |= b[1:] != b[:-1]
        starts = np.flatnonzero(brk)
        ends = np.empty_like(starts)
        ends[:-1] = starts[1:]
        ends[-1:] = total
        keys = b[starts]
        gids = gid_of[np.searchsorted(offs, starts, "right") - 1]
    keep = None
    if any(s.keep is not None for s in series):
        keep = np.concatenate([np.ones(s.n, bool) if s.keep is None else s.keep for s in series])
    vals, valid = {}, {}
    for f in dict.fromkeys(a.field for a in aggs if a.field is not None):
        vals[f] = np.concatenate([s.vals[f] for s in series])
        ms = [s.valid[f] for s in series]
        valid[f] = None if all(m is None for m in ms) else np.concatenate(
            [np.ones(s.n, bool) if m is None else m for s, m in zip(series, ms)])
    big = _Series(0, total, ts, keep, vals, valid)
    rows = _red(np.add, keep.astype(np.int64), starts) if keep is not None else ends - starts
    partials: list[dict] = [dict() for _ in aggs]
    for a, acc in zip(aggs, partials):
        _partial(a, big, 0, starts, ends, rows, acc)
    nz = rows > 0
    if not nz.all():  # buckets whose rows were all filtered out do not exist
        for acc in partials:
            part = acc["parts"][-1]
            for k, v in list(part.items()):
                if isinstance(v, np.ndarray):
                    part[k] = v[nz]
        gids, keys = gids[nz], keys[nz]
    return [gids], [keys], partials


def _buckets(ts: np.ndarray | None, iv: int | None, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(starts, ends, bucket keys)`` of the runs of equal time buckets of one series' rows
    (in time order); one run of everything without an interval."""
    if iv is not None:
        b = ts - ts % iv
        brk = np.flatnonzero(b[1:] != b[:-1])
        starts = np.empty(len(brk) + 1, np.int64)
        starts[0] = 0
        np.add(brk, 1, out=starts[1:])
        keys = b[starts]
    else:
        starts = np.zeros(1, np.int64)
        keys = starts
    ends = np.empty_like(starts)
    ends[:-1] = starts[1:]
    ends[-1] = n
    return starts, ends, keys


def one_series(snap, q: Query, sid: int, ftypes: dict[str, FieldType], cache=CACHE) -> ResultSet:
    """:func:`aggregate` for one series, no row filter, no GROUP BY and only COUNT, SUM, AVG, MIN
    and MAX (:data:`_ONE_PARTIAL`): a host's metric per time bucket, the most common dashboard
    statement. Every bucket has exactly one partial, so nothing is combined."""
    aggs = q.aggregations
    iv = q.interval
    need = sorted({a.field for a in aggs if a.field is not None and a.field in ftypes})
    got = series_columns(snap, sid, q.start, q.end, need, ftypes, cache, q.measurement)
    if got is None:
        return aggregate_of_nothing(q)
    ts, cols = got
    n = len(ts)
    s = _Series(0, n, ts, None, *_arrays(cols, need, ftypes, n))
    starts, ends, keys = _buckets(ts, iv, n)
    rows = ends - starts
    out = {}
    for a in aggs:
        acc: dict = {}
        _partial(a, s, 0, starts, ends, rows, acc)
        out[a.output_name] = _one_partial(a, acc["parts"][0], ftypes)
    return ResultSet(q.measurement, keys if iv is not None else None, np.zeros(len(starts), np.int64),
                     [{}], out, [a.output_name for a in aggs], True, {k: c.type for k, c in out.items()})


def seen_buckets(q: Query, rs: ResultSet) -> ResultSet:
    """``rs`` (aggregate ``q``, one group) without the buckets where no aggregate saw a value (a
    COUNT of 0, a NULL): the executor's (and the JSON API's) buckets, where SQL keeps every bucket
    that has rows."""
    if not len(rs.row_group):
        return rs
    seen = np.zeros(len(rs.row_group), bool)
    for a in q.aggregations:
        c = rs.fields[a.output_name]
        if a.function == AggFunc.Count:
            seen |= c.values > 0
        else:
            seen |= True if c.mask is None else c.mask
    if seen.all():
        return rs
    fields = {k: c.take(seen) for k, c in rs.fields.items()}
    return attrs.evolve(rs, timestamps=None if rs.timestamps is None else rs.timestamps[seen],
                        row_group=rs.row_group[seen], fields=fields)


def min_max(f: AggFunc, dtype: np.dtype):
    """The ufunc of MIN or MAX and its identity for ``dtype`` (what an empty slot starts as)."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        fill = info.max if f == AggFunc.Min else info.min
    else:
        fill = np.inf if f == AggFunc.Min else -np.inf
    return (np.minimum if f == AggFunc.Min else np.maximum), fill


def _red(ufunc, x: np.ndarray, starts: np.ndarray) -> np.ndarray:
    if len(starts) == 0:
        return np.zeros(0, x.dtype)
    return ufunc.reduceat(x, starts)


def _red_masked(ufunc, v: np.ndarray, m: np.ndarray | None, fill, starts, ends) -> np.ndarray:
    """``ufunc.reduceat`` over contiguous runs ``[starts[k], ends[k])`` covering the rows, with the
    rows where ``m`` is False replaced by ``fill`` (the ufunc's identity)."""
    if len(starts) == 0:
        return np.zeros(0, v.dtype)
    z = v if m is None else np.where(m, v, fill)
    return ufunc.reduceat(z, starts)


def _partial(a, s: _Series, si: int, starts, ends, rows, acc: dict) -> None:
    f = a.function
    lst = acc.setdefault("parts", [])
    if a.field is None:  # COUNT(*)
        lst.append({"n": rows})
        return
    m = s.valid[a.field]
    cnt = (ends - starts) if m is None else _red_masked(np.add, m.astype(np.int64), None, 0, starts, ends)
    if f == AggFunc.Count:
        lst.append({"n": cnt})
        return
    v = s.vals.get(a.field)
    if f in (AggFunc.Sum, AggFunc.Mean):
        if v is not None and v.dtype.kind == "b":
            v = v.astype(np.int64)
        part = {"n": cnt, "sum": _red_masked(np.add, v, m, 0, starts, ends)}  # integers: modulo 2^64
        if v is not None and v.dtype.kind in "iu":  # which multiple of 2^64 (rusts.query.exact)
            part["fsum"] = _red_masked(np.add, v.astype(np.float64), m, 0.0, starts, ends)
        lst.append(part)
    elif f in (AggFunc.Min, AggFunc.Max):
        ufunc, fill = min_max(f, v.dtype)
        lst.append({"n": cnt, "v": _red_masked(ufunc, v, m, fill, starts, ends)})
    elif f in (AggFunc.StdDev, AggFunc.Variance):
        x = v.astype(np.float64)
        sm = _red_masked(np.add, x, m, 0.0, starts, ends)
        mean = sm / np.maximum(cnt, 1)
        dev = x - np.repeat(mean, ends - starts)
        lst.append({"n": cnt, "mean": mean, "m2": _red_masked(np.add, dev * dev, m, 0.0, starts, ends)})
    elif f in (AggFunc.First, AggFunc.Last):
        n = s.n
        ar = np.arange(n)
        if f == AggFunc.First:
            idx = _red_masked(np.minimum, ar, m, n, starts, ends)
            ok = idx < n
        else:
            idx = _red_masked(np.maximum, ar, m, -1, starts, ends)
            ok = idx >= 0
        idx = np.where(ok, idx, 0)
        t = s.ts[idx] if n else np.zeros(0, np.int64)
        lst.append({"n": cnt, "ok": ok, "t": t, "idx": idx, "series": si})
    else:  # Median / Percentile: gathered per key later
        lst.append({"n": cnt, "series": si})


def _combine(q, aggs, partials, part_g, part_b, spans, series, group_tags, ftypes,
             distinct: bool | None = None) -> ResultSet:
    """The answer from the partials: one per (group, bucket) key after combining those of equal
    keys. ``distinct``: the keys of ``part_g``/``part_b`` are already distinct and sorted (by
    default, when there is one part: one series)."""
    iv = q.interval
    if distinct is None:
        distinct = len(part_g) == 1
    if len(part_g) == 1:
        g, b = part_g[0], part_b[0]
    elif part_g:
        g = np.concatenate(part_g)
        b = np.concatenate(part_b)
    else:
        g = b = np.zeros(0, np.int64)
    if len(g) == 0:
        if iv is None and not q.group_by:
            return aggregate_of_nothing(q)
        return ResultSet(q.measurement, None if iv is None else np.zeros(0, np.int64), np.zeros(0, np.int64),
                         group_tags or [{}], {a.output_name: Column(FieldType.FLOAT, np.zeros(0)) for a in aggs},
                         [a.output_name for a in aggs], True)
    if distinct:  # one series: its buckets are already distinct and sorted
        nk = len(b)
        kinv = np.arange(nk)
        key_g, key_b = g, b
    else:
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
        if distinct and a.function in _ONE_PARTIAL:
            cols[a.output_name] = _one_partial(a, parts[0], ftypes)
        else:
            cols[a.output_name] = _finish_agg(a, parts, kinv, nk, spans, series, ftypes)
    if not q.group_by and iv is None and not group_tags:
        group_tags = [{}]
    return ResultSet(q.measurement, key_b if iv is not None else None, key_g, group_tags or [{}], cols,
                     [a.output_name for a in aggs], True, {n: c.type for n, c in cols.items()})


_ONE_PARTIAL = (AggFunc.Count, AggFunc.Sum, AggFunc.Mean, AggFunc.Min, AggFunc.Max)


def _one_partial(a, part: dict, ftypes) -> Column:
    """:func:`_finish_agg` when every key has exactly one partial (one series): no combining."""
    f = a.function
    src = ftypes.get(a.field) if a.field is not None else None
    n = part["n"]
    if f == AggFunc.Count:
        return Column(FieldType.INTEGER, n.astype(np.int64, copy=False), None)
    present = n > 0
    mask = None if present.all() else present
    if f in (AggFunc.Sum, AggFunc.Mean):
        sums = part["sum"]
        if "fsum" in part:  # integers: exact (rusts.query.exact)
            exact = checked_sum(sums, part["fsum"], present) if f == AggFunc.Sum or \
                (np.abs(part["fsum"]) >= 2.0**62).any() else sums
            if f == AggFunc.Sum:
                ft = src if src in (FieldType.INTEGER, FieldType.UNSIGNED) else FieldType.INTEGER
                return Column(ft, np.where(present, exact, 0).astype(exact.dtype), mask)
            return Column(FieldType.FLOAT, np.where(present, int_mean(exact, n), 0.0), mask)
        if f == AggFunc.Sum:
            return Column(FieldType.FLOAT, sums.astype(np.float64), mask)
        with np.errstate(invalid="ignore", divide="ignore"):
            return Column(FieldType.FLOAT, np.where(present, sums / np.maximum(n, 1), 0.0), mask)
    v = part["v"]
    if mask is not None:
        v = np.where(present, v, 0).astype(v.dtype)
    return Column(src or FieldType.FLOAT, v, mask)


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
        if parts and "fsum" in parts[0]:  # integers (and booleans): exact, rusts.query.exact
            out = np.zeros(nk, sums.dtype)
            np.add.at(out, kinv, sums)
            approx = np.bincount(kinv, weights=_cat(parts, "fsum"), minlength=nk)
            if f == AggFunc.Sum:
                ft = src if src in (FieldType.INTEGER, FieldType.UNSIGNED) else FieldType.INTEGER
                return Column(ft, checked_sum(out, approx, present), None if present.all() else present)
            if not (np.abs(approx) >= 2.0**62).any():
                return Column(FieldType.FLOAT, np.where(present, int_mean(out, n), 0.0),
                              None if present.all() else present)
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
            out[wkey[sel]] = s.vals[a.field][idx[win][sel]]
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
            gather[k].append(seg if m is None else seg[m[lo:hi]])
    has = np.zeros(nk, bool)
    for k in range(nk):
        if gather[k]:
            x = np.concatenate(gather[k]) if len(gather[k]) > 1 else gather[k][0]
            if len(x):
                out[k] = np.percentile(x.astype(np.float64), p)
                has[k] = True
    return Column(FieldType.FLOAT, out, None if has.all() else has)


async def run_vector(db, q: Query, residual=(), prepared: tuple | None = None) -> ResultSet:
    """Snapshot in the loop, aggregate in a worker thread (may raise :class:`TooManyKeys`).
    ``prepared``: ``(q with retention applied, its series or None)`` when the caller has them."""
    sids = None
    if prepared is not None:
        q, sids = prepared
    else:
        from rusts.sql.scan import effective_query

        q = effective_query(db, q)
    if sids is None:
        sids = select_series(db.index, q)
    ftypes = db.schema.fields(q.measurement)
    for a in q.aggregations:
        if a.field is not None and a.field not in ftypes:
            from rusts.errors import UnknownColumnError
            raise UnknownColumnError(f'column "{a.field}" does not exist')
    snap = db.snapshot(sids, q.start, q.end)
    if fits_one_series(q, sids, residual):
        sid = int(sids[0])
        return await _run(db, snap, sids, q, lambda: one_series(snap, q, sid, ftypes))
    tags = db.tags_map(sids)
    return await _run(db, snap, sids, q, lambda: aggregate(snap, q, sids, tags.__getitem__, ftypes, residual))


async def _run(db, snap, sids, q: Query, work):
    """``work()`` on the event loop when the query touches little data (a thread hop costs more,
    ~0.1 ms, and so do the concurrency limit and the time limit, which cannot interrupt it), else
    in a worker thread under the database's query limits."""
    from rusts.db import _is_small
    from rusts.sql.runner import _limited

    async with _limited(db):
        return await offload(work, small=_is_small(snap, sids, q))


def latest_rows(snap, q: Query, sids: np.ndarray, tags_of, ftypes: dict, keys, key_desc) -> ResultSet:
    """The newest row of every tag group (``DISTINCT ON (keys) ... ORDER BY keys, time DESC``).

    Each series' newest row comes from its newest (cached) block per segment and the memtable,
    so the cost does not grow with the time range.
    """
    from rusts.sql.scan import last_row

    fields = [f for f in (q.fields or ()) if f in ftypes]
    best: dict[tuple, tuple] = {}  # group key -> (time, sid, row)
    for sid in sids.tolist():
        rs = last_row(snap, int(sid), q.start, q.end, fields, ftypes, CACHE, q.measurement)
        if len(rs) == 0:
            continue
        t = int(rs.timestamps[-1])
        tags = tags_of(int(sid))
        key = tuple(tags.get(k) for k in keys)
        cur = best.get(key)
        if cur is None or t > cur[0]:
            best[key] = (t, int(sid), rs)

    def sort_key(item):
        out = []
        for v, desc in zip(item[0], key_desc):
            # PostgreSQL: NULLs sort as larger than every value (last ascending, first descending)
            null = v is None
            out.append((null, v or "") if not desc else (not null, _Rev(v or "")))
        return out

    items = sorted(best.items(), key=sort_key)
    n = len(items)
    ts = np.array([it[1][0] for it in items], dtype=np.int64)
    group_tags = [tags_of(it[1][1]) for it in items]
    cols = {}
    for f in fields:
        ft = ftypes[f]
        vals = ft.zeros(n)
        mask = np.zeros(n, bool)
        for i, (_, (_, _, rs)) in enumerate(items):
            c = rs.columns.get(f)
            if c is not None and (c.mask is None or c.mask[-1]):
                vals[i] = c.values[-1]
                mask[i] = True
        cols[f] = Column(ft, vals, None if mask.all() else mask)
    return ResultSet(q.measurement, ts, np.arange(n, dtype=np.int64), group_tags, cols, fields, False,
                     {f: ftypes[f] for f in fields})


class _Rev:
    """Reverses the ordering of a value (descending keys in a Python sort)."""

    __slots__ = ("v",)

    def __init__(self, v) -> None:
        self.v = v

    def __lt__(self, other: "_Rev") -> bool:
        return other.v < self.v

    def __eq__(self, other) -> bool:
        return self.v == other.v


async def run_latest(db, q: Query, keys, key_desc) -> ResultSet:
    from rusts.sql.scan import effective_query

    q = effective_query(db, q)
    sids = select_series(db.index, q)
    ftypes = db.schema.fields(q.measurement)
    snap = db.snapshot(sids, q.start, q.end)
    tags = db.tags_map(sids)
    return await _run(db, snap, sids, q, lambda: latest_rows(snap, q, sids, tags.__getitem__, ftypes, keys, key_desc))
