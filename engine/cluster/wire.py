"""Shard messages <-> write batches: the encoding of a shard stream's rows messages.

Format (docs/cluster.md, "Message encoding"): byte 0 is the version.

* **2** (this module, written since issue 17 round 3): frame-major, so a message decodes
  straight into the :class:`rusts.model.Frame` objects the write path takes, with one
  ``frombuffer`` per column and no object per series and column::

      u8 version = 2 | u8 flags = 0 | u16 zero | u32 header length H
      header: H bytes of JSON (orjson), {"f": [frame, ...]}, frame =
          [measurement (a string when all its series share it, else one per series),
           tags (per series a flat list k1, v1, k2, v2, ...), series keys (per series),
           rows per series, columns ([name, type code, 1 if it has a mask else 0], ...),
           string values (per STRING column, in column order, one list of its rows' values)]
      zero bytes up to a multiple of 8
      per frame: timestamps (int64), then per non-STRING column its values (float64, int64,
      uint64, or one byte 0/1 per BOOLEAN), then per masked column its mask (one byte 0/1 per
      row); every array little-endian, rows in the frame's order, padded with zero bytes to a
      multiple of 8; nothing after the last frame.

  Masked-out entries hold 0 / "" (never garbage). The decoder copies the binary part once
  (the arrays are writable views of that copy) and checks every count, type code and length:
  anything inconsistent is a :class:`~rusts.errors.CorruptionError`.
* **1**: the WAL record payload (:mod:`rusts.storage.walrecord`; its header starts with the
  same version byte), which every node wrote before; still decoded, so streams written by older
  nodes replay.
"""

from __future__ import annotations

import struct
from itertools import chain

import numpy as np
import orjson

from rusts.errors import CorruptionError
from rusts.model import Column, FieldType, Frame, WriteBatch

VERSION = 2
_HEAD = struct.Struct("<BBHI")  # version, flags, zero, header length
_STRING = int(FieldType.STRING)
_BOOLEAN = int(FieldType.BOOLEAN)
_WIRE_DTYPES = {
    int(FieldType.FLOAT): np.dtype("<f8"),
    int(FieldType.INTEGER): np.dtype("<i8"),
    int(FieldType.UNSIGNED): np.dtype("<u8"),
    _BOOLEAN: np.dtype("u1"),
}
_U1 = np.dtype("u1")
_I8 = np.dtype("<i8")
_PAD = bytes(8)
_KINDS = {int(t): t for t in FieldType}


def _pad(n: int) -> int:
    return -n & 7


def encode(batch: WriteBatch) -> bytes:
    """``batch``'s rows (not its errors or line numbers) as one version-2 message.

    Raises:
        CorruptionError: a column's length differs from its frame's row count.
    """
    frames_h: list = []
    arrays: list[np.ndarray] = []
    for f in batch.frames:
        n = len(f.timestamps)
        if n == 0 or not len(f.keys):
            continue
        m0 = f.layout()[0]
        cols, strs, masks = [], [], []
        arrays.append(np.ascontiguousarray(f.timestamps, dtype=_I8))
        for name, c in f.columns.items():
            t = int(c.type)
            if len(c.values) != n or (c.mask is not None and len(c.mask) != n):
                raise CorruptionError(f"column {name!r} has {len(c.values)} values for {n} rows")
            cols.append([name, t, 0 if c.mask is None else 1])
            v = c.values
            if c.mask is not None:
                mask = np.asarray(c.mask, dtype=bool)
                masks.append(mask.astype(_U1))
                v = np.where(mask, v, "" if t == _STRING else 0)
            if t == _STRING:
                strs.append(np.asarray(v, dtype=object).tolist())
            else:
                arrays.append(np.ascontiguousarray(v, dtype=_WIRE_DTYPES[t]))
        arrays.extend(masks)
        frames_h.append([m0 if m0 is not None else list(f.measurements),
                         [list(chain.from_iterable(t)) for t in f.tags], list(f.keys),
                         np.diff(f.starts).tolist(), cols, strs])
    header = orjson.dumps({"f": frames_h})
    out = [_HEAD.pack(VERSION, 0, 0, len(header)), header, _PAD[:_pad(len(header))]]
    for a in arrays:
        b = a.tobytes()
        out.append(b)
        out.append(_PAD[:_pad(len(b))])
    return b"".join(out)


def is_v2(data) -> bool:
    """Whether ``data`` is a version-2 message (version 1 is the WAL record payload)."""
    return len(data) > 0 and data[0] == VERSION


def concat(messages: list) -> bytes:
    """Version-2 messages (already decoded, so well formed) as one version-2 message holding
    their frames in order: the headers' frame lists joined, the binary parts appended (each is
    a multiple of 8 bytes). Decoding it gives the messages' frames, one after the other."""
    frames_h: list = []
    bodies = []
    for m in messages:
        mv = memoryview(m).cast("B")
        hlen = _HEAD.unpack(mv[:_HEAD.size])[3]
        end = _HEAD.size + hlen
        frames_h.extend(orjson.loads(mv[_HEAD.size:end])["f"])
        bodies.append(mv[end + _pad(hlen):])
    header = orjson.dumps({"f": frames_h})
    return b"".join([_HEAD.pack(VERSION, 0, 0, len(header)), header, _PAD[:_pad(len(header))], *bodies])


def decode(buf: bytes | bytearray | memoryview) -> WriteBatch:
    """A rows message of either version as a write batch (line numbers zero, no errors).

    Raises:
        CorruptionError: an unknown version, or a truncated or inconsistent message.
    """
    mv = memoryview(buf).cast("B")
    if not len(mv):
        raise CorruptionError("empty shard message", offset=0)
    if mv[0] == 1:
        from rusts.storage.walrecord import decode_batch

        return decode_batch(mv)
    if mv[0] != VERSION:
        raise CorruptionError(f"unknown shard message version {mv[0]}", offset=0)
    if len(mv) < _HEAD.size:
        raise CorruptionError("shard message truncated in its header", offset=0)
    _, flags, zero, hlen = _HEAD.unpack(mv[:_HEAD.size])
    if flags or zero:
        raise CorruptionError(f"unknown shard message flags {flags:#x}", offset=1)
    pos = _HEAD.size + hlen
    if pos > len(mv):
        raise CorruptionError("shard message truncated in its header", offset=_HEAD.size)
    try:
        frames_h = orjson.loads(mv[_HEAD.size:pos])["f"]
    except (orjson.JSONDecodeError, TypeError, KeyError) as e:
        raise CorruptionError(f"shard message header unreadable: {e}", offset=_HEAD.size) from e
    pos += _pad(hlen)
    body = bytearray(mv[pos:])  # one copy: the arrays are writable and do not pin ``buf``
    try:
        frames, used = _frames(frames_h, body)
    except (TypeError, ValueError, IndexError, KeyError) as e:
        raise CorruptionError(f"shard message inconsistent: {e}", offset=pos) from e
    if used != len(body):
        raise CorruptionError(f"shard message has {len(body) - used} bytes more than its frames",
                              offset=pos + min(used, len(body)))
    return WriteBatch.from_frames(frames)


def _frames(frames_h: list, body: bytearray) -> tuple[list[Frame], int]:
    out = []
    off = 0
    size = len(body)

    def take(dtype: np.dtype, n: int) -> np.ndarray:
        nonlocal off
        nb = n * dtype.itemsize
        if off + nb > size:
            raise ValueError(f"binary part truncated: {nb} bytes needed at {off}")
        a = np.frombuffer(body, dtype=dtype, count=n, offset=off)
        off += nb + _pad(nb)
        return a

    for fh in frames_h:
        m, tags, keys, counts, cols, strs = fh
        ns = len(keys)
        if ns == 0 or len(tags) != ns or len(counts) != ns:
            raise ValueError("a frame's series lists differ in length")
        if not (set(map(type, keys)) <= {str}):
            raise TypeError("a series key is not a string")
        ms = [m] * ns if isinstance(m, str) else list(m)
        if len(ms) != ns or not (set(map(type, ms)) <= {str}):
            raise ValueError("a frame's measurements do not match its series")
        cnt = np.asarray(counts, dtype=np.int64)
        if cnt.ndim != 1 or (ns and int(cnt.min()) < 1):
            raise ValueError("a series has no rows")
        starts = np.zeros(ns + 1, dtype=np.int64)
        np.cumsum(cnt, out=starts[1:])
        n = int(starts[-1])
        if any(len(t) & 1 for t in tags):
            raise ValueError("a series' tags are not key/value pairs")
        tag_pairs = [tuple(zip(t[0::2], t[1::2])) for t in tags]
        ts = take(_I8, n)
        values, masked = [], []
        si = 0
        for name, t, has_mask in cols:
            if type(name) is not str or has_mask not in (0, 1):
                raise ValueError("a column entry is malformed")
            if t == _STRING:
                sv = strs[si]
                si += 1
                if len(sv) != n or not (set(map(type, sv)) <= {str}):
                    raise ValueError(f"string column {name!r} has {len(sv)} values for {n} rows")
                v = np.empty(n, dtype=object)
                v[:] = sv
            elif t in _WIRE_DTYPES:
                v = take(_WIRE_DTYPES[t], n)
                if t == _BOOLEAN:
                    if n and int(v.max()) > 1:
                        raise ValueError(f"boolean column {name!r} holds a byte other than 0/1")
                    v = v.view(bool)
            else:
                raise ValueError(f"unknown field type code {t!r}")
            values.append(v)
            masked.append(has_mask)
        if si != len(strs):
            raise ValueError("more string value lists than string columns")
        columns = {}
        for (name, t, _), v, has_mask in zip(cols, values, masked):
            mk = None
            if has_mask:
                mb = take(_U1, n)
                if n and int(mb.max()) > 1:
                    raise ValueError(f"the mask of column {name!r} holds a byte other than 0/1")
                mk = mb.view(bool)
            columns[name] = Column(_KINDS[t], v, mk)
        if len(columns) != len(cols):
            raise ValueError("a frame repeats a column name")
        out.append(Frame(ms, tag_pairs, list(keys), starts, ts, columns, np.zeros(n, dtype=np.int64)))
    return out, off
