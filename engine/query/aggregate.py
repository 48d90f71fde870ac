"""Aggregate queries: per (group, bucket) accumulators, block pre-aggregates and sub-block
statistics where blocks lie wholly inside a bucket, numpy over decoded rows elsewhere."""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import numpy as np

from rusts.errors import QueryError
from rusts.model import Column, FieldType
from rusts.query.model import AggFunc, Aggregation, Query
from rusts.query.control import checkpoint
from rusts.query.exact import checked_sum, int_dtype, int_mean, min_max_fill, stats_exact
from rusts.query.rowset import RowSet, merge
from rusts.query.reading import (
    _SegSource, _mem_parts, _overlapping_blocks, _read_segment, _segment_sources, _tombstoned,
)
from rusts.query.result import ResultSet, Snapshot


# --------------------------------------------------------------------------- aggregation

@attrs.define
class _Acc:
    """Per-aggregate accumulators: stats partials and decoded values, each tagged with group id."""

    st_g: list = attrs.field(factory=list)
    st_b: list = attrs.field(factory=list)
    st_count: list = attrs.field(factory=list)
    st_sum: list = attrs.field(factory=list)
    st_min: list = attrs.field(factory=list)
    st_max: list = attrs.field(factory=list)
    v_g: list = attrs.field(factory=list)
    v_b: list = attrs.field(factory=list)
    v_t: list = attrs.field(factory=list)
    v_v: list = attrs.field(factory=list)
    k_g: list = attrs.field(factory=list)  # distinct (group, bucket) keys of the decoded parts
    k_b: list = attrs.field(factory=list)

    def add_stats(self, g: int, buckets, count, sums, mins, maxs, dtype=np.float64) -> None:
        """Statistics rows of blocks (or sub-blocks) of group ``g``; rows without values are
        skipped (they must not create a bucket). ``dtype``: int64/uint64 for integer fields, whose
        statistics the caller checked exact (:func:`rusts.query.exact.stats_exact`)."""
        cnt = np.asarray(count, dtype=np.int64)
        keep = cnt > 0
        if not keep.all():
            if not keep.any():
                return
            buckets, cnt, sums, mins, maxs = buckets[keep], cnt[keep], sums[keep], mins[keep], maxs[keep]
        self.st_g.append(np.full(len(cnt), g, np.int64))
        self.st_b.append(buckets)
        self.st_count.append(cnt)
        self.st_sum.append(np.asarray(sums).astype(dtype, copy=False))
        self.st_min.append(np.asarray(mins).astype(dtype, copy=False))
        self.st_max.append(np.asarray(maxs).astype(dtype, copy=False))


def _bucket(t: np.ndarray, interval: int | None) -> np.ndarray:
    if interval is None:
        return np.zeros(len(t), dtype=np.int64)
    return t - np.mod(t, interval)


def _check_agg_types(q: Query, field_types: dict) -> None:
    for a in q.aggregations:
        if a.field is None:
            continue
        ft = field_types.get(a.field)
        if ft is None:
            raise QueryError(f'unknown field "{a.field}" in measurement "{q.measurement}"', sqlstate="42703")
        if ft == FieldType.STRING and a.function not in (AggFunc.Count, AggFunc.First, AggFunc.Last):
            raise QueryError(f"{a.function.value} is not supported for string field \"{a.field}\"",
                             sqlstate="42883")
        if ft == FieldType.BOOLEAN and a.function not in (AggFunc.Count, AggFunc.First, AggFunc.Last):
            raise QueryError(f"{a.function.value} is not supported for boolean field \"{a.field}\"",
                             sqlstate="42883")


def _from_sub_stats(s: _SegSource, sid: int, pb: np.ndarray, start: int, end: int, interval: int | None,
                    g: int, aggs, accs, ftypes: dict) -> tuple[np.ndarray, tuple | None]:
    """Answer partial blocks from their sub-block statistics (per-interval pre-aggregates of
    blocks spanning several intervals: cold blocks) where they suffice. A block is answered
    whole when each of its intervals lies outside [start, end) or wholly inside it and inside one
    query bucket; of the other blocks, the intervals that do are answered from their statistics
    too, and only the rest of the block's rows are read (a 12 h window over day-long cold blocks
    decodes its two edge hours, not the day).

    Returns the blocks still to decode and the time ranges ``(lo, hi)`` (sorted, inclusive)
    whose rows in them were answered here (None: none), to be left out of the decoded rows."""
    many = getattr(s.reader, "sub_stats_many", None)
    if many is None:
        return pb, None
    fields = list(dict.fromkeys(a.field for a in aggs))
    by_field = many(sid, fields)
    if by_field is None:
        return pb, None
    first = by_field[fields[0]]
    bt = s.blocks
    blk = first.block
    bmin, bmax = bt.min_time[blk], bt.max_time[blk]
    lo = np.maximum(first.time, bmin)
    hi = np.minimum(first.time + (first.interval - 1), bmax)
    inside = (lo >= start) & (hi < end)
    if interval is not None:
        inside &= _bucket(lo, interval) == _bucket(hi, interval)
    for f in fields:
        if int_dtype(ftypes.get(f)) is None:
            continue
        st = by_field[f]
        inside &= stats_exact(st.count, st.sum, st.min, st.max)  # inexact: decode those rows
    ok = inside | (hi < start) | (lo >= end)
    bs = first.block_start
    has = bs[1:] > bs[:-1]
    usable = np.zeros(len(has), dtype=bool)
    usable[has] = np.logical_and.reduceat(ok, bs[:-1][has])
    wanted = np.zeros(len(has), dtype=bool)
    wanted[pb] = True
    usable &= wanted
    partly = wanted & ~usable
    cover = partly[blk] & inside  # intervals answered here of blocks still decoded
    e = (usable[blk] & inside) | cover
    if not e.any():
        return pb, None
    bk = _bucket(lo[e], interval)
    for a, acc in zip(aggs, accs):
        st = by_field[a.field]
        acc.add_stats(g, bk, st.count[e], st.sum[e], st.min[e], st.max[e],
                      int_dtype(ftypes.get(a.field)) or np.float64)
    return pb[~usable[pb]], ((lo[cover], hi[cover]) if cover.any() else None)


def _drop_covered(rs: RowSet, cover: tuple | None) -> RowSet:
    """``rs`` without its rows inside the ranges ``cover`` (sorted, disjoint, inclusive)."""
    if cover is None or len(rs) == 0:
        return rs
    lo, hi = cover
    ts = rs.timestamps
    i = np.searchsorted(lo, ts, side="right") - 1
    keep = (i < 0) | (ts > hi[np.maximum(i, 0)])
    if keep.all():
        return rs
    idx = np.flatnonzero(keep)
    return RowSet(ts[idx], {n: c.take(idx) for n, c in rs.columns.items()}, rs.sorted_unique)


def execute_aggregate(snap: Snapshot, q: Query, sids: np.ndarray, tags_of, field_types: dict) -> ResultSet:
    _check_agg_types(q, field_types)
    interval = q.interval
    start, end = q.start, q.end
    # groups
    sid_list = sids.tolist()
    if q.group_by:
        keys = []
        for s in sid_list:
            t = tags_of(int(s))
            keys.append(tuple(t.get(k, "") for k in q.group_by))
        uniq = sorted(set(keys))
        gmap = {k: i for i, k in enumerate(uniq)}
        sid_group = [gmap[k] for k in keys]
        group_tags = [dict(zip(q.group_by, k)) for k in uniq]
    else:
        sid_group = [0] * len(sid_list)
        group_tags = [{}]
    aggs = q.aggregations
    all_stats = all(a.function.uses_block_stats for a in aggs)
    edge = None
    if interval is None and all(a.field is not None for a in aggs):
        if all(a.function == AggFunc.Last for a in aggs):
            edge = "last"
        elif all(a.function == AggFunc.First for a in aggs):
            edge = "first"

    need_fields = sorted({a.field for a in aggs if a.field is not None})
    int_fields = sorted({a.field for a in aggs if a.function != AggFunc.Count
                         and int_dtype(field_types.get(a.field)) is not None})
    read_fields = need_fields if need_fields else None
    accs = [_Acc() for _ in aggs]
    edge_rows: list[list] = [[] for _ in aggs]
    count_star = any(a.field is None for a in aggs)
    if count_star and need_fields:
        read_fields = None  # COUNT(*) counts rows with any field: read all
    for sid, g in zip(sid_list, sid_group):
        checkpoint()
        srcs = _segment_sources(snap, sid, start, end)
        mem = _mem_parts(snap, sid, start, end, read_fields)
        ranges = [(s.lo, s.hi) for s in srcs]
        for m in mem:
            ranges.append((int(m.timestamps.min()), int(m.timestamps.max())))
        ranges.sort()
        overlap = any(ranges[i + 1][0] <= ranges[i][1] for i in range(len(ranges) - 1))
        decoded: list[RowSet] = []
        tomb = _tombstoned(snap, sid, start, end, q.measurement)
        if tomb is not None:
            decoded.append(tomb)
        elif edge is not None and not overlap:
            # First/Last over the whole range: only the two outermost blocks holding each field
            # can contain the answer (the outermost may lie partly outside the range)
            for s in srcs:
                ov = _overlapping_blocks(s.blocks, start, end)
                if len(ov) == 0:
                    continue
                # usually every field is in the outermost block (or two, when the outermost lies
                # partly outside the range): try them before per-field statistics
                found = False
                for k in (1, 2):
                    first_try = ov[-k:] if edge == "last" else ov[:k]
                    rs = _read_segment(s, sid, read_fields, first_try).slice_time(start, end)
                    if all((c := rs.columns.get(f)) is not None and (c.mask is None or c.mask.any())
                           for f in need_fields):
                        decoded.append(rs)
                        found = True
                        break
                    if len(first_try) == len(ov):
                        break
                if found:
                    continue
                pick: set[int] = set()
                for f in need_fields:
                    cnt = np.asarray(s.reader.field_stats(sid, f).count)[ov]
                    have = ov[cnt > 0]
                    pick.update((have[-2:] if edge == "last" else have[:2]).tolist())
                if pick:
                    decoded.append(_read_segment(s, sid, read_fields, np.array(sorted(pick), np.int64))
                                   .slice_time(start, end))
            if mem:  # disjoint in time from each other and the segments (no overlap): no merge
                decoded.extend(mem) if all(m.sorted_unique for m in mem) else decoded.append(merge(mem))
        elif overlap or not all_stats:
            parts = [_read_segment(s, sid, read_fields, _overlapping_blocks(s.blocks, start, end)) for s in srcs]
            parts.extend(mem)
            decoded.append(merge(parts).slice_time(start, end))
        else:
            for s in srcs:
                bt = s.blocks
                ov = _overlapping_blocks(bt, start, end)
                if len(ov) == 0:
                    continue
                bmin, bmax = bt.min_time[ov], bt.max_time[ov]
                full = (bmin >= start) & (bmax < end)
                if interval is not None:
                    full &= (_bucket(bmin, interval) == _bucket(bmax, interval))
                fstats = {}
                for f in int_fields:  # integer statistics beyond 2^53 are inexact: decode
                    fs = fstats[f] = s.reader.field_stats(sid, f)
                    full &= stats_exact(fs.count[ov], fs.sum[ov], fs.min[ov], fs.max[ov])
                fb = ov[full]
                pb = ov[~full]
                if len(fb):
                    bk = _bucket(bt.min_time[fb], interval)
                    for a, acc in zip(aggs, accs):
                        if a.field is None:
                            z = np.zeros(len(fb))
                            acc.add_stats(g, bk, bt.rows[fb], z, z, z)
                            continue
                        fs = fstats.get(a.field) or s.reader.field_stats(sid, a.field)
                        acc.add_stats(g, bk, fs.count[fb], fs.sum[fb], fs.min[fb], fs.max[fb],
                                      int_dtype(field_types.get(a.field)) or np.float64)
                cover = None
                if len(pb):
                    pb, cover = _from_sub_stats(s, sid, pb, start, end, interval, g, aggs, accs, field_types)
                if len(pb):
                    decoded.append(_drop_covered(_read_segment(s, sid, read_fields, pb).slice_time(start, end),
                                                 cover))
            if mem:
                if interval is None and all(m.sorted_unique for m in mem):
                    decoded.extend(_mem_stats(mem, g, aggs, accs, field_types))
                else:
                    decoded.append(merge(mem).slice_time(start, end))
        if edge is not None:
            # one scalar row per (part, aggregate): no per-row numpy work
            for rs in decoded:
                if len(rs) == 0:
                    continue
                for ai, a in enumerate(aggs):
                    c = rs.columns.get(a.field)
                    if c is None:
                        continue
                    if c.mask is None:
                        i = -1 if edge == "last" else 0
                    else:
                        nz = np.flatnonzero(c.mask)
                        if len(nz) == 0:
                            continue
                        i = int(nz[-1] if edge == "last" else nz[0])
                    edge_rows[ai].append((g, int(rs.timestamps[i]), c.values[i]))
            continue
        for rs in decoded:
            if len(rs) == 0:
                continue
            for a, acc in zip(aggs, accs):
                if a.field is None:
                    t = rs.timestamps
                    v = np.ones(len(t))
                else:
                    c = rs.columns.get(a.field)
                    if c is None:
                        continue
                    if c.mask is None:
                        t, v = rs.timestamps, c.values
                    else:
                        t, v = rs.timestamps[c.mask], c.values[c.mask]
                    if len(t) == 0:
                        continue
                if edge is not None:  # rows are time-sorted: keep only this part's edge row
                    k = slice(-1, None) if edge == "last" else slice(0, 1)
                    t, v = t[k], v[k]
                b = _bucket(t, interval)
                acc.v_g.append(np.full(len(t), g, np.int64))
                acc.v_b.append(b)
                acc.v_t.append(t)
                acc.v_v.append(v)
                # distinct buckets of this (time-sorted) part, for the key set
                if len(b) < 2:
                    ub = b
                else:
                    first = np.empty(len(b), dtype=bool)  # np.r_ costs ~10 us a call
                    first[0] = True
                    np.not_equal(b[1:], b[:-1], out=first[1:])
                    ub = b[first]
                acc.k_g.append(np.full(len(ub), g, np.int64))
                acc.k_b.append(ub)
    if edge is not None:
        for a, acc, rows in zip(aggs, accs, edge_rows):
            if not rows:
                continue
            gs = np.fromiter((r[0] for r in rows), np.int64, len(rows))
            ft = field_types.get(a.field, FieldType.FLOAT)
            vals = np.empty(len(rows), dtype=ft.dtype)
            vals[:] = [r[2] for r in rows]
            acc.v_g.append(gs)
            acc.v_b.append(np.zeros(len(rows), np.int64))
            acc.v_t.append(np.fromiter((r[1] for r in rows), np.int64, len(rows)))
            acc.v_v.append(vals)
            ug = np.unique(gs)
            acc.k_g.append(ug)
            acc.k_b.append(np.zeros(len(ug), np.int64))
    return _finish(q, aggs, accs, group_tags, field_types)


def _mem_stats(mem: list[RowSet], g: int, aggs, accs, field_types) -> list[RowSet]:
    """Statistics rows (count/sum/min/max) of in-memory pieces that are sorted, unique and
    disjoint in time from every other source (no merge needed), as if they were blocks: one
    numpy reduction per piece and field instead of copying and bucketing every value. Returns
    the pieces to decode instead (integers whose sum could leave the exact range)."""
    rest = []
    zero = np.zeros(1, np.int64)
    for rs in mem:
        rows = []
        for a in aggs:
            if a.field is None:
                rows.append((zero, np.array([len(rs)]), np.zeros(1), np.zeros(1), np.zeros(1), np.float64))
                continue
            c = rs.columns.get(a.field)
            if c is None:
                rows.append(None)
                continue
            v = c.values if c.mask is None else c.values[c.mask]
            n = len(v)
            if n == 0 or a.function == AggFunc.Count:
                rows.append((zero, np.array([n]), np.zeros(1), np.zeros(1), np.zeros(1), np.float64))
                continue
            idt = int_dtype(field_types.get(a.field))
            mn, mx = v.min(), v.max()
            if idt is not None and max(abs(int(mn)), abs(int(mx))) * n >= 2**62:
                rows = False  # its sum might wrap: decode this piece
                break
            dt = idt or np.float64
            rows.append((zero, np.array([n]), np.array([v.sum()], dt), np.array([mn], dt), np.array([mx], dt), dt))
        if rows is False:
            rest.append(rs)
            continue
        for row, acc in zip(rows, accs):
            if row is not None:
                acc.add_stats(g, *row)
    return rest


def aggregate_of_nothing(q: Query, group_tags=None) -> ResultSet:
    """The answer of aggregate ``q`` over no rows: one row (COUNT 0, the others NULL) when it
    has neither GROUP BY nor buckets, like SQL; else no rows."""
    aggs = q.aggregations
    names = [a.output_name for a in aggs]
    group_tags = group_tags if group_tags is not None else [{}]
    if q.interval is None and not q.group_by:
        cols = {}
        for a in aggs:
            if a.function == AggFunc.Count:
                cols[a.output_name] = Column(FieldType.INTEGER, np.zeros(1, np.int64), None)
            else:
                cols[a.output_name] = Column(FieldType.FLOAT, np.zeros(1), np.zeros(1, bool))
        return ResultSet(q.measurement, None, np.zeros(1, np.int64), group_tags, cols, names, True)
    return ResultSet(q.measurement, None if q.interval is None else np.empty(0, np.int64),
                     np.empty(0, np.int64), group_tags,
                     {a.output_name: Column(FieldType.FLOAT, np.empty(0)) for a in aggs}, names, True)


def _finish(q: Query, aggs: Sequence[Aggregation], accs: list[_Acc], group_tags, field_types) -> ResultSet:
    # union of (group, bucket) keys over all aggregates
    kg, kb = [], []
    for acc in accs:
        kg.extend(acc.st_g); kb.extend(acc.st_b)
        kg.extend(acc.k_g); kb.extend(acc.k_b)
    if not kg:
        return aggregate_of_nothing(q, group_tags)
    allg = np.concatenate(kg)
    allb = np.concatenate(kb)
    # (group, bucket) -> one int64 code: group * number_of_buckets + rank of the bucket.
    # 1-D uniques only (np.unique(axis=0) sorts a structured view and is ~50x slower).
    bu = np.unique(allb)
    nb = len(bu)
    ucode = np.unique(allg * nb + np.searchsorted(bu, allb))  # sorted by group, then bucket
    ug, ub = ucode // nb, bu[ucode % nb]
    nkeys = len(ucode)

    def key_index(g: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.searchsorted(ucode, g * nb + np.searchsorted(bu, b))

    cols: dict[str, Column] = {}
    names = [a.output_name for a in aggs]
    for a, acc in zip(aggs, accs):
        times: dict = {} if a.with_time else None
        out, mask, ftype = _compute(a, acc, key_index, nkeys, field_types, times)
        cols[a.output_name] = Column(ftype, out, None if mask is None or mask.all() else mask)
        if times:
            cols[a.output_name + "@time"] = Column(FieldType.INTEGER, times["t"], cols[a.output_name].mask)
            names.append(a.output_name + "@time")
    order = np.arange(nkeys)
    if q.order == "Desc" and q.interval is not None:
        order = np.lexsort((-ub, ug))
    lo = q.offset
    hi = None if q.limit is None else q.offset + q.limit
    order = order[lo:hi]
    ts = None if q.interval is None else ub[order]
    cols = {n: c.take(order) for n, c in cols.items()}
    return ResultSet(q.measurement, ts, ug[order], group_tags, cols, names, True,
                     {n: c.type for n, c in cols.items()})


def _cat(lst, dtype=None):
    if not lst:
        return np.empty(0, dtype=dtype or np.float64)
    return np.concatenate(lst)


def _compute(a: Aggregation, acc: _Acc, key_index, nkeys: int, field_types, times: dict | None = None):
    """One aggregate's values, presence mask and type per (group, bucket) key; for First/Last
    with ``times`` (a dict), also ``times["t"]``: the timestamp of the row each value came from."""
    f = a.function
    src_type = field_types.get(a.field) if a.field is not None else None
    has_st = bool(acc.st_g)
    has_v = bool(acc.v_g)
    if has_st:
        sk = key_index(_cat(acc.st_g, np.int64), _cat(acc.st_b, np.int64))
    if has_v:
        vk = key_index(_cat(acc.v_g, np.int64), _cat(acc.v_b, np.int64))
        vv = _cat(acc.v_v)
        vt = _cat(acc.v_t, np.int64)
    count = np.zeros(nkeys, np.int64)
    if has_st:
        np.add.at(count, sk, _cat(acc.st_count, np.int64))
    if has_v:
        count += np.bincount(vk, minlength=nkeys)
    present = count > 0
    if f == AggFunc.Count:
        return count, None, FieldType.INTEGER
    idt = int_dtype(src_type)  # exact integer arithmetic (rusts.query.exact)
    if f in (AggFunc.Sum, AggFunc.Mean):
        s = np.zeros(nkeys, np.float64)
        if has_st:
            np.add.at(s, sk, _cat(acc.st_sum).astype(np.float64))
        if has_v:
            s += np.bincount(vk, weights=vv.astype(np.float64), minlength=nkeys)
        if idt is not None:
            w = np.zeros(nkeys, idt)
            if has_st:
                np.add.at(w, sk, _cat(acc.st_sum).astype(idt))
            if has_v:
                np.add.at(w, vk, vv.astype(idt))
            if f == AggFunc.Sum:
                return checked_sum(w, s, present), present, src_type
            if not (np.abs(s) >= 2.0**62).any():
                return int_mean(w, count), present, FieldType.FLOAT
        if f == AggFunc.Sum:
            return s, present, FieldType.FLOAT
        with np.errstate(invalid="ignore", divide="ignore"):
            return s / np.maximum(count, 1), present, FieldType.FLOAT
    if f in (AggFunc.Min, AggFunc.Max):
        dt = idt or np.dtype(np.float64)
        r = np.full(nkeys, min_max_fill(f == AggFunc.Min, dt), dt)
        op = np.minimum if f == AggFunc.Min else np.maximum
        if has_st:
            op.at(r, sk, _cat(acc.st_min if f == AggFunc.Min else acc.st_max).astype(dt))
        if has_v:
            op.at(r, vk, vv.astype(dt))
        if idt is not None:
            r = np.where(present, r, 0).astype(dt)
            return r, present, src_type
        return r, present, FieldType.FLOAT
    # decoded-only functions
    if not has_v:
        return np.zeros(nkeys), np.zeros(nkeys, bool), FieldType.FLOAT
    if f in (AggFunc.First, AggFunc.Last):
        # order by key then time; pick first/last per key
        o = np.lexsort((vt, vk))
        sk2 = vk[o]
        edge = np.ones(len(sk2), dtype=bool)  # (np.r_ costs ~10 us a call)
        if f == AggFunc.First:
            np.not_equal(sk2[1:], sk2[:-1], out=edge[1:])
        else:
            np.not_equal(sk2[1:], sk2[:-1], out=edge[:-1])
        sel = np.flatnonzero(edge)
        keys_sel = sk2[sel]
        vals = vv[o][sel]
        ftype = src_type or FieldType.FLOAT
        out = np.zeros(nkeys, dtype=ftype.dtype) if ftype != FieldType.STRING else np.full(nkeys, "", object)
        out[keys_sel] = vals
        m = np.zeros(nkeys, bool)
        m[keys_sel] = True
        if times is not None:
            t = np.zeros(nkeys, np.int64)
            t[keys_sel] = vt[o][sel]
            times["t"] = t
        return out, m, ftype
    vvf = vv.astype(np.float64)
    if f in (AggFunc.StdDev, AggFunc.Variance):
        n = np.bincount(vk, minlength=nkeys).astype(np.float64)
        s1 = np.bincount(vk, weights=vvf, minlength=nkeys)
        mean = s1 / np.maximum(n, 1)
        dev = vvf - mean[vk]
        ss = np.bincount(vk, weights=dev * dev, minlength=nkeys)
        with np.errstate(invalid="ignore", divide="ignore"):
            var = ss / (n - 1)
        ok = n >= 2
        var = np.where(ok, var, 0.0)
        if f == AggFunc.StdDev:
            return np.sqrt(var), ok, FieldType.FLOAT
        return var, ok, FieldType.FLOAT
    if f in (AggFunc.Median, AggFunc.Percentile):
        p = 50.0 if f == AggFunc.Median else float(a.percentile or 0.0)
        o = np.lexsort((vvf, vk))
        sv = vvf[o]
        sk2 = vk[o]
        starts = np.searchsorted(sk2, np.arange(nkeys), "left")
        ends = np.searchsorted(sk2, np.arange(nkeys), "right")
        n = ends - starts
        ok = n > 0
        # linear interpolation (like numpy's default and SQL percentile_cont)
        pos = (n - 1) * (p / 100.0)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
        frac = pos - lo
        li = np.where(ok, starts + lo, 0)
        hi_i = np.where(ok, starts + hi, 0)
        if len(sv) == 0:
            return np.zeros(nkeys), ok, FieldType.FLOAT
        res = sv[li] + (sv[hi_i] - sv[li]) * frac
        return np.where(ok, res, 0.0), ok, FieldType.FLOAT
    raise QueryError(f"unsupported aggregation {f.value}")
