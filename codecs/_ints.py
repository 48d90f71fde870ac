"""Integer codecs over uint64 words (int64, uint64 and timestamps share them).

Every codec here maps a uint64 array to a payload and back; signed values are their two's
complement words, and all arithmetic wraps modulo 2**64, so any bit pattern round-trips. The
``signed`` flag only steers the encoder's *choice* (the frame of reference is the minimum in
signed or unsigned order); decoding never needs it.

Payloads (all integers little-endian):

* RAW: ``n`` 8-byte words.
* CONST: one 8-byte word.
* FOR: ``ref`` u64, ``width`` u8, then ``n`` values ``v - ref`` bit-packed at ``width``.
* DELTA_FOR: ``first`` u64, ``ref`` u64, ``width`` u8, then the ``n-1`` deltas
  ``v[i] - v[i-1] - ref`` bit-packed. Constant intervals are width 0: 17 bytes a block.
* DOD_FOR: ``first`` u64, ``delta0`` u64, ``ref`` u64, ``width`` u8, then the ``n-2``
  delta-of-deltas minus ``ref`` bit-packed.
* ZIGZAG_VARINT: LEB128 varints of ``zigzag(v)``.
* DELTA_ZIGZAG_VARINT: LEB128 varints of ``zigzag(v[0]), zigzag(v[1]-v[0]), ...``.

The encoder computes each candidate's exact size from min/max statistics before building
anything, then builds only the smallest (varints are only considered when bit-packing costs more
than a byte a value, since a varint never takes less than one byte).

A *sub-block* (used inside other codecs) is one tag byte followed by the payload; the count and
the sub-block length come from the enclosing codec.
"""

from __future__ import annotations

import struct

import numpy as np

from rusts.codecs import _bits
from rusts.codecs._format import Tag
from rusts.errors import CodecError

_M64 = (1 << 64) - 1
_U64 = struct.Struct("<Q")
_FOR_HDR = struct.Struct("<QB")
_DFOR_HDR = struct.Struct("<QQB")
_DDFOR_HDR = struct.Struct("<QQQB")


def _range_width(x: np.ndarray, signed: bool) -> tuple[int, int]:
    """(reference, width) of a frame of reference over ``x`` (uint64 words)."""
    if signed:
        s = x.view(np.int64)
        lo, hi = int(s.min()), int(s.max())
    else:
        lo, hi = int(x.min()), int(x.max())
    return lo & _M64, (hi - lo).bit_length()


def _plan(u: np.ndarray, signed: bool, timestamps: bool):
    """Pick the smallest integer codec. Returns (tag, size, extra) with what building needs."""
    n = len(u)
    best = (Tag.RAW, 8 * n, None)
    if n == 0:
        return best
    if n >= 1 and u[0] == u[-1] and (u == u[0]).all():
        return (Tag.CONST, 8, None)

    def consider(tag, size, extra):
        nonlocal best
        if size < best[1]:
            best = (tag, size, extra)

    if not timestamps:
        ref, w = _range_width(u, signed)
        if w <= _bits.MAX_PACK_WIDTH:
            consider(Tag.FOR, 9 + _bits.packed_size(n, w), (ref, w))
    d = None
    if n >= 2:
        d = u[1:] - u[:-1]
        ref, w = _range_width(d, True)
        if w <= _bits.MAX_PACK_WIDTH:
            consider(Tag.DELTA_FOR, 17 + _bits.packed_size(n - 1, w), (d, ref, w))
        if n >= 3 and best[1] > 17 + 8:
            dd = d[1:] - d[:-1]
            ref, w = _range_width(dd, True)
            if w <= _bits.MAX_PACK_WIDTH:
                consider(Tag.DOD_FOR, 25 + _bits.packed_size(n - 2, w), (d, dd, ref, w))
    if best[1] > n:  # a varint takes at least one byte per value
        if not timestamps:
            z = _bits.zigzag(u)
            consider(Tag.ZIGZAG_VARINT, _bits.varint_size(z), z)
        zd = np.empty(n, dtype=np.uint64)
        zd[0] = u[0]
        if d is not None:
            zd[1:] = d
        zd = _bits.zigzag(zd)
        consider(Tag.DELTA_ZIGZAG_VARINT, _bits.varint_size(zd), zd)
    return best


def encode(u: np.ndarray, *, signed: bool = True, timestamps: bool = False) -> tuple[int, bytes]:
    """Encode uint64 words with the smallest integer codec. Returns (tag, payload)."""
    u = np.ascontiguousarray(u, dtype=np.uint64)
    tag, _, extra = _plan(u, signed, timestamps)
    return tag, build(tag, u, extra)


def encode_as(tag: int, u: np.ndarray, *, signed: bool = True) -> bytes:
    """The payload of a given integer codec (for tests and benchmarks).

    Raises:
        CodecError: the codec cannot hold these values (CONST of distinct values, a delta codec
            with too few values, or a bit width over the packing limit).
    """
    u = np.ascontiguousarray(u, dtype=np.uint64)
    n = len(u)
    extra = None
    if tag == Tag.CONST:
        if n == 0 or not (u == u[0]).all():
            raise CodecError("CONST needs equal values")
    elif tag == Tag.FOR:
        extra = _range_width(u, signed) if n else (0, 0)
    elif tag == Tag.DELTA_FOR:
        if n < 1:
            raise CodecError("DELTA_FOR needs a value")
        d = u[1:] - u[:-1]
        extra = (d, *(_range_width(d, True) if n > 1 else (0, 0)))
    elif tag == Tag.DOD_FOR:
        if n < 2:
            raise CodecError("DOD_FOR needs two values")
        d = u[1:] - u[:-1]
        dd = d[1:] - d[:-1]
        extra = (d, dd, *(_range_width(dd, True) if n > 2 else (0, 0)))
    elif tag == Tag.ZIGZAG_VARINT:
        extra = _bits.zigzag(u)
    elif tag == Tag.DELTA_ZIGZAG_VARINT:
        zd = u.copy()
        zd[1:] = u[1:] - u[:-1]
        extra = _bits.zigzag(zd)
    elif tag != Tag.RAW:
        raise CodecError(f"not an integer codec: {tag}")
    if tag in (Tag.FOR, Tag.DELTA_FOR, Tag.DOD_FOR) and extra[-1] > _bits.MAX_PACK_WIDTH:
        raise CodecError(f"bit width {extra[-1]} over the packing limit")
    return build(tag, u, extra)


def build(tag: int, u: np.ndarray, extra=None) -> bytes:
    """The payload of codec ``tag`` for ``u``, given the planner's ``extra``."""
    n = len(u)
    if tag == Tag.RAW:
        return u.astype("<u8", copy=False).tobytes()
    if tag == Tag.CONST:
        return _U64.pack(int(u[0]))
    if tag == Tag.FOR:
        ref, w = extra
        return _FOR_HDR.pack(ref, w) + _bits.pack(u - np.uint64(ref), w)
    if tag == Tag.DELTA_FOR:
        d, ref, w = extra
        return _DFOR_HDR.pack(int(u[0]), ref, w) + _bits.pack(d - np.uint64(ref), w)
    if tag == Tag.DOD_FOR:
        d, dd, ref, w = extra
        return _DDFOR_HDR.pack(int(u[0]), int(d[0]), ref, w) + _bits.pack(dd - np.uint64(ref), w)
    if tag in (Tag.ZIGZAG_VARINT, Tag.DELTA_ZIGZAG_VARINT):
        return _bits.varint_encode(extra)
    raise CodecError(f"not an integer codec: {tag}")


def decode(tag: int, payload, n: int) -> np.ndarray:
    """Inverse of :func:`encode`: ``n`` uint64 words from a payload of codec ``tag``."""
    size = len(payload)
    if tag == Tag.RAW:
        if size != 8 * n:
            raise CodecError(f"RAW payload is {size} bytes, expected {8 * n}")
        return np.frombuffer(payload, dtype="<u8").astype(np.uint64)
    if tag == Tag.CONST:
        if size != 8:
            raise CodecError(f"CONST payload is {size} bytes, expected 8")
        return np.full(n, _U64.unpack_from(payload)[0], dtype=np.uint64)
    if tag == Tag.FOR:
        if size < 9:
            raise CodecError("FOR payload truncated")
        ref, w = _FOR_HDR.unpack_from(payload)
        return _bits.unpack(payload[9:], n, w) + np.uint64(ref)
    if tag == Tag.DELTA_FOR:
        if size < 17 or n < 1:
            raise CodecError("DELTA_FOR payload truncated")
        first, ref, w = _DFOR_HDR.unpack_from(payload)
        out = np.empty(n, dtype=np.uint64)
        out[0] = first
        out[1:] = _bits.unpack(payload[17:], n - 1, w) + np.uint64(ref)
        return np.cumsum(out, dtype=np.uint64)
    if tag == Tag.DOD_FOR:
        if size < 25 or n < 2:
            raise CodecError("DOD_FOR payload truncated")
        first, d0, ref, w = _DDFOR_HDR.unpack_from(payload)
        out = np.empty(n, dtype=np.uint64)
        out[0] = first
        out[1] = d0
        out[2:] = _bits.unpack(payload[25:], n - 2, w) + np.uint64(ref)
        np.cumsum(out[1:], dtype=np.uint64, out=out[1:])
        return np.cumsum(out, dtype=np.uint64)
    if tag == Tag.ZIGZAG_VARINT:
        return _bits.unzigzag(_bits.varint_decode(payload, n))
    if tag == Tag.DELTA_ZIGZAG_VARINT:
        return np.cumsum(_bits.unzigzag(_bits.varint_decode(payload, n)), dtype=np.uint64)
    raise CodecError(f"unknown integer codec tag {tag:#04x}")


def encode_sub(u: np.ndarray, *, signed: bool = True) -> bytes:
    """A sub-block: tag byte + payload of the smallest integer codec."""
    tag, payload = encode(u, signed=signed)
    return bytes((tag,)) + payload


def decode_sub(buf, n: int) -> np.ndarray:
    """Inverse of :func:`encode_sub` (``buf`` is exactly the sub-block)."""
    if len(buf) < 1:
        raise CodecError("integer sub-block is empty")
    return decode(buf[0], buf[1:], n)
