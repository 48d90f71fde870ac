"""Integer codecs over uint64 words (int64, uint64 and timestamps share them).

Every codec maps a uint64 array to a payload and back; signed values are their two's complement
words, and all arithmetic wraps modulo 2**64, so any bit pattern round-trips. The ``signed`` flag
only steers the encoder's *choice* (the frame of reference is the minimum in signed or unsigned
order); decoding never needs it.

Payloads (all integers little-endian):

* RAW: ``n`` 8-byte words.
* CONST: one 8-byte word.
* FOR: ``ref`` u64, ``width`` u8, then ``n`` values ``v - ref`` bit-packed at ``width``.
* DELTA_FOR: ``first`` u64, ``ref`` u64, ``width`` u8, then ``n`` slots bit-packed: slot 0 is
  zero (unused, it keeps the count a multiple of 64 for the lane layout), slot ``i`` is
  ``v[i] - v[i-1] - ref``. Constant intervals are width 0: 17 bytes a block.
* DOD_FOR: ``first`` u64, ``delta0`` u64, ``ref`` u64, ``width`` u8, then ``n`` slots
  bit-packed: slots 0 and 1 zero, slot ``i`` the delta-of-delta ``i`` minus ``ref``.
* ZIGZAG_VARINT: LEB128 varints of ``zigzag(v)``.
* DELTA_ZIGZAG_VARINT: LEB128 varints of ``zigzag(v[0]), zigzag(v[1]-v[0]), ...``.
* DELTA_ZERORUN: ``first`` u64, ``nruns`` u32, ``rlen`` u32, a sub-block (``rlen`` bytes) of
  the ``nruns`` run lengths, then a sub-block of the non-zero deltas. The ``n-1`` deltas are split into alternating runs, non-zero first (that
  run may be empty), zero next; only the non-zero deltas are stored. Gauges that sit still for a
  while (clipped or slowly changing) cost their changes only; a gauge that always moves is one
  run, and the non-zero sub-block then holds all deltas with the best codec for them (often
  ZIGZAG_RICE).
* FOR_RADIX: ``ref`` u64, ``radix`` u64 (``r`` = max - min + 1), ``g`` u8, then
  ``ceil(n/g)`` codes bit-packed at ``bitlen(r**g - 1)`` bits; code ``c`` holds values
  ``c_j = (c // r**j) % r + ref`` for ``j < g`` (the last code is padded with zeros). Small
  ranges that are not powers of two pack tighter: 10 distinct values take 10 bits per 3 values
  instead of 4 bits each.
* ZIGZAG_RICE: ``k`` u8, ``n`` remainders ``zigzag(v) & (2**k - 1)`` bit-packed at ``k``, then
  the quotients ``zigzag(v) >> k`` in unary (``q`` one bits then a zero bit, the stream padded
  with one bits). Near-optimal for the bell-shaped deltas of random walks, where FOR pays for the
  rare extremes on every value.

The encoder computes each candidate's exact size from cheap statistics (min/max, sums of shifted
values, run counts) before building anything, then builds only the smallest. Varints are only
considered when the best so far costs more than a byte a value (a varint never costs less).

A *sub-block* (inside other codecs) is one tag byte followed by the payload; the count and the
sub-block's length come from the enclosing codec. The two sub-blocks inside DELTA_ZERORUN use
no delta codec (DELTA_FOR, DOD_FOR, DELTA_ZIGZAG_VARINT, DELTA_ZERORUN), which bounds nesting.
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import math
import operator
import struct
from functools import partial

import numpy as np

from rusts.codecs import _bits
from rusts.codecs._format import T, Tag
from rusts.errors import CodecError

_M64 = (1 << 64) - 1
_repeat = itertools.repeat
# the ufunc reductions themselves: ndarray.min() & co. go through a Python wrapper (~1 us)
_min = np.minimum.reduce
_max = np.maximum.reduce
_sum = np.add.reduce
_all = np.logical_and.reduce
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_FOR_HDR = struct.Struct("<QB")
_DFOR_HDR = struct.Struct("<QQB")
_DDFOR_HDR = struct.Struct("<QQQB")
_ZR_HDR = struct.Struct("<QII")
_RADIX_HDR = struct.Struct("<QQB")
_MAX_RADIX_GROUP = 8
_MAX_RICE_K = _bits.MAX_PACK_WIDTH

# planner modes
TOP = 0         # a column of integers
TIMESTAMPS = 1  # a column of timestamps: delta codecs only
NESTED = 2      # a sub-block inside DELTA_ZERORUN: no delta codecs


def _range_width(x: np.ndarray, signed: bool) -> tuple[int, int]:
    """(reference, width) of a frame of reference over ``x`` (uint64 words)."""
    ref, span = _range(x, signed)
    return ref, span.bit_length()


def _range(x: np.ndarray, signed: bool) -> tuple[int, int]:
    """(reference, max - min) of ``x`` in signed or unsigned order."""
    if len(x) == 0:
        return 0, 0
    if signed:
        s = x.view(np.int64)
        lo, hi = int(_min(s)), int(_max(s))
    else:
        lo, hi = int(_min(x)), int(_max(x))
    return lo & _M64, hi - lo


@functools.lru_cache(maxsize=4096)
def _radix_plan(n: int, span: int) -> tuple[int, int, int] | None:
    """(group size g, code width, payload size) packing g values of radix span+1 per code,
    when that beats plain bit-packing (a span of 9 costs 4 bits a value bit-packed, 10/3 in
    groups of 3)."""
    r = span + 1
    w = span.bit_length()
    if r & span == 0 or w > 20 or n < 64:  # power of two: nothing to gain
        return None
    best = None
    for g in range(2, _MAX_RADIX_GROUP + 1):
        cw = (r ** g - 1).bit_length()
        if cw > 64:
            break
        # worth a digit loop in the decoder only for a quarter bit a value; the smallest g
        # within 1/32 bit of the best keeps that loop short
        if cw / g <= w - 0.25 and (best is None or cw / g < best[1] / best[0] - 1 / 32):
            best = (g, cw, 17 + _bits.packed_size(-(-n // g), cw))
    return best


def _build_radix(u: np.ndarray, ref: int, span: int, g: int, cw: int) -> bytes:
    n = len(u)
    m = -(-n // g)
    digits = np.zeros(m * g, dtype=np.uint64)
    np.subtract(u, np.uint64(ref), out=digits[:n])
    digits = digits.reshape(m, g)
    r = np.uint64(span + 1)
    code = digits[:, g - 1].copy()
    for j in range(g - 2, -1, -1):
        code *= r
        code += digits[:, j]
    return _RADIX_HDR.pack(ref, span + 1, g) + _bits.pack(code, cw)


def _decode_radix(payload, n: int) -> np.ndarray:
    if len(payload) < 17:
        raise CodecError("FOR_RADIX payload truncated")
    ref, r, g = _RADIX_HDR.unpack_from(payload)
    if r < 2 or not 1 <= g <= _MAX_RADIX_GROUP or r ** g > 1 << 64:
        raise CodecError(f"FOR_RADIX radix {r} / group {g} out of range")
    m = -(-n // g)
    code = _bits.unpack(payload[17:], m, (r ** g - 1).bit_length())
    if m and int(code.max()) >= r ** g:
        raise CodecError("FOR_RADIX code out of range")
    out = np.empty((g, m), dtype=np.uint64)
    rr = np.uint64(r)
    for j in range(g - 1):
        q = code // rr
        np.subtract(code, q * rr, out=out[j])
        code = q
    out[g - 1] = code
    flat = out.T.reshape(-1)[:n]
    flat += np.uint64(ref)
    return flat


def _rice_plan(z: np.ndarray, budget: float = float("inf"),
               zmax: int | None = None) -> tuple[int, int] | None:
    """(k, payload size) of the best Rice parameter for zigzagged ``z`` (``zmax`` its maximum
    when known), or None if it cannot beat ``budget`` bytes or the values are too spread."""
    n = len(z)
    if n == 0:
        return 0, 1
    if zmax is None:
        zmax = int(_max(z))
    exact = zmax < (1 << 63) // n
    total = int(_sum(z)) if exact else float(_sum(z.astype(np.float64)))  # exact: no wrap

    def qsum_of(k: int):
        if exact:
            return int(_sum(z >> np.uint64(k)))
        return float(_sum((z >> np.uint64(k)).astype(np.float64)))

    return _rice_choose(n, total, qsum_of, budget)


def _rice_plan_hist(n: int, ref: int, span: int, counts: np.ndarray,
                    budget: float) -> tuple[int, int] | None:
    """:func:`_rice_plan` from the histogram ``counts`` of ``v - ref`` over ``0..span``: the same
    sums, over ``span + 1`` distinct values instead of ``n``."""
    zu = _bits.zigzag(np.arange(span + 1, dtype=np.uint64) + np.uint64(ref))
    c = counts.view(np.int64)
    if int(zu.max()) < (1 << 62) // n:  # int64 sums cannot wrap
        zc = zu.view(np.int64)
        return _rice_choose(n, int(c @ zc), lambda k: int(c @ (zc >> k)), budget)
    cf = c.astype(np.float64)  # as _rice_plan: far-from-zero values, float sums
    return _rice_choose(n, float(cf @ zu.astype(np.float64)),
                        lambda k: float(cf @ (zu >> np.uint64(k)).astype(np.float64)), budget)


def _rice_choose(n: int, total, qsum_of, budget: float) -> tuple[int, int] | None:
    mean = total / n
    # The best k for geometric-like data is near log2(mean) - 0.5: try floor(log2 mean) and one below.
    k0 = int(math.log2(mean)) if mean >= 1 else 0
    if n * k0 / 8 >= budget or k0 > _MAX_RICE_K:
        return None
    best = None
    for k in (k0 - 1, k0) if k0 else (0,):
        qsum = total if k == 0 else qsum_of(k)
        if qsum > 64.0 * n:
            continue
        size = 1 + _bits.packed_size(n, k) + (int(qsum) + n + 7) // 8
        if best is None or size < best[1]:
            best = (k, size)
    return best


def _raw(u: np.ndarray) -> bytes:
    return u.astype("<u8", copy=False).tobytes()


# What a codec must save before the planner prefers it to a simpler one, as (factor, bytes):
# it competes at ``size * factor + bytes``. Varints and Rice codes decode at a third to half
# the speed of bit-packing, so they must save 15%, radix codes 10% (and, like the other
# multi-step codecs, a few bytes: on small sub-blocks fixed per-call costs dominate).
_PENALTY = {T.ZIGZAG_VARINT: (1.15, 32), T.DELTA_ZIGZAG_VARINT: (1.15, 32),
            T.ZIGZAG_RICE: (1.15, 32), T.DELTA_ZERORUN: (1.0, 16),
            T.FOR_RADIX: (1.1, 16)}
_NO_PENALTY = (1.0, 0)
_NO_PENALTIES: dict = {}
# True while encoding a cold-tier block (set by rusts.codecs._block.encode, reset after it):
# the cold tier keeps the exact smallest codec, without the decode-speed margins above
EXACT = contextvars.ContextVar("rusts_codecs_exact", default=False)


class _Plan:
    """The cheapest candidate seen so far and how to build it; ``tree`` names the choice (the
    tag, and for DELTA_ZERORUN the trees of its two sub-blocks) for :func:`plan`'s ``only``."""

    __slots__ = ("tag", "size", "cost", "build", "penalty", "tree")

    def __init__(self, n: int, u: np.ndarray) -> None:
        self.tag, self.size, self.cost = T.RAW, 8 * n, 8 * n
        self.build = partial(_raw, u)
        self.penalty = _NO_PENALTIES if EXACT.get() else _PENALTY
        self.tree: tuple = (T.RAW,)

    def consider(self, tag: int, size: int, build, tree: tuple | None = None) -> None:
        factor, extra = self.penalty.get(tag, _NO_PENALTY)
        cost = size * factor + extra
        if cost < self.cost:
            self.tag, self.size, self.cost, self.build = tag, size, cost, build
            self.tree = (tag,) if tree is None else tree


SMALL = 16  # blocks of at most this many values take the small-block rule (small_payload)


def small_payload(vals: list, mode: int = 0, deltas: list | None = None
                  ) -> tuple[int, bytes] | None:
    """The small-block rule: (tag, payload) of CONST, FOR or DELTA_FOR for at most
    :data:`SMALL` values given as Python ints (signed or unsigned order), or None when RAW is
    smallest. ``deltas``: the deltas modulo 2**64 as signed ints, needed when a difference of
    two values may leave the int64 range (else they are the plain differences).

    On a handful of values each numpy call (0.5-3 us) costs more than the data, so statistics
    and bit packing use the builtins (``min``, ``max``, ``map``, big-int ``sum``) over one
    ``tolist``; the entropy, radix and run codecs cannot pay for their headers on 16 values.
    """
    n = len(vals)
    lo, hi = min(vals), max(vals)
    if lo == hi:
        return T.CONST, _U64.pack(lo & _M64)
    w = (hi - lo).bit_length()
    best = 9 + ((n * w + 7) >> 3)
    tag = T.FOR if best < 8 * n else None
    if n >= 2 and mode != NESTED:
        d = list(map(operator.sub, vals[1:], vals[:-1])) if deltas is None else deltas
        dlo = min(d)
        dw = (max(d) - dlo).bit_length()
        if dw <= 64 and 17 + ((n * dw + 7) >> 3) < min(best, 8 * n):
            slots = map(operator.sub, d, itertools.repeat(dlo, n))
            return T.DELTA_FOR, (_DFOR_HDR.pack(vals[0] & _M64, dlo & _M64, dw)
                                   + _bits.pack_small(slots, n, dw, 1))
    if tag is None:
        return None
    return T.FOR, (_FOR_HDR.pack(lo & _M64, w)
                     + _bits.pack_small(map(operator.sub, vals, itertools.repeat(lo, n)), n, w))


def _small_plan(p: _Plan, u: np.ndarray, signed: bool, mode: int) -> _Plan:
    deltas = (u[1:] - u[:-1]).view(np.int64).tolist()  # wrapping, as DELTA_FOR stores them
    got = small_payload((u.view(np.int64) if signed else u).tolist(), mode, deltas)
    if got is not None:
        p.tag, payload = got
        p.size = p.cost = len(payload)
        p.build = partial(bytes, payload)
        p.tree = (p.tag,)
    return p


_VALUE_TAGS = frozenset((T.FOR, T.FOR_RADIX, T.ZIGZAG_RICE, T.ZIGZAG_VARINT))
_DELTA_TAGS = frozenset((T.DELTA_FOR, T.DOD_FOR, T.DELTA_ZERORUN, T.DELTA_ZIGZAG_VARINT))


def plan(u: np.ndarray, signed: bool, mode: int, known: tuple[int, int] | None = None,
         only: tuple | None = None) -> _Plan:
    """Choose the smallest integer codec for ``u`` (uint64 words).

    ``known``: ``(reference, span)`` of ``u`` (as :func:`_range` gives them), when the caller
    already has them; a non-zero span also rules out CONST.
    ``only``: a plan's ``tree`` (of an earlier block of the same column): size only that codec
    (and CONST, and the small-block rule), not every candidate; the result may then be RAW when
    the codec does not fit these values. The caller judges it (rusts.codecs.Hint).
    """
    n = len(u)
    p = _Plan(n, u)
    if n == 0:
        return p
    if n <= SMALL:
        return _small_plan(p, u, signed, mode)
    if known is None or known[1] == 0:
        if u[0] == u[-1] and _all(u == u[0]):
            p.consider(T.CONST, 8, partial(_U64.pack, int(u[0])))
            return p
    want = None if only is None else only[0]
    # many repeated values (a gauge sitting at a bound): DELTA_ZERORUN may be far smaller than
    # the hinted codec, whatever its size per value, so it is sized too
    zr = (want is None or want == T.DELTA_ZERORUN
          or (mode == TOP and n >= 64 and 8 * (n - 1 - int(np.count_nonzero(u[1:] != u[:-1]))) >= n))
    for_size = 8 * n
    if mode != TIMESTAMPS and (want is None or want in _VALUE_TAGS):
        vref, span = _range(u, signed) if known is None else known
        w = span.bit_length()
        for_size = 9 + _bits.packed_size(n, w)
        if want is None or want == T.FOR:
            p.consider(T.FOR, for_size, partial(_build_for, u, vref, w))
        rp = _radix_plan(n, span) if want is None or want == T.FOR_RADIX else None
        if rp is not None:
            g, cw, size = rp
            p.consider(T.FOR_RADIX, size, partial(_build_radix, u, vref, span, g, cw))
    d = None
    if n >= 2 and mode != NESTED and (want is None or want in _DELTA_TAGS or zr):
        d = u[1:] - u[:-1]
        dref, dspan = _range(d, True)
        w = dspan.bit_length()
        if w <= _bits.MAX_PACK_WIDTH and (want is None or want == T.DELTA_FOR):
            p.consider(T.DELTA_FOR, 17 + _bits.packed_size(n, w),
                       partial(_build_delta_for, u, d, dref, w))
        if (n >= 3 and p.size > 25 and (want is None or want == T.DOD_FOR)
                and not _dod_hopeless(d, n, p.cost)):
            dd = d[1:] - d[:-1]
            ref2, w2 = _range_width(dd, True)
            if w2 <= _bits.MAX_PACK_WIDTH:
                p.consider(T.DOD_FOR, 25 + _bits.packed_size(n, w2),
                           partial(_build_dod_for, u, d, dd, ref2, w2))
        if n >= 3 and mode == TOP and p.size > 64 and zr:
            _consider_zerorun(p, u, d, dref, dspan, only if want == T.DELTA_ZERORUN else None)
    if want is not None and want not in (T.ZIGZAG_RICE, T.ZIGZAG_VARINT, T.DELTA_ZIGZAG_VARINT):
        return p
    z = None
    # When a delta codec already halves plain bit-packing the values are sequential, and an
    # entropy code of the raw values (Rice, varint) will not win: skip computing it.
    raw_codes = mode != TIMESTAMPS and not (d is not None and 2 * p.size <= for_size)
    if mode == NESTED and n < _NESTED_FULL and p.penalty is _PENALTY:  # the cold tier weighs all
        return p
    if want is not None:
        raw_codes = mode != TIMESTAMPS
        if want != T.ZIGZAG_RICE:
            raw_codes = raw_codes and want == T.ZIGZAG_VARINT
    if raw_codes and p.size > 16 and (want is None or want == T.ZIGZAG_RICE):
        z = _bits.zigzag(u)
        zmax = None
        if signed and mode != TIMESTAMPS:  # the largest zigzag is at an end of the range
            lo = vref - (1 << 64) if vref >> 63 else vref
            zmax = max(-2 * lo - 1 if lo < 0 else 2 * lo, 2 * (lo + span) if lo + span >= 0
                       else -2 * (lo + span) - 1)
        rp = _rice_plan(z, p.cost, zmax)
        if rp is not None:
            k, size = rp
            p.consider(T.ZIGZAG_RICE, size, partial(_build_rice, z, k))
    if p.size > n + (n >> 1) and (want is None or want != T.ZIGZAG_RICE):  # a varint takes
        # a byte a value at least: look above 12 bits
        if raw_codes and want != T.DELTA_ZIGZAG_VARINT:
            if z is None:
                z = _bits.zigzag(u)
            p.consider(T.ZIGZAG_VARINT, _bits.varint_size(z), partial(_bits.varint_encode, z))
        if d is not None and want != T.ZIGZAG_VARINT:
            zd = np.empty(n, dtype=np.uint64)
            zd[0] = u[0]
            zd[1:] = d
            zd = _bits.zigzag(zd)
            p.consider(T.DELTA_ZIGZAG_VARINT, _bits.varint_size(zd),
                       partial(_bits.varint_encode, zd))
    return p


def plan_codes(codes: np.ndarray, counts: np.ndarray) -> _Plan:
    """Plan for dictionary indices: ``codes`` (uint8 or int64) take every value of
    ``0..k-1`` (``k = len(counts) >= 2``, ``counts`` their histogram), more than SMALL of them.

    The statistics come from what the dictionary already knows: FOR's range is ``0..k-1``,
    Rice's sizes are sums over the k-entry histogram, deltas are taken on the narrow codes.
    DELTA_ZERORUN is looked at only when at least half the deltas are zero (long runs of one
    value); varints never win on indices below 2**12 and are looked at above.
    """
    n = len(codes)
    k = len(counts)
    u = codes.astype(np.uint64)  # the builders' input (most of them cast anyway)
    p = _Plan(n, u)
    span = k - 1
    w = span.bit_length()
    for_size = 9 + _bits.packed_size(n, w)
    p.consider(T.FOR, for_size, partial(_build_for, u, 0, w))
    rp = _radix_plan(n, span)
    if rp is not None:
        g, cw, size = rp
        p.consider(T.FOR_RADIX, size, partial(_build_radix, u, 0, span, g, cw))
    c = codes.astype(np.int32) if codes.dtype.itemsize < 4 else codes
    d = c[1:] - c[:-1]
    dlo, dhi = int(_min(d)), int(_max(d))
    dw = (dhi - dlo).bit_length()
    p.consider(T.DELTA_FOR, 17 + _bits.packed_size(n, dw),
               partial(_build_delta_for_lazy, u, dlo & _M64, dw))
    if 2 * (n - 1 - np.count_nonzero(d)) >= n - 1:
        _consider_zerorun(p, u, u[1:] - u[:-1], dlo & _M64, dhi - dlo)
    if not 2 * p.size <= for_size and p.size > 16:
        rp = _rice_plan_hist(n, 0, span, counts, p.cost)
        if rp is not None:
            p.consider(T.ZIGZAG_RICE, rp[1], partial(_build_rice_u, u, rp[0]))
    if span >= 1 << 12 and p.size > n + (n >> 1):
        z = _bits.zigzag(u)
        p.consider(T.ZIGZAG_VARINT, _bits.varint_size(z), partial(_bits.varint_encode, z))
    return p


def _build_delta_for_lazy(u, ref, w) -> bytes:
    return _build_delta_for(u, u[1:] - u[:-1], ref, w)


_PROBE = 256
# Nested sub-blocks (run lengths, a few non-zero deltas) below this many values only weigh the
# codecs sized from min/max (CONST, FOR, FOR_RADIX): on ~100 values an entropy code saves a
# few dozen bytes at most, and its size estimate costs more than the data.
_NESTED_FULL = 128


def _dod_hopeless(d: np.ndarray, n: int, cost: float) -> bool:
    """True when DOD_FOR cannot beat ``cost``: the delta-of-delta range over a strided
    subset of ``_PROBE`` delta pairs is a lower bound of the whole block's."""
    if len(d) <= 2 * _PROBE:
        return False
    step = len(d) // _PROBE
    probe = d[1::step] - d[:-1:step]
    _, span = _range(probe, True)
    return 25 + _bits.packed_size(n, span.bit_length()) >= cost


def _consider_zerorun(p: _Plan, u: np.ndarray, d: np.ndarray, dref: int, dspan: int,
                      only: tuple | None = None) -> None:
    nzm = d != 0
    if _all(nzm):
        runs = np.array([len(d)], dtype=np.uint64)
        nz = d
        known = (dref, dspan)
    else:
        runs = _runs(nzm)
        if len(runs) > len(d) // 4:
            return
        nz = d[nzm]
        lo = dref - (1 << 64) if dref >> 63 else dref
        # zero strictly inside the deltas' range: dropping the zeros keeps the range
        known = (dref, dspan) if lo < 0 < lo + dspan else None
    sub = only[1:] if only is not None and len(only) == 3 else (None, None)
    rplan = plan(runs, False, NESTED, None, sub[0])
    zplan = plan(nz, True, NESTED, known, sub[1])
    size = 16 + 1 + rplan.size + 1 + zplan.size
    p.consider(T.DELTA_ZERORUN, size, partial(_build_zerorun, int(u[0]), len(runs), rplan, zplan),
               (T.DELTA_ZERORUN, rplan.tree, zplan.tree))


def _build_zerorun(first: int, nruns: int, rplan: "_Plan", zplan: "_Plan") -> bytes:
    return (_ZR_HDR.pack(first, nruns, 1 + rplan.size) + bytes((rplan.tag,)) + rplan.build()
            + bytes((zplan.tag,)) + zplan.build())


def _runs(nzm: np.ndarray) -> np.ndarray:
    """Alternating run lengths of a bool array, True-run first (possibly empty)."""
    m = len(nzm)
    edges = (nzm[1:] != nzm[:-1]).nonzero()[0]
    lead = 0 if nzm[0] else 1  # an empty True-run first
    bounds = np.empty(len(edges) + 2 + lead, dtype=np.uint64)
    bounds[:1 + lead] = 0
    np.add(edges, 1, out=bounds[1 + lead:-1], casting="unsafe")
    bounds[-1] = m
    return bounds[1:] - bounds[:-1]


def _build_for(u, ref, w) -> bytes:
    return _FOR_HDR.pack(ref, w) + _bits.pack(u - np.uint64(ref), w)


def _build_delta_for(u, d, ref, w) -> bytes:
    slots = np.empty(len(u), dtype=np.uint64)  # slot 0 unused (zero): n slots pack in lanes
    slots[0] = 0
    np.subtract(d, np.uint64(ref), out=slots[1:])
    return _DFOR_HDR.pack(int(u[0]), ref, w) + _bits.pack(slots, w)


def _build_dod_for(u, d, dd, ref, w) -> bytes:
    slots = np.empty(len(u), dtype=np.uint64)  # slots 0 and 1 unused (zero)
    slots[:2] = 0
    np.subtract(dd, np.uint64(ref), out=slots[2:])
    return _DDFOR_HDR.pack(int(u[0]), int(d[0]), ref, w) + _bits.pack(slots, w)


def _build_rice_u(u: np.ndarray, k: int) -> bytes:
    return _build_rice(_bits.zigzag(u), k)


def _build_rice(z: np.ndarray, k: int) -> bytes:
    n = len(z)
    if n == 0:
        return bytes((k,))
    q = (z >> np.uint64(k)).astype(np.int64)
    ends = np.add.accumulate(q + 1)
    total = int(ends[-1])
    bits = np.ones((total + 7) & ~7, dtype=np.uint8)
    bits[ends - 1] = 0
    return (bytes((k,)) + _bits.pack(z & np.uint64((1 << k) - 1), k)
            + np.packbits(bits, bitorder="little").tobytes())


def encode(u: np.ndarray, *, signed: bool = True, timestamps: bool = False, hint=None) -> tuple[int, bytes]:
    """Encode uint64 words with the smallest integer codec (or as ``hint`` says: rusts.codecs.Hint).
    Returns (tag, payload)."""
    u = np.ascontiguousarray(u, dtype=np.uint64)
    mode = TIMESTAMPS if timestamps else TOP
    if hint is None:
        p = plan(u, signed, mode)
        return p.tag, p.build()
    p = hinted_plan(hint, "int", u, lambda only: plan(u, signed, mode, None, only))
    return p.tag, p.build()


def hinted_plan(hint, kind: str, u: np.ndarray, make):
    """``make(only)`` with ``hint``'s earlier choice for this column when it has one and the
    result is within its size margin; else ``make(None)`` (every candidate), remembered."""
    n = len(u)
    tree = hint.tree(kind, n)
    if tree is not None:
        p = make(tree)
        if hint.accept(p.size, n):
            return p
    p = make(None)
    hint.remember(kind, p.tree, p.size, n)
    return p


def encode_as(tag: int, u: np.ndarray, *, signed: bool = True) -> bytes:
    """The payload of a given integer codec (for tests and benchmarks).

    Raises:
        CodecError: the codec cannot hold these values (CONST of distinct values, a delta codec
            with too few values, or a bit width over the packing limit).
    """
    u = np.ascontiguousarray(u, dtype=np.uint64)
    n = len(u)
    if tag == T.RAW:
        return u.astype("<u8", copy=False).tobytes()
    if tag == T.CONST:
        if n == 0 or not (u == u[0]).all():
            raise CodecError("CONST needs equal values")
        return _U64.pack(int(u[0]))
    if tag == T.ZIGZAG_VARINT:
        return _bits.varint_encode(_bits.zigzag(u))
    if tag == T.DELTA_ZIGZAG_VARINT:
        zd = u.copy()
        zd[1:] = u[1:] - u[:-1]
        return _bits.varint_encode(_bits.zigzag(zd))
    if tag == T.ZIGZAG_RICE:
        z = _bits.zigzag(u)
        rp = _rice_plan(z)
        if rp is None:
            raise CodecError("values too spread for Rice coding")
        return _build_rice(z, rp[0])
    if tag == T.FOR:
        ref, w = _range_width(u, signed)
        _check_width(w)
        return _build_for(u, ref, w)
    if tag == T.FOR_RADIX:
        ref, span = _range(u, signed)
        if span == 0 or span >= 1 << 32:
            raise CodecError("FOR_RADIX needs a span of 1 to 2**32 - 1")
        g = max(1, min(_MAX_RADIX_GROUP, 64 // (span + 1).bit_length()))
        return _build_radix(u, ref, span, g, ((span + 1) ** g - 1).bit_length())
    if tag not in (T.DELTA_FOR, T.DOD_FOR, T.DELTA_ZERORUN):
        raise CodecError(f"not an integer codec: {tag}")
    if n < (2 if tag == T.DOD_FOR else 1):
        raise CodecError(f"{Tag(tag).name} needs more values")
    d = u[1:] - u[:-1]
    if tag == T.DELTA_FOR:
        ref, w = _range_width(d, True)
        _check_width(w)
        return _build_delta_for(u, d, ref, w)
    if tag == T.DOD_FOR:
        dd = d[1:] - d[:-1]
        ref, w = _range_width(dd, True)
        _check_width(w)
        return _build_dod_for(u, d, dd, ref, w)
    if n == 1:
        return _ZR_HDR.pack(int(u[0]), 0, 1) + bytes((T.RAW, T.RAW))
    nzm = d != 0
    runs = _runs(nzm)
    rsub = encode_sub(runs, signed=False, mode=NESTED)
    return (_ZR_HDR.pack(int(u[0]), len(runs), len(rsub)) + rsub
            + encode_sub(d[nzm], mode=NESTED))


def _check_width(w: int) -> None:
    if w > _bits.MAX_PACK_WIDTH:
        raise CodecError(f"bit width {w} over the packing limit")


def decode(tag: int, payload, n: int, *, nested: bool = False) -> np.ndarray:
    """Inverse of :func:`encode`: ``n`` uint64 words from a payload of codec ``tag``."""
    size = len(payload)
    if tag == T.RAW:
        if size != 8 * n:
            raise CodecError(f"RAW payload is {size} bytes, expected {8 * n}")
        return np.frombuffer(payload, dtype="<u8").astype(np.uint64)
    if tag == T.CONST:
        if size != 8:
            raise CodecError(f"CONST payload is {size} bytes, expected 8")
        return np.full(n, _U64.unpack_from(payload)[0], dtype=np.uint64)
    if tag == T.FOR:
        if size < 9:
            raise CodecError("FOR payload truncated")
        ref, w = _FOR_HDR.unpack_from(payload)
        if n <= SMALL and w <= 64:  # Python ints beat numpy's per-call cost on a few values
            vals = map(operator.add, _bits.unpack_small(payload[9:], n, w), _repeat(ref, n))
            if ref + (1 << w) > 1 << 64:  # the sum may wrap
                vals = map(operator.and_, vals, _repeat(_M64, n))
            return np.fromiter(vals, np.uint64, n)
        return _bits.unpack(payload[9:], n, w) + np.uint64(ref)
    if tag == T.DELTA_FOR:
        if size < 17 or n < 1:
            raise CodecError("DELTA_FOR payload truncated")
        first, ref, w = _DFOR_HDR.unpack_from(payload)
        if n <= SMALL and w <= 64:
            slots = _bits.unpack_small(payload[17:], n, w)
            next(slots)
            vals = itertools.accumulate(map(operator.add, slots, _repeat(ref, n)), initial=first)
            return np.fromiter(map(operator.and_, vals, _repeat(_M64, n)), np.uint64, n)
        if w == 0:  # constant delta (regular timestamps): an arithmetic sequence
            if len(payload) != 17:
                raise CodecError(f"DELTA_FOR payload is {len(payload)} bytes, expected 17")
            out = np.arange(n, dtype=np.uint64)
            out *= np.uint64(ref)
            out += np.uint64(first)  # (wraps modulo 2**64 like the running sum)
            return out
        out = _bits.unpack(payload[17:], n, w)
        out += np.uint64(ref)
        out[0] = first
        return np.add.accumulate(out, out=out)
    if tag == T.DOD_FOR:
        if size < 25 or n < 2:
            raise CodecError("DOD_FOR payload truncated")
        first, d0, ref, w = _DDFOR_HDR.unpack_from(payload)
        out = _bits.unpack(payload[25:], n, w)
        out += np.uint64(ref)
        out[0] = first
        out[1] = d0
        np.add.accumulate(out[1:], out=out[1:])
        return np.add.accumulate(out, out=out)
    if tag == T.ZIGZAG_VARINT:
        return _bits.unzigzag(_bits.varint_decode(payload, n))
    if tag == T.DELTA_ZIGZAG_VARINT:
        return np.cumsum(_bits.unzigzag(_bits.varint_decode(payload, n)), dtype=np.uint64)
    if tag == T.ZIGZAG_RICE:
        return _bits.unzigzag(_decode_rice(payload, n))
    if tag == T.FOR_RADIX:
        return _decode_radix(payload, n)
    if tag == T.DELTA_ZERORUN and not nested:
        return _decode_zerorun(payload, n)
    raise CodecError(f"unknown integer codec tag {tag:#04x}")


def _decode_rice(payload, n: int) -> np.ndarray:
    if len(payload) < 1:
        raise CodecError("Rice payload truncated")
    k = payload[0]
    if k > _MAX_RICE_K:
        raise CodecError(f"Rice parameter {k} out of range")
    rsize = _bits.packed_size(n, k)
    if len(payload) < 1 + rsize:
        raise CodecError("Rice remainders truncated")
    rem = _bits.unpack(payload[1:1 + rsize], n, k)
    stop_bits = np.unpackbits(np.invert(np.frombuffer(payload[1 + rsize:], dtype=np.uint8)),
                              bitorder="little")
    ends = stop_bits.view(bool).nonzero()[0]  # bool: numpy's fast nonzero path
    if len(ends) != n or len(stop_bits) - (int(ends[-1]) if n else -1) > 8:
        raise CodecError(f"Rice quotient stream holds {len(ends)} values, expected {n}")
    if n == 0:
        return rem
    q = np.empty(n, dtype=np.int64)
    q[0] = ends[0]
    np.subtract(ends[1:], ends[:-1], out=q[1:])
    q[1:] -= 1
    if k > 30 and int(q.max()) >= 1 << (64 - k):  # q < 2**33: only a large k can overflow
        raise CodecError("Rice value overflows 64 bits")
    z = q.view(np.uint64)
    z <<= np.uint64(k)
    z |= rem
    return z


def zerorun_parts(payload, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode a DELTA_ZERORUN payload as ``(levels, reps)``: the values are
    ``np.repeat(levels, reps)`` (``reps`` None: ``levels`` are the values).

    A level is the value after each non-zero delta (and the first value); it repeats once plus
    the length of the zero run that follows it. Elementwise maps of the values (ALP's int ->
    float) can run on the levels alone, before the one ``np.repeat``.
    """
    if len(payload) < 16 or n < 1:
        raise CodecError("DELTA_ZERORUN payload truncated")
    first, nruns, rlen = _ZR_HDR.unpack_from(payload)
    if len(payload) < 16 + rlen or nruns > n:
        raise CodecError("DELTA_ZERORUN runs truncated")
    runs = decode_sub(payload[16:16 + rlen], nruns, nested=True)
    if nruns and (int(_max(runs)) >= n or int(_sum(runs)) != n - 1):  # max < n: sum can't wrap
        raise CodecError("DELTA_ZERORUN run lengths disagree with the count")
    rest = payload[16 + rlen:]
    if nruns <= 1:
        out = np.empty(n, dtype=np.uint64)
        out[1:] = decode_sub(rest, n - 1, nested=True)
        out[0] = first
        return np.add.accumulate(out, out=out), None
    lens = runs.view(np.int64)
    nz_lens = lens[0::2]
    zero_lens = lens[1::2]
    nnz = int(_sum(nz_lens))
    levels = np.empty(nnz + 1, dtype=np.uint64)
    levels[1:] = decode_sub(rest, nnz, nested=True)
    levels[0] = first
    np.add.accumulate(levels, out=levels)
    reps = np.empty(nnz + 1, dtype=np.int64)
    reps.fill(1)
    # zero run j follows the level reached after non-zero runs 0..j (add.at: a corrupt empty
    # run in the middle makes two zero runs follow the same level)
    at = np.cumsum(nz_lens[:len(zero_lens)])
    if nz_lens.all():  # distinct positions: a plain fancy add
        reps[at] += zero_lens
    else:
        np.add.at(reps, at, zero_lens)
    return levels, reps


def _decode_zerorun(payload, n: int) -> np.ndarray:
    levels, reps = zerorun_parts(payload, n)
    return levels if reps is None else levels.repeat(reps)


def _arange(k: int, start: int) -> np.ndarray:
    """``np.arange(start, start + k)`` as int64, from a cache for the usual block sizes."""
    if k + start <= len(_ARANGE):
        return _ARANGE[start:start + k]
    return np.arange(start, start + k, dtype=np.int64)


_ARANGE = np.arange(16385, dtype=np.int64)
_ARANGE.flags.writeable = False


def encode_sub(u: np.ndarray, *, signed: bool = True, mode: int = TOP, only: tuple | None = None) -> bytes:
    """A sub-block: tag byte + payload of the smallest integer codec (``only``: see :func:`plan`)."""
    p = plan(np.ascontiguousarray(u, dtype=np.uint64), signed, mode, None, only)
    return bytes((p.tag,)) + p.build()


def sub_plan(u: np.ndarray, *, signed: bool = True, mode: int = TOP, only: tuple | None = None) -> _Plan:
    """The plan of :func:`encode_sub` (its ``tree``, ``size``; ``bytes((p.tag,)) + p.build()``)."""
    return plan(np.ascontiguousarray(u, dtype=np.uint64), signed, mode, None, only)


def decode_sub(buf, n: int, *, nested: bool = False) -> np.ndarray:
    """Inverse of :func:`encode_sub` (``buf`` is exactly the sub-block).

    ``nested``: the sub-block sits inside DELTA_ZERORUN, where DELTA_ZERORUN is not allowed.
    """
    if len(buf) < 1:
        raise CodecError("integer sub-block is empty")
    return decode(buf[0], buf[1:], n, nested=nested)
