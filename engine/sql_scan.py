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

import attrs
import numpy as np
import pyarrow as pa
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
    """Thread-safe LRU of decoded blocks: ``(path, sid, block, column)`` -> int64 timestamps
    (numpy) or a field's Arrow array (strings converted once, not per query)."""

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
        return int(entry.nbytes) + 64

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


_ARROW_TYPES = {
    FieldType.FLOAT: pa.float64(), FieldType.INTEGER: pa.int64(), FieldType.UNSIGNED: pa.uint64(),
    FieldType.STRING: pa.string(), FieldType.BOOLEAN: pa.bool_(),
}


def arrow_of(values: np.ndarray, mask: np.ndarray | None, ft: FieldType) -> pa.Array:
    """A field column as an Arrow array (``mask`` True = present)."""
    at = _ARROW_TYPES[ft]
    inv = None if mask is None else ~mask
    if ft == FieldType.STRING:
        return pa.array(values, at, mask=inv, from_pandas=False)
    return pa.array(np.asarray(values, dtype=ft.dtype), at, mask=inv)


def numpy_of(arr: pa.Array | None, n: int, ft: FieldType) -> Column | None:
    """Inverse of :func:`arrow_of` (None when the column is absent)."""
    if arr is None:
        return None
    mask = None
    if arr.null_count:
        mask = arr.is_valid().to_numpy(zero_copy_only=False)
        arr = arr.fill_null("" if ft == FieldType.STRING else (False if ft == FieldType.BOOLEAN else 0))
    v = arr.to_numpy(zero_copy_only=False)
    if ft == FieldType.STRING:
        v = v.astype(object)
    return Column(ft, v, mask)


@attrs.frozen(eq=False)
class Piece:
    """Rows of one series from one source: sorted unique timestamps and Arrow columns."""

    ts: np.ndarray
    cols: dict  # field -> pa.Array or None (absent)

    def slice(self, start: int, end: int) -> "Piece | None":
        lo = int(np.searchsorted(self.ts, start, "left"))
        hi = int(np.searchsorted(self.ts, end, "left"))
        if lo >= hi:
            return None
        if lo == 0 and hi == len(self.ts):
            return self
        return Piece(self.ts[lo:hi], {f: (None if a is None else a.slice(lo, hi - lo)) for f, a in self.cols.items()})


def _block_pieces(reader, sid: int, fields: list[str], blocks: np.ndarray, rows: np.ndarray,
                  ftypes: dict[str, FieldType], cache: BlockCache) -> list[Piece]:
    """One :class:`Piece` per block (sorted), decoding and converting only cache misses."""
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
            a, z = int(bounds[k]), int(bounds[k + 1])
            e = ts[a:z]
            got[(b, _TS)] = e
            cache.put((path, sid, b, _TS), e)
            for f in fields:
                c = cols.get(f)
                if c is None:
                    e = _ABSENT
                else:
                    m = None if c.mask is None else c.mask[a:z]
                    if m is not None and not m.any():
                        e = _ABSENT
                    else:
                        e = arrow_of(c.values[a:z], None if m is None or m.all() else m, ftypes[f])
                got[(b, f)] = e
                cache.put((path, sid, b, f), e)
    out = []
    for b in blocks.tolist():
        cols = {}
        for f in fields:
            e = got[(b, f)]
            cols[f] = None if e is _ABSENT else e
        out.append(Piece(got[(b, _TS)], cols))
    return out


def _mem_pieces(snap, sid: int, start: int, end: int, fields: list[str],
                ftypes: dict[str, FieldType]) -> list[RowSet]:
    from rusts.executor import _mem_parts

    return _mem_parts(snap, sid, start, end, fields)


def _piece_of_rowset(rs: RowSet, fields: list[str], ftypes: dict[str, FieldType]) -> Piece:
    cols = {}
    for f in fields:
        c = rs.columns.get(f)
        cols[f] = None if c is None else arrow_of(c.values, c.mask, ftypes[f])
    return Piece(np.asarray(rs.timestamps, dtype=np.int64), cols)


def _rowset_of_piece(p: Piece, fields: list[str], ftypes: dict[str, FieldType]) -> RowSet:
    n = len(p.ts)
    cols = {}
    for f in fields:
        c = numpy_of(p.cols.get(f), n, ftypes[f])
        if c is not None:
            cols[f] = c
    return RowSet(p.ts, cols, True)


def effective_query(db, q: Query) -> Query:
    """``q`` with the retention cutoff applied (expired rows vanish from answers at once)."""
    lc = getattr(db, "lifecycle", None)
    if lc is None:
        return q
    from rusts.retention import query_start

    start = query_start(q.start, q.measurement, lc.cutoffs())
    if start == q.start:
        return q
    return attrs.evolve(q, start=start, end=max(q.end, start))


def _tombstoned(snap, sid: int, start: int, end: int, measurement: str | None, fields: list[str]):
    """The series' rows with pending tombstones applied (the executor's reader), or None when no
    tombstone touches the series; deleted rows may hide in any block, so nothing is cached."""
    if measurement is None or getattr(snap, "tombstones", None) is None:
        return None
    from rusts.executor import _tombstoned as executor_tombstoned

    rs = executor_tombstoned(snap, sid, start, end, measurement)
    return None if rs is None else rs.select(fields)


def series_pieces(snap, sid: int, start: int, end: int, fields: list[str],
                  ftypes: dict[str, FieldType], cache: BlockCache = CACHE,
                  measurement: str | None = None) -> list[Piece]:
    """Rows of one series in [start, end) as time-ordered, non-overlapping pieces.

    Segment blocks come from the cache (no copies when nothing overlaps); when sources overlap in
    time (late writes not yet compacted), they are merged with last-write-wins like the executor.
    Pending deletes (tombstones of ``measurement``) are applied.
    """
    tomb = _tombstoned(snap, sid, start, end, measurement, fields)
    if tomb is not None:
        return [_piece_of_rowset(tomb, fields, ftypes)] if len(tomb) else []
    seg: list[Piece] = []
    for r in snap.segments:  # oldest first
        if r.max_time < start or r.min_time >= end or not r.has_series(sid):
            continue
        bt = r.blocks(sid)
        sel = np.flatnonzero((bt.max_time >= start) & (bt.min_time < end))
        if len(sel):
            for p in _block_pieces(r, sid, fields, sel, np.asarray(bt.rows, dtype=np.int64), ftypes, cache):
                p = p.slice(start, end)
                if p is not None:
                    seg.append(p)
    mem = _mem_pieces(snap, sid, start, end, fields, ftypes)
    simple = all(len(m.timestamps) < 2 or bool(np.all(m.timestamps[1:] > m.timestamps[:-1])) for m in mem)
    if simple:
        pieces = seg + [_piece_of_rowset(m, fields, ftypes) for m in mem]
        order = sorted(range(len(pieces)), key=lambda i: int(pieces[i].ts[0]))
        ok = all(int(pieces[order[k]].ts[-1]) < int(pieces[order[k + 1]].ts[0]) for k in range(len(order) - 1))
        if ok:
            return [pieces[i] for i in order]
    parts = [_rowset_of_piece(p, fields, ftypes) for p in seg] + mem
    rs = merge(parts).slice_time(start, end)
    return [_piece_of_rowset(rs, fields, ftypes)] if len(rs) else []


def arrow_schema(tag_keys: list[str], fields: dict[str, FieldType]) -> pa.Schema:
    return pa.schema([("time", pa.timestamp("ns"))]
                     + [(k, pa.dictionary(pa.int32(), pa.string())) for k in tag_keys]
                     + [(f, _ARROW_TYPES[ft]) for f, ft in fields.items()])


def pieces_table(series: list[tuple[dict, list[Piece]]], tag_keys: list[str],
                 fields: dict[str, FieldType]) -> pa.Table:
    """One record batch per piece; tags as one-value dictionary columns (no per-row strings)."""
    schema = arrow_schema(tag_keys, fields)
    batches = []
    zeros = np.zeros(0, np.int32)
    for tags, pieces in series:
        dicts = {k: pa.array([tags.get(k) or ""], pa.string()) for k in tag_keys}
        for p in pieces:
            n = len(p.ts)
            if len(zeros) < n:
                zeros = np.zeros(max(n, 2 * len(zeros)), np.int32)
            cols = [pa.array(p.ts.view("datetime64[ns]"), pa.timestamp("ns"))]
            for k in tag_keys:
                ind = pa.array(zeros[:n], pa.int32()) if tags.get(k) is not None else pa.nulls(n, pa.int32())
                cols.append(pa.DictionaryArray.from_arrays(ind, dicts[k]))
            for f, ft in fields.items():
                a = p.cols.get(f)
                cols.append(a if a is not None else pa.nulls(n, _ARROW_TYPES[ft]))
            batches.append(pa.RecordBatch.from_arrays(cols, schema=schema))
    return pa.Table.from_batches(batches, schema=schema)


RECENT_MAX_ROWS_PER_SERIES = 1000
"""The in-memory columnar path pays per row (filter, sort, dedup) where the series-by-series path
pays per series and block (and answers whole blocks from their statistics): it is chosen when the
range holds few rows per series (dashboards over thousands of small series), not for long ranges
of a few big series."""


def recent_covers(db, q: Query, cost_check: bool = False) -> bool:
    """Whether every row of ``q``'s range is in memory (:mod:`rusts.recent`), no pending
    tombstone of the measurement touches the range, and (with ``cost_check``) the range holds few
    enough rows per series, on average over all series, for the columnar path to be the cheaper
    one."""
    recent = getattr(db, "recent", None)
    if recent is None or not recent.covers(q.start) or q.start >= q.end:
        return False
    if cost_check and recent.rows_in(db.state.tables(), q.start, q.end) > \
            RECENT_MAX_ROWS_PER_SERIES * max(len(db.index), 1):
        return False
    _, stones = db.lifecycle.state()
    if stones:
        for st in stones.of_measurement(q.measurement):
            if st.overlaps(q.start, q.end - 1):
                return False
    return True


def recent_arrow(sid: np.ndarray, ts: np.ndarray, cols: dict, tags: dict, tag_keys: list[str],
                 fields: dict[str, FieldType]) -> pa.Table:
    """Columnar rows (:func:`rusts.recent.scan`) as the scan's Arrow table: tags as dictionary
    columns built once per distinct series, not per row."""
    schema = arrow_schema(tag_keys, fields)
    usid, inv = np.unique(sid, return_inverse=True)
    inv = inv.reshape(-1)
    arrays = [pa.array(ts.view("datetime64[ns]"), pa.timestamp("ns"))]
    for k in tag_keys:
        vals = [tags[int(s)].get(k) for s in usid.tolist()]
        words = sorted({v for v in vals if v is not None})
        code = {w: i for i, w in enumerate(words)}
        per_sid = np.array([code.get(v, -1) for v in vals], dtype=np.int32)
        rows = per_sid[inv] if len(inv) else np.zeros(0, np.int32)
        missing = rows < 0
        ind = pa.array(np.where(missing, 0, rows), pa.int32(), mask=missing if missing.any() else None)
        arrays.append(pa.DictionaryArray.from_arrays(ind, pa.array(words, pa.string())))
    for f, ft in fields.items():
        v, m = cols[f]
        arrays.append(arrow_of(v, m, ft))
    return pa.Table.from_arrays(arrays, schema=schema)


async def scan_table(db, q: Query, tag_keys: list[str], cache: BlockCache = CACHE) -> pa.Table:
    """The rows of raw query ``q`` as an Arrow table (time, tags, ``q.fields``), any row order.

    The snapshot is taken in the event loop (a consistent view); reading and conversion run in a
    worker thread under the CPU limiter. When the whole range is in memory (recent windows), the
    rows come from :mod:`rusts.recent` in one columnar pass instead of series by series.
    """
    q = effective_query(db, q)
    sids = select_series(db.index, q)
    ftypes = db.schema.fields(q.measurement)
    fields = [f for f in (q.fields if q.fields is not None else sorted(ftypes)) if f in ftypes]
    if recent_covers(db, q, cost_check=True):
        from rusts.recent import scan

        pieces = db.recent.pieces(db.state.tables(), q.measurement, q.start, q.end)
        tags = db.tags_map(sids)
        fdict = {f: ftypes[f] for f in fields}

        def recent_work():
            sid, ts, cols = scan(pieces, sids, q.start, q.end, fields, ftypes)
            return recent_arrow(sid, ts, cols, tags, tag_keys, fdict)

        return await trio.to_thread.run_sync(recent_work, limiter=cpu_limiter(), abandon_on_cancel=True)
    snap = db.snapshot(sids, q.start, q.end)
    tags = db.tags_map(sids)
    fdict = {f: ftypes[f] for f in fields}

    def work():
        series = []
        for sid in sids.tolist():
            ps = series_pieces(snap, int(sid), q.start, q.end, fields, ftypes, cache, q.measurement)
            if ps:
                series.append((tags[int(sid)], ps))
        return pieces_table(series, tag_keys, fdict)

    return await trio.to_thread.run_sync(work, limiter=cpu_limiter(), abandon_on_cancel=True)


def last_row(snap, sid: int, start: int, end: int, fields: list[str], ftypes: dict[str, FieldType],
             cache: BlockCache = CACHE, measurement: str | None = None) -> RowSet:
    """The newest row of one series in [start, end) (merged, last write wins), from the newest
    cached block of each segment plus the memtable; empty when the series has no row there."""
    tomb = _tombstoned(snap, sid, start, end, measurement, fields)
    if tomb is not None:
        if len(tomb) > 1:
            t = int(tomb.timestamps[-1])
            tomb = tomb.slice_time(t, t + 1)
        return tomb
    parts: list[RowSet] = []
    for r in snap.segments:  # oldest first: merge order is write order
        if r.max_time < start or r.min_time >= end or not r.has_series(sid):
            continue
        bt = r.blocks(sid)
        sel = np.flatnonzero((bt.max_time >= start) & (bt.min_time < end))
        rows = np.asarray(bt.rows, dtype=np.int64)
        for b in sel[::-1].tolist():
            p = _block_pieces(r, sid, fields, np.array([b], np.int64), rows, ftypes, cache)[0].slice(start, end)
            if p is not None:
                t = int(p.ts[-1])
                parts.append(_rowset_of_piece(p.slice(t, t + 1), fields, ftypes))
                break
    parts.extend(_mem_pieces(snap, sid, start, end, fields, ftypes))
    rs = merge(parts)
    if len(rs) > 1:
        t = int(rs.timestamps[-1])
        rs = rs.slice_time(t, t + 1)
    return rs
