"""Decoded segment blocks, cached and shared by every read path (executor, vector, DuckDB scans).

Segment files are immutable (a flush or compaction writes new files), so a decoded block - keyed
by segment path, series, block number and column - never goes stale; entries of deleted segments
simply age out. The cache is an LRU bounded in bytes (:data:`CACHE_BYTES`, 512 MiB by default,
``RUSTS_SQL_BLOCK_CACHE_MB`` to change): repeated queries over the same columns (dashboards, the
trips suite) skip decoding, which is most of a scan's cost.

Entries are numpy: the block's int64 timestamps, and per field a :class:`Col` (values, presence).
A column's Arrow form (for DuckDB) is made when first asked for and kept with the cached block, so
strings are converted once, not per query.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

import numpy as np
import pyarrow as pa

from rusts.model import Column, FieldType

CACHE_BYTES = int(float(os.environ.get("RUSTS_SQL_BLOCK_CACHE_MB", "512")) * 1024 * 1024)
TS = "\x00time"
"""The cache key's column name of a block's timestamps."""
ABSENT = object()
"""Cached for a field without any value in a block."""

ARROW_TYPES = {
    FieldType.FLOAT: pa.float64(), FieldType.INTEGER: pa.int64(), FieldType.UNSIGNED: pa.uint64(),
    FieldType.STRING: pa.string(), FieldType.BOOLEAN: pa.bool_(),
}


def arrow_of(values: np.ndarray, mask: np.ndarray | None, ft: FieldType) -> pa.Array:
    """A field column as an Arrow array (``mask`` True = present)."""
    at = ARROW_TYPES[ft]
    inv = None if mask is None else ~mask
    if ft == FieldType.STRING:
        return pa.array(values, at, mask=inv, from_pandas=False)
    return pa.array(np.asarray(values, dtype=ft.dtype), at, mask=inv)


class Col:
    """One field over the rows of a block (or a slice of one): numpy ``values`` (absent rows hold
    the type's zero), ``mask`` (presence; None when every row has a value) and ``type``."""

    __slots__ = ("type", "values", "mask", "_arrow", "_column", "_base", "_lo")

    def __init__(self, type: FieldType, values: np.ndarray, mask: np.ndarray | None = None,
                 base: "Col | None" = None, lo: int = 0) -> None:
        self.type = type
        self.values = values
        self.mask = mask
        self._arrow = None
        self._column = None
        self._base = base
        self._lo = lo

    def __len__(self) -> int:
        return len(self.values)

    @property
    def nbytes(self) -> int:
        v = self.values
        n = v.nbytes if v.dtype != object else 56 * len(v)
        return n + (0 if self.mask is None else self.mask.nbytes)

    def slice(self, lo: int, hi: int) -> "Col":
        """Rows ``[lo, hi)`` (views, no copy)."""
        base = self._base if self._base is not None else self
        return Col(self.type, self.values[lo:hi], None if self.mask is None else self.mask[lo:hi],
                   base, self._lo + lo)

    def arrow(self) -> pa.Array:
        """The Arrow form, made once; a slice of a string column slices its block's."""
        a = self._arrow
        if a is None:
            if self._base is not None and self.type == FieldType.STRING:
                a = self._base.arrow().slice(self._lo, len(self.values))
            else:
                a = arrow_of(self.values, self.mask, self.type)
            self._arrow = a
        return a

    def column(self) -> Column:
        """As a :class:`~rusts.model.Column` (made once: the executor reads cached blocks so)."""
        c = self._column
        if c is None:
            c = self._column = Column(self.type, self.values, self.mask)
        return c


class BlockCache:
    """Thread-safe LRU of decoded blocks: ``(path, sid, block, column)`` -> int64 timestamps,
    a :class:`Col` or :data:`ABSENT`."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._d: OrderedDict = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _size(entry) -> int:
        if entry is ABSENT:
            return 64
        return int(entry.nbytes) + 64

    def get(self, key):
        got = self.get_many((key,))
        return None if got is None else got[0]

    def get_many(self, keys) -> list | None:
        """The entries of all ``keys`` (most recently used now), or None when any is missing."""
        d = self._d
        with self._lock:
            out = []
            for key in keys:
                e = d.get(key)
                if e is None:
                    self.misses += 1
                    return None
                d.move_to_end(key)
                out.append(e[0])
            self.hits += len(out)
            return out

    def put(self, key, entry) -> None:
        self.put_many(((key, entry),))

    def put_many(self, items) -> None:
        sized = [(k, e, self._size(e)) for k, e in items]
        with self._lock:
            for key, entry, size in sized:
                if size > self.max_bytes:
                    continue
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


def block_columns(reader, sid: int, fields: list[str], blocks: list[int],
                  cache: BlockCache = CACHE) -> list[tuple[np.ndarray, dict[str, Col]]]:
    """Blocks ``blocks`` (sorted, distinct indices into ``reader.blocks(sid)``) of one series: per
    block its timestamps and ``{field: Col}`` for the ``fields`` with a value in it, decoding only
    what the cache misses."""
    path = reader.path
    names = (TS, *fields)
    out: list = [None] * len(blocks)
    missing = []
    for k, b in enumerate(blocks):
        got = cache.get_many([(path, sid, b, nm) for nm in names])
        if got is None:
            missing.append(k)
        else:
            out[k] = (got[0], {f: c for f, c in zip(fields, got[1:]) if c is not ABSENT})
    if missing:
        decoded = reader.read_blocks(sid, fields, np.array([blocks[k] for k in missing], np.int64))
        items = []
        for k, (ts, cols) in zip(missing, decoded):
            b = blocks[k]
            mine = {}
            items.append(((path, sid, b, TS), ts))
            for f in fields:
                e = ABSENT
                got = cols.get(f)
                if got is not None:
                    ft, v, m = got
                    if m is None or m.any():
                        e = mine[f] = Col(ft, v, None if m is None or m.all() else m)
                items.append(((path, sid, b, f), e))
            out[k] = (ts, mine)
        damaged = getattr(reader, "damaged", None)
        if damaged:  # a damaged block read as empty is reported each time: never cached
            items = [it for it in items if (sid, it[0][2]) not in damaged]
        cache.put_many(items)
    return out
