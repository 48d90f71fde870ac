"""Segment footer parsing: the flat index arrays, sub-block statistics and codec columns, read
once when a :class:`~rusts.storage.segment_reader.SegmentReader` opens."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import zstandard

from rusts import codecs
from rusts.storage.bloom import BloomFilter
from rusts.errors import CorruptionError
from rusts.model import FieldType
from rusts.storage.segment_format import (
    BLOCK_CHUNK_START, BLOCK_MAX_TIME, BLOCK_MIN_TIME, BLOCK_ROWS, BLOCK_SUB_START, BLOCK_TS_LENGTH,
    BLOCK_TS_OFFSET, BLOOM, CHUNK_COUNT, CHUNK_FIELD, CHUNK_LENGTH, CHUNK_MASK_LENGTH, CHUNK_MAX,
    CHUNK_MIN, CHUNK_OFFSET, CHUNK_SUM, FIELD_NAMES, FIELD_NAME_OFFSETS, FIELD_TYPES, FOOTER_ZSTD,
    KEYS, KEY_OFFSETS, MAGIC, META, SERIES_BLOCK_START, SERIES_IDS, SUB_COUNT, SUB_MAX, SUB_META,
    SUB_MIN, SUB_ROWS, SUB_SUM, SUB_TIME, VERSION, _ARRAYS, _DIR_ENTRY, _DIR_HEAD, _HEADER,
    _INT64_MAX, _SUB_META, _TRAILER, _footer_crc,
)


class FooterParser:
    """The footer half of :class:`~rusts.storage.segment_reader.SegmentReader` (a mixin)."""

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
        self._sub_layouts: dict = {}  # series id -> sub-statistics layout (SegmentReader.sub_stats)
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
