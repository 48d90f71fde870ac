"""Reading one series from a snapshot: series selection, segment and memtable sources pruned by
time, blocks decoded and merged (last write wins), tombstones applied."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from rusts.query.model import Query, TagOp
from rusts.query.rowset import RowSet, merge
from rusts.query.result import Snapshot


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
        rs = mem_part(chunk, start, end, fields)
        if rs is not None:
            parts.append(rs)
    return parts


def mem_part(chunk, start: int, end: int, fields) -> RowSet | None:
    """The rows of one memtable piece of a snapshot in [start, end), ``fields`` only (None: all);
    None when there are none."""
    rows = getattr(chunk, "rows", None)
    if rows is not None:  # a sealed slice: sorted, sliced by binary search, fields on demand
        return rows(fields, start, end)
    ts = chunk.timestamps
    sel = (ts >= start) & (ts < end)
    if not sel.any():
        return None
    rs = chunk.select(fields)
    if not sel.all():
        idx = np.flatnonzero(sel)
        cols = {}
        for n, c in rs.columns.items():
            cc = c.take(idx)
            if cc.mask is None or cc.mask.any():
                cols[n] = cc
        rs = RowSet(ts[idx], cols, rs.sorted_unique)
    return rs


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
            if covered >= limit and boundary is not None:  # (limit 0: no boundary before the first block)
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
