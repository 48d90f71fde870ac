"""Batch encoding of segment blocks: every block of a column, across every series of one or many
segments, encoded in one vectorised pass (:func:`rusts.codecs.encode_blocks`).

A flush writes one segment per time partition, each holding a day of hourly blocks per series:
a few dozen blocks per column and series. Encoding them one call per block (or even one call per
series and column) is dominated by per-call numpy overhead, so :func:`pre_encode` gathers the
blocks of each column (by field name and type; timestamps as one column) over all the series
given, encodes them together and hands each series its blocks. The segment writer then only
frames, writes and indexes them (``rusts.storage.segment_writer``). Blocks the batch codecs do
not cover come back as None and are encoded per block as before. Hot tier only: the cold tier
searches every codec per block.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rusts import codecs
from rusts.model import FieldType
from rusts.storage.segment_format import SeriesData


class PreBlocks:
    """The encoded blocks of one series: ``bounds`` (row offsets of its blocks), ``ts`` (one
    timestamps block or None per block) and ``fields`` (name -> one values block or None per
    block; a block without values of the field is None)."""

    __slots__ = ("bounds", "ts", "fields")

    def __init__(self, bounds: np.ndarray) -> None:
        self.bounds = bounds
        self.ts: list = [None] * (len(bounds) - 1)
        self.fields: dict[str, list] = {}


def block_edges(ts: np.ndarray, block_rows: int, block_time_ns: int | None) -> np.ndarray:
    """Row offsets of the blocks of one series (``len(blocks) + 1`` values): at most
    ``block_rows`` rows, never crossing a multiple of ``block_time_ns`` (see
    ``segment_writer._block_bounds``)."""
    n = len(ts)
    if block_time_ns:
        grid = ts // block_time_ns
        cuts = np.flatnonzero(grid[1:] != grid[:-1]) + 1
        starts = np.concatenate(([0], cuts, [n])).astype(np.int64)
    else:
        starts = np.array([0, n], np.int64)
    if int(np.diff(starts).max(initial=0)) <= block_rows:
        return starts
    out = [np.arange(a, b, block_rows) for a, b in zip(starts[:-1].tolist(), starts[1:].tolist())]
    return np.concatenate(out + [np.array([n])]).astype(np.int64)


class _Group:
    __slots__ = ("ft", "values", "bounds", "owners", "nblocks")

    def __init__(self, ft: FieldType) -> None:
        self.ft = ft
        self.values: list[np.ndarray] = []
        self.bounds: list[np.ndarray] = []
        self.owners: list[tuple[PreBlocks, str | None]] = []
        self.nblocks = 0

    def add(self, values: np.ndarray, bounds: np.ndarray, owner: PreBlocks, name: str | None) -> None:
        self.values.append(values)
        self.bounds.append(bounds)
        self.owners.append((owner, name))

    def encode(self, compression: str, tier: str, timestamps: bool = False) -> None:
        offs, total = [np.zeros(1, np.int64)], 0
        for v, b in zip(self.values, self.bounds):
            offs.append(b[1:] + total)
            total += len(v)
        values = self.values[0] if len(self.values) == 1 else np.concatenate(self.values)
        bounds = np.concatenate(offs)
        got = codecs.encode_blocks(values, bounds, vtype=int(self.ft), timestamps=timestamps,
                                   compression=compression, tier=tier)
        pos = 0
        for b, (owner, name) in zip(self.bounds, self.owners):
            k = len(b) - 1
            part = got[pos:pos + k]
            pos += k
            if name is None:
                owner.ts = part
            else:
                owner.fields[name] = part


def pre_encode(series: Sequence[SeriesData], *, block_rows: int, block_time_ns: int | None,
               compression: str, tier: str) -> list[PreBlocks | None]:
    """The encoded blocks of every series (None for a series with no rows), each column's blocks
    over all ``series`` in one :func:`rusts.codecs.encode_blocks` call."""
    if tier != "hot":
        return [None] * len(series)
    out: list[PreBlocks | None] = []
    tsg = _Group(FieldType.INTEGER)
    groups: dict[tuple[str, int], _Group] = {}
    for s in series:
        ts = np.ascontiguousarray(s.timestamps, dtype=np.int64)
        if len(ts) < codecs.BATCH_MIN_BLOCK:  # no block the batch codecs would take
            out.append(None)
            continue
        edges = block_edges(ts, block_rows, block_time_ns)
        pre = PreBlocks(edges)
        out.append(pre)
        tsg.add(ts, edges, pre, None)
        for name, col in s.columns.items():
            ft = FieldType(col.type)
            if ft == FieldType.BOOLEAN:
                continue
            values = np.asarray(col.values)
            if values.dtype != ft.dtype:
                values = values.astype(ft.dtype)
            if len(values) != len(ts):
                continue  # the writer reports it
            g = groups.get((name, int(ft)))
            if g is None:
                g = groups[(name, int(ft))] = _Group(ft)
            if col.mask is None:
                g.add(values, edges, pre, name)
                continue
            mask = np.asarray(col.mask, dtype=bool)
            if len(mask) != len(ts):
                continue
            present = np.zeros(len(mask) + 1, np.int64)  # the blocks of the present values
            np.cumsum(mask, out=present[1:])
            g.add(values[mask], present[edges], pre, name)
    if tsg.values:
        tsg.encode(compression, tier, timestamps=True)
    for g in groups.values():
        g.encode(compression, tier)
    return out
