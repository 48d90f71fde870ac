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

Sealing drops the writes it sealed, so a table holds each row once: in a sealed block, or in a
write not sealed yet. A flush reads the same blocks (:meth:`Table.flush_parts`, captured in the
loop): :func:`rusts.memory.sealed.flush_payload` merges each measurement's blocks (in-order writes
merge without a sort) and :func:`rusts.memory.sealed.table_partitions` cuts them by partition,
with the unsealed writes sorted in; pure functions, so they run in a worker thread or another
process.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import attrs
import numpy as np

from rusts.memory.sealed import FlushParts, Sealed, array_nbytes, flush_payload, payload_of, seal_payload
from rusts.memory.views import MemView, UnsealedTail
from rusts.model import Column, Frame, SeriesRows, frames_of_series
from rusts.query.rowset import RowSet, merge


def _frame_nbytes(f: Frame) -> int:
    n = f.timestamps.nbytes + 64 * len(f.keys)
    for c in f.columns.values():
        n += array_nbytes(c.values)
        if c.mask is not None:
            n += c.mask.nbytes
    return n


class Chunk:
    """One write's rows in one table: a :class:`Frame` plus the id of each of its series."""

    __slots__ = ("frame", "sids", "seq", "nbytes")

    def __init__(self, frame: Frame, sids: np.ndarray, seq: int, nbytes: int = 0) -> None:
        self.frame = frame
        self.sids = sids
        self.seq = seq
        self.nbytes = nbytes  # estimated memory of the frame (Table.raw_bytes)

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
    """One memtable (active or frozen): its writes sealed into sorted blocks per measurement,
    then the writes not sealed yet (:attr:`chunks`, in arrival order). Sealing drops the
    writes it sealed: the blocks are the table's only copy of those rows (queries and the
    flush read them)."""

    id: int
    chunks: list[Chunk] = attrs.field(factory=list)  # the writes not sealed yet, oldest first
    points: int = 0
    raw_bytes: int = 0  # the unsealed writes' arrays (chunks)
    series_chunks: int = 0  # series x writes inserted (the flush's choice of a worker process)
    values: int = 0
    created: float = attrs.field(factory=time.monotonic)
    first_seq: int = 0
    last_seq: int = 0
    min_time: int = 2**63 - 1
    max_time: int = -(2**63)
    frozen: bool = False
    # the first _sealed_upto writes, as sealed blocks per measurement, oldest first (seal())
    _sealed: dict[str, list["Sealed"]] = attrs.field(factory=dict)
    _sealed_upto: int = 0  # writes sealed (and dropped from chunks) so far
    _keys: dict = attrs.field(factory=dict)  # series id -> series key of the sealed rows
    _sealed_points: int = 0
    _sealed_bytes: int = 0
    view_bytes: int = 0  # columnar views of this table built for queries (rusts.memory.recent)

    @property
    def bytes(self) -> int:
        """Memory the table holds: its unsealed writes, its sealed blocks (:meth:`seal`) and the
        columnar views queries built of it (:mod:`rusts.memory.recent`), which the memtable limits
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
            nb = _frame_nbytes(f)
            self.chunks.append(Chunk(f, sids[pos:pos + ns], seq, nb))
            pos += ns
            self.points += n
            self.series_chunks += ns
            self.raw_bytes += nb
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
        ``compute()`` is pure over immutable inputs (the unsealed writes and the current blocks),
        so it may run in a worker thread; :meth:`install_sealed` then publishes its result in the
        loop thread, unless the table was sealed meanwhile (by a query)."""
        new = tuple(self.chunks)
        if not new:
            return None
        base = {m: tuple(lst) for m, lst in self._sealed.items()}

        def compute() -> tuple[dict[str, list["Sealed"]], dict]:
            out = {m: list(lst) for m, lst in base.items()}
            payload = payload_of(new)
            for m, blk in seal_payload(payload).items():
                lst = out.setdefault(m, [])
                blk.count_bytes()
                lst.append(blk)
                while len(lst) >= 2 and len(lst[-2]) <= 2 * len(lst[-1]):
                    merged = lst[-2].merged_with(lst[-1])
                    merged.count_bytes()
                    lst[-2:] = [merged]
            return out, payload["keys"]

        return (self._sealed_upto, len(new), self.points), compute

    def install_sealed(self, token, result: tuple[dict[str, list["Sealed"]], dict]) -> bool:
        """Publish a :meth:`seal_job` result (loop thread) and drop the writes it sealed; False
        if it is stale (the table was sealed meanwhile)."""
        start, n, points = token
        if self._sealed_upto != start:
            return False
        sealed, keys = result
        self.raw_bytes -= sum(c.nbytes for c in self.chunks[:n])
        self.chunks = self.chunks[n:]  # a new list: snapshots holding the old tail keep it
        if self.frozen:  # a flush may be reading the keys in a worker thread: a new dict
            self._keys = {**self._keys, **keys}
        else:
            self._keys.update(keys)
        self._sealed, self._sealed_upto, self._sealed_points = sealed, start + n, points
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
        tail = self.chunks
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

    def sealed_blocks(self) -> list["Sealed"]:
        """Every sealed block (all measurements), as they stand (nothing sealed here)."""
        return [blk for lst in self._sealed.values() for blk in lst]

    def pieces_of(self, sids: np.ndarray, out: dict[int, list[RowSet]], measurement: str | None = None) -> None:
        """Append the row sets of each series of ``sids`` (uint64) to ``out[sid]``, oldest first:
        slices of the sealed blocks (of ``measurement`` only, when given), then the writes not
        sealed yet. A few unsealed writes are read as they are: sealing a big one here would hold
        the event loop (a 10 MiB write: 20 to 100 ms) while the memtable actor seals it in a
        worker thread anyway; many small ones are sealed first, so a query never merges more
        than :data:`DIRECT_TAIL_CHUNKS` extra pieces per series."""
        tail = self.chunks
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
        ids = [c.sids for c in self.chunks] + [blk.usid for lst in self._sealed.values() for blk in lst]
        if not ids:
            return np.zeros(0, dtype=np.uint64)
        return np.unique(np.concatenate(ids))

    # ------------------------------------------------------------------ flush
    def flush_parts(self) -> FlushParts:
        """Loop thread: what a flush writes, captured (immutable) for a worker thread or process:
        the sealed blocks, the unsealed writes and the series keys of the sealed rows."""
        return FlushParts({m: tuple(lst) for m, lst in self._sealed.items()}, tuple(self.chunks), self._keys)

    def flush_payload(self) -> dict:
        """The whole table as a flush payload (:func:`rusts.memory.sealed.flush_payload`)."""
        return flush_payload(self.flush_parts())


SEAL_ROWS = 32_768
"""A table seals its unsealed writes (:meth:`Table.seal`) once they hold this many rows: a few
milliseconds of numpy on the write path, amortized, instead of a first query paying for all."""
DIRECT_TAIL_CHUNKS = 8  # unsealed writes a query reads as they are (Table.pieces_of)

_WHOLE_TIME = 2**62  # a "partition" holding every timestamp of the year 2116 and before


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
