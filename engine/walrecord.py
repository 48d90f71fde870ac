"""WriteBatch <-> bytes for WAL records (format: docs/format/wal.md, "WAL record payload").

Pure functions. The encoding is columnar: timestamps and numeric columns are written with
``ndarray.tobytes()`` and read back with ``np.frombuffer`` (copied, so decoded arrays are
writable and do not pin the record buffer); strings are one utf-8 blob plus int32 byte lengths.
Python only loops per series and per column, never per value (string columns use C-level
``map`` over the values, which is the cheapest way to touch Python ``str`` objects).

Line numbers and per-line errors are not stored: after replay nobody needs to report a line
error any more. Masked-out entries are written as zero / "" so encoding never depends on
garbage in the unused slots.
"""

from __future__ import annotations

import struct

import numpy as np

from rusts.errors import CorruptionError
from rusts.model import Column, FieldType, SeriesRows, WriteBatch

VERSION = 1

_U32 = struct.Struct("<I")
_HEAD = struct.Struct("<BBI")
_COLHEAD = struct.Struct("<BB")
_NUMERIC = {
    FieldType.FLOAT: np.dtype("<f8"),
    FieldType.INTEGER: np.dtype("<i8"),
    FieldType.UNSIGNED: np.dtype("<u8"),
    FieldType.BOOLEAN: np.dtype("u1"),
}
_TS = np.dtype("<i8")
_LEN = np.dtype("<i4")


def _put_str(out: list, s: str) -> None:
    b = s.encode("utf-8")
    out.append(_U32.pack(len(b)))
    out.append(b)


def _encode_strings(values: np.ndarray, mask: np.ndarray | None) -> list[bytes]:
    if mask is not None:
        values = np.where(mask, values, "")
    encoded = list(map(str.encode, values))
    lengths = np.fromiter(map(len, encoded), dtype=_LEN, count=len(encoded))
    blob = b"".join(encoded)
    return [lengths.tobytes(), _U32.pack(len(blob)), blob]


def encode_batch(batch: WriteBatch) -> bytes:
    """Encode the series of ``batch`` (not its errors or line numbers) as one WAL payload.

    Args:
        batch: the batch to encode.

    Returns:
        The payload bytes.
    """
    out: list = [_HEAD.pack(VERSION, 0, len(batch.series))]
    for s in batch.series:
        _put_str(out, s.measurement)
        out.append(_U32.pack(len(s.tags)))
        for k, v in s.tags:
            _put_str(out, k)
            _put_str(out, v)
        n = len(s.timestamps)
        out.append(_U32.pack(n))
        out.append(np.ascontiguousarray(s.timestamps, dtype=_TS).tobytes())
        out.append(_U32.pack(len(s.columns)))
        for name, col in s.columns.items():
            if len(col.values) != n:
                raise CorruptionError(f"column {name!r} has {len(col.values)} values for {n} rows")
            _put_str(out, name)
            ftype = FieldType(col.type)
            mask = col.mask
            out.append(_COLHEAD.pack(int(ftype), 1 if mask is not None else 0))
            if mask is not None:
                mask = np.asarray(mask, dtype=bool)
                out.append(np.packbits(mask).tobytes())
            if ftype is FieldType.STRING:
                out.extend(_encode_strings(col.values, mask))
            else:
                vals = np.asarray(col.values, dtype=_NUMERIC[ftype])
                if mask is not None:
                    vals = np.where(mask, vals, vals.dtype.type(0))
                out.append(np.ascontiguousarray(vals).tobytes())
    return b"".join(out)


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

    def u32(self) -> int:
        return _U32.unpack(self.take(4))[0]

    def string(self) -> str:
        n = self.u32()
        raw = self.take(n)
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError as e:
            raise CorruptionError(f"WAL record has invalid utf-8 at offset {self.pos - n}",
                                  offset=self.pos - n) from e

    def array(self, dtype: np.dtype, count: int) -> np.ndarray:
        raw = self.take(count * dtype.itemsize)
        return np.frombuffer(raw, dtype=dtype, count=count).astype(dtype.newbyteorder("="))


def _decode_strings(r: _Reader, n: int) -> np.ndarray:
    lengths = r.array(_LEN, n)
    blob_len = r.u32()
    if n and (int(lengths.min()) < 0 or int(lengths.sum(dtype=np.int64)) != blob_len):
        raise CorruptionError("WAL record string lengths do not match the blob", offset=r.pos)
    if not n and blob_len:
        raise CorruptionError("WAL record has a string blob without rows", offset=r.pos)
    blob = bytes(r.take(blob_len))
    ends = np.cumsum(lengths, dtype=np.int64)
    starts = ends - lengths
    out = np.empty(n, dtype=object)
    try:
        text = blob.decode("utf-8")
        if len(text) == len(blob):  # ASCII: byte offsets are char offsets, slice the str
            out[:] = list(map(text.__getitem__, map(slice, starts.tolist(), ends.tolist())))
        else:
            pieces = map(blob.__getitem__, map(slice, starts.tolist(), ends.tolist()))
            out[:] = list(map(bytes.decode, pieces))
    except UnicodeDecodeError as e:
        raise CorruptionError("WAL record has invalid utf-8 in a string column",
                              offset=r.pos) from e
    return out


def decode_batch(buf: bytes | bytearray | memoryview) -> WriteBatch:
    """Decode a payload made by :func:`encode_batch`.

    Args:
        buf: the payload.

    Returns:
        The batch; line numbers are zeros and ``errors`` is empty.

    Raises:
        CorruptionError: the payload is truncated, has trailing bytes or invalid fields.
    """
    r = _Reader(buf)
    try:
        version, flags, n_series = _HEAD.unpack(r.take(_HEAD.size))
    except struct.error as e:  # pragma: no cover - take() already checked the size
        raise CorruptionError("WAL record header truncated", offset=0) from e
    if version != VERSION:
        raise CorruptionError(f"unknown WAL record version {version}", offset=0)
    if flags != 0:
        raise CorruptionError(f"unknown WAL record flags {flags:#x}", offset=1)
    series = []
    for _ in range(n_series):
        measurement = r.string()
        n_tags = r.u32()
        if n_tags * 8 > len(r.buf) - r.pos:
            raise CorruptionError("WAL record tag count exceeds the record", offset=r.pos)
        tags = tuple((r.string(), r.string()) for _ in range(n_tags))
        n = r.u32()
        timestamps = r.array(_TS, n)
        n_cols = r.u32()
        if n_cols * 6 > len(r.buf) - r.pos:
            raise CorruptionError("WAL record column count exceeds the record", offset=r.pos)
        columns: dict[str, Column] = {}
        for _ in range(n_cols):
            name = r.string()
            type_code, cflags = _COLHEAD.unpack(r.take(_COLHEAD.size))
            try:
                ftype = FieldType(type_code)
            except ValueError as e:
                raise CorruptionError(f"WAL record has unknown field type {type_code}",
                                      offset=r.pos - 2) from e
            if cflags & ~1:
                raise CorruptionError(f"WAL record has unknown column flags {cflags:#x}",
                                      offset=r.pos - 1)
            mask = None
            if cflags & 1:
                bits = np.frombuffer(r.take((n + 7) // 8), dtype=np.uint8)
                mask = np.unpackbits(bits, count=n).astype(bool)
            if ftype is FieldType.STRING:
                values = _decode_strings(r, n)
            elif ftype is FieldType.BOOLEAN:
                values = r.array(_NUMERIC[ftype], n).astype(bool)
            else:
                values = r.array(_NUMERIC[ftype], n)
            if name in columns:
                raise CorruptionError(f"WAL record repeats column {name!r}", offset=r.pos)
            columns[name] = Column(ftype, values, mask)
        series.append(SeriesRows(measurement, tags, timestamps, columns,
                                 np.zeros(n, dtype=np.int64)))
    if r.pos != len(r.buf):
        raise CorruptionError(f"WAL record has {len(r.buf) - r.pos} trailing bytes", offset=r.pos)
    return WriteBatch(tuple(series))
