"""Segment reader: series, blocks, statistics and decoded chunks of one segment file (damage
contained to the blocks it touches)."""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from collections.abc import Iterator, Sequence

import numpy as np

from rusts import codecs
from rusts.storage import damage
from rusts.errors import ClosedError, CorruptionError, StorageError
from rusts.model import Column, FieldType
from rusts.query.rowset import concat_column
from rusts.storage.segment_footer import (
    FooterParser,
)
from rusts.storage.segment_format import (
    BlockTable, FieldStats, SeriesData, SubStats, _MIN_SIZE,
)

# ---------------------------------------------------------------------------------------- reader
class SegmentReader(FooterParser):
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

    def _sub_layout(self, sid: int):
        """What :meth:`sub_stats` shares between the fields of series ``sid`` (False: none)."""
        i = self._index(sid)
        if i < 0:
            return False
        b0, b1, c0, c1 = self._chunk_range(i)
        bs = self._bs_start[b0:b1 + 1]
        e0, e1 = int(bs[0]), int(bs[-1])
        if e0 == e1:
            return False
        bs = bs - e0
        block = np.repeat(np.arange(b1 - b0), np.diff(bs))
        return c0, c1, e0, e1, bs, block, self._sub_rows[e0:e1]

    def sub_stats(self, sid: int, field: str | None = None) -> SubStats | None:
        """Sub-block statistics of series ``sid`` (and ``field``; None: row counts), or None when
        it has none (every block of the series lies in one statistics interval)."""
        many = self.sub_stats_many(sid, (field,))
        return None if many is None else many[field]

    def sub_stats_many(self, sid: int, fields) -> dict | None:
        """:meth:`sub_stats` of several fields of series ``sid`` at once: ``{field: SubStats}``
        (one pass over the series' chunks instead of one per field), or None when it has none."""
        if self.sub_interval_ns is None:
            return None
        layout = self._sub_layouts.get(sid)
        if layout is None:
            layout = self._sub_layout(sid)
            if len(self._sub_layouts) >= 4096:  # a query asks once per field: keep the last ones
                self._sub_layouts.clear()
            self._sub_layouts[sid] = layout
        if layout is False:
            return None
        c0, c1, e0, e1, bs, block, rows = layout
        n = e1 - e0
        times = self._sub_time[e0:e1]
        named = list(dict.fromkeys(f for f in fields if f is not None))
        k = len(named)
        count, total = np.zeros((k, n), np.int64), np.zeros((k, n))
        mn, mx = np.full((k, n), np.nan), np.full((k, n), np.nan)
        fids = [self._series_fid(c0, c1, f) for f in named]
        if any(f >= 0 for f in fids):
            cf = self._c_field[c0:c1]
            row_of = np.full(int(max(max(fids), int(cf.max(initial=0)))) + 1, -1, np.int64)
            for j, f in enumerate(fids):
                if f >= 0:
                    row_of[f] = j
            rowk = row_of[cf]
            sel = np.flatnonzero(rowk >= 0)
            sel = sel[self._c_nsub[sel + c0] > 0]
            if len(sel):
                rk = rowk[sel]
                sel = sel + c0
                sub_sum, sub_min, sub_max = self._sub_values()
                lens = self._c_nsub[sel]
                blk = np.searchsorted(self._b_chunk_start, sel, side="right") - 1
                step = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
                src = np.repeat(self._cs_start[sel], lens) + step
                dst = (np.repeat(rk, lens), np.repeat(self._bs_start[blk] - e0, lens) + step)
                count[dst] = self._sub_count[src]
                total[dst] = sub_sum[src]
                mn[dst] = sub_min[src]
                mx[dst] = sub_max[src]
        out = {f: SubStats(self.sub_interval_ns, bs, block, times, rows, count[j], total[j], mn[j], mx[j])
               for j, f in enumerate(named)}
        if None in fields:
            out[None] = SubStats(self.sub_interval_ns, bs, block, times, rows, rows.astype(np.int64), np.zeros(n),
                                 np.full(n, np.nan), np.full(n, np.nan))
        return out

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
