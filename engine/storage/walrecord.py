"""WriteBatch <-> bytes for WAL records (format: docs/format/wal.md, "WAL record payload").

Pure functions. The layout is columnar *across the whole batch*, not per series: every
timestamp of every series is in one int64 array, every FLOAT value of every column in one
float64 array, and so on; names (measurements, tag keys/values, column names) are interned
into one string table. A batch of 5,000 single-row series therefore costs a handful of
``tobytes``/``frombuffer`` calls plus one small Python step per series and per column (which
the model's one-object-per-column shape needs anyway), never one per value. String values use
C-level ``map`` over the values (the cheapest way to touch Python ``str`` objects).

Decoded arrays are views into a few per-batch arrays copied out of the payload: writable, and
they do not pin the record buffer.

Line numbers and per-line errors are not stored: after replay nobody reports a line error any
more. Masked-out entries are written as zero / "" so encoding never depends on garbage in the
unused slots.
"""

from __future__ import annotations

import struct
from itertools import chain

import numpy as np

from rusts.codecs._batch import few_string_codes
from rusts.errors import CorruptionError
from rusts.model import Column, FieldType, SeriesRows, WriteBatch

VERSION = 1

_HEAD = struct.Struct("<BBIIII")  # version, flags, n_strings, n_series, n_columns, n_tags
_U64 = struct.Struct("<Q")
_U32A = np.dtype("<u4")
_I32A = np.dtype("<i4")
_VALUE_DTYPES = {
    FieldType.FLOAT: np.dtype("<f8"),
    FieldType.INTEGER: np.dtype("<i8"),
    FieldType.UNSIGNED: np.dtype("<u8"),
    FieldType.BOOLEAN: np.dtype("u1"),
}
# order of the value sections in the payload
_SECTIONS = (FieldType.FLOAT, FieldType.INTEGER, FieldType.UNSIGNED, FieldType.BOOLEAN)
_STRING = FieldType.STRING
_N_TYPES = len(FieldType)
_TYPE_CODE = {**{t: int(t) for t in FieldType}, **{int(t): int(t) for t in FieldType}}


def _strings_section(values: list[str]) -> list[bytes]:
    """i32 byte lengths + u64 blob length + utf-8 blob."""
    encoded = list(map(str.encode, values))
    lengths = np.fromiter(map(len, encoded), dtype=_I32A, count=len(encoded))
    blob = b"".join(encoded)
    return [lengths.tobytes(), _U64.pack(len(blob)), blob]


_FEW = 8  # distinct values per string array coded by comparison passes (flags, names, codes)


def _value_strings_section(arrays: list[np.ndarray]) -> list[bytes]:
    """:func:`_strings_section` of the concatenated object arrays (the same bytes). Arrays of
    a few distinct values (the usual string fields: flags, names) are coded by comparison
    passes and their UTF-8 blob is assembled by numpy scatters, one per byte position, instead
    of one ``str.encode`` per value."""
    total = sum(len(a) for a in arrays)
    if total < 1024:
        return _strings_section(np.concatenate(arrays).tolist() if arrays else [])
    parts, enc = [], []
    for a in arrays:
        got = few_string_codes(a, _FEW)
        if got is None:
            return _strings_section(np.concatenate(arrays).tolist())
        codes, ulist = got
        parts.append(codes.astype(np.int32) + len(enc))
        enc.extend(x.encode() for x in ulist)  # raises on lone surrogates, as str.encode does
    lens = np.fromiter(map(len, enc), np.int64, len(enc))
    width = int(lens.max(initial=0))
    if width > 64:
        return _strings_section(np.concatenate(arrays).tolist())
    codes = np.concatenate(parts)
    lengths = lens[codes]
    ends = np.cumsum(lengths)
    blob = np.empty(int(ends[-1]), np.uint8)
    table = np.zeros((len(enc), max(width, 1)), np.uint8)
    for c, e in enumerate(enc):
        table[c, :len(e)] = np.frombuffer(e, np.uint8)
    starts = ends - lengths
    sel = np.flatnonzero(lengths)
    for j in range(width):  # byte j of every value at least j + 1 bytes long
        if j:
            sel = sel[lengths[sel] > j]
        blob[starts[sel] + j] = table[codes[sel], j]
    return [lengths.astype(_I32A).tobytes(), _U64.pack(len(blob)), blob.tobytes()]


def encode_batch(batch: WriteBatch) -> bytes:
    """Encode the series of ``batch`` (not its errors or line numbers) as one WAL payload.

    Args:
        batch: the batch to encode.

    Returns:
        The payload bytes.

    Raises:
        CorruptionError: a column's length differs from its series' row count.
    """
    if batch.has_frames:
        return _encode_frames(batch.frames)
    series = batch.series
    table: dict[str, int] = {}
    intern = table.setdefault
    meas = [intern(s.measurement, len(table)) for s in series]
    ntags = [len(s.tags) for s in series]
    tags = [intern(x, len(table)) for s in series for kv in s.tags for x in kv]
    nrows = np.fromiter(map(len, (s.timestamps for s in series)), np.int64, len(series))
    ncols = np.fromiter(map(len, (s.columns for s in series)), np.int64, len(series))
    items = [it for s in series for it in s.columns.items()]
    col_name = [intern(k, len(table)) for k, _ in items]
    cols = [c for _, c in items]
    vals = [c.values for c in cols]
    col_type = np.array(list(map(_TYPE_CODE.__getitem__, [c.type for c in cols])), dtype=np.uint8)
    col_rows = np.repeat(nrows, ncols)
    if not np.array_equal(np.fromiter(map(len, vals), np.int64, len(vals)), col_rows):
        raise CorruptionError("a column's length differs from its series' row count")
    col_mask = np.array([c.mask is not None for c in cols], dtype=np.uint8)
    masks = []
    for i in np.flatnonzero(col_mask).tolist():
        mask = np.asarray(cols[i].mask, dtype=bool)
        masks.append(mask)
        vals[i] = np.where(mask, vals[i], "" if col_type[i] == _STRING else 0)

    out: list = [_HEAD.pack(VERSION, 0, len(table), len(series), len(cols), len(tags) // 2)]
    out.extend(_strings_section(list(table)))
    for ints in (meas, ntags, tags, nrows, ncols, col_name):
        out.append(np.asarray(ints, dtype=_U32A).tobytes())
    out.append(col_type.tobytes())
    out.append(col_mask.tobytes())
    out.append(_concat([s.timestamps for s in series], np.dtype("<i8")).tobytes())
    out.append(np.packbits(_concat(masks, np.dtype(bool))).tobytes())
    order = np.argsort(col_type, kind="stable")
    bounds = np.searchsorted(col_type[order], np.arange(_N_TYPES + 1)).tolist()
    order_l = order.tolist()
    by_type = [[vals[i] for i in order_l[bounds[t]:bounds[t + 1]]] for t in range(_N_TYPES)]
    for ftype in _SECTIONS:
        out.append(_concat(by_type[ftype], _VALUE_DTYPES[ftype]).tobytes())
    strings = by_type[_STRING]
    out.extend(_value_strings_section(strings))
    return b"".join(out)


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(starts[i], starts[i] + lengths[i])``."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    step = np.ones(total, dtype=np.int64)
    nz = lengths > 0
    s, l, e = starts[nz], lengths[nz], ends[nz]
    step[0] = s[0]
    # at the first element of range i (i > 0): jump from the last element of range i-1
    step[(e - l)[1:]] = s[1:] - (s[:-1] + l[:-1] - 1)
    return np.cumsum(step)


def _encode_frames(frames) -> bytes:
    """:func:`encode_batch` of the columnar form: the same payload layout (series-major column
    lists and value sections), built with array operations per frame, not steps per series."""
    table: dict[str, int] = {}
    intern = table.setdefault
    meas_l, ntags_l, tags_l, nrows_l, ncols_l, names_l, types_l, maskf_l = [], [], [], [], [], [], [], []
    ts_l, mask_l = [], []
    typed: list[list] = [[] for _ in range(_N_TYPES)]
    for f in frames:
        ns = len(f.keys)
        if ns == 0:
            continue
        counts = np.diff(f.starts)
        cols = list(f.columns.items())
        nc = len(cols)
        ms = f.measurements
        for m in (dict.fromkeys(ms) if ns > 1 else ms):
            intern(m, len(table))
        meas_l.append(np.fromiter(map(table.__getitem__, ms), np.int64, ns))
        ntags_l.append(np.fromiter(map(len, f.tags), np.int64, ns))
        flat = list(chain.from_iterable(chain.from_iterable(f.tags)))
        for x in dict.fromkeys(flat):
            intern(x, len(table))
        tags_l.append(np.fromiter(map(table.__getitem__, flat), np.int64, len(flat)))
        nrows_l.append(counts)
        ncols_l.append(np.full(ns, nc, dtype=np.int64))
        ids = np.array([intern(n, len(table)) for n, _ in cols], dtype=np.int64)
        ctypes = np.array([_TYPE_CODE[c.type] for _, c in cols], dtype=np.uint8)
        cmask = np.array([c.mask is not None for _, c in cols], dtype=np.uint8)
        names_l.append(np.tile(ids, ns))
        types_l.append(np.tile(ctypes, ns))
        maskf_l.append(np.tile(cmask, ns))
        ts_l.append(f.timestamps)
        n = len(f.timestamps)
        one_row = ns == n
        # series-major order of (series, column) row ranges over the columns stacked end to end
        for t in range(_N_TYPES):
            sel = [j for j in range(nc) if ctypes[j] == t]
            if not sel:
                continue
            vals = []
            for j in sel:
                c = cols[j][1]
                v = c.values
                if c.mask is not None:
                    v = np.where(c.mask, v, "" if t == _STRING else 0)
                    if t == _STRING:
                        v = v.astype(object)
                vals.append(v)
            if len(sel) == 1:
                typed[t].append(vals[0])
                continue
            stacked = np.concatenate(vals)
            if one_row:
                typed[t].append(stacked.reshape(len(sel), n).T.ravel())
                continue
            k = np.arange(len(sel), dtype=np.int64)
            st = (f.starts[:-1, None] + k[None, :] * n).ravel()
            typed[t].append(stacked[_ranges(st, np.repeat(counts, len(sel)))])
        mcols = [j for j in range(nc) if cmask[j]]
        if mcols:
            stacked = np.concatenate([cols[j][1].mask for j in mcols])
            if one_row:
                mask_l.append(stacked.reshape(len(mcols), n).T.ravel())
            else:
                k = np.arange(len(mcols), dtype=np.int64)
                st = (f.starts[:-1, None] + k[None, :] * n).ravel()
                mask_l.append(stacked[_ranges(st, np.repeat(counts, len(mcols)))])

    def cat(parts, dtype):
        return np.concatenate(parts).astype(dtype, copy=False) if parts else np.empty(0, dtype)

    meas = cat(meas_l, _U32A)
    tags = cat(tags_l, _U32A)
    n_cols = sum(len(x) for x in names_l)
    out: list = [_HEAD.pack(VERSION, 0, len(table), len(meas), n_cols, len(tags) // 2)]
    out.extend(_strings_section(list(table)))
    for part in (meas, cat(ntags_l, _U32A), tags, cat(nrows_l, _U32A), cat(ncols_l, _U32A),
                 cat(names_l, _U32A)):
        out.append(part.tobytes())
    out.append(cat(types_l, np.dtype(np.uint8)).tobytes())
    out.append(cat(maskf_l, np.dtype(np.uint8)).tobytes())
    out.append(cat(ts_l, np.dtype("<i8")).tobytes())
    out.append(np.packbits(cat(mask_l, np.dtype(bool))).tobytes())
    for ftype in _SECTIONS:
        out.append(_concat(typed[ftype], _VALUE_DTYPES[ftype]).tobytes())
    strings = typed[_STRING]
    out.extend(_value_strings_section(strings))
    return b"".join(out)


def _concat(arrays: list, dtype: np.dtype) -> np.ndarray:
    if not arrays:
        return np.empty(0, dtype=dtype)
    return np.concatenate(arrays).astype(dtype, copy=False)


class _Reader:
    """Bounds-checked cursor over a payload; every short read is a CorruptionError."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf) -> None:
        self.buf = memoryview(buf).cast("B")
        self.pos = 0

    def take(self, n: int) -> memoryview:
        end = self.pos + n
        if n < 0 or end > len(self.buf):
            raise CorruptionError(f"WAL record truncated: need {n} bytes at offset {self.pos}",
                                  offset=self.pos)
        view = self.buf[self.pos:end]
        self.pos = end
        return view

    def array(self, dtype: np.dtype, count: int) -> np.ndarray:
        """``count`` items as a writable native-endian copy."""
        raw = self.take(count * dtype.itemsize)
        return np.frombuffer(raw, dtype=dtype, count=count).astype(dtype.newbyteorder("="))

    def strings(self, count: int) -> list[str]:
        lengths = self.array(_I32A, count).astype(np.int64)
        blob_len = _U64.unpack(self.take(8))[0]
        if (count and int(lengths.min()) < 0) or int(lengths.sum()) != blob_len:
            raise CorruptionError("WAL record string lengths do not match the blob",
                                  offset=self.pos)
        blob = bytes(self.take(blob_len))
        ends = np.cumsum(lengths)
        slices = list(map(slice, (ends - lengths).tolist(), ends.tolist()))
        try:
            text = blob.decode("utf-8")
            if len(text) == len(blob):  # ASCII: byte offsets are char offsets
                return list(map(text.__getitem__, slices))
            return list(map(bytes.decode, map(blob.__getitem__, slices)))
        except UnicodeDecodeError as e:
            raise CorruptionError("WAL record has invalid utf-8", offset=self.pos) from e


def _starts_within(groups: np.ndarray, sizes: np.ndarray, n_groups: int) -> np.ndarray:
    """For each item, the sum of ``sizes`` of earlier items in the same group."""
    starts = np.zeros(len(sizes), dtype=np.int64)
    for g in range(n_groups):
        sel = groups == g
        if sel.any():
            sz = sizes[sel]
            starts[sel] = np.cumsum(sz) - sz
    return starts


def decode_batch(buf: bytes | bytearray | memoryview) -> WriteBatch:
    """Decode a payload made by :func:`encode_batch`.

    Args:
        buf: the payload.

    Returns:
        The batch; line numbers are zeros and ``errors`` is empty.

    Raises:
        CorruptionError: the payload is truncated, has trailing bytes or invalid fields.
    """
    if len(buf) and memoryview(buf).cast("B")[0] == 2:  # a cluster shard's message, stored as it is
        from rusts.cluster.wire import decode  # (docs/cluster.md, "Message encoding")

        return decode(buf)
    r = _Reader(buf)
    version, flags, n_strings, n_series, n_cols, n_tags = _HEAD.unpack(r.take(_HEAD.size))
    if version != VERSION:
        raise CorruptionError(f"unknown WAL record version {version}", offset=0)
    if flags != 0:
        raise CorruptionError(f"unknown WAL record flags {flags:#x}", offset=1)
    strs = r.strings(n_strings)
    meas = r.array(_U32A, n_series)
    ntags = r.array(_U32A, n_series)
    tags = r.array(_U32A, 2 * n_tags)
    nrows = r.array(_U32A, n_series).astype(np.int64)
    ncols = r.array(_U32A, n_series).astype(np.int64)
    col_name = r.array(_U32A, n_cols)
    col_type = r.array(np.dtype(np.uint8), n_cols)
    col_mask = r.array(np.dtype(np.uint8), n_cols)
    if int(ntags.sum(dtype=np.int64)) != n_tags or int(ncols.sum()) != n_cols:
        raise CorruptionError("WAL record tag/column counts are inconsistent", offset=r.pos)
    for idx in (meas, tags, col_name):
        if len(idx) and int(idx.max()) >= n_strings:
            raise CorruptionError("WAL record string index out of range", offset=r.pos)
    if n_cols and (int(col_type.max()) >= _N_TYPES or int(col_mask.max()) > 1):
        raise CorruptionError("WAL record has an unknown field type or column flag",
                              offset=r.pos)

    total_rows = int(nrows.sum())
    timestamps = r.array(np.dtype("<i8"), total_rows)
    col_rows = np.repeat(nrows, ncols)
    masked = col_mask.astype(bool)
    mask_bits = int(col_rows[masked].sum())
    mask_all = np.unpackbits(np.frombuffer(r.take((mask_bits + 7) // 8), dtype=np.uint8),
                             count=mask_bits).astype(bool)
    typed: list = [None] * _N_TYPES
    for ftype in _SECTIONS:
        count = int(col_rows[col_type == ftype].sum())
        arr = r.array(_VALUE_DTYPES[ftype], count)
        typed[ftype] = arr.astype(bool) if ftype is FieldType.BOOLEAN else arr
    n_str_values = int(col_rows[col_type == _STRING].sum())
    str_values = np.empty(n_str_values, dtype=object)
    str_values[:] = r.strings(n_str_values)
    typed[_STRING] = str_values
    if r.pos != len(r.buf):
        raise CorruptionError(f"WAL record has {len(r.buf) - r.pos} trailing bytes", offset=r.pos)

    # Where each column's values start in its type's array, and its mask in mask_all.
    val_start = _starts_within(col_type, col_rows, _N_TYPES).tolist()
    mask_start = _starts_within(masked.astype(np.int8), col_rows, 2).tolist()
    rows_l = col_rows.tolist()
    arrays = [typed[t] for t in col_type.tolist()]
    values = [a[v0:v0 + n] for a, v0, n in zip(arrays, val_start, rows_l)]
    masks = [mask_all[m0:m0 + n] if f else None
             for f, m0, n in zip(masked.tolist(), mask_start, rows_l)]
    kinds = [FieldType(t) for t in range(_N_TYPES)]
    columns = list(map(Column, [kinds[t] for t in col_type.tolist()], values, masks))
    names = [strs[i] for i in col_name.tolist()]
    row_start = (np.cumsum(nrows) - nrows).tolist()
    col_end = np.cumsum(ncols).tolist()
    line_numbers = np.zeros(total_rows, dtype=np.int64)
    tags_l = [strs[i] for i in tags.tolist()]
    tag_end = (2 * np.cumsum(ntags.astype(np.int64))).tolist()
    series = []
    c = t = 0
    for m, s0, n, c1, t1 in zip(meas.tolist(), row_start, nrows.tolist(), col_end, tag_end):
        cols = dict(zip(names[c:c1], columns[c:c1]))
        if len(cols) != c1 - c:
            raise CorruptionError("WAL record repeats a column name in one series", offset=0)
        tag_pairs = tuple(zip(tags_l[t:t1:2], tags_l[t + 1:t1:2]))
        series.append(SeriesRows(strs[m], tag_pairs, timestamps[s0:s0 + n], cols,
                                 line_numbers[s0:s0 + n]))
        c, t = c1, t1
    return WriteBatch(tuple(series))
