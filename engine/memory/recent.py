"""Recent data kept in memory, columnar across series: the dashboard read path.

Monitoring dashboards and alert rules ask about the last minutes of thousands of small series
("average CPU per site over the last 5 minutes"). Read series by series from segments and
memtable row sets, such a query costs Python work per series and per write (a fleet writes one
row per series per report). Here the same rows are read as a few big arrays per table: its
sealed blocks (all its series, sorted; shared, not copied) and its few unsealed writes, and a
query filters all of them at once with numpy (time range, series ids), resolves duplicate
timestamps (last write wins, per field) and hands one columnar result to the aggregation.

To make that possible after a flush, flushed memtable tables are not dropped but kept here, up to
``query.recent_cache_mb`` (oldest evicted first). :attr:`RecentData.floor` is the newest timestamp
that may exist *only* outside memory (in segments present at start-up, in evicted tables, in
tables that predate a delete): a query whose time range starts after the floor is answered
exactly from memory. Deletes and DROP TABLE put up a barrier: tables that held rows at that
moment are never admitted (their rows may be deleted once compaction applies the tombstones), and
queries fall back to the segment path while a tombstone of the measurement overlaps their range.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import numpy as np

from rusts.memory.views import UnsealedTail
from rusts.model import FieldType

MIN_TIME = -(2**63)


@attrs.define
class _Piece:
    """Rows of one measurement: a table's sealed block (sorted by series and time), or a run of
    its unsealed writes (in arrival order)."""

    sid: np.ndarray  # uint64 per row
    ts: np.ndarray  # int64 per row
    cols: dict  # field -> (FieldType, values, mask or None)
    min_time: int
    max_time: int
    rank: np.ndarray | None  # int64 per row: write order within the table; None: rank_base + row
    by_sid: tuple | None = None  # (row order by series or None: sorted, distinct series, their first position); lazy
    rank_base: int = 0

    @classmethod
    def of_block(cls, blk, rank_base: int) -> "_Piece":
        """A sealed block's rows (shared, not copied) with a series id per row."""
        sid = np.repeat(blk.usid, np.diff(blk.starts))
        return cls(sid, blk.ts, blk.cols, int(blk.ts.min()), int(blk.ts.max()), None,
                   (None, blk.usid, blk.starts), rank_base)

    @property
    def nbytes(self) -> int:
        """Memory of the piece's own arrays (a block's piece: its series id per row)."""
        if self.rank is None:
            return self.sid.nbytes
        n = self.sid.nbytes + self.ts.nbytes + self.rank.nbytes
        for _, v, m in self.cols.values():
            n += v.nbytes + (0 if m is None else m.nbytes)
        return n

    def ranks(self, keep: np.ndarray | None = None) -> np.ndarray:
        """Write order of the rows (``keep``: a boolean mask or ascending row numbers)."""
        if self.rank is not None:
            return self.rank if keep is None else self.rank[keep]
        if keep is None:
            return self.rank_base + np.arange(len(self.ts), dtype=np.int64)
        rows = np.flatnonzero(keep) if keep.dtype == bool else keep
        return self.rank_base + rows.astype(np.int64, copy=False)

    def rows_of(self, sids: np.ndarray) -> np.ndarray:
        """Row numbers (ascending) of the series ``sids`` (sorted uint64): a binary search per
        series in the piece's series index (built on first use) instead of a pass over all rows."""
        idx = self.by_sid
        if idx is None:
            order = np.argsort(self.sid, kind="stable")
            srt = self.sid[order]
            bounds = np.flatnonzero(np.r_[True, srt[1:] != srt[:-1]]) if len(srt) else np.zeros(0, np.int64)
            idx = self.by_sid = (order, srt[bounds], np.r_[bounds, len(srt)])
        order, usid, starts = idx
        pos = np.searchsorted(usid, sids)
        ok = pos < len(usid)
        ok[ok] = usid[pos[ok]] == sids[ok]
        pos = pos[ok]
        if not len(pos):
            return np.zeros(0, np.int64)
        if order is None:  # sorted by series: each series' rows are one run
            return np.concatenate([np.arange(starts[k], starts[k + 1]) for k in pos.tolist()])
        if len(pos) == 1:
            return order[starts[pos[0]]:starts[pos[0] + 1]]
        return np.sort(np.concatenate([order[starts[k]:starts[k + 1]] for k in pos.tolist()]))


@attrs.define
class _TableView:
    """The pieces of one table queries read: one per sealed block (kept while the block is),
    and those of its unsealed writes (rebuilt when they change)."""

    blocks: dict = attrs.field(factory=dict)  # id(block) -> (block, _Piece)
    tail: tuple = ()  # the unsealed writes the tail pieces were built of
    tail_pieces: dict = attrs.field(factory=dict)  # measurement -> list[_Piece]
    nbytes: int = 0  # memory of the pieces (counted in their table's bytes)


_ROW_BITS = 32  # a rank is (block or write number) << _ROW_BITS + row


def _pieces_of_chunks(chunks, first_no: int = 0) -> dict[str, list[_Piece]]:
    """Concatenate chunks per (measurement, field layout); one piece per group. ``first_no`` is
    the number of the first chunk (rows are ranked by chunk number, then row)."""
    groups: dict[tuple, list] = {}
    for no, ch in enumerate(chunks, first_no):
        f = ch.frame
        m0, sig = f.layout()  # memoised on the frame (the flush gathers by it too)
        if m0 is not None:
            groups.setdefault((m0, sig), []).append((ch, None, no))
        else:
            ms = f.measurements
            for m in set(ms):
                sel = np.array([x == m for x in ms])
                groups.setdefault((m, sig), []).append((ch, sel, no))
    out: dict[str, list[_Piece]] = {}
    for (m, sig), items in groups.items():
        sids, tss, rowsel, ranks = [], [], [], []
        for ch, sel, no in items:
            f = ch.frame
            counts = np.diff(f.starts)
            rs = np.repeat(np.asarray(ch.sids, dtype=np.uint64), counts)
            rank = (np.int64(no) << _ROW_BITS) + np.arange(len(f.timestamps), dtype=np.int64)
            if sel is None:
                sids.append(rs)
                tss.append(f.timestamps)
                rowsel.append(None)
                ranks.append(rank)
            else:
                r = np.repeat(sel, counts)
                sids.append(rs[r])
                tss.append(f.timestamps[r])
                rowsel.append(r)
                ranks.append(rank[r])
        sid = np.concatenate(sids) if len(sids) > 1 else sids[0]
        ts = np.concatenate(tss) if len(tss) > 1 else tss[0]
        rank = np.concatenate(ranks) if len(ranks) > 1 else ranks[0]
        cols = {}
        for name, t, _ in sig:
            ft = FieldType(t)
            vals, masks, any_mask = [], [], False
            for (ch, _, _), r in zip(items, rowsel):
                c = ch.frame.columns[name]
                v, mk = c.values, c.mask
                if r is not None:
                    v = v[r]
                    mk = None if mk is None else mk[r]
                vals.append(v)
                masks.append(mk)
                any_mask |= mk is not None
            v = np.concatenate(vals) if len(vals) > 1 else vals[0]
            mask = None
            if any_mask:
                mask = np.concatenate([np.ones(len(x), bool) if mk is None else mk for x, mk in zip(vals, masks)])
            cols[name] = (ft, v, mask)
        if len(ts):
            out.setdefault(m, []).append(_Piece(sid, ts, cols, int(ts.min()), int(ts.max()), rank))
    return out


class RecentData:
    """Flushed memtable tables kept for the in-memory read path (see the module docstring)."""

    def __init__(self, max_bytes: int, floor: int = MIN_TIME) -> None:
        self.max_bytes = int(max_bytes)
        self.tables: list = []  # flushed Tables, oldest first
        self.bytes = 0
        self.floor = floor
        self.barrier_seq = 0  # tables whose first write is at or before this never enter
        self._views: dict[int, _TableView] = {}
        self._sizes: dict[int, int] = {}  # id(table) -> bytes counted for it (table + its views)

    # ------------------------------------------------------------------ admission
    def raise_floor(self, t: int) -> None:
        if t > self.floor:
            self.floor = t

    def add(self, table) -> None:
        """A table was flushed: keep it (or, when it may hold deleted rows, only note its span)."""
        if not table.points:
            return
        if self.max_bytes <= 0 or table.first_seq <= self.barrier_seq:
            self.raise_floor(table.max_time)
            self._views.pop(id(table), None)
            return
        self.tables.append(table)
        self._sizes[id(table)] = table.bytes
        self.bytes += table.bytes
        self._evict()

    def _evict(self) -> None:
        """Forget the oldest tables while the memory held (tables, their sealed copies and the
        columnar views built for queries) is above ``query.recent_cache_mb``."""
        while self.tables and self.bytes > self.max_bytes:
            old = self.tables.pop(0)
            self.bytes -= self._sizes.pop(id(old), 0)
            self.raise_floor(old.max_time)
            self._views.pop(id(old), None)

    def barrier(self, seq: int, live_tables: Sequence) -> None:
        """A delete or drop at write sequence ``seq``: forget every table that holds rows now."""
        self.barrier_seq = max(self.barrier_seq, int(seq))
        for t in [*self.tables, *live_tables]:
            if t.points:
                self.raise_floor(t.max_time)
            t.view_bytes = 0  # (its views are dropped below)
        self.tables.clear()
        self.bytes = 0
        self._views.clear()
        self._sizes.clear()

    def statistics(self) -> dict:
        return {"tables": len(self.tables), "bytes": self.bytes,
                "floor": None if self.floor == MIN_TIME else self.floor}

    # ------------------------------------------------------------------ reads
    def covers(self, start: int) -> bool:
        # floor MIN_TIME: nothing was ever left outside memory (a new database)
        return start > self.floor or self.floor == MIN_TIME

    def _pieces(self, table, measurement: str) -> list[_Piece]:
        """Loop thread: the pieces of ``table``'s rows of ``measurement``, oldest first: one per
        sealed block (its arrays shared, a series id per row added), then the unsealed writes
        concatenated per field layout (a few: :meth:`Table.query_parts` seals many first)."""
        view = self._views.get(id(table))
        if view is None:
            view = self._views[id(table)] = _TableView()
        parts = table.query_parts(measurement)
        out, tail = [], ()
        for no, part in enumerate(parts):
            if isinstance(part, UnsealedTail):
                tail = part.chunks
                continue
            got = view.blocks.get(id(part))
            if got is None or got[0] is not part:
                got = view.blocks[id(part)] = (part, _Piece.of_block(part, no << _ROW_BITS))
            piece = got[1]
            if piece.rank_base != no << _ROW_BITS:  # (a block's place among the table's blocks)
                piece = attrs.evolve(piece, rank_base=no << _ROW_BITS)
            out.append(piece)
        blocks = table.sealed_blocks()
        live = {id(b) for b in blocks}
        for k in [k for k in view.blocks if k not in live]:  # merged away since
            del view.blocks[k]
        if len(tail) != len(view.tail) or any(a is not b for a, b in zip(tail, view.tail)):
            view.tail = tail  # (ranked after every block of the table)
            view.tail_pieces = _pieces_of_chunks(tail, len(blocks)) if tail else {}
        out.extend(view.tail_pieces.get(measurement, ()))
        nb = sum(p.nbytes for _, p in view.blocks.values()) + \
            sum(p.nbytes for ps in view.tail_pieces.values() for p in ps)
        delta, view.nbytes = nb - view.nbytes, nb
        if delta:
            table.view_bytes += delta  # a live table: counted by the memtable limits
            if id(table) in self._sizes:  # a kept table: by query.recent_cache_mb
                self.bytes += delta
                self._sizes[id(table)] += delta
        return out

    def pieces(self, live_tables: Sequence, measurement: str, start: int, end: int) -> list:
        """Loop thread: ``(table number, piece)`` (oldest table first) for every in-memory table
        piece that overlaps the range.

        Views of the active table's new chunks are built here, so this must run in the loop (the
        memtable is only mutated there); the pieces themselves are immutable afterwards.
        """
        out = []
        for no, t in enumerate([*self.tables, *live_tables]):
            if not t.points or t.max_time < start or t.min_time >= end:
                continue
            for p in self._pieces(t, measurement):
                if p.max_time >= start and p.min_time < end:
                    out.append((no, p))
        self._evict()  # (views grew: later queries may find less in memory, this one has it)
        return out

    def rows_in(self, live_tables: Sequence, start: int, end: int) -> int:
        """Estimated rows (all measurements) of the in-memory tables in [start, end), assuming
        rows spread evenly over each table's time span."""
        n = 0.0
        for t in [*self.tables, *live_tables]:
            if not t.points or t.max_time < start or t.min_time >= end:
                continue
            span = t.max_time - t.min_time + 1
            inside = min(end, t.max_time + 1) - max(start, t.min_time)
            n += t.points * min(1.0, inside / span)
        return int(n)

    def forget(self, table) -> None:
        self._views.pop(id(table), None)  # (a live table's views: not counted in self.bytes)


FEW_SERIES = 16
"""Up to this many series, :func:`scan` finds their rows through each piece's series index."""


def _member(sel_sids: np.ndarray, top: int):
    """A function giving, for an array of series ids, which of them are in ``sel_sids``: a lookup
    table when ids are small (they are numbered from 0), else a binary search."""
    if not len(sel_sids):
        return lambda s: np.zeros(len(s), bool)
    top = max(top, int(sel_sids[-1]))
    if top < 1 << 26:
        table = np.zeros(top + 1, bool)
        table[sel_sids.astype(np.int64)] = True
        return lambda s: table[s.astype(np.int64, copy=False)]

    def search(s):
        i = np.searchsorted(sel_sids, s)
        i[i == len(sel_sids)] = 0
        return sel_sids[i] == s

    return search


def _row_order(sid: np.ndarray, ts: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Order of rows by (series, time, write order). Pieces arrive mostly in write order and each
    write mostly sorted, so one stable sort of a single ``series * span + time`` key (a merge of
    runs) does it when the key fits in 63 bits and ranks are already increasing."""
    n = len(ts)
    if n > 1 and (rank[1:] > rank[:-1]).all():
        tmin = int(ts.min())
        span = int(ts.max()) - tmin + 1
        top = int(sid.max()) + 1
        if top * span < 2**62:
            key = sid.astype(np.int64) * span + (ts - tmin)
            return np.argsort(key, kind="stable")
    return np.lexsort((rank, ts, sid))


def scan(pieces: Sequence, sids: np.ndarray | None, start: int, end: int, fields: Sequence[str],
         ftypes: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """Rows of ``sids`` (None: every series) in [start, end) from ``pieces`` (``(table number,
    piece)``, as :meth:`RecentData.pieces` gives them): ``(sid, ts, {field: (values, valid)})``,
    sorted by (series, time), one row per (series, timestamp): the last write wins per field.

    Pure function (worker thread safe). ``valid`` is None when every row has the field.
    """
    member = sel_sids = None
    few = False
    if sids is not None:
        sel_sids = np.sort(np.asarray(sids, dtype=np.uint64))
        few = len(sel_sids) <= FEW_SERIES
        if not few:
            top = max((int(p.sid.max()) for _, p in pieces if len(p.sid)), default=0)
            member = _member(sel_sids, top)
    got_sid, got_ts, got_rank, got_cols = [], [], [], {f: ([], []) for f in fields}
    for tno, p in pieces:
        if few:  # a few series: their rows by binary search, then the time range
            rows = p.rows_of(sel_sids)
            t = p.ts[rows]
            keep = rows[(t >= start) & (t < end)]  # row numbers, ascending
            if not len(keep):
                continue
            allk = len(keep) == len(p.ts)
        else:
            keep = (p.ts >= start) & (p.ts < end)
            if member is not None:
                keep &= member(p.sid)
            if not keep.any():
                continue
            allk = keep.all()
        got_sid.append(p.sid if allk else p.sid[keep])
        got_ts.append(p.ts if allk else p.ts[keep])
        got_rank.append((np.int64(tno) << 48) + p.ranks(None if allk else keep))
        n = len(got_ts[-1])
        for f in fields:
            vals, valid = got_cols[f]
            c = p.cols.get(f)
            ft = ftypes[f]
            if c is None or c[0] != ft:
                vals.append(ft.zeros(n))
                valid.append(np.zeros(n, bool))
            else:
                vals.append(c[1] if allk else c[1][keep])
                m = c[2]
                valid.append(None if m is None else (m if allk else m[keep]))
    if not got_ts:
        return (np.zeros(0, np.uint64), np.zeros(0, np.int64),
                {f: (np.zeros(0, ftypes[f].dtype) if ftypes[f] != FieldType.STRING else np.zeros(0, object), None)
                 for f in fields})
    sid = np.concatenate(got_sid)
    ts = np.concatenate(got_ts)
    cols = {}
    for f in fields:
        vals, valid = got_cols[f]
        v = np.concatenate(vals)
        mask = None if all(m is None for m in valid) else np.concatenate(
            [np.ones(len(x), bool) if m is None else m for x, m in zip(vals, valid)])
        cols[f] = (v, mask)
    n = len(ts)
    order = _row_order(sid, ts, np.concatenate(got_rank))  # by series, time, then write order
    sid, ts = sid[order], ts[order]
    cols = {f: (v[order], None if m is None else m[order]) for f, (v, m) in cols.items()}
    if n > 1:
        same = (sid[1:] == sid[:-1]) & (ts[1:] == ts[:-1])
        if same.any():
            first = np.ones(n, bool)
            first[1:] = ~same
            starts = np.flatnonzero(first)
            last_row = np.r_[starts[1:], n] - 1
            out = {}
            for f, (v, m) in cols.items():
                if m is None:
                    out[f] = (v[last_row], None)
                else:
                    cand = np.where(m, np.arange(n), -1)
                    pick = np.maximum.reduceat(cand, starts)
                    ok = pick >= 0
                    out[f] = (v[np.where(ok, pick, last_row)], None if ok.all() else ok)
            return sid[starts], ts[starts], out
    return sid, ts, cols


def memtable_rowsets(recent: RecentData, live_tables: Sequence, measurement: str, sids: np.ndarray,
                     ftypes: dict) -> dict:
    """Loop thread: the memtable rows of a few series of ``measurement`` (``{sid: (rowset, ...)}``,
    oldest first, the snapshot's memtable shape), sliced from the tables' sealed blocks
    (:meth:`rusts.memory.tables.Table.seal`): references to a few sorted pieces per series, no
    pass over the rows (``recent`` and ``ftypes`` are kept for the callers' signature)."""
    from rusts.memory.views import MemView

    parts = [p for t in live_tables if t.points for p in t.query_parts(measurement)]
    return MemView(parts, sids)
