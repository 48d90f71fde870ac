"""Query planning and vectorised execution over a consistent snapshot.

A :class:`Snapshot` is taken in the event loop in one synchronous step (segment readers from the
manifest, chunk references from the memtable), so a concurrent flush can only make a point appear
twice (resolved by the merge), never vanish. :func:`execute` then runs in a worker thread.

Plan per series: prune segments by time and by series membership, prune blocks by min/max time;
for aggregates whose sources do not overlap in time, blocks wholly inside the range (and inside one
time bucket) are answered from their pre-aggregates (count/sum/min/max) without decoding; the rest
is decoded, merged (last write wins) and aggregated with numpy, bucketed by ``(t - t mod interval)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import numpy as np

from rusts.errors import QueryError
from rusts.model import Column, FieldType
from rusts.query.model import AggFunc, Aggregation, Query, TagOp
from rusts.query.control import charge, checkpoint
from rusts.query.exact import checked_sum, int_dtype, int_mean, min_max_fill, stats_exact
from rusts.query.rowset import RowSet, concat_column, merge

I64_MIN = -(2**63)


@attrs.frozen(eq=False)
class Snapshot:
    """Everything a query reads: segment readers (oldest first) and memtable chunks per series."""

    segments: tuple[Any, ...]
    memtable: Mapping[int, tuple[RowSet, ...]]
    seqs: tuple[int, ...] = ()          # lifecycle sequence of each segment (age order)
    tombstones: Any = None              # rusts.lifecycle.tombstones.TombstoneSet or None


def _tombstoned(snap: Snapshot, sid: int, start: int, end: int, measurement: str | None) -> RowSet | None:
    """The series' rows with the tombstones that touch it applied, or None when none does.

    Reads every field (a tombstone's field predicate may name fields the query does not select)
    and never uses block statistics: deleted rows may hide inside a block.
    """
    if snap.tombstones is None or measurement is None:
        return None
    stones = snap.tombstones.for_series(measurement, sid)
    if not stones:
        return None
    from rusts.lifecycle.tombstones import MEMTABLE_SEQ, merge_with_tombstones

    parts = []
    for r, seq in zip(snap.segments, snap.seqs):
        if r.max_time < start or r.min_time >= end or not r.has_series(sid):
            continue
        ov = _overlapping_blocks(r.blocks(sid), start, end)
        if len(ov):
            ts, cols = r.read(sid, None, blocks=ov)
            parts.append((RowSet(ts, cols, True), seq))
    mem = _mem_parts(snap, sid, start, end, None)
    if mem:
        parts.append((merge(mem), MEMTABLE_SEQ))
    rs, _ = merge_with_tombstones(sid, parts, stones, measurement=measurement)
    return rs.slice_time(start, end)


@attrs.frozen(eq=False)
class ResultSet:
    """Columnar query result.

    ``group_tags[i]`` is the tag dict of group/series i; ``row_group`` maps each row to it.
    ``timestamps`` is None for aggregates without an interval (one row per group).
    """

    measurement: str
    timestamps: np.ndarray | None
    row_group: np.ndarray
    group_tags: list[dict[str, str]]
    fields: dict[str, Column]
    field_order: list[str]
    aggregated: bool = False
    field_types: dict[str, FieldType] = attrs.field(factory=dict)

    def __len__(self) -> int:
        return len(self.row_group)

    def to_rows(self) -> list[dict]:
        """JSON rows ``{"timestamp", "tags", "fields"}`` (missing values omitted)."""
        n = len(self.row_group)
        if n == 0:
            return []
        ts = self.timestamps.tolist() if self.timestamps is not None else [None] * n
        groups = self.row_group.tolist()
        tags = self.group_tags
        cols = []
        for name in self.field_order:
            c = self.fields[name]
            vals = _json_values(c)
            cols.append((name, vals, None if c.mask is None else c.mask.tolist()))
        if all(m is None for _, _, m in cols):
            names = [name for name, _, _ in cols]
            value_lists = [v for _, v, _ in cols]
            if len(names) == 1:
                nm = names[0]
                v0 = value_lists[0]
                return [{"timestamp": ts[i], "tags": tags[groups[i]], "fields": {nm: v0[i]}}
                        for i in range(n)]
            return [{"timestamp": ts[i], "tags": tags[groups[i]], "fields": dict(zip(names, row))}
                    for i, row in enumerate(zip(*value_lists))]
        rows = []
        for i in range(n):
            f = {}
            for name, vals, mask in cols:
                if mask is None or mask[i]:
                    f[name] = vals[i]
            rows.append({"timestamp": ts[i], "tags": tags[groups[i]], "fields": f})
        return rows


def _json_values(c: Column) -> list:
    v = c.values
    if c.type == FieldType.FLOAT and v.dtype.kind == "f":
        if not np.isfinite(v).all():
            return [x if math.isfinite(x) else None for x in v.tolist()]
        return v.tolist()
    if v.dtype == object:
        return [x if not (isinstance(x, float) and not math.isfinite(x)) else None for x in v.tolist()]
    return v.tolist()


# --------------------------------------------------------------------------- series selection

def select_series(index, q: Query) -> np.ndarray:
    """Series ids of the measurement that pass every tag filter (inverted index, no scan)."""
    m = q.measurement
    sids = None  # None: every series of the measurement (postings are per measurement: subsets)

    def narrow(sub: np.ndarray) -> np.ndarray:
        return sub if sids is None else np.intersect1d(sids, sub, assume_unique=True)

    def drop(sub: np.ndarray) -> np.ndarray:
        return np.setdiff1d(index.series_of(m) if sids is None else sids, sub, assume_unique=True)

    for f in q.tag_filters:
        if f.op == TagOp.Eq:
            sids = narrow(index.series_with_tag(m, f.key, f.value))
        elif f.op == TagOp.NotEq:
            sids = drop(index.series_with_tag(m, f.key, f.value))
        elif f.op in (TagOp.In, TagOp.NotIn):
            hit = [index.series_with_tag(m, f.key, v) for v in f.values]
            u = np.unique(np.concatenate(hit)) if hit else np.empty(0, np.uint64)
            sids = narrow(u) if f.op == TagOp.In else drop(u)
        elif f.op == TagOp.Regex:
            pat = f.compiled()
            sids = narrow(index.series_matching(m, f.key, lambda v: pat.search(v) is not None))
        elif f.op == TagOp.Exists:
            sids = narrow(index.series_with_tag_key(m, f.key))
        elif f.op == TagOp.NotExists:
            sids = drop(index.series_with_tag_key(m, f.key))
        if len(sids) == 0:
            break
    if sids is None:
        sids = index.series_of(m)
    return np.asarray(sids, dtype=np.uint64)


# --------------------------------------------------------------------------- reading

@attrs.frozen(eq=False)
class _SegSource:
    reader: Any
    blocks: Any  # BlockTable
    lo: int
    hi: int


def _segment_sources(snap: Snapshot, sid: int, start: int, end: int) -> list[_SegSource]:
    out = []
    for r in snap.segments:
        if r.max_time < start or r.min_time >= end:
            continue
        if not r.has_series(sid):
            continue
        bt = r.blocks(sid)
        if len(bt.min_time) == 0:
            continue
        out.append(_SegSource(r, bt, int(bt.min_time[0]), int(bt.max_time[-1])))
    return out


def _mem_parts(snap: Snapshot, sid: int, start: int, end: int, fields) -> list[RowSet]:
    parts = []
    for chunk in snap.memtable.get(sid, ()):
        ts = chunk.timestamps
        sel = (ts >= start) & (ts < end)
        if not sel.any():
            continue
        rs = chunk.select(fields)
        if not sel.all():
            idx = np.flatnonzero(sel)
            cols = {}
            for n, c in rs.columns.items():
                cc = c.take(idx)
                if cc.mask is None or cc.mask.any():
                    cols[n] = cc
            rs = RowSet(ts[idx], cols, rs.sorted_unique)
        parts.append(rs)
    return parts


def _overlapping_blocks(bt, start: int, end: int) -> np.ndarray:
    return np.flatnonzero((bt.max_time >= start) & (bt.min_time < end))


def _read_segment(src: _SegSource, sid: int, fields, blocks: np.ndarray) -> RowSet:
    """Rows of the given blocks, decoded once per process: segment files are immutable (flushes
    and compactions write new files), so decoded blocks are kept in the shared LRU block cache
    (:mod:`rusts.storage.blockcache`)."""
    if len(blocks) == 0:
        return RowSet(np.empty(0, np.int64), {}, True)
    from rusts.storage.blockcache import block_columns

    reader = src.reader
    names = list(fields) if fields is not None else sorted(reader.field_types(sid))
    parts = [RowSet(ts, {f: c.column() for f, c in cols.items()}, True)
             for ts, cols in block_columns(reader, sid, names, blocks.tolist())]
    if len(parts) == 1:
        return parts[0]
    ts = np.concatenate([p.timestamps for p in parts])
    from rusts.query.rowset import _concat_columns

    return RowSet(ts, _concat_columns(parts, len(ts)), True)


def read_series(snap: Snapshot, sid: int, start: int, end: int, fields,
                limit: int | None = None, desc: bool = False, measurement: str | None = None) -> RowSet:
    """All rows of one series in [start, end), merged, sorted, unique timestamps.

    With ``limit``, blocks are chosen from the wanted end of time until enough rows are covered.
    """
    t = _tombstoned(snap, sid, start, end, measurement)
    if t is not None:
        return t.select(fields)
    srcs = _segment_sources(snap, sid, start, end)
    parts: list[RowSet] = []
    if limit is not None and srcs:
        cands = []  # (key, src_index, block)
        for i, s in enumerate(srcs):
            b = _overlapping_blocks(s.blocks, start, end)
            for j in b.tolist():
                cands.append((i, j, int(s.blocks.min_time[j]), int(s.blocks.max_time[j]),
                              int(s.blocks.rows[j])))
        if desc:
            cands.sort(key=lambda c: -c[3])
        else:
            cands.sort(key=lambda c: c[2])
        chosen = set()
        covered = 0
        boundary = None
        for c in cands:
            if covered >= limit:
                if desc and c[3] < boundary:
                    break
                if not desc and c[2] > boundary:
                    break
            chosen.add((c[0], c[1]))
            covered += c[4]
            if covered >= limit and boundary is None:
                boundary = c[2] if desc else c[3]
        per_src: dict[int, list[int]] = {}
        for i, j in chosen:
            per_src.setdefault(i, []).append(j)
        for i, s in enumerate(srcs):
            bl = per_src.get(i)
            if bl:
                parts.append(_read_segment(s, sid, fields, np.array(sorted(bl), dtype=np.int64)))
        parts.extend(_mem_parts(snap, sid, start, end, fields))
        rs = merge(parts).slice_time(start, end)
        if len(rs) >= limit or len(chosen) == len(cands):
            return rs
        parts = []  # not enough distinct rows (overlaps): read everything
    for s in srcs:
        parts.append(_read_segment(s, sid, fields, _overlapping_blocks(s.blocks, start, end)))
    parts.extend(_mem_parts(snap, sid, start, end, fields))
    return merge(parts).slice_time(start, end)


# --------------------------------------------------------------------------- raw queries

def _matching(rs: RowSet, preds, want: int | None, desc: bool, fields) -> RowSet:
    """The rows of ``rs`` satisfying every field predicate (SQL: NULL never matches a comparison),
    at most ``want`` from the wanted end, with only ``fields`` (None: all)."""
    from rusts.sql.vector import _predicate

    n = len(rs)
    keep = np.ones(n, bool)
    for f, op, value in preds:
        c = rs.columns.get(f)
        if c is None:
            keep &= op == "isnull"
            continue
        keep &= _predicate(f, op, value, None, c.values, c.mask, n)
    idx = np.flatnonzero(keep)
    if want is not None and len(idx) > want:
        idx = idx[len(idx) - want:] if desc else idx[:want]
    cols = {}
    for name, c in rs.columns.items():
        if fields is not None and name not in fields:
            continue
        cc = c.take(idx)
        if cc.mask is None or cc.mask.any():
            cols[name] = cc
    return RowSet(rs.timestamps[idx], cols, True)


def _read_filtered(snap: Snapshot, sid: int, q: Query, fields, want: int | None, desc: bool) -> RowSet:
    """:func:`read_series` with the query's field predicates applied; with a limit, blocks are
    read from the wanted end of time, doubling the rows read until enough rows match."""
    preds = q.predicates
    need = None if fields is None else tuple(dict.fromkeys([*fields, *(p[0] for p in preds)]))
    limit = want
    while True:
        rs = read_series(snap, sid, q.start, q.end, need, limit, desc, q.measurement)
        out = _matching(rs, preds, want, desc, fields)
        if want is None or len(out) >= want or limit is None or len(rs) < limit:
            return out
        limit *= 4


def execute_raw(snap: Snapshot, q: Query, sids: np.ndarray, tags_of, field_types: dict) -> ResultSet:
    fields = q.fields
    if fields is not None:
        for f in fields:
            if f not in field_types:
                raise QueryError(f'unknown field "{f}" in measurement "{q.measurement}"',
                                 sqlstate="42703")
    want = None if q.limit is None else q.limit + q.offset
    desc = q.order == "Desc"
    results: list[tuple[int, RowSet]] = []
    for gi, sid in enumerate(sids.tolist()):
        checkpoint()
        if q.predicates:
            rs = _read_filtered(snap, sid, q, fields, want, desc)
        else:
            rs = read_series(snap, sid, q.start, q.end, fields, want, desc, q.measurement)
        if len(rs) == 0:
            continue
        charge(len(rs) * 8 * (1 + len(rs.columns)))
        if want is not None and len(rs) > want:
            rs = RowSet(*_trim(rs, want, desc))
        results.append((gi, rs))
    group_tags = [tags_of(int(s)) for s in sids.tolist()]
    names: list[str] = list(fields) if fields is not None else []
    if fields is None:
        seen = set()
        for _, rs in results:
            for n in rs.columns:
                if n not in seen:
                    seen.add(n)
        names = sorted(seen)
    if not results:
        return ResultSet(q.measurement, np.empty(0, np.int64), np.empty(0, np.int64), group_tags, {},
                         names, False, {n: field_types[n] for n in names if n in field_types})
    ts = np.concatenate([rs.timestamps for _, rs in results])
    grp = np.concatenate([np.full(len(rs), gi, dtype=np.int64) for gi, rs in results])
    lengths = [len(rs) for _, rs in results]
    cols = {}
    for n in names:
        ft = field_types.get(n)
        if ft is None:
            continue
        cols[n] = concat_column([rs.columns.get(n) for _, rs in results], lengths, ft)
    names = [n for n in names if n in cols]
    if len(results) > 1:
        order = np.lexsort((grp, ts))
    else:
        order = None
    if desc:
        # newest first; equal timestamps keep series order ascending
        order = np.arange(len(ts))[::-1] if order is None else np.lexsort((grp, -ts))
    if order is not None:
        lo = q.offset
        hi = None if q.limit is None else q.offset + q.limit
        order = order[lo:hi]
        ts = ts[order]
        grp = grp[order]
        cols = {n: c.take(order) for n, c in cols.items()}
    else:
        lo = q.offset
        hi = None if q.limit is None else q.offset + q.limit
        sl = slice(lo, hi)
        ts, grp = ts[sl], grp[sl]
        cols = {n: Column(c.type, c.values[sl], None if c.mask is None else c.mask[sl])
                for n, c in cols.items()}
    return ResultSet(q.measurement, ts, grp, group_tags, cols, names, False,
                     {n: field_types[n] for n in names})


def _trim(rs: RowSet, want: int, desc: bool):
    sl = slice(len(rs) - want, None) if desc else slice(0, want)
    cols = {}
    for n, c in rs.columns.items():
        m = None if c.mask is None else c.mask[sl]
        if m is not None and not m.any():
            continue
        cols[n] = Column(c.type, c.values[sl], m)
    return rs.timestamps[sl], cols, True


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
                    g: int, aggs, accs, ftypes: dict) -> np.ndarray:
    """Answer partial blocks from their sub-block statistics (per-interval pre-aggregates of
    blocks spanning several intervals: cold blocks) where they suffice; returns the blocks still
    to decode. A block qualifies when each of its intervals lies outside [start, end) or wholly
    inside it and inside one query bucket."""
    sub_stats = getattr(s.reader, "sub_stats", None)
    if sub_stats is None:
        return pb
    fields = list(dict.fromkeys(a.field for a in aggs))
    first = sub_stats(sid, fields[0])
    if first is None:
        return pb
    bt = s.blocks
    blk = first.block
    bmin, bmax = bt.min_time[blk], bt.max_time[blk]
    lo = np.maximum(first.time, bmin)
    hi = np.minimum(first.time + (first.interval - 1), bmax)
    inside = (lo >= start) & (hi < end)
    if interval is not None:
        inside &= _bucket(lo, interval) == _bucket(hi, interval)
    ok = inside | (hi < start) | (lo >= end)
    by_field = {fields[0]: first}
    for f in fields:
        if int_dtype(ftypes.get(f)) is None:
            continue
        st = by_field.get(f)
        if st is None:
            st = by_field[f] = sub_stats(sid, f)
        ok &= stats_exact(st.count, st.sum, st.min, st.max) | ~inside  # inexact: decode the block
    bs = first.block_start
    has = bs[1:] > bs[:-1]
    usable = np.zeros(len(has), dtype=bool)
    usable[has] = np.logical_and.reduceat(ok, bs[:-1][has])
    wanted = np.zeros(len(has), dtype=bool)
    wanted[pb] = True
    usable &= wanted
    if not usable.any():
        return pb
    e = usable[blk] & inside
    if e.any():
        bk = _bucket(lo[e], interval)
        for a, acc in zip(aggs, accs):
            st = by_field.get(a.field)
            if st is None:
                st = by_field[a.field] = sub_stats(sid, a.field)
            acc.add_stats(g, bk, st.count[e], st.sum[e], st.min[e], st.max[e],
                          int_dtype(ftypes.get(a.field)) or np.float64)
    return pb[~usable[pb]]


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
                if len(pb):
                    pb = _from_sub_stats(s, sid, pb, start, end, interval, g, aggs, accs, field_types)
                if len(pb):
                    decoded.append(_read_segment(s, sid, read_fields, pb).slice_time(start, end))
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
            acc.k_g.append(np.unique(gs))
            acc.k_b.append(np.zeros(len(np.unique(gs)), np.int64))
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
    for a, acc in zip(aggs, accs):
        out, mask, ftype = _compute(a, acc, key_index, nkeys, field_types)
        cols[a.output_name] = Column(ftype, out, None if mask is None or mask.all() else mask)
    order = np.arange(nkeys)
    if q.order == "Desc" and q.interval is not None:
        order = np.lexsort((-ub, ug))
    lo = q.offset
    hi = None if q.limit is None else q.offset + q.limit
    order = order[lo:hi]
    ts = None if q.interval is None else ub[order]
    cols = {n: c.take(order) for n, c in cols.items()}
    return ResultSet(q.measurement, ts, ug[order], group_tags, cols, [a.output_name for a in aggs], True,
                     {n: c.type for n, c in cols.items()})


def _cat(lst, dtype=None):
    if not lst:
        return np.empty(0, dtype=dtype or np.float64)
    return np.concatenate(lst)


def _compute(a: Aggregation, acc: _Acc, key_index, nkeys: int, field_types):
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
        if f == AggFunc.First:
            sel = np.flatnonzero(np.r_[True, sk2[1:] != sk2[:-1]])
        else:
            sel = np.flatnonzero(np.r_[sk2[1:] != sk2[:-1], True])
        keys_sel = sk2[sel]
        vals = vv[o][sel]
        ftype = src_type or FieldType.FLOAT
        out = np.zeros(nkeys, dtype=ftype.dtype) if ftype != FieldType.STRING else np.full(nkeys, "", object)
        out[keys_sel] = vals
        m = np.zeros(nkeys, bool)
        m[keys_sel] = True
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


def execute(snap: Snapshot, q: Query, sids: np.ndarray, tags_of, field_types: dict) -> ResultSet:
    """Run ``q`` over the snapshot for the selected series (worker thread)."""
    if q.is_aggregate:
        return execute_aggregate(snap, q, sids, tags_of, field_types)
    return execute_raw(snap, q, sids, tags_of, field_types)


def result_json(rs: ResultSet, started: float) -> dict:
    rows = rs.to_rows()
    return {"measurement": rs.measurement, "results": rows, "total_rows": len(rows),
            "execution_time_ms": round((time.perf_counter() - started) * 1000, 3)}
