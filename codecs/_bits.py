"""Vectorised bit-level helpers shared by the codecs: bit packing, zigzag, varints, bit lengths.

Everything here works on whole numpy arrays; there is no per-value Python loop.

Bit streams are little-endian: bit ``k`` of a stream is bit ``k % 8`` (LSB first) of byte
``k // 8``. A fixed-width packing of ``n`` values of ``w`` bits puts value ``i`` at stream bits
``[i*w, (i+1)*w)``, least significant bit first, and occupies ``ceil(n*w/8)`` bytes; the unused
high bits of the last byte are zero.

Reading uses a byte-strided ``uint64`` view over the (zero-padded) stream: value ``i`` is the
little-endian 64-bit word starting at byte ``(i*w) >> 3``, shifted right by ``(i*w) & 7`` and
masked. One gather, one shift and one mask per block, whatever the width (up to
:data:`MAX_PACK_WIDTH`).
"""

from __future__ import annotations

import functools

import numpy as np

from rusts.errors import CodecError

U64 = np.uint64
MAX_PACK_WIDTH = 56  # widths above this are not packed (a raw 8-byte word costs at most 14% more)
_ONE = np.uint64(1)
_SIGN = np.uint64(1 << 63)


def bit_length(u: np.ndarray) -> np.ndarray:
    """Per-value bit length of a uint64 array (0 for 0), as int64."""
    hi = (u >> np.uint64(32)).astype(np.float64)
    lo = (u & np.uint64(0xFFFFFFFF)).astype(np.float64)
    ehi = np.frexp(hi)[1]
    elo = np.frexp(lo)[1]
    return np.where(hi > 0, ehi + 32, elo).astype(np.int64)


def trailing_zeros(u: np.ndarray) -> np.ndarray:
    """Per-value count of trailing zero bits of a uint64 array (64 for 0), as int64."""
    low = u & (~u + _ONE)  # isolate the lowest set bit
    tz = bit_length(low) - 1
    return np.where(u == 0, 64, tz)


def max_width(u: np.ndarray) -> int:
    """Bits needed for the largest value of a uint64 array (0 if empty or all zero)."""
    if len(u) == 0:
        return 0
    return int(u.max()).bit_length()


def zigzag(x: np.ndarray) -> np.ndarray:
    """int64 (or uint64 reinterpreted) -> uint64 with small magnitudes near zero."""
    s = x.view(np.int64)
    return ((s << 1) ^ (s >> 63)).view(np.uint64)


def unzigzag(z: np.ndarray) -> np.ndarray:
    """Inverse of :func:`zigzag`, returning uint64 (reinterpret as int64 if needed)."""
    z = z.view(np.uint64)
    return ((z >> _ONE) ^ (np.uint64(0) - (z & _ONE))).view(np.uint64)


def to_ordered(u: np.ndarray) -> np.ndarray:
    """Reinterpret int64 bits as uint64 whose unsigned order equals the signed order."""
    return u.view(np.uint64) ^ _SIGN


def packed_size(n: int, width: int) -> int:
    """Bytes taken by ``n`` values packed at ``width`` bits."""
    return (n * width + 7) >> 3


def pack(u: np.ndarray, width: int) -> bytes:
    """Pack uint64 values (each < 2**width, width <= 56) into a little-endian bit stream."""
    n = len(u)
    if n == 0 or width == 0:
        return b""
    nb = (width + 7) >> 3
    by = np.ascontiguousarray(u, dtype="<u8").view(np.uint8).reshape(n, 8)[:, :nb]
    bits = np.unpackbits(by, axis=1, bitorder="little")
    if width != nb * 8:
        bits = bits[:, :width]
    return np.packbits(bits.reshape(-1), bitorder="little").tobytes()


@functools.lru_cache(maxsize=512)
def _offsets(n: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    pos = np.arange(n, dtype=np.int64) * width
    byte = pos >> 3
    shift = (pos & 7).astype(np.uint64)
    byte.flags.writeable = False
    shift.flags.writeable = False
    return byte, shift


def unpack(buf, n: int, width: int) -> np.ndarray:
    """Inverse of :func:`pack`: ``n`` values of ``width`` bits from ``buf`` (exact length)."""
    size = packed_size(n, width)
    if len(buf) != size:
        raise CodecError(f"bit-packed stream is {len(buf)} bytes, expected {size} "
                         f"for {n} values of {width} bits")
    if width > MAX_PACK_WIDTH:
        raise CodecError(f"bit width {width} out of range")
    if width == 0 or n == 0:
        return np.zeros(n, dtype=np.uint64)
    padded = np.zeros(size + 8, dtype=np.uint8)
    padded[:size] = np.frombuffer(buf, dtype=np.uint8)
    words = np.ndarray(shape=(size + 1,), dtype="<u8", buffer=padded, strides=(1,))
    byte, shift = _offsets(n, width)
    return (words[byte] >> shift) & np.uint64((1 << width) - 1)


def pack_var(u: np.ndarray, widths: np.ndarray) -> bytes:
    """Pack each uint64 value ``u[i]`` (< 2**widths[i], widths in 0..64) back to back."""
    n = len(u)
    if n == 0:
        return b""
    bits = np.unpackbits(np.ascontiguousarray(u, dtype="<u8").view(np.uint8).reshape(n, 8),
                         axis=1, bitorder="little")
    keep = np.arange(64, dtype=np.int64)[None, :] < widths[:, None]
    return np.packbits(bits[keep], bitorder="little").tobytes()


def unpack_var(buf, widths: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_var` given the per-value widths (int64 in 0..64)."""
    n = len(widths)
    ends = np.cumsum(widths)
    total = int(ends[-1]) if n else 0
    size = (total + 7) >> 3
    if len(buf) != size:
        raise CodecError(f"variable-width bit stream is {len(buf)} bytes, expected {size}")
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    padded = np.zeros(size + 16, dtype=np.uint8)
    padded[:size] = np.frombuffer(buf, dtype=np.uint8)
    words = np.ndarray(shape=(size + 9,), dtype="<u8", buffer=padded, strides=(1,))
    pos = ends - widths
    byte = pos >> 3
    sh = (pos & 7).astype(np.uint64)
    lo = words[byte] >> sh
    # numpy defines shifts by >= 64 as 0, so sh == 0 contributes nothing from the next word.
    hi = words[byte + 8] << (np.uint64(64) - sh)
    mask = (_ONE << widths.astype(np.uint64)) - _ONE  # width 64 -> 0 - 1 = all ones
    return (lo | hi) & mask


def varint_size(u: np.ndarray) -> int:
    """Bytes :func:`varint_encode` would produce."""
    if len(u) == 0:
        return 0
    nb = np.maximum(1, (bit_length(u) + 6) // 7)
    return int(nb.sum())


def varint_encode(u: np.ndarray) -> bytes:
    """LEB128 varints of uint64 values, vectorised."""
    n = len(u)
    if n == 0:
        return b""
    nb = np.maximum(1, (bit_length(u) + 6) // 7)
    ends = np.cumsum(nb)
    total = int(ends[-1])
    starts = ends - nb
    k = np.arange(total, dtype=np.int64) - np.repeat(starts, nb)
    out = ((np.repeat(u, nb) >> (7 * k).astype(np.uint64)) & np.uint64(0x7F)).astype(np.uint8)
    out |= 0x80
    out[ends - 1] &= 0x7F
    return out.tobytes()


def varint_decode(buf, n: int) -> np.ndarray:
    """Inverse of :func:`varint_encode`: exactly ``n`` varints filling ``buf``."""
    b = np.frombuffer(buf, dtype=np.uint8)
    if n == 0:
        if len(b):
            raise CodecError("varint stream has trailing bytes")
        return np.zeros(0, dtype=np.uint64)
    if len(b) == 0 or b[-1] & 0x80:
        raise CodecError("varint stream is truncated")
    ends = np.flatnonzero(b < 0x80)
    if len(ends) != n:
        raise CodecError(f"varint stream holds {len(ends)} values, expected {n}")
    starts = np.empty(n, dtype=np.int64)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lens = ends - starts + 1
    if int(lens.max()) > 10:
        raise CodecError("varint longer than 10 bytes")
    k = np.arange(len(b), dtype=np.int64) - np.repeat(starts, lens)
    if len(b) and (b[k == 9] > 1).any():
        raise CodecError("varint overflows 64 bits")
    parts = (b & 0x7F).astype(np.uint64) << (7 * k).astype(np.uint64)
    return np.bitwise_or.reduceat(parts, starts)
