"""The in-memory write buffer: columnar chunks per series, rotated into immutable tables.

Owned by the memtable actor (:mod:`rusts.actors.memtable`). Inserting appends one chunk per series
per write (never one object per point). Chunks are immutable numpy arrays, so a query snapshot is a
tuple of references taken in the event loop and merged later in a worker thread.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import attrs
import numpy as np

from rusts.model import FieldType, SeriesRows
from rusts.rowset import RowSet, merge


def _nbytes(rows: SeriesRows) -> int:
    n = rows.timestamps.nbytes
    for c in rows.columns.values():
        if c.type == FieldType.STRING:
            n += 16 * len(c.values) + sum(len(s) for s in c.values[:64]) * max(1, len(c.values) // 64)
        else:
            n += c.values.nbytes
        if c.mask is not None:
            n += c.mask.nbytes
    return n + 64


@attrs.define(eq=False)
class Table:
    """One memtable (active or frozen): series id -> list of row chunks in arrival order."""

    id: int
    series: dict[int, list[RowSet]] = attrs.field(factory=dict)
    points: int = 0
    bytes: int = 0
    values: int = 0
    created: float = attrs.field(factory=time.monotonic)
    first_seq: int = 0
    last_seq: int = 0
    min_time: int = 2**63 - 1
    max_time: int = -(2**63)
    frozen: bool = False

    def insert(self, sids: Sequence[int], batch_series: Sequence[SeriesRows], seq: int) -> None:
        assert not self.frozen
        for sid, rows in zip(sids, batch_series):
            n = len(rows)
            if n == 0:
                continue
            ts = rows.timestamps
            chunk = RowSet(ts, dict(rows.columns), bool(n == 1))
            self.series.setdefault(int(sid), []).append(chunk)
            self.points += n
            self.bytes += _nbytes(rows)
            for c in rows.columns.values():
                self.values += n if c.mask is None else int(np.count_nonzero(c.mask))
            if n == 1:  # many-series writes: one row each, skip two numpy reductions
                lo = hi = int(ts[0])
            else:
                lo, hi = int(ts.min()), int(ts.max())
            if lo < self.min_time:
                self.min_time = lo
            if hi > self.max_time:
                self.max_time = hi
        if self.first_seq == 0:
            self.first_seq = seq
        self.last_seq = max(self.last_seq, seq)

    def chunks(self, sid: int) -> tuple[RowSet, ...]:
        return tuple(self.series.get(sid, ()))

    def merged(self, sid: int) -> RowSet:
        return merge(self.series.get(sid, ()))


@attrs.define(eq=False)
class MemtableState:
    """Active table plus the frozen tables waiting for (or in) a flush, oldest first."""

    active: Table = attrs.field(factory=lambda: Table(1))
    immutables: list[Table] = attrs.field(factory=list)
    next_id: int = 2
    rotations: int = 0

    def rotate(self) -> Table | None:
        """Freeze the active table (if it holds data) and start a new one."""
        if self.active.points == 0:
            return None
        t = self.active
        t.frozen = True
        self.immutables.append(t)
        self.active = Table(self.next_id)
        self.next_id += 1
        self.rotations += 1
        return t

    def drop(self, table_id: int) -> None:
        self.immutables = [t for t in self.immutables if t.id != table_id]

    def tables(self) -> list[Table]:
        """Oldest first: frozen tables, then the active one."""
        return [*self.immutables, self.active]

    def snapshot(self, sids: Sequence[int]) -> dict[int, tuple[RowSet, ...]]:
        """Chunk references per series (oldest first) across all tables; cheap, loop-thread only."""
        out: dict[int, tuple[RowSet, ...]] = {}
        tables = self.tables()
        for sid in sids:
            sid = int(sid)
            parts: list[RowSet] = []
            for t in tables:
                c = t.series.get(sid)
                if c:
                    parts.extend(c)
            if parts:
                out[sid] = tuple(parts)
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
            "active_series": len(self.active.series),
            "active_age_secs": round(time.monotonic() - self.active.created, 3),
            "immutable_count": len(self.immutables),
            "immutable_size": sum(t.bytes for t in self.immutables),
            "immutable_points": sum(t.points for t in self.immutables),
            "total_size": self.total_bytes,
            "rotations": self.rotations,
        }
