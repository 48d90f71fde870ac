"""Columnar row sets of one series and the merge that resolves overwrites.

A :class:`RowSet` is what every source (memtable chunk, segment block range) yields for one series:
timestamps plus aligned :class:`~rusts.model.Column` objects. :func:`merge` combines row sets from
oldest to newest into one sorted set with unique timestamps; for a timestamp written more than once,
each field keeps its newest present value (last write wins per series + timestamp + field).
All of it is vectorised: the cost is a sort per series, never a Python step per row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs
import numpy as np

from rusts.model import Column, FieldType

EMPTY_TS = np.empty(0, dtype=np.int64)


@attrs.frozen(eq=False)
class RowSet:
    """Rows of one series: ``timestamps`` (int64) and columns aligned with them."""

    timestamps: np.ndarray
    columns: Mapping[str, Column]
    sorted_unique: bool = False

    def __len__(self) -> int:
        return len(self.timestamps)

    def slice_time(self, start: int, end: int) -> "RowSet":
        """Rows with start <= t < end. Requires ``sorted_unique``."""
        ts = self.timestamps
        lo = int(np.searchsorted(ts, start, "left"))
        hi = int(np.searchsorted(ts, end, "left"))
        if lo == 0 and hi == len(ts):
            return self
        r = self.slice_rows(lo, hi)
        return r if r.sorted_unique else RowSet(r.timestamps, r.columns, True)

    def slice_rows(self, lo: int, hi: int) -> "RowSet":
        """Rows ``lo:hi`` (views); columns with no value left in them are dropped."""
        sl = slice(lo, hi)
        cols = {}
        for name, c in self.columns.items():
            m = None if c.mask is None else c.mask[sl]
            if m is not None:
                if not m.any():
                    continue
                if m.all():
                    m = None
            cols[name] = Column(c.type, c.values[sl], m)
        return RowSet(self.timestamps[sl], cols, self.sorted_unique)

    def select(self, fields: Sequence[str] | None) -> "RowSet":
        if fields is None:
            return self
        return RowSet(self.timestamps, {f: self.columns[f] for f in fields if f in self.columns},
                      self.sorted_unique)


def concat_column(cols: Sequence, lengths: Sequence[int], ftype: FieldType) -> Column:
    """Columns of consecutive row ranges (``lengths`` rows each; None: no value there) as one
    column of type ``ftype``."""
    if len(cols) == 1 and cols[0] is not None and cols[0].values.dtype == ftype.dtype:
        c = cols[0]
        return c if isinstance(c, Column) else Column(ftype, c.values, c.mask)
    vals = []
    need_mask = False
    for c, n in zip(cols, lengths):
        if c is None:
            vals.append(ftype.zeros(n))
            need_mask = True
        else:
            v = c.values
            vals.append(v if v.dtype == ftype.dtype else v.astype(ftype.dtype))
            need_mask = need_mask or c.mask is not None
    values = np.concatenate(vals) if vals else ftype.zeros(0)
    mask = None
    if need_mask:
        mask = np.concatenate([np.zeros(n, bool) if c is None else np.ones(n, bool) if c.mask is None
                               else c.mask for c, n in zip(cols, lengths)])
    return Column(ftype, values, mask)


def _concat_columns(parts: Sequence[RowSet], total: int) -> dict[str, Column]:
    names: dict[str, FieldType] = {}
    for p in parts:
        for n, c in p.columns.items():
            names.setdefault(n, c.type)
    lengths = [len(p.timestamps) for p in parts]
    return {name: concat_column([p.columns.get(name) for p in parts], lengths, ftype)
            for name, ftype in names.items()}


def concat(parts: Sequence[RowSet]) -> RowSet:
    """Plain concatenation (no sorting, no dedup)."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return RowSet(EMPTY_TS, {}, True)
    if len(parts) == 1:
        return parts[0]
    ts = np.concatenate([p.timestamps for p in parts])
    return RowSet(ts, _concat_columns(parts, len(ts)), False)


def merge(parts: Sequence[RowSet]) -> RowSet:
    """Merge row sets given oldest first into one sorted set with unique timestamps.

    Fast path: when every part is sorted/unique and the parts do not overlap in time, this is a
    concatenation in time order. Otherwise a stable sort puts later writes after earlier ones for
    the same timestamp, and per field the last present value of each timestamp group wins.
    """
    parts = [p for p in parts if len(p)]
    if not parts:
        return RowSet(EMPTY_TS, {}, True)
    if len(parts) == 1 and parts[0].sorted_unique:
        return parts[0]
    if all(p.sorted_unique for p in parts):
        order = sorted(range(len(parts)), key=lambda i: int(parts[i].timestamps[0]))
        ok = all(int(parts[order[k]].timestamps[-1]) < int(parts[order[k + 1]].timestamps[0])
                 for k in range(len(order) - 1))
        if ok:
            ordered = [parts[i] for i in order]
            ts = np.concatenate([p.timestamps for p in ordered])
            return RowSet(ts, _concat_columns(ordered, len(ts)), True)
    whole = concat(parts)
    return dedup(whole)


def dedup(rs: RowSet) -> RowSet:
    """Sort by time (stable: later rows after earlier ones) and resolve duplicate timestamps."""
    ts = rs.timestamps
    n = len(ts)
    if n == 0:
        return RowSet(EMPTY_TS, {}, True)
    if n > 1 and np.all(ts[1:] > ts[:-1]):
        return RowSet(ts, rs.columns, True)
    order = np.argsort(ts, kind="stable")
    sts = ts[order]
    # group starts: first row of each distinct timestamp
    new_group = np.empty(n, dtype=bool)
    new_group[0] = True
    np.not_equal(sts[1:], sts[:-1], out=new_group[1:])
    starts = np.flatnonzero(new_group)
    uts = sts[starts]
    if len(starts) == n:
        cols = {name: c.take(order) for name, c in rs.columns.items()}
        return RowSet(uts, cols, True)
    group_id = np.cumsum(new_group) - 1
    ng = len(starts)
    cols = {}
    pos = np.arange(n)
    for name, c in rs.columns.items():
        values = c.values[order]
        if c.mask is None:
            # every row has the field: the last row of each group wins
            ends = np.append(starts[1:], n) - 1
            cols[name] = Column(c.type, values[ends], None)
            continue
        m = c.mask[order]
        # last valid position per group (-1 when none)
        cand = np.where(m, pos, -1)
        last = np.full(ng, -1, dtype=np.int64)
        np.maximum.at(last, group_id, cand)
        present = last >= 0
        take = np.where(present, last, 0)
        vals = values[take]
        cols[name] = Column(c.type, vals, None if present.all() else present)
    return RowSet(uts, cols, True)
