"""Segment files: the immutable, columnar, compressed on-disk form of one time partition.

Byte layout: ``docs/format/segment.md``. Design:

* **Wide per-series layout.** For each series (in series-id order) rows are cut into blocks of
  ``block_rows`` rows; a block is one timestamps chunk plus one chunk per field present in it.
  A field chunk holds only the present values, preceded by a bit-packed presence mask when some
  rows lack the field. Every chunk is a ``rusts.codecs`` block (its own CRC).
* **Pre-aggregates.** Every field chunk records count/sum/min/max, every block its
  min/max time and rows, so aggregates over blocks wholly inside a query range need no decoding.
* **Flat footer.** The index is ~20 flat little-endian arrays (structure of arrays), read with
  one ``pread``, one CRC and ``np.frombuffer`` each: opening costs the same for 10 or 100k series.
  Series keys (for rebuilding the series index) and field names are decoded lazily.
* **Python work per block, never per value.** The writer loops over blocks and fields; stats
  and masks are numpy reductions; the reader decodes the selected chunks and scatters them with
  boolean indexing.
* **Damage is contained.** A chunk failing its CRC raises ``CorruptionError(path, offset)`` for
  reads touching that chunk only; other series stay readable. Inside a query
  (:func:`rusts.storage.damage.collect_missing`) the damaged block reads as empty instead and is
  reported, so the series' other blocks still answer. A bad header, footer or trailer makes
  :meth:`SegmentReader.open` fail, and the engine quarantines the file.

Writing is atomic: ``<path>.tmp``, fsync, rename, fsync of the directory.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
import zlib
from collections.abc import Iterator, Mapping, Sequence

import attrs
import numpy as np
import zstandard

from rusts import codecs
from rusts.storage import damage
from rusts.storage.bloom import BloomFilter
from rusts.errors import ClosedError, CorruptionError, StorageError
from rusts.model import Column, FieldType
from rusts.query.rowset import concat_column
from rusts.storage.fsutil import fsync_dir as _fsync_dir

MAGIC = b"RUSTSSEG"
VERSION = 1
_HEADER = struct.Struct("<8sHHI")      # magic, version, flags, crc of the first 12 bytes
_TRAILER = struct.Struct("<QQIHH8s")   # footer offset, footer length, footer crc, version, flags, magic
FOOTER_ZSTD = 0x1  # trailer flag: the stored footer is one zstd frame


def _footer_crc(stored, flags: int) -> int:
    """CRC-32 of the stored footer bytes, continued over the flags when any is set (so a flipped
    flag is detected; files without flags keep the plain CRC of the first format)."""
    crc = zlib.crc32(stored)
    return zlib.crc32(struct.pack("<H", flags), crc) if flags else crc


_ZSTD_LOCAL = __import__("threading").local()


def _zstd_footer():
    c = getattr(_ZSTD_LOCAL, "c", None)
    if c is None:
        c = _ZSTD_LOCAL.c = zstandard.ZstdCompressor(level=3)
    return c
_DIR_HEAD = struct.Struct("<II")
_DIR_ENTRY = struct.Struct("<IIQQ")
_MIN_SIZE = _HEADER.size + _TRAILER.size

# footer section ids (docs/format/segment.md)
META, FIELD_NAMES, FIELD_NAME_OFFSETS, FIELD_TYPES = 1, 2, 3, 4
SERIES_IDS, SERIES_BLOCK_START, KEY_OFFSETS, KEYS = 5, 6, 7, 8
BLOCK_MIN_TIME, BLOCK_MAX_TIME, BLOCK_ROWS, BLOCK_TS_OFFSET, BLOCK_TS_LENGTH, BLOCK_CHUNK_START = (
    9, 10, 11, 12, 13, 14)
CHUNK_FIELD, CHUNK_OFFSET, CHUNK_LENGTH, CHUNK_MASK_LENGTH = 15, 16, 17, 18
CHUNK_COUNT, CHUNK_SUM, CHUNK_MIN, CHUNK_MAX = 19, 20, 21, 22
BLOOM = 23
# optional sub-block statistics (docs/format/segment.md, "Sub-block statistics")
SUB_META, BLOCK_SUB_START, SUB_TIME, SUB_ROWS, SUB_COUNT, SUB_SUM, SUB_MIN, SUB_MAX = range(24, 32)
_SUB_META = struct.Struct("<QQQ")  # interval_ns, block entries, chunk entries
_SUB_COLUMN_BLOCK = 65536  # values per codec block of a codec column
_INT64_MAX = 2**63 - 1
_DEC_POW = np.array([10.0 ** e for e in range(9)])[:, None]  # decimal sums: up to 8 digits

# (section id, dtype, which count gives its length: N, B, C, F, or +1 variants)
_ARRAYS = {
    FIELD_NAME_OFFSETS: ("<u8", "F+1"), FIELD_TYPES: ("u1", "F"),
    SERIES_IDS: ("<u8", "N"), SERIES_BLOCK_START: ("<u8", "N+1"), KEY_OFFSETS: ("<u8", "N+1"),
    BLOCK_MIN_TIME: ("<i8", "B"), BLOCK_MAX_TIME: ("<i8", "B"), BLOCK_ROWS: ("<u4", "B"),
    BLOCK_TS_OFFSET: ("<u8", "B"), BLOCK_TS_LENGTH: ("<u4", "B"), BLOCK_CHUNK_START: ("<u8", "B+1"),
    CHUNK_FIELD: ("<u4", "C"), CHUNK_OFFSET: ("<u8", "C"), CHUNK_LENGTH: ("<u4", "C"),
    CHUNK_MASK_LENGTH: ("<u4", "C"), CHUNK_COUNT: ("<u4", "C"), CHUNK_SUM: ("<f8", "C"),
    CHUNK_MIN: ("<f8", "C"), CHUNK_MAX: ("<f8", "C"),
}
_U32_MAX = 2**32 - 1


@attrs.frozen(eq=False)
class SeriesData:
    """All rows of one series for one segment: int64 timestamps strictly increasing, columns aligned."""

    series_id: int
    key: str
    timestamps: np.ndarray
    columns: Mapping[str, Column]

    def __len__(self) -> int:
        return len(self.timestamps)


@attrs.frozen
class SegmentInfo:
    """What :func:`write_segment` wrote."""

    path: str
    size: int
    min_time: int
    max_time: int
    series_count: int
    point_count: int
    value_count: int


@attrs.frozen(eq=False)
class BlockTable:
    """Per block of one series: first/last timestamp and row count."""

    min_time: np.ndarray
    max_time: np.ndarray
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)


@attrs.frozen(eq=False)
class SubStats:
    """Sub-block statistics of one series (and one field): one entry per statistics interval of
    each block that spans several intervals (blocks within one interval have none).

    ``block`` is the block index (as in :meth:`SegmentReader.blocks`) of each entry, and the
    entries of block k are ``[block_start[k], block_start[k+1])``; ``time`` is the interval start
    (a multiple of ``interval``), ``rows`` the block's rows in it; ``count``/``sum``/``min``/
    ``max`` are the field's pre-aggregates there (count 0, sum 0, min/max NaN where absent; for
    ``field=None`` count is the row count).
    """

    interval: int
    block_start: np.ndarray
    block: np.ndarray
    time: np.ndarray
    rows: np.ndarray
    count: np.ndarray
    sum: np.ndarray
    min: np.ndarray
    max: np.ndarray


@attrs.frozen(eq=False)
class FieldStats:
    """Per block of one series, pre-aggregates of one field (count 0, sum 0, min/max NaN where absent)."""

    count: np.ndarray
    sum: np.ndarray
    min: np.ndarray
    max: np.ndarray


# ---------------------------------------------------------------------------------------- writer
def _stats(ft: FieldType, v: np.ndarray) -> tuple[float, float, float]:
    if ft == FieldType.FLOAT:
        with np.errstate(all="ignore"):  # inf + -inf -> nan, as numpy computes it on decode
            return float(v.sum()), float(v.min()), float(v.max())
    if ft == FieldType.INTEGER or ft == FieldType.UNSIGNED:
        return float(np.sum(v, dtype=np.float64)), float(np.min(v)), float(np.max(v))
    if ft == FieldType.BOOLEAN:
        return float(np.count_nonzero(v)), float(v.all()), float(v.any())
    return math.nan, math.nan, math.nan


def _decimal_sums(v: np.ndarray, starts: np.ndarray) -> np.ndarray | None:
    """Sums of ``v[starts[k]:starts[k+1]]`` computed exactly on the decimal digits (correctly
    rounded), or None when ``v`` is not all decimals with at most 8 digits after the point whose
    digit integers sum below 2**53."""
    n = len(v)
    probe = v[::max(1, n // 32)]
    with np.errstate(invalid="ignore", over="ignore"):
        ok = (np.rint(probe * _DEC_POW) / _DEC_POW == probe).all(axis=1)
        if not ok.any():
            return None
        p = float(_DEC_POW[int(ok.argmax()), 0])
        r = np.rint(v * p)
        if not bool(np.logical_and.reduce(r / p == v)) or not float(np.abs(r).sum()) < 2.0**53:
            return None
    return np.add.reduceat(r, starts) / p  # integer partial sums below 2**53 are exact


def _sub_aggregates(ft: FieldType, v: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sum, min, max) of each run ``v[starts[k]:starts[k+1]]`` (non-empty runs, as :func:`_stats`)."""
    k = len(starts)
    if ft == FieldType.FLOAT:
        sums = _decimal_sums(v, starts)
        with np.errstate(all="ignore"):
            if sums is None:
                sums = np.add.reduceat(v, starts)
            return sums, np.minimum.reduceat(v, starts), np.maximum.reduceat(v, starts)
    if ft == FieldType.INTEGER or ft == FieldType.UNSIGNED:
        return (np.add.reduceat(v.astype(np.float64), starts), np.minimum.reduceat(v, starts).astype(np.float64),
                np.maximum.reduceat(v, starts).astype(np.float64))
    if ft == FieldType.BOOLEAN:
        return (np.add.reduceat(v.astype(np.int64), starts).astype(np.float64),
                np.minimum.reduceat(v, starts).astype(np.float64), np.maximum.reduceat(v, starts).astype(np.float64))
    nan = np.full(k, np.nan)
    return nan, nan, nan.copy()


def _codec_column(values: np.ndarray, compression: str, tier: str) -> bytes:
    """A footer codec column: u32 k, then k x (u32 length, codec block)."""
    parts = [struct.pack("<I", (len(values) + _SUB_COLUMN_BLOCK - 1) // _SUB_COLUMN_BLOCK)]
    for i in range(0, len(values), _SUB_COLUMN_BLOCK):
        b = codecs.encode(values[i:i + _SUB_COLUMN_BLOCK], compression=compression, tier=tier)
        parts.append(struct.pack("<I", len(b)) + b)
    return b"".join(parts)


class _Writer:
    """Streams chunks to a file and accumulates the footer index (one entry per block/chunk)."""

    def __init__(self, f, compression: str, tier: str, stats_interval_ns: int | None = None) -> None:
        self.f = f
        self.stats_interval_ns = int(stats_interval_ns) if stats_interval_ns else None
        self.b_sub_start = [0]
        self.sub_time: list[np.ndarray] = []
        self.sub_rows: list[np.ndarray] = []
        self.sub_count: list[np.ndarray] = []
        self.sub_sum: list[np.ndarray] = []
        self.sub_min: list[np.ndarray] = []
        self.sub_max: list[np.ndarray] = []
        self.n_sub = 0
        self.offset = 0
        self.compression = compression
        self.tier = tier
        self.fields: dict[tuple[str, int], int] = {}
        self.sids: list[int] = []
        self.keys: list[bytes] = []
        self.series_block_start = [0]
        self.b_min: list[int] = []
        self.b_max: list[int] = []
        self.b_rows: list[int] = []
        self.b_ts_off: list[int] = []
        self.b_ts_len: list[int] = []
        self.b_chunk_start = [0]
        self.c_field: list[int] = []
        self.c_off: list[int] = []
        self.c_len: list[int] = []
        self.c_mask: list[int] = []
        self.c_count: list[int] = []
        self.c_sum: list[float] = []
        self.c_min: list[float] = []
        self.c_max: list[float] = []
        self.points = 0
        self.values = 0

    def put(self, data: bytes) -> int:
        off = self.offset
        self.f.write(data)
        self.offset += len(data)
        return off

    def encode(self, values: np.ndarray, timestamps: bool = False) -> bytes:
        return codecs.encode(values, timestamps=timestamps, compression=self.compression, tier=self.tier)

    def add_series(self, s: SeriesData, block_rows: int, block_time_ns: int | None = None) -> None:
        ts = np.ascontiguousarray(s.timestamps, dtype=np.int64)
        n = len(ts)
        if n == 0:
            return
        if n > 1 and not bool(np.all(ts[1:] > ts[:-1])):
            raise StorageError(f"series {s.series_id}: timestamps must be strictly increasing")
        cols = []
        for name, col in s.columns.items():
            ft = FieldType(col.type)
            values = np.asarray(col.values)
            if values.dtype != ft.dtype:
                values = values.astype(ft.dtype)
            if len(values) != n or (col.mask is not None and len(col.mask) != n):
                raise StorageError(f"series {s.series_id}: column {name!r} has {len(values)} rows, "
                                   f"timestamps {n}")
            mask = None if col.mask is None else np.asarray(col.mask, dtype=bool)
            if mask is not None and not mask.any():
                continue
            fid = self.fields.setdefault((name, int(ft)), len(self.fields))
            cols.append((fid, ft, values, mask))
        cols.sort(key=lambda c: c[0])
        self.sids.append(int(s.series_id))
        self.keys.append(s.key.encode())
        for a, b in _block_bounds(ts, block_rows, block_time_ns):
            rows = b - a
            block_ts = ts[a:b]
            data = self.encode(block_ts, True)
            self.b_ts_off.append(self.put(data))
            self.b_ts_len.append(len(data))
            self.b_min.append(int(block_ts[0]))
            self.b_max.append(int(block_ts[-1]))
            self.b_rows.append(rows)
            sub = self._block_subs(block_ts)
            for fid, ft, values, mask in cols:
                v = values[a:b]
                head = b""
                m = None
                if mask is not None:
                    m = mask[a:b]
                    count = int(np.count_nonzero(m))
                    if count == 0:
                        continue
                    if count < rows:
                        packed = np.packbits(m).tobytes()
                        head = packed + struct.pack("<I", zlib.crc32(packed))
                        v = v[m]
                    else:
                        m = None
                else:
                    count = rows
                if sub is not None:
                    self._chunk_subs(ft, v, m, sub)
                data = self.encode(v)
                if len(head) + len(data) > _U32_MAX:
                    raise StorageError("segment chunk larger than 4 GiB")
                sm, mn, mx = _stats(ft, v)
                self.c_off.append(self.put(head) if head else self.offset)
                self.put(data)
                self.c_field.append(fid)
                self.c_len.append(len(head) + len(data))
                self.c_mask.append(len(head))
                self.c_count.append(count)
                self.c_sum.append(sm)
                self.c_min.append(mn)
                self.c_max.append(mx)
                self.values += count
            self.b_chunk_start.append(len(self.c_field))
            self.b_sub_start.append(self.n_sub)
            self.points += rows
        self.series_block_start.append(len(self.b_rows))

    def _block_subs(self, block_ts: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Record the block entries of a block spanning several statistics intervals; returns
        (first row of each interval, rows in it), or None."""
        iv = self.stats_interval_ns
        if iv is None:
            return None
        t0, t1 = int(block_ts[0]), int(block_ts[-1])
        if t0 // iv == t1 // iv or t0 < -_INT64_MAX + iv or t1 > _INT64_MAX - iv:
            return None
        g = block_ts // iv
        idx = np.flatnonzero(g[1:] != g[:-1]) + 1
        idx = np.concatenate((np.zeros(1, np.int64), idx))
        rows = np.diff(np.append(idx, len(block_ts)))
        self.sub_time.append(g[idx] * iv)
        self.sub_rows.append(rows)
        self.n_sub += len(idx)
        return idx, rows

    def _chunk_subs(self, ft: FieldType, v: np.ndarray, m: np.ndarray | None,
                    sub: tuple[np.ndarray, np.ndarray]) -> None:
        """Chunk entries (count, sum, min, max per interval) of one field chunk."""
        idx, rows = sub
        if m is None:
            count, vstart = rows, idx
        else:
            present = np.zeros(len(m) + 1, np.int64)
            np.cumsum(m, out=present[1:])
            vstart = present[idx]
            count = np.diff(np.append(vstart, present[-1]))
        k = len(idx)
        if bool((count > 0).all()):
            sm, mn, mx = _sub_aggregates(ft, v, vstart)
        else:
            nz = count > 0
            sm, mn, mx = np.zeros(k), np.full(k, np.nan), np.full(k, np.nan)
            got = _sub_aggregates(ft, v, vstart[nz])
            sm[nz], mn[nz], mx[nz] = got
        self.sub_count.append(count)
        self.sub_sum.append(np.asarray(sm, np.float64))
        self.sub_min.append(np.asarray(mn, np.float64))
        self.sub_max.append(np.asarray(mx, np.float64))

    def _sub_sections(self) -> dict:
        if not self.n_sub:
            return {}
        cat = lambda lst, dt: np.concatenate(lst).astype(dt) if lst else np.zeros(0, dt)  # noqa: E731
        count = cat(self.sub_count, "<u4")
        return {
            SUB_META: _SUB_META.pack(self.stats_interval_ns, self.n_sub, len(count)),
            BLOCK_SUB_START: np.array(self.b_sub_start, dtype="<u8"),
            SUB_TIME: cat(self.sub_time, "<i8"),
            SUB_ROWS: cat(self.sub_rows, "<u4"),
            SUB_COUNT: count,
            SUB_SUM: _codec_column(cat(self.sub_sum, np.float64), self.compression, self.tier),
            SUB_MIN: _codec_column(cat(self.sub_min, np.float64), self.compression, self.tier),
            SUB_MAX: _codec_column(cat(self.sub_max, np.float64), self.compression, self.tier),
        }

    def footer(self, block_rows: int) -> bytes:
        names = [name.encode() for name, _ in self.fields]
        name_off = np.zeros(len(names) + 1, dtype="<u8")
        name_off[1:] = np.cumsum([len(x) for x in names], dtype=np.uint64)
        key_off = np.zeros(len(self.keys) + 1, dtype="<u8")
        key_off[1:] = np.cumsum([len(k) for k in self.keys], dtype=np.uint64)
        sids = np.array(self.sids, dtype="<u8")
        meta = {
            "tier": self.tier, "compression": self.compression, "block_rows": block_rows,
            "min_time": min(self.b_min, default=0), "max_time": max(self.b_max, default=0),
            "series_count": len(self.sids), "block_count": len(self.b_rows),
            "chunk_count": len(self.c_field), "field_count": len(self.fields),
            "point_count": self.points, "value_count": self.values,
        }
        sections = {
            META: json.dumps(meta, separators=(",", ":")).encode(),
            FIELD_NAMES: b"".join(names),
            FIELD_NAME_OFFSETS: name_off,
            FIELD_TYPES: np.array([t for _, t in self.fields], dtype="u1"),
            SERIES_IDS: sids,
            SERIES_BLOCK_START: np.array(self.series_block_start, dtype="<u8"),
            KEY_OFFSETS: key_off,
            KEYS: b"".join(self.keys),
            BLOCK_MIN_TIME: np.array(self.b_min, dtype="<i8"),
            BLOCK_MAX_TIME: np.array(self.b_max, dtype="<i8"),
            BLOCK_ROWS: np.array(self.b_rows, dtype="<u4"),
            BLOCK_TS_OFFSET: np.array(self.b_ts_off, dtype="<u8"),
            BLOCK_TS_LENGTH: np.array(self.b_ts_len, dtype="<u4"),
            BLOCK_CHUNK_START: np.array(self.b_chunk_start, dtype="<u8"),
            CHUNK_FIELD: np.array(self.c_field, dtype="<u4"),
            CHUNK_OFFSET: np.array(self.c_off, dtype="<u8"),
            CHUNK_LENGTH: np.array(self.c_len, dtype="<u4"),
            CHUNK_MASK_LENGTH: np.array(self.c_mask, dtype="<u4"),
            CHUNK_COUNT: np.array(self.c_count, dtype="<u4"),
            CHUNK_SUM: np.array(self.c_sum, dtype="<f8"),
            CHUNK_MIN: np.array(self.c_min, dtype="<f8"),
            CHUNK_MAX: np.array(self.c_max, dtype="<f8"),
            BLOOM: BloomFilter.build(sids).to_bytes(),
            **self._sub_sections(),
        }
        head_len = _DIR_HEAD.size + _DIR_ENTRY.size * len(sections)
        pos = head_len + (-head_len) % 8
        entries, parts = [], []
        for sid_, payload in sections.items():
            raw = payload if isinstance(payload, bytes) else payload.tobytes()
            entries.append(_DIR_ENTRY.pack(sid_, 0, pos, len(raw)))
            pad = (-len(raw)) % 8
            parts.append(raw + b"\0" * pad)
            pos += len(raw) + pad
        head = _DIR_HEAD.pack(len(sections), 0) + b"".join(entries)
        return head + b"\0" * ((-len(head)) % 8) + b"".join(parts)



def _block_bounds(ts: np.ndarray, block_rows: int, block_time_ns: int | None) -> list[tuple[int, int]]:
    """Row ranges of the blocks of one series: at most ``block_rows`` rows, and (when
    ``block_time_ns`` is set) never crossing a multiple of ``block_time_ns``, so a query bucketed
    by a multiple of that duration finds whole blocks inside its buckets and answers from their
    pre-aggregates without decoding."""
    n = len(ts)
    starts = [0]
    if block_time_ns:
        grid = ts // block_time_ns
        starts.extend((np.flatnonzero(grid[1:] != grid[:-1]) + 1).tolist())
    starts.append(n)
    out = []
    for a, b in zip(starts[:-1], starts[1:]):
        for x in range(a, b, block_rows):
            out.append((x, min(x + block_rows, b)))
    return out


def write_segment(path: str | os.PathLike, series: Sequence[SeriesData], *, compression: str = "default",
                  tier: str = "hot", block_rows: int = 4096, block_time_ns: int | None = None,
                  stats_interval_ns: int | None = None) -> SegmentInfo:
    """Write ``series`` (sorted by strictly increasing series id) as one segment file, atomically.

    Blocks hold at most ``block_rows`` rows and, with ``block_time_ns``, never cross a multiple of
    it (time-aligned blocks: see :func:`_block_bounds`). With ``stats_interval_ns``, a block whose
    rows span several multiples of it also gets per-interval statistics in the footer (sub-block
    statistics), so queries bucketed by that interval need not decode it.

    Series with no rows are skipped. Raises :class:`StorageError` on invalid input (unsorted ids
    or timestamps, misaligned columns) or I/O failure; nothing is left at ``path`` then.
    """
    path = os.fspath(path)
    if block_rows < 1:
        raise StorageError(f"block_rows must be >= 1, got {block_rows}")
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb", buffering=1 << 20) as f:
            if stats_interval_ns is not None and not 0 <= stats_interval_ns < 2**62:
                raise StorageError(f"stats_interval_ns must be in [0, 2**62), got {stats_interval_ns}")
            w = _Writer(f, compression, tier, stats_interval_ns)
            w.put(_HEADER.pack(MAGIC, VERSION, 0, zlib.crc32(struct.pack("<8sHH", MAGIC, VERSION, 0))))
            prev = None
            for s in series:
                if prev is not None and int(s.series_id) <= prev:
                    raise StorageError("write_segment: series must be sorted by strictly increasing id")
                prev = int(s.series_id)
                w.add_series(s, block_rows, block_time_ns)
            w.put(b"\0" * ((-w.offset) % 8))
            footer = w.footer(block_rows)
            flags = 0
            packed = _zstd_footer().compress(footer)
            if len(packed) < len(footer):  # the index arrays compress ~5x: offsets, counts, stats
                footer, flags = packed, FOOTER_ZSTD
            footer_offset = w.put(footer)
            w.put(_TRAILER.pack(footer_offset, len(footer), _footer_crc(footer, flags), VERSION, flags, MAGIC))
            f.flush()
            os.fsync(f.fileno())
            size = w.offset
        os.replace(tmp, path)
        _fsync_dir(os.path.dirname(os.path.abspath(path)))
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise StorageError(f"cannot write segment {path}: {e}") from e
        if isinstance(e, (ValueError, TypeError)):
            raise StorageError(f"cannot write segment {path}: {e}") from e
        raise
    return SegmentInfo(path=path, size=size, min_time=min(w.b_min, default=0),
                       max_time=max(w.b_max, default=0), series_count=len(w.sids),
                       point_count=w.points, value_count=w.values)


# ---------------------------------------------------------------------------------------- reader
class SegmentReader:
    """A read-only view of one segment file (mmap). Create with :meth:`open`.

    Thread-safe for concurrent reads; :meth:`close` must not race with reads.
    """

    path: str
    size: int
    min_time: int
    max_time: int
    tier: str
    compression: str
    block_rows: int
    point_count: int
    value_count: int
    series_ids: np.ndarray

    @classmethod
    def open(cls, path: str | os.PathLike) -> "SegmentReader":
        """Open and validate header, trailer, footer CRC and index consistency.

        Raises :class:`CorruptionError` (with ``path``/``offset``) when anything is wrong,
        including a missing or truncated file.
        """
        self = cls.__new__(cls)
        self.path = os.fspath(path)
        self._mm = None
        self.damaged: dict[tuple[int, int], str] = {}  # (sid, block) -> reason (found by a query)
        self.damage_copy: str | None = None  # quarantine copy made when damage was first found
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError as e:
            raise CorruptionError(f"segment {self.path} is missing", path=self.path) from e
        except OSError as e:
            raise StorageError(f"cannot open segment {self.path}: {e}") from e
        try:
            self.size = os.fstat(fd).st_size
            if self.size < _MIN_SIZE:
                raise self._corrupt(f"file is {self.size} bytes, too short", 0)
            self._mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise StorageError(f"cannot map segment {self.path}: {e}") from e
        finally:
            os.close(fd)
        try:
            self._load()
        except BaseException:
            self.close()
            raise
        return self

    def _corrupt(self, what: str, offset: int | None) -> CorruptionError:
        return CorruptionError(f"segment {self.path}: {what}", path=self.path, offset=offset)

    def _load(self) -> None:
        mm = self._mm
        magic, version, _flags, crc = _HEADER.unpack_from(mm, 0)
        if magic != MAGIC:
            raise self._corrupt("bad header magic", 0)
        if zlib.crc32(mm[0:12]) != crc:
            raise self._corrupt("header CRC mismatch", 0)
        if version != VERSION:
            raise self._corrupt(f"unsupported format version {version}", 8)
        t_off = self.size - _TRAILER.size
        f_off, f_len, f_crc, t_version, t_flags, t_magic = _TRAILER.unpack_from(mm, t_off)
        if t_magic != MAGIC:
            raise self._corrupt("bad trailer magic (truncated file?)", t_off)
        if t_version != VERSION:
            raise self._corrupt(f"unsupported trailer version {t_version}", t_off)
        if f_off < _HEADER.size or f_off % 8 or f_off + f_len != t_off:
            raise self._corrupt(f"bad footer bounds {f_off}+{f_len}", t_off)
        # the CRC runs over the stored footer (and the flags) in the mapping; an uncompressed
        # footer's index arrays are views of the mapping, a compressed one's of its decompression
        footer = memoryview(mm)[f_off:f_off + f_len]
        if _footer_crc(footer, t_flags) != f_crc:
            raise self._corrupt("footer CRC mismatch", f_off)
        if t_flags & ~FOOTER_ZSTD:
            raise self._corrupt(f"unknown trailer flags {t_flags:#x}", t_off)
        if t_flags & FOOTER_ZSTD:
            try:
                footer = memoryview(zstandard.ZstdDecompressor().decompress(bytes(footer),
                                                                            max_output_size=1 << 31))
            except zstandard.ZstdError as e:
                raise self._corrupt(f"footer does not decompress: {e}", f_off) from None
        self._footer_offset = f_off
        try:
            self._parse_footer(footer, f_off)
        except CorruptionError:
            raise
        except (ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError) as e:
            raise self._corrupt(f"malformed footer: {e}", f_off) from e

    def _parse_footer(self, footer: bytes, f_off: int) -> None:
        count, _ = _DIR_HEAD.unpack_from(footer, 0)
        if _DIR_HEAD.size + count * _DIR_ENTRY.size > len(footer):
            raise self._corrupt("footer directory overruns the footer", f_off)
        secs: dict[int, tuple[int, int]] = {}
        for i in range(count):
            sid, _, off, length = _DIR_ENTRY.unpack_from(footer, _DIR_HEAD.size + i * _DIR_ENTRY.size)
            if off + length > len(footer) or off % 8:
                raise self._corrupt(f"footer section {sid} out of bounds", f_off)
            secs[sid] = (off, length)
        missing = {META, FIELD_NAMES, KEYS, BLOOM, *_ARRAYS} - secs.keys()
        if missing:
            raise self._corrupt(f"footer lacks sections {sorted(missing)}", f_off)

        def raw(sec: int) -> memoryview:
            off, length = secs[sec]
            return footer[off:off + length]

        meta = json.loads(bytes(raw(META)))
        n, b, c, nf = (int(meta[k]) for k in ("series_count", "block_count", "chunk_count", "field_count"))
        counts = {"N": n, "B": b, "C": c, "F": nf, "N+1": n + 1, "B+1": b + 1, "F+1": nf + 1}
        arr: dict[int, np.ndarray] = {}
        for sec, (dt, which) in _ARRAYS.items():
            off, length = secs[sec]
            dtype = np.dtype(dt)
            if length != counts[which] * dtype.itemsize:
                raise self._corrupt(f"footer section {sec} has {length} bytes for {counts[which]} entries",
                                    f_off + off)
            arr[sec] = np.frombuffer(footer, dtype=dtype, count=counts[which], offset=off)

        self.tier = str(meta["tier"])
        self.compression = str(meta["compression"])
        self.block_rows = int(meta["block_rows"])
        self.min_time = int(meta["min_time"])
        self.max_time = int(meta["max_time"])
        self.point_count = int(meta["point_count"])
        self.value_count = int(meta["value_count"])
        self.series_ids = arr[SERIES_IDS]
        self._last_index = (-1, -1)  # (sid, position): a query asks several times about one series
        self._series_block_start = arr[SERIES_BLOCK_START].astype(np.int64)
        self._key_offsets = arr[KEY_OFFSETS]
        self._keys_blob = bytes(raw(KEYS))
        self._b_min = arr[BLOCK_MIN_TIME]
        self._b_max = arr[BLOCK_MAX_TIME]
        self._b_rows = arr[BLOCK_ROWS]
        self._b_ts_off = arr[BLOCK_TS_OFFSET]
        self._b_ts_len = arr[BLOCK_TS_LENGTH]
        self._b_chunk_start = arr[BLOCK_CHUNK_START].astype(np.int64)
        self._c_field = arr[CHUNK_FIELD]
        self._c_off = arr[CHUNK_OFFSET]
        self._c_len = arr[CHUNK_LENGTH]
        self._c_mask = arr[CHUNK_MASK_LENGTH]
        self._c_count = arr[CHUNK_COUNT]
        self._c_sum = arr[CHUNK_SUM]
        self._c_min = arr[CHUNK_MIN]
        self._c_max = arr[CHUNK_MAX]
        self._bloom = BloomFilter.from_bytes(raw(BLOOM))

        names_blob = bytes(raw(FIELD_NAMES))
        no = arr[FIELD_NAME_OFFSETS].tolist()
        ftypes = arr[FIELD_TYPES].tolist()
        if no[0] != 0 or no[-1] != len(names_blob) or any(x > y for x, y in zip(no, no[1:])):
            raise self._corrupt("bad field name offsets", f_off)
        self._field_names = [names_blob[x:y].decode() for x, y in zip(no, no[1:])]
        self._field_types = [FieldType(t) for t in ftypes]
        self._fids_by_name: dict[str, list[int]] = {}
        for i, name in enumerate(self._field_names):
            self._fids_by_name.setdefault(name, []).append(i)

        # index consistency, vectorised
        data_end = f_off

        def bad(cond: bool, what: str) -> None:
            if cond:
                raise self._corrupt(f"inconsistent index: {what}", f_off)

        sbs, bcs = self._series_block_start, self._b_chunk_start
        bad(n > 1 and not bool(np.all(self.series_ids[1:] > self.series_ids[:-1])), "series ids unsorted")
        bad(sbs[0] != 0 or sbs[-1] != b or bool(np.any(np.diff(sbs) < 0)), "series block starts")
        bad(bcs[0] != 0 or bcs[-1] != c or bool(np.any(np.diff(bcs) < 0)), "block chunk starts")
        ko = self._key_offsets
        bad(int(ko[0]) != 0 or int(ko[-1]) != len(self._keys_blob) or bool(np.any(np.diff(ko.astype(np.int64)) < 0)),
            "key offsets")
        bad(bool(np.any(self._b_rows == 0)) or bool(np.any(self._b_min > self._b_max)), "block rows/times")
        bad(bool(np.any(self._b_ts_off < _HEADER.size))
            or bool(np.any(self._b_ts_off + self._b_ts_len > data_end)), "timestamp chunk offsets")
        bad(bool(np.any(self._c_field >= nf)), "chunk field ids")
        bad(bool(np.any(self._c_off < _HEADER.size))
            or bool(np.any(self._c_off + self._c_len > data_end))
            or bool(np.any(self._c_mask > self._c_len)), "chunk offsets")
        # chunk counts vs rows are checked when a chunk is read (mask popcount, decoded length)
        self.sub_interval_ns = None
        if SUB_META in secs:
            self._parse_sub_stats(secs, raw, f_off)

    def _parse_sub_stats(self, secs: dict, raw, f_off: int) -> None:
        """Sections 24..31 (sub-block statistics), validated (docs/format/segment.md)."""
        def bad(cond: bool, what: str) -> None:
            if cond:
                raise self._corrupt(f"inconsistent sub-block statistics: {what}", f_off)

        missing = set(range(SUB_META, SUB_MAX + 1)) - secs.keys()
        bad(bool(missing), f"missing sections {sorted(missing)}")
        meta = raw(SUB_META)
        bad(len(meta) != _SUB_META.size, "SUB_META size")
        iv, sb, sc = _SUB_META.unpack_from(meta)
        bad(not 0 < iv < 2**62, f"interval {iv}")
        nblocks, nchunks = len(self._b_rows), len(self._c_field)

        def arr(sec: int, dt: str, count: int) -> np.ndarray:
            r = raw(sec)
            bad(len(r) != count * np.dtype(dt).itemsize, f"section {sec} has {len(r)} bytes for {count} entries")
            return np.frombuffer(r, dtype=dt, count=count)

        bss = arr(BLOCK_SUB_START, "<u8", nblocks + 1).astype(np.int64)
        bad(bss[0] != 0 or bss[-1] != sb or bool(np.any(np.diff(bss) < 0)), "block entry starts")
        nb = np.diff(bss)
        chunk_block = np.repeat(np.arange(nblocks), np.diff(self._b_chunk_start))
        nc = nb[chunk_block]
        cs = np.zeros(nchunks + 1, np.int64)
        np.cumsum(nc, out=cs[1:])
        bad(int(cs[-1]) != sc, f"{sc} chunk entries, the blocks imply {int(cs[-1])}")
        t = arr(SUB_TIME, "<i8", sb)
        rows = arr(SUB_ROWS, "<u4", sb)
        count = arr(SUB_COUNT, "<u4", sc)
        eb = np.repeat(np.arange(nblocks), nb)  # block of each block entry
        bmin, bmax = self._b_min[eb], self._b_max[eb]
        bad(bool(np.any(np.mod(t, iv) != 0)) or bool(np.any(t < bmin - np.mod(bmin, iv)))
            or bool(np.any(t > bmax)) or bool(np.any(t > _INT64_MAX - iv + 1)), "interval starts")
        bad(sb > 1 and bool(np.any((t[1:] <= t[:-1]) & (eb[1:] == eb[:-1]))), "interval order")
        has = np.flatnonzero(nb > 0)
        bad(bool(np.any(rows == 0)) or (len(has) > 0 and bool(np.any(
            np.add.reduceat(rows.astype(np.int64), bss[has]) != self._b_rows[has]))), "interval rows")
        # chunk entry -> block entry
        to_block = np.repeat(bss[:-1][chunk_block] - cs[:-1], nc) + np.arange(sc)
        bad(bool(np.any(count > rows[to_block])), "interval counts over rows")
        hc = np.flatnonzero(nc > 0)
        bad(len(hc) > 0 and bool(np.any(np.add.reduceat(count.astype(np.int64), cs[hc]) != self._c_count[hc])),
            "interval counts vs chunk counts")
        self.sub_interval_ns = int(iv)
        self._bs_start, self._sub_time, self._sub_rows, self._sub_count = bss, t, rows, count
        self._cs_start, self._c_nsub = cs, nc
        # decoded when first used (the footer CRC already covers them): opening stays cheap and a
        # segment nobody aggregates holds no decoded copy
        self._sub_raw = (raw(SUB_SUM), raw(SUB_MIN), raw(SUB_MAX), sc, f_off)
        self._sub_cols = None

    def _sub_values(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cols = self._sub_cols
        if cols is None:  # two threads may both decode: the same result, either one kept
            r_sum, r_min, r_max, sc, f_off = self._sub_raw
            cols = self._sub_cols = tuple(self._codec_column(r, sc, f_off) for r in (r_sum, r_min, r_max))
        return cols

    def _codec_column(self, r, n: int, f_off: int) -> np.ndarray:
        """Decode a footer codec column of ``n`` float64 values."""
        what = "malformed sub-block statistics column"
        if len(r) < 4:
            raise self._corrupt(what, f_off)
        (k,) = struct.unpack_from("<I", r)
        off, parts, got = 4, [], 0
        for _ in range(k):
            if off + 4 > len(r):
                raise self._corrupt(what, f_off)
            (length,) = struct.unpack_from("<I", r, off)
            off += 4
            if off + length > len(r):
                raise self._corrupt(what, f_off)
            try:
                v = codecs.decode(r[off:off + length])
            except CorruptionError as e:
                raise self._corrupt(f"{what}: {e}", f_off) from e
            if v.dtype != np.float64 or len(v) > n - got:
                raise self._corrupt(what, f_off)
            parts.append(v)
            got += len(v)
            off += length
        if got != n or off != len(r):
            raise self._corrupt(what, f_off)
        return np.concatenate(parts) if parts else np.zeros(0)

    # ------------------------------------------------------------------ metadata
    @property
    def series_count(self) -> int:
        return len(self.series_ids)

    def _index(self, sid: int) -> int:
        """Position of ``sid`` in ``series_ids``, or -1."""
        last = self._last_index
        if last[0] == sid:
            return last[1]
        if sid < 0 or sid >= 2**64:
            return -1
        i = int(self.series_ids.searchsorted(np.uint64(sid)))
        if not (i < len(self.series_ids) and int(self.series_ids[i]) == sid):
            i = -1
        self._last_index = (sid, i)
        return i

    def may_contain(self, sid: int) -> bool:
        """Bloom-filter test: False means the series is certainly not in this segment."""
        return self._bloom.may_contain(sid)

    def may_contain_many(self, sids: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`may_contain`."""
        return self._bloom.may_contain_many(sids)

    def has_series(self, sid: int) -> bool:
        """Exact membership test (binary search)."""
        return self._index(sid) >= 0

    def series_keys(self) -> dict[int, str]:
        """Series id -> series key, for every series in the segment."""
        ko = self._key_offsets.tolist()
        blob = self._keys_blob
        try:
            return {sid: blob[a:b].decode() for sid, a, b in zip(self.series_ids.tolist(), ko, ko[1:])}
        except UnicodeDecodeError as e:
            raise self._corrupt(f"series key is not UTF-8: {e}", self._footer_offset) from e

    def series_key(self, sid: int) -> str | None:
        """The key of one series, or None if absent."""
        i = self._index(sid)
        if i < 0:
            return None
        return self._keys_blob[int(self._key_offsets[i]):int(self._key_offsets[i + 1])].decode()

    def _chunk_range(self, i: int) -> tuple[int, int, int, int]:
        b0, b1 = int(self._series_block_start[i]), int(self._series_block_start[i + 1])
        return b0, b1, int(self._b_chunk_start[b0]), int(self._b_chunk_start[b1])

    def field_types(self, sid: int | None = None) -> dict[str, FieldType]:
        """Field name -> type of one series, or of the whole segment when ``sid`` is None.

        Across series a name may have several types (different measurements); for ``sid=None``
        the type of the field first written wins.
        """
        if sid is None:
            out: dict[str, FieldType] = {}
            for name, ft in zip(self._field_names, self._field_types):
                out.setdefault(name, ft)
            return out
        i = self._index(sid)
        if i < 0:
            return {}
        _, _, c0, c1 = self._chunk_range(i)
        return {self._field_names[f]: self._field_types[f]
                for f in np.unique(self._c_field[c0:c1]).tolist()}

    def blocks(self, sid: int) -> BlockTable:
        """Block table of one series (empty if absent)."""
        i = self._index(sid)
        if i < 0:
            e = np.zeros(0, dtype=np.int64)
            return BlockTable(e, e, np.zeros(0, dtype=np.uint32))
        b0, b1, _, _ = self._chunk_range(i)
        return BlockTable(self._b_min[b0:b1], self._b_max[b0:b1], self._b_rows[b0:b1])

    def block_span(self, sid: int, start: int, end: int) -> tuple[int, int]:
        """``(lo, hi)``: blocks ``lo..hi-1`` of series ``sid`` are those holding times in
        ``[start, end)`` (a series' blocks are in time order and do not overlap); lo >= hi: none."""
        i = self._index(sid)
        if i < 0:
            return 0, 0
        b0, b1 = int(self._series_block_start[i]), int(self._series_block_start[i + 1])
        return int(self._b_max[b0:b1].searchsorted(start)), int(self._b_min[b0:b1].searchsorted(end))

    def count_blocks(self, sid: int, start: int, end: int) -> int:
        """How many blocks of series ``sid`` hold times in ``[start, end)``."""
        lo, hi = self.block_span(sid, start, end)
        return max(0, hi - lo)

    def _series_fid(self, c0: int, c1: int, field: str) -> int:
        fids = self._fids_by_name.get(field)
        if not fids:
            return -1
        if len(fids) == 1:
            return fids[0]
        present = self._c_field[c0:c1]
        for f in fids:
            if bool(np.any(present == f)):
                return f
        return -1

    def field_stats(self, sid: int, field: str) -> FieldStats:
        """Per-block pre-aggregates of ``field`` for series ``sid``."""
        i = self._index(sid)
        nb = 0
        if i >= 0:
            b0, b1, c0, c1 = self._chunk_range(i)
            nb = b1 - b0
        count = np.zeros(nb, dtype=np.int64)
        total = np.zeros(nb, dtype=np.float64)
        mn = np.full(nb, np.nan)
        mx = np.full(nb, np.nan)
        if nb:
            fid = self._series_fid(c0, c1, field)
            if fid >= 0:
                sel = np.flatnonzero(self._c_field[c0:c1] == fid) + c0
                blk = np.searchsorted(self._b_chunk_start, sel, side="right") - 1 - b0
                count[blk] = self._c_count[sel]
                total[blk] = self._c_sum[sel]
                mn[blk] = self._c_min[sel]
                mx[blk] = self._c_max[sel]
        return FieldStats(count, total, mn, mx)

    def sub_stats(self, sid: int, field: str | None = None) -> SubStats | None:
        """Sub-block statistics of series ``sid`` (and ``field``; None: row counts), or None when
        it has none (every block of the series lies in one statistics interval)."""
        if self.sub_interval_ns is None:
            return None
        i = self._index(sid)
        if i < 0:
            return None
        b0, b1, c0, c1 = self._chunk_range(i)
        bs = self._bs_start[b0:b1 + 1]
        e0, e1 = int(bs[0]), int(bs[-1])
        if e0 == e1:
            return None
        n = e1 - e0
        bs = bs - e0
        block = np.repeat(np.arange(b1 - b0), np.diff(bs))
        rows = self._sub_rows[e0:e1]
        if field is None:
            cnt = rows.astype(np.int64)
            return SubStats(self.sub_interval_ns, bs, block, self._sub_time[e0:e1], rows, cnt, np.zeros(n),
                            np.full(n, np.nan), np.full(n, np.nan))
        count, total = np.zeros(n, np.int64), np.zeros(n)
        mn, mx = np.full(n, np.nan), np.full(n, np.nan)
        fid = self._series_fid(c0, c1, field) if n else -1
        if fid >= 0:
            sel = np.flatnonzero(self._c_field[c0:c1] == fid) + c0
            sel = sel[self._c_nsub[sel] > 0]
            if len(sel):
                sub_sum, sub_min, sub_max = self._sub_values()
                lens = self._c_nsub[sel]
                blk = np.searchsorted(self._b_chunk_start, sel, side="right") - 1
                step = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
                src = np.repeat(self._cs_start[sel], lens) + step
                dst = np.repeat(self._bs_start[blk] - e0, lens) + step
                count[dst] = self._sub_count[src]
                total[dst] = sub_sum[src]
                mn[dst] = sub_min[src]
                mx[dst] = sub_max[src]
        return SubStats(self.sub_interval_ns, bs, block, self._sub_time[e0:e1], rows, count, total, mn, mx)

    # ------------------------------------------------------------------ data
    def _bytes(self, off: int, length: int) -> bytes:
        mm = self._mm
        if mm is None:
            raise ClosedError(f"segment {self.path} is closed")
        try:
            return mm[off:off + length]
        except ValueError as e:  # mmap closed concurrently
            raise ClosedError(f"segment {self.path} is closed") from e

    def _decode(self, off: int, length: int, sid: int, what: str) -> np.ndarray:
        try:
            return codecs.decode(self._bytes(off, length))
        except CorruptionError as e:
            raise self._corrupt(f"{what} chunk of series {sid} at offset {off}: {e}", off) from e

    def read(self, sid: int, fields: Sequence[str] | None = None,
             blocks: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, Column]]:
        """Decode series ``sid``: timestamps and columns, in time order.

        Args:
            sid: series id (a series not in the segment gives empty results).
            fields: field names to decode; None for every field of the series.
            blocks: indices into :meth:`blocks` of this series to decode; None for all.

        A field absent from all selected blocks is omitted from the result. Raises
        :class:`CorruptionError` (path, offset) when a chunk fails its checks.
        """
        parts = self.read_blocks(sid, fields, blocks)
        if not parts:
            return np.zeros(0, dtype=np.int64), {}
        if len(parts) == 1:
            ts, cols = parts[0]  # fresh arrays, as from several blocks
            return _own(ts), {name: Column(ft, _own(v), None if m is None or m.all() else m)
                              for name, (ft, v, m) in cols.items()}
        sizes = [len(t) for t, _ in parts]
        types = {name: ft for _, cols in parts for name, (ft, _, _) in cols.items()}
        out = {}
        for name, ft in types.items():
            c = concat_column([None if name not in cols else Column(*cols[name]) for _, cols in parts], sizes, ft)
            out[name] = Column(ft, c.values, None if c.mask is None or c.mask.all() else c.mask)
        return np.concatenate([t for t, _ in parts]), out

    def read_blocks(self, sid: int, fields: Sequence[str] | None = None,
                    blocks: np.ndarray | None = None) -> list[tuple[np.ndarray, dict]]:
        """Decode blocks of series ``sid`` one by one, without concatenating them: per block
        (in time order), its timestamps and ``{field: (type, values, presence or None)}`` for the
        wanted fields it holds (absent rows hold the type's zero). A field without a value in a
        block is missing from that block's dict. Same checks as :meth:`read`."""
        i = self._index(sid)
        if i < 0:
            return []
        b0, b1, c0, c1 = self._chunk_range(i)
        if blocks is None:
            sel = range(b0, b1)
        else:
            rel = np.asarray(blocks, dtype=np.int64).tolist()
            if any(a >= b for a, b in zip(rel, rel[1:])):  # (callers mostly pass them sorted)
                rel = sorted(set(rel))
            if rel and (rel[0] < 0 or rel[-1] >= b1 - b0):
                raise StorageError(f"block index out of range for series {sid} ({b1 - b0} blocks)")
            sel = [b + b0 for b in rel]
        if fields is None:
            wanted = None
        else:
            wanted = {f for f in (self._series_fid(c0, c1, name) for name in fields) if f >= 0}
        out = []
        tolerant = damage.tolerant()
        for blk in sel:
            if tolerant and (sid, blk - b0) in self.damaged:
                self._skip_damaged(sid, blk, b0, self.damaged[sid, blk - b0], out, False)
                continue
            try:
                out.append(self._read_block(sid, blk, b0, wanted))
            except CorruptionError as e:
                if not tolerant:
                    raise
                first = (sid, blk - b0) not in self.damaged
                self.damaged[sid, blk - b0] = str(e)
                self._skip_damaged(sid, blk, b0, str(e), out, first)
        return out

    def _skip_damaged(self, sid: int, blk: int, b0: int, reason: str, out: list,
                      first: bool) -> None:
        """A damaged block reads as empty (its place in ``out`` is kept) and is reported."""
        damage.note(self, sid, blk - b0, self.series_key(sid), int(self._b_min[blk]),
                    int(self._b_max[blk]), reason, first)
        out.append((np.zeros(0, dtype=np.int64), {}))

    def _read_block(self, sid: int, blk: int, b0: int, wanted) -> tuple[np.ndarray, dict]:
        rows = int(self._b_rows[blk])
        t = self._decode(int(self._b_ts_off[blk]), int(self._b_ts_len[blk]), sid, "timestamps")
        if len(t) != rows or t.dtype != np.int64:
            raise self._corrupt(f"timestamps chunk of series {sid} block {blk - b0} decodes "
                                f"{len(t)} values, expected {rows}", int(self._b_ts_off[blk]))
        cols = {}
        cs, ce = int(self._b_chunk_start[blk]), int(self._b_chunk_start[blk + 1])
        for k, fid in enumerate(self._c_field[cs:ce].tolist()):
            if wanted is not None and fid not in wanted:
                continue
            ft = self._field_types[fid]
            v, m = self._read_chunk(cs + k, sid, blk - b0, ft, rows)
            cols[self._field_names[fid]] = (ft, v, m)
        return t, cols

    def _read_chunk(self, c: int, sid: int, block: int, ft: FieldType,
                    rows: int) -> tuple[np.ndarray, np.ndarray | None]:
        """One field chunk of a block of ``rows`` rows: (values, presence or None when every row
        has a value); absent rows hold the type's zero."""
        off, length, mlen = int(self._c_off[c]), int(self._c_len[c]), int(self._c_mask[c])
        count = int(self._c_count[c])
        m = None
        if mlen:
            nbytes = (rows + 7) // 8
            if mlen != nbytes + 4:
                raise self._corrupt(f"mask of series {sid} block {block} has length {mlen}", off)
            raw = self._bytes(off, mlen)
            if zlib.crc32(raw[:nbytes]) != struct.unpack_from("<I", raw, nbytes)[0]:
                raise self._corrupt(f"presence mask CRC mismatch in series {sid} block {block}", off)
            m = np.unpackbits(np.frombuffer(raw, dtype=np.uint8, count=nbytes), count=rows).view(bool)
            if int(np.count_nonzero(m)) != count:
                raise self._corrupt(f"presence mask of series {sid} block {block} disagrees with count",
                                    off)
        elif count != rows:
            raise self._corrupt(f"chunk of series {sid} block {block} has {count} of {rows} values "
                                "but no mask", off)
        name = self._field_names[int(self._c_field[c])]
        v = self._decode(off + mlen, length - mlen, sid, f"field {name!r}")
        if len(v) != count or v.dtype != ft.dtype:
            raise self._corrupt(f"field chunk of series {sid} block {block} decodes {len(v)} "
                                f"{v.dtype} values, expected {count} {ft.dtype}", off)
        if m is None:
            return v, None
        values = ft.zeros(rows)
        values[m] = v
        return values, m

    def read_all(self) -> Iterator[SeriesData]:
        """Every series, fully decoded, in series-id order (for compaction and tiering)."""
        keys_off = self._key_offsets.tolist()
        for i, sid in enumerate(self.series_ids.tolist()):
            ts, cols = self.read(sid)
            key = self._keys_blob[keys_off[i]:keys_off[i + 1]].decode()
            yield SeriesData(sid, key, ts, cols)

    def close(self) -> None:
        """Stop serving reads. The mapping is released once no index array is referenced."""
        mm, self._mm = self._mm, None
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # index arrays (views of the mapping) are still alive; unmapped with them

    def __enter__(self) -> "SegmentReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"SegmentReader({self.path!r}, series={self.series_count}, "
                f"time=[{self.min_time}, {self.max_time}])")


def _own(a: np.ndarray) -> np.ndarray:
    """``a``, or a writable copy when it is a read-only view (a decoder may return one)."""
    return a if a.flags.writeable else a.copy()



