"""What a query's snapshot holds of the memtable: read-only views over sealed blocks.

:class:`MemView` maps series id -> its :class:`SealedSlice` pieces (oldest first); the blocks and
the unsealed tails (:class:`UnsealedTail`) are captured, immutable, in the event loop, and which
series sit where is worked out on first use in whatever thread reads them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs
import numpy as np

from rusts.memory.sealed import Sealed, payload_of, seal_payload
from rusts.query.rowset import RowSet


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

    chunks: tuple  # of rusts.memory.tables.Chunk
    measurement: str | None = None

    def blocks(self, sids: np.ndarray) -> list[Sealed]:
        mine = [c for c in self.chunks
                if (self.measurement is None or self.measurement in c.frame.measurements)
                and np.isin(c.sids, sids).any()]
        if not mine:
            return []
        sealed = seal_payload(payload_of(mine))
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
