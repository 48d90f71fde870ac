"""Column scans for the SQL general path, with a cache of decoded segment blocks.

The DuckDB path needs every row of the columns a statement names (after time and tag pushdown).
Reading them through ``db.query`` would also sort all series into one global time order, which
DuckDB does not need; so this module reads per series, like the executor's ``read_series``, and
keeps series separate: each becomes one Arrow record batch (tags as dictionary columns with a
single value, so no per-row strings are built).

Decoded blocks are cached. Segment files are immutable (a flush or compaction writes new files),
so a decoded block - keyed by segment path, series, block number and column - never goes stale;
entries of deleted segments simply age out. The cache is an LRU bounded in bytes
(:data:`CACHE_BYTES`, 512 MiB by default, ``RUSTS_SQL_BLOCK_CACHE_MB`` to change): repeated
analytical queries over the same columns (dashboards, the trips suite) skip decoding, which is most
of a scan's cost. The memtable is read fresh on every scan.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

import numpy as np
import trio

from rusts.executor import select_series
from rusts.messages import cpu_limiter
from rusts.model import Column, FieldType
from rusts.query import Query
from rusts.rowset import RowSet, merge

CACHE_BYTES = int(float(os.environ.get("RUSTS_SQL_BLOCK_CACHE_MB", "512")) * 1024 * 1024)
_TS = "\x00time"
_ABSENT = object()


class BlockCache:
    """Thread-safe LRU of decoded blocks: ``(path, sid, block, column) -> (values, mask)``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._d: OrderedDict = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _size(entry) -> int:
        if entry is _ABSENT:
            return 64
        v, m = entry
        n = v.nbytes if v.dtype != object else 8 * len(v) + 16 * min(len(v), 1 << 16)
        return n + (m.nbytes if m is not None else 0) + 64

    def get(self, key):
        with self._lock:
            e = self._d.get(key)
            if e is None:
                self.misses += 1
                return None
            self._d.move_to_end(key)
            self.hits += 1
            return e[0]

    def put(self, key, entry) -> None:
        size = self._size(entry)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._d.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._d[key] = (entry, size)
            self._bytes += size
            while self._bytes > self.max_bytes and self._d:
                _, (_, s) = self._d.popitem(last=False)
                self._bytes -= s

    def clear(self) -> None:
        with self._lock:
            self._d.clear()
            self._bytes = 0

    def stats(self) -> dict:
        with self._lock:
            return {"entries": len(self._d), "bytes": self._bytes, "max_bytes": self.max_bytes,
                    "hits": self.hits, "misses": self.misses}


CACHE = BlockCache(CACHE_BYTES)


def _read_blocks(reader, sid: int, fields: list[str], blocks: np.ndarray, rows: np.ndarray,
                 ftypes: dict[str, FieldType], cache: BlockCache) -> RowSet:
    """Blocks ``blocks`` (sorted) of series ``sid`` in one segment, decoding only cache misses."""
    path = reader.path
    names = [_TS, *fields]
    got: dict[tuple[int, str], object] = {}
    missing = []
    for b in blocks.tolist():
        miss = False
        for nm in names:
            e = cache.get((path, sid, b, nm))
            if e is None:
                miss = True
            else:
                got[(b, nm)] = e
        if miss:
            missing.append(b)
    if missing:
        mb = np.asarray(missing, dtype=np.int64)
        ts, cols = reader.read(sid, fields, blocks=mb)
        bounds = np.zeros(len(mb) + 1, dtype=np.int64)
        np.cumsum(rows[mb], out=bounds[1:])
        for k, b in enumerate(missing):
            sl = slice(int(bounds[k]), int(bounds[k + 1]))
            e = (ts[sl], None)
            got[(b, _TS)] = e
            cache.put((path, sid, b, _TS), e)
            for f in fields:
                c = cols.get(f)
                if c is None:
                    e = _ABSENT
                else:
                    m = None if c.mask is None else c.mask[sl]
                    if m is not None and not m.any():
                        e = _ABSENT
                    else:
                        e = (c.values[sl], None if m is None or m.all() else m)
                got[(b, f)] = e
                cache.put((path, sid, b, f), e)
    bl = blocks.tolist()
    ts_parts = [got[(b, _TS)][0] for b in bl]
    ts = np.concatenate(ts_parts) if len(ts_parts) > 1 else ts_parts[0]
    out: dict[str, Column] = {}
    for f in fields:
        entries = [got[(b, f)] for b in bl]
        if all(e is _ABSENT for e in entries):
            continue
        ft = ftypes[f]
        vals, masks, need = [], [], False
        for e, t in zip(entries, ts_parts):
            if e is _ABSENT:
                vals.append(np.zeros(len(t), ft.dtype) if ft != FieldType.STRING else np.full(len(t), "", object))
                masks.append(np.zeros(len(t), bool))
                need = True
            else:
                v, m = e
                vals.append(v if v.dtype == ft.dtype else v.astype(ft.dtype))
                masks.append(m if m is not None else np.ones(len(t), bool))
                need = need or m is not None
        v = np.concatenate(vals) if len(vals) > 1 else vals[0]
        out[f] = Column(ft, v, np.concatenate(masks) if need else None)
    return RowSet(ts, out, True)


def _mem_parts(snap, sid: int, start: int, end: int, fields: list[str]) -> list[RowSet]:
    parts = []
    for chunk in snap.memtable.get(sid, ()):
        t = chunk.timestamps
        sel = (t >= start) & (t < end)
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
            rs = RowSet(t[idx], cols, rs.sorted_unique)
        parts.append(rs)
    return parts


def read_series_cached(snap, sid: int, start: int, end: int, fields: list[str],
                       ftypes: dict[str, FieldType], cache: BlockCache = CACHE) -> RowSet:
    """All rows of one series in [start, end): merged (last write wins), sorted, unique times."""
    parts: list[RowSet] = []
    for r in snap.segments:
        if r.max_time < start or r.min_time >= end or not r.has_series(sid):
            continue
        bt = r.blocks(sid)
        sel = np.flatnonzero((bt.max_time >= start) & (bt.min_time < end))
        if len(sel):
            parts.append(_read_blocks(r, sid, fields, sel, np.asarray(bt.rows, dtype=np.int64), ftypes, cache))
    parts.extend(_mem_parts(snap, sid, start, end, fields))
    return merge(parts).slice_time(start, end)


async def scan(db, q: Query, cache: BlockCache = CACHE) -> list[tuple[dict, RowSet]]:
    """Rows of ``q`` (raw: measurement, time range, tag filters, fields) per series, with tags.

    The snapshot is taken in the event loop (consistent view), the reads run in a worker thread.
    """
    sids = select_series(db.index, q)
    ftypes = db.schema.fields(q.measurement)
    fields = [f for f in (q.fields if q.fields is not None else sorted(ftypes)) if f in ftypes]
    snap = db.snapshot(sids, q.start, q.end)
    tags = db.tags_map(sids)

    def work():
        out = []
        for sid in sids.tolist():
            rs = read_series_cached(snap, int(sid), q.start, q.end, fields, ftypes, cache)
            if len(rs):
                out.append((tags[int(sid)], rs))
        return out

    return await trio.to_thread.run_sync(work, limiter=cpu_limiter())
