"""Segment writer: series data cut into blocks with pre-aggregates and sub-block statistics,
encoded and written atomically (``<path>.tmp``, fsync, rename, fsync of the directory)."""

from __future__ import annotations

import json
import math
import os
import struct
import zlib
from collections.abc import Sequence

import numpy as np

from rusts import codecs
from rusts.storage.bloom import BloomFilter
from rusts.errors import StorageError
from rusts.model import FieldType
from rusts.storage.fsutil import fsync_dir as _fsync_dir
from rusts.storage.segment_batch import PreBlocks, pre_encode
from rusts.storage.segment_format import (
    BLOCK_CHUNK_START, BLOCK_MAX_TIME, BLOCK_MIN_TIME, BLOCK_ROWS, BLOCK_SUB_START, BLOCK_TS_LENGTH,
    BLOCK_TS_OFFSET, BLOOM, CHUNK_COUNT, CHUNK_FIELD, CHUNK_LENGTH, CHUNK_MASK_LENGTH, CHUNK_MAX,
    CHUNK_MIN, CHUNK_OFFSET, CHUNK_SUM, FIELD_NAMES, FIELD_NAME_OFFSETS, FIELD_TYPES, FOOTER_ZSTD,
    KEYS, KEY_OFFSETS, MAGIC, META, SERIES_BLOCK_START, SERIES_IDS, SUB_COUNT, SUB_MAX, SUB_META,
    SUB_MIN, SUB_ROWS, SUB_SUM, SUB_TIME, SegmentInfo, SeriesData, VERSION, _DEC_POW, _DIR_ENTRY,
    _DIR_HEAD, _HEADER, _INT64_MAX, _SUB_COLUMN_BLOCK, _SUB_META, _TRAILER, _U32_MAX, _footer_crc,
    _zstd_footer,
)

# ---------------------------------------------------------------------------------------- writer
# a series written on its own (write_segment without ``pre``: the in-thread flush of a small
# table, compaction's streamed series) is batch-encoded from this many rows: one batch call per
# column costs about as much as a few blocks encoded one by one, so series of a few blocks
# (thousands of small series) are cheaper per block; write_segments batches across series
_BATCH_MIN_ROWS = 4096
def _stats(ft: FieldType, v: np.ndarray) -> tuple[float, float, float]:
    if ft == FieldType.FLOAT:  # (the caller holds np.errstate: inf + -inf -> nan, as on decode)
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

    def encode(self, values: np.ndarray, timestamps: bool = False, hint: codecs.Hint | None = None) -> bytes:
        return codecs.encode(values, timestamps=timestamps, compression=self.compression, tier=self.tier,
                             hint=hint)

    def add_series(self, s: SeriesData, block_rows: int, block_time_ns: int | None = None,
                   pre: PreBlocks | None = None) -> None:
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
            cols.append((fid, ft, values, mask, codecs.Hint(), name))
        cols.sort(key=lambda c: c[0])
        self.sids.append(int(s.series_id))
        self.keys.append(s.key.encode())
        # one codec hint per column of the series: a block tries its column's previous codec first
        ts_hint = codecs.Hint()
        if pre is None and n >= _BATCH_MIN_ROWS:  # one series (streamed writes): its columns batched
            pre = pre_encode([s], block_rows=block_rows, block_time_ns=block_time_ns,
                             compression=self.compression, tier=self.tier)[0]
        if pre is not None:
            edges = pre.bounds.tolist()
            bounds = list(zip(edges[:-1], edges[1:]))
            pre_ts = pre.ts
            pre_cols = [pre.fields.get(c[5]) for c in cols]
        else:
            bounds = _block_bounds(ts, block_rows, block_time_ns)
            pre_ts = [None] * len(bounds)
            pre_cols = [None] * len(cols)
        with np.errstate(all="ignore"):  # one context per series, not per chunk (it costs µs)
            self._add_blocks(ts, bounds, pre_ts, pre_cols, cols, ts_hint)
        self.series_block_start.append(len(self.b_rows))

    def _add_blocks(self, ts, bounds, pre_ts, pre_cols, cols, ts_hint) -> None:
        for bi, (a, b) in enumerate(bounds):
            rows = b - a
            block_ts = ts[a:b]
            data = pre_ts[bi]
            if data is None:
                data = self.encode(block_ts, True, ts_hint)
            self.b_ts_off.append(self.put(data))
            self.b_ts_len.append(len(data))
            self.b_min.append(int(block_ts[0]))
            self.b_max.append(int(block_ts[-1]))
            self.b_rows.append(rows)
            sub = self._block_subs(block_ts)
            for ci, (fid, ft, values, mask, hint, _) in enumerate(cols):
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
                got = pre_cols[ci]
                data = got[bi] if got is not None else None
                if data is None:
                    data = self.encode(v, hint=hint)
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
                  stats_interval_ns: int | None = None, pre: list | None = None) -> SegmentInfo:
    """Write ``series`` (sorted by strictly increasing series id) as one segment file, atomically.

    Blocks hold at most ``block_rows`` rows and, with ``block_time_ns``, never cross a multiple of
    it (time-aligned blocks: see :func:`_block_bounds`). With ``stats_interval_ns``, a block whose
    rows span several multiples of it also gets per-interval statistics in the footer (sub-block
    statistics), so queries bucketed by that interval need not decode it.

    ``pre``: the series' blocks already encoded (:func:`rusts.storage.segment_batch.pre_encode`
    over these series, with the same options), as :func:`write_segments` passes them.

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
            for i, s in enumerate(series):
                if prev is not None and int(s.series_id) <= prev:
                    raise StorageError("write_segment: series must be sorted by strictly increasing id")
                prev = int(s.series_id)
                w.add_series(s, block_rows, block_time_ns, None if pre is None else pre[i])
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


def write_segments(items: Sequence[tuple[str | os.PathLike, Sequence[SeriesData]]], *, compression: str = "default",
                   tier: str = "hot", block_rows: int = 4096, block_time_ns: int | None = None,
                   stats_interval_ns: int | None = None) -> list[SegmentInfo]:
    """:func:`write_segment` for each ``(path, series)``, the blocks of every column encoded
    across all of them at once first (a flush's partitions: a day of hourly blocks each)."""
    items = [(p, list(series)) for p, series in items]
    flat = [s for _, series in items for s in series]
    pre = pre_encode(flat, block_rows=max(1, block_rows), block_time_ns=block_time_ns,
                     compression=compression, tier=tier) if tier == "hot" else None
    out, pos = [], 0
    for path, series in items:
        part = None if pre is None else pre[pos:pos + len(series)]
        pos += len(series)
        out.append(write_segment(path, series, compression=compression, tier=tier, block_rows=block_rows,
                                 block_time_ns=block_time_ns, stats_interval_ns=stats_interval_ns, pre=part))
    return out
