"""The in-memory write buffer: one columnar chunk per write, rotated into immutable tables.

Owned by the memtable actor (:mod:`rusts.actors.memtable`). Inserting a write appends ONE
:class:`Chunk` (the write's :class:`~rusts.model.Frame` arrays plus a series-id array), never an
object per series or per point: a write of a few hundred one-row series (a fleet's report) costs
the same handful of Python steps as a write of one series.

Reads keep the per-series shape the executor uses (:meth:`MemtableState.snapshot`: series id ->
row sets, oldest first). A table seals its chunks into per-series sorted, unique
:class:`~rusts.query.rowset.RowSet` pieces in one numpy pass per batch of writes (every
:data:`SEAL_ROWS` rows on the write path, and the tail when a query snapshots it), keeping
O(log rows) pieces per series, so a query after a load of many small writes merges a few pieces
per series, not one per write. Pieces are immutable, so a snapshot is a tuple of references taken
in the event loop and merged later in a worker thread.

Flushing does not go through the per-series views either: :func:`table_partitions` sorts all the
rows of a table by (series, time) with numpy, resolves duplicate timestamps (last write wins per
field) and cuts the result into per-partition :class:`~rusts.storage.segment.SeriesData`. It is a pure
function of :meth:`Table.flush_payload`, so it can run in a worker thread or another process.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import attrs
import numpy as np

from rusts.model import Column, FieldType, Frame, SeriesRows, frames_of_series
from rusts.query.rowset import RowSet, merge


def _frame_nbytes(f: Frame) -> int:
    n = f.timestamps.nbytes + 64 * len(f.keys)
    for c in f.columns.values():
        if c.type == FieldType.STRING:
            v = c.values
            n += 16 * len(v) + sum(len(s) for s in v[:64]) * max(1, len(v) // 64)
        else:
            n += c.values.nbytes
        if c.mask is not None:
            n += c.mask.nbytes
    return n


def _frame_arrays(f: Frame):
    yield f.timestamps
    for c in f.columns.values():
        yield c.values
        if c.mask is not None:
            yield c.mask


class Chunk:
    """One write's rows in one table: a :class:`Frame` plus the id of each of its series."""

    __slots__ = ("frame", "sids", "seq")

    def __init__(self, frame: Frame, sids: np.ndarray, seq: int) -> None:
        self.frame = frame
        self.sids = sids
        self.seq = seq

    def rowsets(self) -> list[tuple[int, RowSet]]:
        """(series id, row set) per series: the executor's per-series form of this chunk."""
        f = self.frame
        ts = f.timestamps
        n, ns = len(ts), len(f.keys)
        cols = list(f.columns.items())
        sids = self.sids.tolist()
        out = []
        if n == ns:  # one row per series: no sorting question, no masks to reduce
            for i, sid in enumerate(sids):
                sl = slice(i, i + 1)
                cd = {}
                for name, c in cols:
                    if c.mask is None:
                        cd[name] = Column(c.type, c.values[sl])
                    elif c.mask[i]:
                        cd[name] = Column(c.type, c.values[sl])
                out.append((sid, RowSet(ts[sl], cd, True)))
            return out
        st = f.starts.tolist()
        # strictly increasing timestamps within each series (the merge's fast path)
        inc = np.ones(max(n - 1, 0), dtype=bool) if n < 2 else ts[1:] > ts[:-1]
        bad = np.zeros(n, dtype=np.int64)
        bad[1:] = ~inc
        badc = np.concatenate(([0], np.cumsum(bad)))
        for i, sid in enumerate(sids):
            a, b = st[i], st[i + 1]
            sl = slice(a, b)
            cd = {}
            for name, c in cols:
                if c.mask is None:
                    cd[name] = Column(c.type, c.values[sl])
                else:
                    mk = c.mask[sl]
                    if mk.all():
                        cd[name] = Column(c.type, c.values[sl])
                    elif mk.any():
                        cd[name] = Column(c.type, c.values[sl], mk)
            sorted_unique = bool(badc[b] - badc[a + 1] == 0)
            out.append((sid, RowSet(ts[sl], cd, sorted_unique)))
        return out


@attrs.define(eq=False)
class Table:
    """One memtable (active or frozen): the chunks of its writes, in arrival order."""

    id: int
    chunks: list[Chunk] = attrs.field(factory=list)
    points: int = 0
    raw_bytes: int = 0  # the writes' arrays (chunks)
    values: int = 0
    created: float = attrs.field(factory=time.monotonic)
    first_seq: int = 0
    last_seq: int = 0
    min_time: int = 2**63 - 1
    max_time: int = -(2**63)
    frozen: bool = False
    # chunks[:_sealed_upto] as sealed blocks per measurement, oldest first (seal())
    _sealed: dict[str, list["Sealed"]] = attrs.field(factory=dict)
    _sealed_upto: int = 0
    _sealed_points: int = 0
    _sealed_bytes: int = 0
    view_bytes: int = 0  # columnar views of this table built for queries (rusts.memory.recent)

    @property
    def bytes(self) -> int:
        """Memory the table holds: its writes, their sealed copy (:meth:`seal`) and the columnar
        views queries built of it (:mod:`rusts.memory.recent`), which the memtable limits
        (``storage.memtable.max_size_mb``, ``hard_limit_mb``) bound."""
        return self.raw_bytes + self._sealed_bytes + self.view_bytes

    # rows between seals on the write path (None: SEAL_ROWS); a bulk load that nothing queries
    # (rusts-import --direct) turns it off: sealing is then done by queries only, if any come
    seal_rows: int | None = None
    # called (loop thread) when a query is handed unsealed writes: the memtable actor then seals
    # them off the loop, so the next queries read sorted blocks instead of sorting them again
    on_tail_read: object = attrs.field(default=None, repr=False)

    def insert_frames(self, frames: Sequence[Frame], sids: np.ndarray, seq: int, *, seal: bool = True) -> None:
        """Append a write: ``sids`` has one id per series of ``frames``, in frame order. With
        ``seal`` (the default), enough new rows are sealed at once; the memtable actor passes
        False and seals off the event loop (:meth:`seal_job`)."""
        assert not self.frozen
        pos = 0
        sids = np.asarray(sids, dtype=np.uint64)
        for f in frames:
            ns = len(f.keys)
            n = len(f.timestamps)
            if n == 0:
                pos += ns
                continue
            self.chunks.append(Chunk(f, sids[pos:pos + ns], seq))
            pos += ns
            self.points += n
            self.raw_bytes += _frame_nbytes(f)
            for c in f.columns.values():
                self.values += n if c.mask is None else int(np.count_nonzero(c.mask))
            ts = f.timestamps
            lo, hi = (int(ts[0]), int(ts[0])) if n == 1 else (int(ts.min()), int(ts.max()))
            if lo < self.min_time:
                self.min_time = lo
            if hi > self.max_time:
                self.max_time = hi
        if self.first_seq == 0:
            self.first_seq = seq
        self.last_seq = max(self.last_seq, seq)
        if seal and self.needs_seal():
            self.seal()  # seal as data arrives: the first query after a load pays only the tail

    def needs_seal(self) -> bool:
        """Whether enough rows arrived since the last seal to seal them now."""
        return self.points - self._sealed_points >= (SEAL_ROWS if self.seal_rows is None else self.seal_rows)

    def insert(self, sids: Sequence[int], batch_series: Sequence[SeriesRows], seq: int) -> None:
        """Per-series form of :meth:`insert_frames` (``sids`` aligned with ``batch_series``)."""
        sid_of = {}
        for sid, s in zip(sids, batch_series):
            sid_of[(s.measurement, s.tags)] = int(sid)
        frames = frames_of_series(batch_series)
        ids = [sid_of[(m, t)] for f in frames for m, t in zip(f.measurements, f.tags)]
        self.insert_frames(frames, np.array(ids, dtype=np.uint64), seq)

    # ------------------------------------------------------------------ reads (loop thread)
    def seal(self) -> dict[str, list["Sealed"]]:
        """Seal the chunks written since the last call; measurement -> sealed blocks, oldest first.

        Loop thread (the memtable is mutated there). The new chunks become one :class:`Sealed`
        block per measurement in one numpy pass (sorted by series and time, duplicates resolved:
        last write wins per field, as a flush does), whatever the number of writes: a load of many
        small writes used to give one object per write and series, and a first query that built
        and merged a million of them. A measurement's blocks are kept few by merging the newest
        two while the older is at most twice the newer (sizes halve along the list: O(log rows)
        blocks, each row merged O(log rows) times)."""
        job = self.seal_job()
        if job is not None:
            token, compute = job
            self.install_sealed(token, compute())
        return self._sealed

    def seal_job(self):
        """The next :meth:`seal` split in two: ``(token, compute)``, or None when all is sealed.
        ``compute()`` is pure over immutable inputs (the new chunks and the current blocks), so
        it may run in a worker thread; :meth:`install_sealed` then publishes its result in the
        loop thread, unless the table was sealed meanwhile (by a query)."""
        start, upto = self._sealed_upto, len(self.chunks)
        if start >= upto:
            return None
        new = self.chunks[start:upto]
        base = {m: tuple(lst) for m, lst in self._sealed.items()}
        flush_payload = self.flush_payload

        def compute() -> dict[str, list["Sealed"]]:
            out = {m: list(lst) for m, lst in base.items()}
            # arrays a block shares with the writes (one sorted write) are not a second copy
            shared = {id(a) for ch in new for a in _frame_arrays(ch.frame)}
            for m, blk in seal_payload(flush_payload(new)).items():
                lst = out.setdefault(m, [])
                blk.count_bytes(shared)
                lst.append(blk)
                while len(lst) >= 2 and len(lst[-2]) <= 2 * len(lst[-1]):
                    merged = lst[-2].merged_with(lst[-1])
                    merged.count_bytes(())
                    lst[-2:] = [merged]
            return out

        return (start, upto, self.points), compute

    def install_sealed(self, token, sealed: dict[str, list["Sealed"]]) -> bool:
        """Publish a :meth:`seal_job` result (loop thread); False if it is stale."""
        start, upto, points = token
        if self._sealed_upto != start:
            return False
        self._sealed, self._sealed_upto, self._sealed_points = sealed, upto, points
        self._sealed_bytes = sum(blk.own_bytes for lst in sealed.values() for blk in lst)
        return True

    def query_parts(self, measurement: str | None = None) -> list:
        """Loop thread: what a query's :class:`MemView` reads of this table, oldest first: the
        sealed blocks (of ``measurement``, or all), then the writes not sealed yet as an
        :class:`UnsealedTail`. A few unsealed writes are handed over as they are and sorted by
        the reader, for the series it reads only: sealing a big write here held the event loop
        (a 10 MiB write: 20 to 130 ms) while the memtable actor seals it in a worker thread
        anyway. Many small ones are sealed first (a query never sorts more than
        :data:`DIRECT_TAIL_CHUNKS` writes)."""
        tail = self.chunks[self._sealed_upto:]
        if len(tail) > DIRECT_TAIL_CHUNKS:
            self.seal()
            tail = ()
        elif tail and self.on_tail_read is not None:
            self.on_tail_read(self)
        if measurement is None:
            parts: list = [blk for blocks in self._sealed.values() for blk in blocks]
        else:
            parts = list(self._sealed.get(measurement, ()))
        if tail:
            parts.append(UnsealedTail(tuple(tail), measurement))
        return parts

    def pieces_of(self, sids: np.ndarray, out: dict[int, list[RowSet]], measurement: str | None = None) -> None:
        """Append the row sets of each series of ``sids`` (uint64) to ``out[sid]``, oldest first:
        slices of the sealed blocks (of ``measurement`` only, when given), then the writes not
        sealed yet. A few unsealed writes are read as they are: sealing a big one here would hold
        the event loop (a 10 MiB write: 20 to 100 ms) while the memtable actor seals it in a
        worker thread anyway; many small ones are sealed first, so a query never merges more
        than :data:`DIRECT_TAIL_CHUNKS` extra pieces per series."""
        tail = self.chunks[self._sealed_upto:]
        if len(tail) > DIRECT_TAIL_CHUNKS:
            self.seal()
            tail = ()
        elif tail and self.on_tail_read is not None:
            self.on_tail_read(self)
        groups = self._sealed.values() if measurement is None else (self._sealed.get(measurement, ()),)
        for blocks in groups:
            for blk in blocks:
                blk.rowsets_of(sids, out)
        for ch in tail:
            if measurement is not None and measurement not in ch.frame.measurements:
                continue
            if not np.isin(ch.sids, sids).any():
                continue
            wanted = set(sids.tolist())
            for sid, rs in ch.rowsets():
                if sid in wanted:
                    out.setdefault(sid, []).append(rs)

    def chunks_of(self, sid: int) -> tuple[RowSet, ...]:
        out: dict[int, list[RowSet]] = {}
        self.pieces_of(np.array([sid], np.uint64), out)
        return tuple(out.get(sid, ()))

    def merged(self, sid: int) -> RowSet:
        return merge(self.chunks_of(sid))

    def series_ids(self) -> np.ndarray:
        """The distinct series ids in this table (sorted)."""
        if not self.chunks:
            return np.zeros(0, dtype=np.uint64)
        return np.unique(np.concatenate([c.sids for c in self.chunks]))

    # ------------------------------------------------------------------ flush
    def flush_payload(self, chunks: Sequence[Chunk] | None = None) -> dict:
        """The table as a few big arrays (cheap to pickle) for :func:`table_partitions`.

        ``{"groups": [(measurement names, row measurement codes or None, row series ids,
        timestamps, {field: (type, values, mask)}, row chunk numbers)], "keys": {sid: series
        key}}``: the chunks of one field layout are concatenated into one group, in arrival
        order; the chunk number of each row orders rows of different groups.
        """
        by_sig: dict[tuple, list[Chunk]] = {}
        chunk_no: dict[int, int] = {}
        for i, ch in enumerate(self.chunks if chunks is None else chunks):
            chunk_no[id(ch)] = i
            by_sig.setdefault(ch.frame.layout(), []).append(ch)
        groups = []
        all_sids, all_keys = [], []
        for (m0, sig), chunks in by_sig.items():
            frames = [c.frame for c in chunks]
            counts = _counts([f.starts for f in frames])
            sids = np.concatenate([c.sids for c in chunks])
            all_sids.append(sids)
            for f in frames:
                all_keys.extend(f.keys)
            row_sid = np.repeat(sids, counts)
            row_chunk = np.repeat(np.array([chunk_no[id(c)] for c in chunks], dtype=np.int64),
                                  [len(f.timestamps) for f in frames])
            ts = _cat([f.timestamps for f in frames])
            cols = {}
            for name, t, has_mask in sig:
                vals = _cat([f.columns[name].values for f in frames])
                mask = _cat([f.columns[name].mask for f in frames]) if has_mask else None
                cols[name] = (t, vals, mask)
            if m0 is not None:
                names, row_meas = [m0], None
            else:
                meas = [m for f in frames for m in f.measurements]
                names = list(dict.fromkeys(meas))
                code = {m: i for i, m in enumerate(names)}
                row_meas = np.repeat(np.fromiter(map(code.__getitem__, meas), np.int32, len(meas)),
                                     counts)
            groups.append((names, row_meas, row_sid, ts, cols, row_chunk))
        keys: dict[int, str] = {}
        if all_sids:
            _, first = np.unique(np.concatenate(all_sids), return_index=True)
            flat = np.concatenate(all_sids)
            keys = {int(flat[i]): all_keys[i] for i in first.tolist()}
        return {"groups": groups, "keys": keys}


SEAL_ROWS = 32_768
DIRECT_TAIL_CHUNKS = 8  # unsealed writes a query reads as they are (Table.pieces_of)
"""A table seals its unsealed writes (:meth:`Table._view`) once they hold this many rows: a few
milliseconds of numpy on the write path, amortized, instead of a first query paying for all."""

_WHOLE_TIME = 2**62  # a "partition" holding every timestamp of the year 2116 and before


def _counts(starts: list) -> np.ndarray:
    """Rows per series of many frames (each ``starts`` is ``[0, ..., rows]``) in one pass."""
    if len(starts) == 1:
        return np.diff(starts[0])
    allst = np.concatenate(starts)
    d = np.diff(allst)
    ends = np.cumsum([len(x) for x in starts]) - 1  # the last entry of each frame's starts
    return np.delete(d, ends[:-1])  # drop the jumps from one frame's end to the next's 0


def _cat(arrays: list) -> np.ndarray:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def partitions_of(payload: dict, partition_ns: int) -> list[int]:
    """The time partitions the rows of a flush payload fall in (sorted)."""
    parts: set[int] = set()
    for _, _, _, ts, _, _ in payload["groups"]:
        if len(ts):
            lo, hi = int(ts.min()) // partition_ns, int(ts.max()) // partition_ns
            if lo == hi:
                parts.add(lo)
            else:
                parts.update(np.unique(ts // partition_ns).tolist())
    return sorted(parts)


def _dedup_last(sid: np.ndarray, ts: np.ndarray, cols: dict) -> tuple:
    """Rows sorted by (sid, ts), arrival order kept within ties: keep one row per (sid, ts) with
    each field's last present value."""
    n = len(ts)
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.logical_or(sid[1:] != sid[:-1], ts[1:] != ts[:-1], out=new[1:])
    if new.all():
        return sid, ts, cols
    starts = np.flatnonzero(new)
    ng = len(starts)
    gid = np.cumsum(new) - 1
    ends = np.append(starts[1:], n) - 1
    pos = np.arange(n)
    out = {}
    for name, (ft, values, mask) in cols.items():
        if mask is None:
            out[name] = (ft, values[ends], None)
            continue
        cand = np.where(mask, pos, -1)
        last = np.full(ng, -1, dtype=np.int64)
        np.maximum.at(last, gid, cand)
        present = last >= 0
        out[name] = (ft, values[np.where(present, last, 0)], None if present.all() else present)
    return sid[starts], ts[starts], out


@attrs.frozen(eq=False)
class Sealed:
    """Rows of one measurement from a run of writes, sorted by (series, time), one row per
    (series, time) with each field's last written value: an in-memory block. Immutable.

    ``usid`` are the distinct series (sorted), series ``usid[k]`` owns rows
    ``starts[k]:starts[k + 1]``; ``present[field]`` counts its values per series (None: every row).
    """

    usid: np.ndarray
    starts: np.ndarray
    ts: np.ndarray
    cols: dict  # field -> (FieldType, values, mask or None)
    present: dict
    own_bytes: int = attrs.field(default=0, eq=False)  # memory it adds to its writes' (count_bytes)

    def count_bytes(self, shared) -> None:
        """Record :meth:`own_nbytes` (once, when the block is made: before anyone reads it)."""
        object.__setattr__(self, "own_bytes", self.own_nbytes(shared))

    @classmethod
    def of_rows(cls, sid: np.ndarray, ts: np.ndarray, cols: dict) -> "Sealed":
        """From rows sorted by (series, time) with unique (series, time) pairs."""
        n = len(ts)
        first = np.empty(n, dtype=bool)
        first[:1] = True
        np.not_equal(sid[1:], sid[:-1], out=first[1:])
        starts = np.flatnonzero(first)
        present = {name: None if m is None else np.add.reduceat(m.astype(np.int64), starts)
                   for name, (_, _, m) in cols.items()}
        return cls(sid[starts], np.append(starts, n), ts, cols, present)

    def __len__(self) -> int:
        return len(self.ts)

    def rowset(self, k: int, fields=None, lo: int = 0, hi: int | None = None) -> RowSet:
        """Rows ``lo:hi`` of series ``usid[k]`` (views), the ``fields`` asked (None: all);
        fields without a value there are left out."""
        a, b = int(self.starts[k]), int(self.starts[k + 1])
        n = b - a
        hi = n if hi is None else hi
        whole = lo == 0 and hi == n
        a, b = a + lo, a + hi
        cd = {}
        cols = self.cols
        for name in (cols if fields is None else fields):
            col = cols.get(name)
            if col is None:
                continue
            ft, v, m = col
            pc = self.present[name]
            if pc is None:
                cd[name] = Column(ft, v[a:b])
                continue
            c = int(pc[k])
            if not c:
                continue
            if whole:
                cd[name] = Column(ft, v[a:b], None if c == n else m[a:b])
                continue
            mk = m[a:b]
            if mk.all():
                cd[name] = Column(ft, v[a:b])
            elif mk.any():
                cd[name] = Column(ft, v[a:b], mk)
        return RowSet(self.ts[a:b], cd, True)

    def hits(self, sids: np.ndarray) -> np.ndarray:
        """Positions in :attr:`usid` of those of ``sids`` (uint64) held here."""
        usid = self.usid
        if not len(usid) or not len(sids):
            return np.zeros(0, np.int64)
        if len(sids) <= 64:
            pos = np.searchsorted(usid, sids)
            pos[pos >= len(usid)] = 0
            return np.unique(pos[usid[pos] == sids])
        return np.flatnonzero(np.isin(usid, sids))

    def rowsets_of(self, sids: np.ndarray, out: dict) -> None:
        """Append the row set of each of ``sids`` held here to ``out[sid]``."""
        usid = self.usid
        for k in self.hits(sids).tolist():
            out.setdefault(int(usid[k]), []).append(self.rowset(k))

    def own_nbytes(self, shared) -> int:
        """Memory held by this block's arrays but those whose id is in ``shared`` (strings
        counted as references: the string objects are the writes')."""
        n = 0
        for a in (self.usid, self.starts, self.ts, *(x for _, v, m in self.cols.values() for x in (v, m))):
            if a is not None and id(a) not in shared and id(a.base) not in shared:
                n += a.nbytes
        return n

    def merged_with(self, newer: "Sealed") -> "Sealed":
        """One block of this block's rows and ``newer``'s (whose values win on equal times)."""
        n1, n2 = len(self.ts), len(newer.ts)
        sid = np.concatenate([np.repeat(self.usid, np.diff(self.starts)), np.repeat(newer.usid, np.diff(newer.starts))])
        ts = np.concatenate([self.ts, newer.ts])
        cols = {}
        for name in dict.fromkeys([*self.cols, *newer.cols]):
            ft = (self.cols.get(name) or newer.cols[name])[0]
            vals, masks = [], []
            for blk, n in ((self, n1), (newer, n2)):
                c = blk.cols.get(name)
                if c is None:
                    vals.append(ft.zeros(n))
                    masks.append(np.zeros(n, bool))
                else:
                    vals.append(c[1])
                    masks.append(c[2])
            mask = None if all(m is None for m in masks) else np.concatenate(
                [np.ones(len(v), bool) if m is None else m for v, m in zip(vals, masks)])
            cols[name] = (ft, np.concatenate(vals), mask)
        order = np.lexsort((ts, sid))  # stable: this block's rows before newer's on ties
        if not np.all(order[1:] > order[:-1]):
            sid, ts = sid[order], ts[order]
            cols = {k: (t, v[order], None if m is None else m[order]) for k, (t, v, m) in cols.items()}
        sid, ts, cols = _dedup_last(sid, ts, cols)
        return Sealed.of_rows(sid, ts, cols)


class SealedSlice:
    """The rows of one series in one sealed block, as a snapshot hands them out: a
    :class:`~rusts.query.rowset.RowSet` whose columns are made when read (:meth:`select`), so a
    snapshot costs no Python work per field (a query reads a few fields of many)."""

    __slots__ = ("blk", "k", "timestamps")
    sorted_unique = True

    def __init__(self, blk: Sealed, k: int) -> None:
        self.blk = blk
        self.k = k
        self.timestamps = blk.ts[int(blk.starts[k]):int(blk.starts[k + 1])]

    def __len__(self) -> int:
        return len(self.timestamps)

    @property
    def columns(self) -> dict:
        return self.blk.rowset(self.k).columns

    def select(self, fields) -> RowSet:
        return self.blk.rowset(self.k, fields)

    def rows(self, fields, start: int, end: int) -> RowSet | None:
        """The rows in [start, end) with ``fields`` (None: all); None when there are none."""
        ts = self.timestamps
        n = len(ts)
        if not n or ts[0] >= end or ts[-1] < start:
            return None
        lo = int(ts.searchsorted(start)) if ts[0] < start else 0
        hi = int(ts.searchsorted(end)) if ts[-1] >= end else n
        return self.blk.rowset(self.k, fields, lo, hi) if lo < hi else None

    def slice_time(self, start: int, end: int) -> RowSet:
        return self.rows(None, start, end) or RowSet(self.timestamps[:0], {}, True)


@attrs.frozen(eq=False)
class UnsealedTail:
    """Writes a table has not sealed yet (immutable chunks), as a query's snapshot captures them;
    sealed by the reader (:meth:`blocks`) for the series it reads only."""

    chunks: tuple[Chunk, ...]
    measurement: str | None = None

    def blocks(self, sids: np.ndarray) -> list[Sealed]:
        mine = [c for c in self.chunks
                if (self.measurement is None or self.measurement in c.frame.measurements)
                and np.isin(c.sids, sids).any()]
        if not mine:
            return []
        sealed = seal_payload(Table.flush_payload(None, mine))
        if self.measurement is not None:
            return [sealed[self.measurement]] if self.measurement in sealed else []
        return list(sealed.values())


class MemView(Mapping):
    """Series id -> its :class:`SealedSlice` pieces (oldest first): the memtable part of a query's
    snapshot. The sealed blocks (and unsealed tails, :class:`UnsealedTail`) are captured
    (immutable) in the loop; which series sit where is worked out on first use, in whatever
    thread reads it, one vectorised lookup per block."""

    def __init__(self, parts: Sequence, sids: np.ndarray) -> None:
        self.sids = np.asarray(sids, dtype=np.uint64)
        self.parts = tuple(parts)
        self._map: dict | None = None

    @property
    def blocks(self) -> tuple[Sealed, ...]:
        """The sealed blocks to read, the tails sealed (for this view's series) on first use."""
        out: list[Sealed] = []
        for p in self.parts:
            if isinstance(p, UnsealedTail):
                out.extend(p.blocks(self.sids))
            else:
                out.append(p)
        self.parts = tuple(out)  # sealed once per view
        return self.parts

    def _index(self) -> dict:
        m = self._map
        if m is None:
            got: dict[int, list] = {}
            for blk in self.blocks:
                usid = blk.usid
                for k in blk.hits(self.sids).tolist():
                    got.setdefault(int(usid[k]), []).append(SealedSlice(blk, k))
            m = self._map = {sid: tuple(v) for sid, v in got.items()}
        return m

    def __getitem__(self, sid: int):
        return self._index()[sid]

    def __iter__(self):
        return iter(self._index())

    def __len__(self) -> int:
        return len(self._index())

    def rows(self) -> int:
        """Rows of the snapshot's series held here."""
        return sum(len(p) for parts in self._index().values() for p in parts)


def seal_payload(payload: dict) -> dict[str, Sealed]:
    """Measurement -> :class:`Sealed` block of the rows of a flush payload."""
    return {m: Sealed.of_rows(sid, ts, cols) for m, sid, ts, cols in _sorted_rows(payload)}


def table_partitions(payload: dict, partition_ns: int) -> dict[int, list]:
    """Partition -> :class:`~rusts.storage.segment.SeriesData` sorted by series id, from a flush payload.

    Per measurement: the rows of every group are concatenated (fields a group lacks are masked),
    sorted by (series, time) with a stable lexsort so later writes follow earlier ones, reduced
    to one row per timestamp (last present value per field), and cut by partition and series.
    """
    from rusts.storage.segment import SeriesData

    keys = payload["keys"]
    parts: dict[int, list] = {}
    for m, sid, ts, cols in _sorted_rows(payload):
        p = ts // partition_ns
        if p[0] != p[-1] or not np.all(p == p[0]):
            po = np.argsort(p, kind="stable")  # (partition, series, time)
            sid, ts, p = sid[po], ts[po], p[po]
            cols = {n: (t, v[po], None if k is None else k[po]) for n, (t, v, k) in cols.items()}
        n = len(ts)
        brk = np.empty(n, dtype=bool)
        brk[0] = True
        np.logical_or(sid[1:] != sid[:-1], p[1:] != p[:-1], out=brk[1:])
        gs = np.flatnonzero(brk)
        ge = np.append(gs[1:], n)
        # per (group, field): how many rows have a value (0: leave the column out of the series)
        present = {}
        for name, (ft, v, k) in cols.items():
            present[name] = None if k is None else np.add.reduceat(k.astype(np.int64), gs)
        gl, el = gs.tolist(), ge.tolist()
        sl_ = sid[gs].tolist()
        pl = p[gs].tolist()
        items = list(cols.items())
        for g, (a, b) in enumerate(zip(gl, el)):
            cd = {}
            for name, (ft, v, k) in items:
                pc = present[name]
                if pc is None:
                    cd[name] = Column(ft, v[a:b])
                else:
                    c = int(pc[g])
                    if c == 0:
                        continue
                    cd[name] = Column(ft, v[a:b], None if c == b - a else k[a:b])
            s = sl_[g]
            parts.setdefault(pl[g], []).append(SeriesData(s, keys[s], ts[a:b], cd))
    for lst in parts.values():
        lst.sort(key=lambda d: d.series_id)
    return parts


def _sorted_rows(payload: dict):
    """Per measurement of a flush payload: ``(measurement, sid, ts, cols)`` sorted by (series,
    time), one row per (series, time), each field's last present value (later writes win)."""
    by_meas: dict[str, list] = {}
    for names, row_meas, row_sid, ts, cols, row_chunk in payload["groups"]:
        if not len(ts):
            continue
        if row_meas is None:
            by_meas.setdefault(names[0], []).append((row_sid, ts, cols, row_chunk))
            continue
        for code, m in enumerate(names):
            sel = np.flatnonzero(row_meas == code)
            if len(sel):
                sub = {n: (t, v[sel], None if k is None else k[sel]) for n, (t, v, k) in cols.items()}
                by_meas.setdefault(m, []).append((row_sid[sel], ts[sel], sub, row_chunk[sel]))

    for m, pieces in by_meas.items():
        ftypes: dict[str, int] = {}
        for _, _, cols, _ in pieces:
            for n, (t, _, _) in cols.items():
                ftypes.setdefault(n, t)
        sid = np.concatenate([p[0] for p in pieces]) if len(pieces) > 1 else pieces[0][0]
        ts = np.concatenate([p[1] for p in pieces]) if len(pieces) > 1 else pieces[0][1]
        cols = {}
        for name, t in ftypes.items():
            ft = FieldType(t)
            vals, masks, need = [], [], False
            for psid, pts, pcols, _ in pieces:
                c = pcols.get(name)
                if c is None:
                    vals.append(np.zeros(len(pts), dtype=ft.dtype) if ft != FieldType.STRING
                                else np.full(len(pts), "", dtype=object))
                    masks.append(np.zeros(len(pts), dtype=bool))
                    need = True
                else:
                    v = c[1] if c[1].dtype == ft.dtype else c[1].astype(ft.dtype)
                    vals.append(v)
                    masks.append(c[2])
                    need = need or c[2] is not None
            values = np.concatenate(vals) if len(vals) > 1 else vals[0]
            mask = None
            if need:
                mask = np.concatenate([np.ones(len(v), dtype=bool) if k is None else k
                                       for v, k in zip(vals, masks)])
            cols[name] = (ft, values, mask)
        if len(pieces) > 1:  # arrival order across groups: by chunk number (stable within one)
            order = np.lexsort((np.concatenate([p[3] for p in pieces]), ts, sid))
        else:
            order = np.lexsort((ts, sid))
        if not (len(order) < 2 or np.all(order[1:] > order[:-1])):
            sid, ts = sid[order], ts[order]
            cols = {n: (t, v[order], None if k is None else k[order]) for n, (t, v, k) in cols.items()}
        sid, ts, cols = _dedup_last(sid, ts, cols)
        yield m, sid, ts, cols


@attrs.define(eq=False)
class MemtableState:
    """Active table plus the frozen tables waiting for (or in) a flush, oldest first."""

    active: Table = attrs.field(factory=lambda: Table(1))
    immutables: list[Table] = attrs.field(factory=list)
    next_id: int = 2
    rotations: int = 0
    seal_rows: int | None = None  # given to each new table (Table.seal_rows)
    on_tail_read: object = None  # given to each new table (Table.on_tail_read)

    def set_seal_rows(self, rows: int | None) -> None:
        """Rows between seals on the write path for the active table and the next ones."""
        self.seal_rows = rows
        self.active.seal_rows = rows

    def set_tail_hook(self, hook) -> None:
        """``hook(table)`` when a query reads a table's unsealed writes, for the active table and
        the next ones (the memtable actor seals them off the loop)."""
        self.on_tail_read = hook
        self.active.on_tail_read = hook

    def rotate(self) -> Table | None:
        """Freeze the active table (if it holds data) and start a new one."""
        if self.active.points == 0:
            return None
        t = self.active
        t.frozen = True
        self.immutables.append(t)
        self.active = Table(self.next_id, seal_rows=self.seal_rows)
        self.active.on_tail_read = self.on_tail_read
        self.next_id += 1
        self.rotations += 1
        return t

    def drop(self, table_id: int) -> None:
        self.immutables = [t for t in self.immutables if t.id != table_id]

    def tables(self) -> list[Table]:
        """Oldest first: frozen tables, then the active one."""
        return [*self.immutables, self.active]

    def snapshot(self, sids: Sequence[int]) -> dict[int, tuple[RowSet, ...]]:
        """Row sets per series (oldest first) across all tables; loop-thread only.

        Seals the writes since the last snapshot (:meth:`Table.seal`) and captures the sealed
        blocks (:class:`MemView`): which rows belong to which series is found when the query
        reads them, in its worker thread, and only the fields it reads are sliced.
        """
        return MemView([p for t in self.tables() if t.points for p in t.query_parts()], sids)

    def sealed_blocks(self, measurement: str | None = None) -> list[Sealed]:
        """Loop thread: every sealed block (of ``measurement``, or all), oldest table first,
        after sealing the writes since the last call."""
        out: list[Sealed] = []
        for t in self.tables():
            if t.points:
                sealed = t.seal()
                if measurement is None:
                    for blocks in sealed.values():
                        out.extend(blocks)
                else:
                    out.extend(sealed.get(measurement, ()))
        return out

    def time_bounds(self) -> tuple[int, int]:
        lo, hi = 2**63 - 1, -(2**63)
        for t in self.tables():
            if t.points:
                lo, hi = min(lo, t.min_time), max(hi, t.max_time)
        return lo, hi

    @property
    def total_bytes(self) -> int:
        return sum(t.bytes for t in self.tables())

    @property
    def total_points(self) -> int:
        return sum(t.points for t in self.tables())

    def statistics(self) -> dict:
        return {
            "active_size": self.active.bytes,
            "active_points": self.active.points,
            "active_series": len(self.active.series_ids()),
            "active_age_secs": round(time.monotonic() - self.active.created, 3),
            "immutable_count": len(self.immutables),
            "immutable_size": sum(t.bytes for t in self.immutables),
            "immutable_points": sum(t.points for t in self.immutables),
            "total_size": self.total_bytes,
            "rotations": self.rotations,
        }
