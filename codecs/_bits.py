"""Vectorised bit-level helpers shared by the codecs: bit packing, zigzag, varints, bit lengths.

Everything here works on whole numpy arrays; there is no per-value Python loop.

Bit streams are little-endian: bit ``k`` of a stream is bit ``k % 8`` (LSB first) of byte
``k // 8``, equivalently bit ``k % 64`` of little-endian u64 word ``k // 64``.

Fixed-width packing (:func:`pack`) uses 64-value lanes so that decoding needs no per-value
gather: whole rows of words are shifted and masked at once (see :func:`pack` for the layout).
With ``n = 64*L + t`` values of ``w`` bits it takes ``8*w*L + ceil(t*w/8)`` bytes: exactly the
bits needed when ``n`` is a multiple of 64, as segment blocks are. From 1,024 values on, the
``t`` leftover values are zero-padded to one more lane instead (at most 6% more bits, usually
far less), which saves the separate tail decode.
"""

from __future__ import annotations

import functools
import itertools
import operator

import numpy as np

from rusts.errors import CodecError

U64 = np.uint64
MAX_PACK_WIDTH = 64
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
    low = np.negative(u)
    low &= u  # the lowest set bit (0 for 0)
    low -= _ONE  # ones below it (all 64 for 0)
    return np.bitwise_count(low).astype(np.int64)


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
    sign = z & _ONE
    np.negative(sign, out=sign)  # 0 or all ones
    out = z >> _ONE
    out ^= sign
    return out


def to_ordered(u: np.ndarray) -> np.ndarray:
    """Reinterpret int64 bits as uint64 whose unsigned order equals the signed order."""
    return u.view(np.uint64) ^ _SIGN


PAD_LANES_FROM = 1024  # from this many values, the last lane is zero-padded instead of a tail


def _split(n: int) -> tuple[int, int]:
    """(lanes, tail values) for ``n`` values."""
    if n >= PAD_LANES_FROM:
        return -(-n // 64), 0
    return divmod(n, 64)


def packed_size(n: int, width: int) -> int:
    """Bytes taken by ``n`` values packed at ``width`` bits."""
    lanes, tail = _split(n)
    return lanes * width * 8 + ((tail * width + 7) >> 3)


@functools.lru_cache(maxsize=128)
def _lane_plan(width: int):
    """Per lane row k (0..63) for ``width``: the word holding the value's low bits, the next
    word, and the packing table.

    Packing puts row k's contribution ``v << shift`` into word ``lo[k]`` and, for the rows that
    straddle a word boundary, ``v >> (64 - shift)`` into word ``lo[k] + 1``. ``slots`` lists,
    for each of the ``width`` words, the contribution rows OR-ed into it (rows 0..63 the
    in-word parts, 64.. the straddling parts, and an all-zero row as filler).
    """
    pos = np.arange(64, dtype=np.int64) * width
    lo = pos >> 6
    hi = np.minimum(lo + 1, width - 1)
    straddle = np.flatnonzero((pos & 63) + width > 64)
    nrows = 64 + len(straddle)
    members: list[list[int]] = [[] for _ in range(width)]
    for k in range(64):
        members[lo[k]].append(k)
    for i, k in enumerate(straddle):
        members[lo[k] + 1].append(64 + i)
    depth = max(len(m) for m in members)
    slots = np.full((width, depth), nrows, dtype=np.intp)
    for j, m in enumerate(members):
        slots[j, :len(m)] = m
    for a in (lo, hi, straddle, slots):
        a.flags.writeable = False
    return lo, hi, straddle, slots


@functools.lru_cache(maxsize=256)
def _lane_shifts(width: int, lanes: int) -> tuple[np.ndarray, np.ndarray]:
    """Full (64, lanes) shift matrices: numpy shifts are much faster without broadcasting."""
    shift = np.repeat((np.arange(64, dtype=np.uint64) * np.uint64(width)) & np.uint64(63), lanes)
    shift = shift.reshape(64, lanes)
    back = np.uint64(64) - shift
    shift.flags.writeable = False
    back.flags.writeable = False
    return shift, back


def _mask(width: int) -> np.uint64:
    return np.uint64((1 << width) - 1)


def pack(u: np.ndarray, width: int) -> bytes:
    """Pack uint64 values (each < 2**width, width <= 64) into :func:`packed_size` bytes.

    Layout: with ``L = n // 64`` lanes, the first ``64*L`` values form a ``(64, L)`` matrix
    (value ``k*L + l`` at row ``k``, lane ``l``); each lane's 64 values are packed back to back,
    LSB first, into ``width`` little-endian u64 words, stored word-major (``width`` rows of ``L``
    words). The ``n % 64`` remaining values follow as a plain LSB-first bit stream. Packing and
    unpacking a lane matrix are a handful of whole-matrix shifts, gathers and ORs.
    """
    n = len(u)
    if n == 0 or width == 0:
        return b""
    u = np.ascontiguousarray(u, dtype=np.uint64)
    lanes, tail_n = _split(n)
    if lanes * 64 > n:
        u = np.concatenate([u, np.zeros(lanes * 64 - n, dtype=np.uint64)])
    if not lanes:  # fewer than 64 values: one big-int sum beats the bit-matrix round trip
        return pack_small(u.tolist(), n, width)
    parts = []
    if lanes:
        _, _, straddle, slots = _lane_plan(width)
        shift, back = _lane_shifts(width, lanes)
        v = u[:lanes * 64].reshape(64, lanes)
        nst = len(straddle)
        rows = np.empty((65 + nst, lanes), dtype=np.uint64)
        np.left_shift(v, shift, out=rows[:64])
        if nst:
            np.right_shift(v[straddle], back[straddle], out=rows[64:64 + nst])
        rows[64 + nst] = 0
        words = np.bitwise_or.reduce(rows[slots], axis=1)
        parts.append(words.astype("<u8", copy=False).tobytes())
    if tail_n:
        parts.append(pack_small(u[lanes * 64:].tolist(), tail_n, width))
    return b"".join(parts)


@functools.lru_cache(maxsize=1024)
def _word_shifts(n: int, width: int) -> np.ndarray:
    """Bit offsets ``i * width`` of ``n`` values packed into one u64 word (``n * width <= 64``)."""
    out = np.arange(n, dtype=np.uint64) * np.uint64(width)
    out.flags.writeable = False
    return out


def pack_small(values, n: int, width: int, start: int = 0) -> bytes:
    """:func:`pack` for fewer than 64 values given as Python ints (an iterable of non-negative
    ints < 2**width for slots ``start..n-1``; slots before ``start`` are zero).

    One big-int sum of shifted values in C (``map`` over builtins): on a handful of values
    that is several times faster than any sequence of numpy calls.
    """
    if width == 0:
        return b""
    x = sum(map(operator.lshift, values, range(start * width, n * width, width)))
    return x.to_bytes((n * width + 7) >> 3, "little")


def unpack_small(buf, n: int, width: int):
    """Inverse of :func:`pack_small`: an iterator over the ``n`` (< 64) values as Python ints."""
    size = (n * width + 7) >> 3
    if len(buf) != size:
        raise CodecError(f"bit-packed stream is {len(buf)} bytes, expected {size} "
                         f"for {n} values of {width} bits")
    if width == 0:
        return itertools.repeat(0, n)
    x = int.from_bytes(buf, "little")
    return map(operator.and_, map(operator.rshift, itertools.repeat(x, n),
                                  range(0, n * width, width)),
               itertools.repeat((1 << width) - 1, n))


def unpack(buf, n: int, width: int) -> np.ndarray:
    """Inverse of :func:`pack`: ``n`` values of ``width`` bits from ``buf`` (exact length)."""
    if width > 64:
        raise CodecError(f"bit width {width} out of range")
    size = packed_size(n, width)
    if len(buf) != size:
        raise CodecError(f"bit-packed stream is {len(buf)} bytes, expected {size} "
                         f"for {n} values of {width} bits")
    if width == 0 or n == 0:
        return np.zeros(n, dtype=np.uint64)
    mask = _mask(width)
    if n < 64 and n * width <= 64:  # one word (small blocks): a shift and a mask
        v = np.uint64(int.from_bytes(buf, "little")) >> _word_shifts(n, width)
        v &= mask
        return v
    lanes, tail_n = _split(n)
    plan = _mixed_plan(n, width) if lanes and tail_n else None
    if plan is not None:  # lanes and a tail, a recurring size: one gather over its cached plan
        lo, hi, shift, back = plan
        words = np.frombuffer(bytes(buf) + bytes(16 - (size & 7)), dtype="<u8")
        v = words[lo]
        v >>= shift
        v2 = words[hi]
        v2 <<= back  # shifts by 64 give 0 in numpy: nothing from the next word when aligned
        v |= v2
        v &= mask
        return v
    if lanes:
        lo, hi, _, _ = _lane_plan(width)
        shift, back = _lane_shifts(width, lanes)
        words = np.frombuffer(buf, dtype="<u8", count=width * lanes).reshape(width, lanes)
        v = words[lo]
        v >>= shift
        if width & (width - 1):  # some values straddle two words unless width is a power of 2
            v2 = words[hi]
            v2 <<= back
            v |= v2
        if width != 64:
            v &= mask
        head = v.reshape(-1)
        if not tail_n:
            return head[:n] if lanes * 64 > n else head
        out = np.empty(n, dtype=np.uint64)
        out[:lanes * 64] = head
        out[lanes * 64:] = _unpack_stream(buf[width * lanes * 8:], n - lanes * 64, width, mask)
        return out
    return _unpack_stream(buf, n, width, mask)


_MIXED_PLANS: dict = {}  # (n, width) -> plan
_MIXED_SEEN: dict = {}  # (n, width) -> sightings so far
_MIXED_MAX = 256  # plans kept (each 32 bytes per value: at most 8 MiB)
_MIXED_AFTER = 4  # sightings before a size gets its plan


def _mixed_plan(n: int, width: int):
    """The cached gather plan of ``n`` values of ``width`` bits (:func:`_build_mixed_plan`) once
    the size has recurred (the row count of regular blocks does); None for sizes seen fewer than
    :data:`_MIXED_AFTER` times, which are cheaper unpacked lane by lane than planned."""
    key = (n, width)
    plan = _MIXED_PLANS.get(key)
    if plan is not None:
        return plan
    seen = _MIXED_SEEN.get(key, 0) + 1
    if seen < _MIXED_AFTER:
        if len(_MIXED_SEEN) >= 16 * _MIXED_MAX:
            _MIXED_SEEN.clear()
        _MIXED_SEEN[key] = seen
        return None
    _MIXED_SEEN.pop(key, None)
    if len(_MIXED_PLANS) >= _MIXED_MAX:
        _MIXED_PLANS.clear()
    plan = _MIXED_PLANS[key] = _build_mixed_plan(n, width)
    return plan


def _build_mixed_plan(n: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Word indices (low, next) and shifts (right, left) of each of ``n`` values laid out as
    :func:`pack` does for ``n`` < :data:`PAD_LANES_FROM` with both lanes and a tail: the
    ``(64, lanes)`` lane matrix (row k of lane j in word ``lo[k] * lanes + j``), then the tail as
    one bit stream from word ``width * lanes``. Blocks of one table mostly share ``n``."""
    lanes, tail_n = _split(n)
    lo, hi, _, _ = _lane_plan(width)
    lane_shift, lane_back = _lane_shifts(width, lanes)
    j = np.arange(lanes, dtype=np.int64)
    head_lo = (lo[:, None] * lanes + j).reshape(-1)
    head_hi = (hi[:, None] * lanes + j).reshape(-1)
    t_lo, t_hi, t_shift, t_back = _stream_plan(tail_n, width)
    base = width * lanes
    out = (np.concatenate((head_lo, t_lo + base)), np.concatenate((head_hi, t_hi + base)),
           np.concatenate((lane_shift.reshape(-1), t_shift)), np.concatenate((lane_back.reshape(-1), t_back)))
    for a in out:
        a.flags.writeable = False
    return out


@functools.lru_cache(maxsize=4096)
def _stream_plan(n: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    pos = np.arange(n, dtype=np.int64) * width
    lo = pos >> 6
    shift = (pos & 63).astype(np.uint64)
    out = (lo, lo + 1, shift, np.uint64(64) - shift)
    for a in out:
        a.flags.writeable = False
    return out


def _unpack_stream(buf, n: int, width: int, mask: np.uint64) -> np.ndarray:
    size = len(buf)
    words = np.frombuffer(bytes(buf) + bytes(16 - (size & 7)), dtype="<u8")
    lo, lo1, shift, back = _stream_plan(n, width)
    v = words[lo]
    v >>= shift
    hi = words[lo1]
    hi <<= back  # numpy defines shifts by 64 as 0: nothing from the next word when aligned
    v |= hi
    v &= mask
    return v


def pack_var(u: np.ndarray, widths: np.ndarray) -> bytes:
    """Pack each uint64 value ``u[i]`` (< 2**widths[i], widths in 0..64) back to back, LSB
    first, as one bit stream of ``ceil(sum(widths)/8)`` bytes."""
    n = len(u)
    if n == 0:
        return b""
    ends = np.cumsum(widths)
    total = int(ends[-1])
    if total == 0:
        return b""
    pos = ends - widths
    lo = pos >> 6
    sh = (pos & 63).astype(np.uint64)
    words = np.zeros((total >> 6) + 2, dtype=np.uint64)
    # every word but the last receives the start of some value (widths <= 64), in order
    first = np.empty(n, dtype=bool)
    first[0] = True
    np.not_equal(lo[1:], lo[:-1], out=first[1:])
    first = np.flatnonzero(first)
    words[lo[first]] = np.bitwise_or.reduceat(u << sh, first)
    spill = np.flatnonzero((pos & 63) + widths > 64)
    if len(spill):
        words[lo[spill] + 1] |= u[spill] >> (np.uint64(64) - sh[spill])
    return words.astype("<u8", copy=False).tobytes()[:(total + 7) >> 3]


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
    nwords = (size >> 3) + 2
    padded = np.zeros(nwords * 8, dtype=np.uint8)
    padded[:size] = np.frombuffer(buf, dtype=np.uint8)
    words = padded.view("<u8")
    pos = ends - widths
    lo = pos >> 6
    sh = (pos & 63).astype(np.uint64)
    # numpy defines shifts by >= 64 as 0, so sh == 0 takes nothing from the next word.
    v = (words[lo] >> sh) | (words[lo + 1] << (np.uint64(64) - sh))
    mask = (_ONE << widths.astype(np.uint64)) - _ONE  # width 64 -> 0 - 1 = all ones
    return v & mask


def varint_size(u: np.ndarray) -> int:
    """Bytes :func:`varint_encode` would produce: one a value plus one per 7-bit threshold."""
    n = len(u)
    if n == 0:
        return 0
    top = int(u.max())
    size = n
    for j in range(1, 10):
        if top < 1 << (7 * j):
            break
        size += int(np.count_nonzero(u >= np.uint64(1 << (7 * j))))
    return size


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
