"""Column scans for the SQL general path and the vectorised aggregates, per series.

The DuckDB path needs every row of the columns a statement names (after time and tag pushdown).
Reading them through ``db.query`` would also sort all series into one global time order, which
DuckDB does not need; so this module reads per series, like the executor's ``read_series``, and
keeps series separate: each becomes one Arrow record batch (tags as dictionary columns with a
single value, so no per-row strings are built).

Segment blocks come decoded from the block cache shared with the executor
(:mod:`rusts.storage.blockcache`); the memtable is read fresh on every scan.
"""

from __future__ import annotations

import attrs
import numpy as np
import pyarrow as pa

from rusts.storage.blockcache import ARROW_TYPES as _ARROW_TYPES
from rusts.storage.blockcache import CACHE, BlockCache, Col, arrow_of, block_columns
from rusts.query.executor import select_series
from rusts.query.control import charge, checkpoint, offload
from rusts.model import Column, FieldType
from rusts.query.model import Query
from rusts.query.rowset import RowSet, concat_column, merge

__all__ = ["CACHE", "BlockCache", "Col", "arrow_of"]


@attrs.frozen(eq=False)
class Piece:
    """Rows of one series from one source: sorted unique timestamps and numpy columns
    (field -> :class:`~rusts.storage.blockcache.Col`, or None when the field has no value here)."""

    ts: np.ndarray
    cols: dict

    def slice(self, start: int, end: int) -> "Piece | None":
        ts = self.ts
        if not len(ts):
            return None
        lo = int(ts.searchsorted(start, "left")) if ts[0] < start else 0
        hi = int(ts.searchsorted(end, "left")) if ts[-1] >= end else len(ts)
        if lo >= hi:
            return None
        if lo == 0 and hi == len(ts):
            return self
        return Piece(ts[lo:hi], {f: (None if c is None else c.slice(lo, hi)) for f, c in self.cols.items()})


def _block_pieces(reader, sid: int, fields: list[str], blocks: list[int],
                  cache: BlockCache) -> list[Piece]:
    """One :class:`Piece` per block (sorted), decoding only cache misses."""
    return [Piece(ts, {f: cols.get(f) for f in fields})
            for ts, cols in block_columns(reader, sid, fields, blocks, cache)]


def _mem_pieces(snap, sid: int, start: int, end: int, fields: list[str],
                ftypes: dict[str, FieldType]) -> list[RowSet]:
    from rusts.query.executor import _mem_parts

    return _mem_parts(snap, sid, start, end, fields)


def _piece_of_rowset(rs: RowSet, fields: list[str], ftypes: dict[str, FieldType]) -> Piece:
    cols = {}
    for f in fields:
        c = rs.columns.get(f)
        cols[f] = None if c is None else Col(c.type, c.values, c.mask)
    return Piece(np.asarray(rs.timestamps, dtype=np.int64), cols)


def _rowset_of_piece(p: Piece, fields: list[str], ftypes: dict[str, FieldType]) -> RowSet:
    return RowSet(p.ts, {f: c.column() for f in fields if (c := p.cols.get(f)) is not None}, True)


def effective_query(db, q: Query) -> Query:
    """``q`` with the retention cutoff applied (expired rows vanish from answers at once)."""
    lc = getattr(db, "lifecycle", None)
    if lc is None:
        return q
    from rusts.lifecycle.policies import query_start

    start = query_start(q.start, q.measurement, lc.cutoffs())
    if start == q.start:
        return q
    return attrs.evolve(q, start=start, end=max(q.end, start))


def _tombstoned(snap, sid: int, start: int, end: int, measurement: str | None, fields: list[str]):
    """The series' rows with pending tombstones applied (the executor's reader), or None when no
    tombstone touches the series; deleted rows may hide in any block, so nothing is cached."""
    if measurement is None or getattr(snap, "tombstones", None) is None:
        return None
    from rusts.query.executor import _tombstoned as executor_tombstoned

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
        if r.max_time < start or r.min_time >= end:
            continue
        lo, hi = r.block_span(sid, start, end)
        if lo < hi:
            for p in _block_pieces(r, sid, fields, list(range(lo, hi)), cache):
                p = p.slice(start, end)
                if p is not None:
                    seg.append(p)
    mem = _mem_pieces(snap, sid, start, end, fields, ftypes)
    simple = all(m.sorted_unique or len(m.timestamps) < 2 or bool(np.all(m.timestamps[1:] > m.timestamps[:-1]))
                 for m in mem)
    if simple:
        pieces = seg + [_piece_of_rowset(m, fields, ftypes) for m in mem]
        order = sorted(range(len(pieces)), key=lambda i: int(pieces[i].ts[0]))
        ok = all(int(pieces[order[k]].ts[-1]) < int(pieces[order[k + 1]].ts[0]) for k in range(len(order) - 1))
        if ok:
            return [pieces[i] for i in order]
    parts = [_rowset_of_piece(p, fields, ftypes) for p in seg] + mem
    rs = merge(parts).slice_time(start, end)
    return [_piece_of_rowset(rs, fields, ftypes)] if len(rs) else []


def series_columns(snap, sid: int, start: int, end: int, fields: list[str],
                   ftypes: dict[str, FieldType], cache: BlockCache = CACHE,
                   measurement: str | None = None, prune=None) -> tuple[np.ndarray, dict] | None:
    """Rows of one series in [start, end) as one timestamp array and ``{field: Column or None}``
    (None: no value in the range); None when the series has no row there.

    The common case - no pending delete of the series, no memtable rows, segments apart in time -
    concatenates the cached blocks and slices them, with no per-block objects; anything else goes
    through :func:`series_pieces`. ``prune(reader, sid, lo, hi)`` (:func:`rusts.sql.vector.block_filter`)
    may rule blocks out in the common case (the caller filters rows by the same predicates).
    """
    simple = not snap.memtable.get(sid) and not (
        measurement is not None and getattr(snap, "tombstones", None) is not None
        and snap.tombstones.for_series(measurement, sid))
    spans = []
    if simple:
        for r in snap.segments:
            if r.max_time < start or r.min_time >= end:
                continue
            lo, hi = r.block_span(sid, start, end)
            if lo < hi:
                spans.append((r, lo, hi))
    if not simple or len(spans) > 1:  # (segments may overlap in time: merge them)
        pieces = series_pieces(snap, sid, start, end, fields, ftypes, cache, measurement)
        if not pieces:
            return None
        lengths = [len(p.ts) for p in pieces]
        ts = np.concatenate([p.ts for p in pieces]) if len(pieces) > 1 else pieces[0].ts
        return ts, {f: concat_column([p.cols.get(f) for p in pieces], lengths, ftypes[f]) for f in fields}
    if not spans:
        return None
    r, lo, hi = spans[0]
    wanted = list(range(lo, hi))
    if prune is not None:  # one source: a block without a matching row changes nothing
        wanted = [b for b, k in zip(wanted, prune(r, sid, lo, hi).tolist()) if k]
        if not wanted:
            return None
    blocks = block_columns(r, sid, fields, wanted, cache)
    if len(blocks) == 1:
        ts, cols = blocks[0]
        cols = {f: cols.get(f) for f in fields}
    else:
        lengths = [len(t) for t, _ in blocks]
        ts = np.concatenate([t for t, _ in blocks])
        cols = {f: concat_column([c.get(f) for _, c in blocks], lengths, ftypes[f]) for f in fields}
    a = int(ts.searchsorted(start)) if ts[0] < start else 0
    z = int(ts.searchsorted(end)) if ts[-1] >= end else len(ts)
    if a >= z:
        return None
    if a or z < len(ts):
        ts = ts[a:z]
        cols = {f: None if c is None else c.slice(a, z) if isinstance(c, Col) else
                Column(c.type, c.values[a:z], None if c.mask is None else c.mask[a:z]) for f, c in cols.items()}
    return ts, {f: None if c is None else (c.column() if isinstance(c, Col) else c) for f, c in cols.items()}


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
                c = p.cols.get(f)
                cols.append(c.arrow() if c is not None else pa.nulls(n, _ARROW_TYPES[ft]))
            batches.append(pa.RecordBatch.from_arrays(cols, schema=schema))
    return pa.Table.from_batches(batches, schema=schema)


RECENT_MAX_ROWS_PER_SERIES = 1000
"""The in-memory columnar path pays per row (filter, sort, dedup) where the series-by-series path
pays per series and block (and answers whole blocks from their statistics): it is chosen when the
range holds few rows per series (dashboards over thousands of small series), not for long ranges
of a few big series."""


def recent_covers(db, q: Query, cost_check: bool = False) -> bool:
    """Whether every row of ``q``'s range is in memory (:mod:`rusts.memory.recent`), no pending
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
    """Columnar rows (:func:`rusts.memory.recent.scan`) as the scan's Arrow table: tags as dictionary
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
    rows come from :mod:`rusts.memory.recent` in one columnar pass instead of series by series.
    """
    q = effective_query(db, q)
    sids = select_series(db.index, q)
    ftypes = db.schema.fields(q.measurement)
    fields = [f for f in (q.fields if q.fields is not None else sorted(ftypes)) if f in ftypes]
    if recent_covers(db, q, cost_check=True):
        from rusts.memory.recent import scan

        pieces = db.recent.pieces(db.state.tables(), q.measurement, q.start, q.end)
        tags = db.tags_map(sids)
        fdict = {f: ftypes[f] for f in fields}

        def recent_work():
            sid, ts, cols = scan(pieces, sids, q.start, q.end, fields, ftypes)
            table = recent_arrow(sid, ts, cols, tags, tag_keys, fdict)
            charge(table.nbytes)
            return table

        return await offload(recent_work)
    snap = db.snapshot(sids, q.start, q.end)
    tags = db.tags_map(sids)
    fdict = {f: ftypes[f] for f in fields}

    def work():
        series = []
        for sid in sids.tolist():
            checkpoint()
            ps = series_pieces(snap, int(sid), q.start, q.end, fields, ftypes, cache, q.measurement)
            if ps:
                charge(sum(len(p.ts) for p in ps) * 8 * (1 + len(fields)))
                series.append((tags[int(sid)], ps))
        return pieces_table(series, tag_keys, fdict)

    return await offload(work)


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
    from rusts.query.reading import mem_part

    cands: list = []  # (newest time in range, its row(s)), oldest source first: write order
    for r in snap.segments:
        if r.max_time < start or r.min_time >= end:
            continue
        lo, hi = r.block_span(sid, start, end)
        for b in range(hi - 1, lo - 1, -1):
            p = _block_pieces(r, sid, fields, [b], cache)[0].slice(start, end)
            if p is not None:
                t = int(p.ts[-1])
                cands.append((t, lambda p=p, t=t: _rowset_of_piece(p.slice(t, t + 1), fields, ftypes)))
                break
    for chunk in snap.memtable.get(sid, ()):
        if chunk.sorted_unique:  # only its newest row in range can be the answer's
            ts = chunk.timestamps
            hi = int(ts.searchsorted(end))
            if hi == 0 or ts[hi - 1] < start:
                continue
            t = int(ts[hi - 1])
            cands.append((t, lambda c=chunk, t=t: mem_part(c, t, t + 1, fields)))
        else:
            rs = mem_part(chunk, start, end, fields)
            if rs is not None:
                cands.append((int(rs.timestamps.max()), lambda rs=rs: rs))
    if not cands:
        return RowSet(np.empty(0, np.int64), {}, True)
    newest = max(t for t, _ in cands)
    parts = [make() for t, make in cands if t == newest]  # (other sources' rows are older)
    rs = parts[0] if len(parts) == 1 and parts[0].sorted_unique else merge(parts)
    if len(rs) > 1:
        t = int(rs.timestamps[-1])
        rs = rs.slice_time(t, t + 1)
    return rs
