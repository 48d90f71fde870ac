"""float64 codecs: ALP-style decimals and a vectorised Gorilla XOR, over the raw bit patterns.

Both work on the uint64 bit patterns, so NaN payloads, -0.0, infinities and subnormals
round-trip exactly (RAW and CONST, shared with the integers, are the fallbacks).

ALP (decimal) payload, little-endian::

    e        u8    decimal exponent, 0..22
    nexc     u32   number of exceptions
    [if nexc > 0:
      plen   u32   length of the positions sub-block
      pos    plen  integer sub-block: exception positions (strictly increasing)
      exc    8*nexc the exceptions' raw bit patterns]
    ints     rest  integer sub-block: round(v * 10**e) as int64

Decoding is ``ints / 10**e`` (int64 -> float64 is exact below 2**53, and IEEE division is
correctly rounded), then the exceptions are scattered back. The encoder picks ``e`` as the
smallest exponent for which ``rint(v * 10**e) / 10**e`` reproduces the bit pattern of every value
of a strided sample, then verifies every value; values that fail (NaN, inf, -0.0, too many
digits, |v * 10**e| >= 2**53) become exceptions and take the previous value's integer so that
the integer stream's deltas stay small. Values written with k decimals (sensor data, TSBS) come
back as k-digit integers, so a 2-decimal random walk costs its delta width, about 1-1.3 bytes.

Gorilla payload (Facebook's XOR idea, re-laid out so decoding is whole-array operations)::

    nnz      u32               how many XORs with the previous value are non-zero
    ctrl     ceil(n/8)         one bit per value: XOR non-zero
    hdr      ceil(nnz*12/8)    per non-zero XOR, 12 bits: leading zeros (6) << 6 | (length-1) (6)
    bits     rest              the meaningful bits of each non-zero XOR, back to back

Decoding reads the variable-width fields at offsets from a cumulative sum of lengths, shifts
them into place and runs ``np.bitwise_xor.accumulate``: no per-value loop.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from rusts.codecs import _bits, _ints
from rusts.codecs._format import T
from rusts.errors import CodecError

_SAMPLE = 256
_PROBE = 32
_MAX_E_ENC = 18
_MAX_E_DEC = 22
_LIMIT = float(2 ** 53)
_ALP_HDR = struct.Struct("<BI")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_POW10 = [10.0 ** e for e in range(_MAX_E_DEC + 1)]
_POW10_COL = np.array(_POW10[:_MAX_E_ENC + 1])[:, None]


def _alp_ok(f: np.ndarray, bits: np.ndarray, p) -> tuple[np.ndarray, np.ndarray]:
    """(ok, r): ``r = rint(f * p) + 0.0`` and where it reproduces ``f`` exactly with
    ``|f * p| < 2**53`` (False for NaN, inf, -0.0); ``p`` a power of ten or a column of them.
    ``r`` is garbage (NaN, inf) where not ok. Callers hold the warning state."""
    s = f * p  # the callers hold np.errstate(invalid/over="ignore"): huge, NaN, inf
    ok = np.abs(s) < _LIMIT  # False for NaN and inf
    np.rint(s, out=s)
    s += 0.0  # -0.0 -> 0.0, as int64 would
    ok &= (s / p).view(np.uint64) == bits
    return ok, s


def _bad_counts(fs: np.ndarray, bs: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Exceptions in the sample for each exponent in [lo, hi), all exponents at once."""
    ok, _ = _alp_ok(fs, bs, _POW10_COL[lo:hi])
    return len(fs) - np.add.reduce(ok, axis=1)


def alp_exponent(f: np.ndarray, bits: np.ndarray) -> int | None:
    """The decimal exponent to use for ``f``, or None if ALP does not fit the data.

    The smallest exponent with the fewest exceptions on a strided sample of at most 256
    values; exponents 0..3 first (most sensor data), then 4..18 only if none was exact.
    """
    with _quiet():
        return _alp_exponent(f, bits)


def _quiet():
    """Warning state for the ALP arithmetic (overflow and NaN casts are expected); one per
    call, entered once per block: errstate objects are not shareable between threads."""
    return np.errstate(invalid="ignore", over="ignore")


def _alp_exponent(f: np.ndarray, bits: np.ndarray) -> int | None:
    step = max(1, len(f) // _SAMPLE)
    fs, bs = f[::step], bits[::step]
    bad = _bad_counts(fs, bs, 0, 4)
    if bad.min() > 0:
        bad = np.concatenate([bad, _bad_counts(fs, bs, 4, _MAX_E_ENC + 1)])
    e = int(np.argmin(bad))
    if bad[e] * 8 > len(fs):
        return None
    return e


def _alp_best(f: np.ndarray, bits: np.ndarray, rival=None, trees: list | None = None) -> bytes | None:
    """The ALP payload :func:`alp_exponent` and :func:`alp_encode` give, found faster.

    A 32-value probe (every 8th value of the 256-value sample) tries every exponent in one
    pass. Full-precision data (over a quarter of the probe inexact at every exponent) stop
    there. Otherwise the smallest exponent exact on the probe is tried on the block; with no
    exception it is also what the sample search picks (smaller exponents already fail on the
    probe, a subset of the sample), so that search is skipped; else it decides.

    ``rival()``: the size ALP must beat, asked only when a block has exceptions (8 bytes each
    at least): when it cannot win, the integer planning is skipped. ``trees``: see
    :func:`_alp_payload`.
    """
    n = len(f)
    step = max(1, n // _SAMPLE)
    pstep = max(1, len(range(0, n, step)) // _PROBE) * step
    bad = _bad_counts(f[::pstep], bits[::pstep], 0, _MAX_E_ENC + 1)
    e = int(bad.argmin())
    if bad[e] * 4 > len(range(0, n, pstep)):
        return None
    if bad[e] == 0:
        payload, nexc = _alp_payload(f, bits, e, False, rival, trees)
        if nexc == 0:
            return payload
        e_sample = _alp_exponent(f, bits)
        if e_sample == e:
            return payload
    else:
        e_sample = _alp_exponent(f, bits)
    return None if e_sample is None else _alp_payload(f, bits, e_sample, False, rival, trees)[0]


def alp_encode(f: np.ndarray, bits: np.ndarray, e: int, *, force: bool = False) -> bytes | None:
    """ALP payload with exponent ``e`` (None if over a quarter are exceptions, unless ``force``)."""
    with _quiet():
        return _alp_payload(f, bits, e, force)[0]


def _alp_payload(f: np.ndarray, bits: np.ndarray, e: int, force: bool,
                 rival=None, trees: list | None = None) -> tuple[bytes | None, int]:
    """(ALP payload or None, number of exceptions); None also when ``rival()`` is smaller
    than any payload with that many exceptions. A payload made appends ``(e, integer plan
    tree, exceptions)`` to ``trees`` (the hint of the next block: :func:`encode`)."""
    n = len(f)
    ok, r = _alp_ok(f, bits, _POW10[e])
    nexc = n - int(np.count_nonzero(ok))
    if nexc * 4 > n and not force:
        return None, nexc
    if nexc and rival is not None and 11 + 8 * nexc > rival():
        return None, nexc
    if nexc:
        ints = np.where(ok, r, 0.0).astype(np.int64)
        idx = np.maximum.accumulate(np.where(ok, np.arange(n), 0))
        ints = ints[idx]
        pos = np.flatnonzero(~ok).astype(np.uint64)
        psub = _ints.encode_sub(pos, signed=False)
        head = (_ALP_HDR.pack(e, nexc) + _U32.pack(len(psub)) + psub
                + bits[~ok].astype("<u8").tobytes())
    else:
        ints = r.astype(np.int64)
        head = _ALP_HDR.pack(e, 0)
    ip = _ints.sub_plan(ints.view(np.uint64), signed=True)
    if trees is not None:
        trees.append((e, ip.tree, nexc))
    return head + bytes((ip.tag,)) + ip.build(), nexc


def alp_decode(payload, n: int) -> np.ndarray:
    """ALP payload -> uint64 bit patterns."""
    if len(payload) < 5:
        raise CodecError("ALP payload truncated")
    e, nexc = _ALP_HDR.unpack_from(payload)
    if e > _MAX_E_DEC:
        raise CodecError(f"ALP exponent {e} out of range")
    if nexc > n:
        raise CodecError(f"ALP block claims {nexc} exceptions for {n} values")
    off = 5
    pos = exc = None
    if nexc:
        if len(payload) < off + 4:
            raise CodecError("ALP exceptions truncated")
        (plen,) = _U32.unpack_from(payload, off)
        off += 4
        if len(payload) < off + plen + 8 * nexc:
            raise CodecError("ALP exceptions truncated")
        pos = _ints.decode_sub(payload[off:off + plen], nexc)
        off += plen
        if (pos >= np.uint64(n)).any() or (nexc > 1 and (pos[1:] <= pos[:-1]).any()):
            raise CodecError("ALP exception positions out of range")
        exc = np.frombuffer(payload[off:off + 8 * nexc], dtype="<u8")
        off += 8 * nexc
    sub = payload[off:]
    if len(sub) and sub[0] == T.DELTA_ZERORUN:  # int -> float on the levels, then repeat
        levels, reps = _ints.zerorun_parts(sub[1:], n)
        out = np.true_divide(levels.view(np.int64), _POW10[e])
        if reps is not None:
            out = out.repeat(reps)
    else:
        out = np.true_divide(_ints.decode_sub(sub, n).view(np.int64), _POW10[e])
    out = out.view(np.uint64)
    if nexc:
        out[pos.astype(np.intp)] = exc
    return out


def _xors(bits: np.ndarray) -> np.ndarray:
    x = bits.copy()
    x[1:] ^= bits[:-1]
    return x


def gorilla_lower_bound(x: np.ndarray) -> tuple[int, int]:
    """(nnz, a lower bound of the Gorilla payload size) from the XOR array."""
    n = len(x)
    nnz = int(np.count_nonzero(x))
    return nnz, 4 + (n + 7) // 8 + (nnz * 13 + 7) // 8


class _Gorilla:
    """The Gorilla fields of an XOR array and the payload's exact size, before packing."""

    __slots__ = ("x", "nzmask", "nz", "bl", "tz", "size")

    def __init__(self, x: np.ndarray) -> None:
        self.x = x
        self.nzmask = x != 0
        self.nz = x[self.nzmask]
        self.bl = _bits.bit_length(self.nz)  # 64 - leading zeros
        self.tz = _bits.trailing_zeros(self.nz)
        n, nnz = len(x), len(self.nz)
        meaningful = int(np.add.reduce(self.bl)) - int(np.add.reduce(self.tz))
        self.size = 4 + (n + 7) // 8 + _bits.packed_size(nnz, 12) + (meaningful + 7) // 8

    def build(self) -> bytes:
        length = self.bl - self.tz
        ctrl = np.packbits(self.nzmask, bitorder="little").tobytes()
        hdr = (64 - self.bl) << 6
        hdr |= length - 1
        meaningful = _bits.pack_var(self.nz >> self.tz.view(np.uint64), length)
        return (_U32.pack(len(self.nz)) + ctrl + _bits.pack(hdr.view(np.uint64), 12)
                + meaningful)


def gorilla_encode(x: np.ndarray) -> bytes:
    """Gorilla payload from the XOR array (``_xors(bits)``)."""
    return _Gorilla(x).build()


def gorilla_decode(payload, n: int) -> np.ndarray:
    """Gorilla payload -> uint64 bit patterns."""
    if len(payload) < 4:
        raise CodecError("Gorilla payload truncated")
    (nnz,) = _U32.unpack_from(payload)
    cbytes = (n + 7) // 8
    hbytes = _bits.packed_size(nnz, 12)
    if nnz > n or len(payload) < 4 + cbytes + hbytes:
        raise CodecError("Gorilla payload truncated")
    ctrl = np.unpackbits(np.frombuffer(payload[4:4 + cbytes], dtype=np.uint8),
                         count=n, bitorder="little").view(bool)
    if int(np.count_nonzero(ctrl)) != nnz:
        raise CodecError("Gorilla control bits disagree with the non-zero count")
    hdr = _bits.unpack(payload[4 + cbytes:4 + cbytes + hbytes], nnz, 12).astype(np.int64)
    lz = hdr >> 6
    length = (hdr & 63) + 1
    tz = 64 - lz - length
    if nnz and int(tz.min()) < 0:
        raise CodecError("Gorilla field lengths out of range")
    m = _bits.unpack_var(payload[4 + cbytes + hbytes:], length)
    x = np.zeros(n, dtype=np.uint64)
    x[ctrl] = m << tz.astype(np.uint64)
    return np.bitwise_xor.accumulate(x)


_NEG_ZERO = 1 << 63


def _encode_small(f: np.ndarray, bits: np.ndarray) -> tuple[int, bytes]:
    """The small-block rule (at most ``_ints.SMALL`` values): CONST, exact ALP, else RAW.

    Every exponent is tried at once on an (exponents x values) matrix, limited to those that
    keep ``sum|v| * 10**e`` below 2**53 (so nothing overflows and no warning state is needed).
    A block with NaN, infinities, -0.0 or no exact exponent is RAW: Gorilla saves a few bytes
    at most on 16 values, for ten times the work.
    """
    n = len(f)
    lst = bits.tolist()
    if lst.count(lst[0]) == n:
        return T.CONST, _U64.pack(lst[0])
    total = sum(map(abs, f.tolist()))  # NaN or inf if any value is
    if 1e-18 < total < _LIMIT and _NEG_ZERO not in lst:  # smaller: no exponent fits
        p = _POW10_COL[:min(_MAX_E_ENC, int(math.log10(_LIMIT / total))) + 1]
        s = f * p
        np.rint(s, out=s)
        good = (s / p == f).all(axis=1)  # -0.0 excluded above, so == is bit equality
        e = int(good.argmax())
        if good[e]:
            got = _ints.small_payload(list(map(int, s[e].tolist())))
            if got is not None and 6 + len(got[1]) < 8 * n:
                return T.ALP, _ALP_HDR.pack(e, 0) + bytes((got[0],)) + got[1]
    return T.RAW, bits.astype("<u8", copy=False).tobytes()


def _hinted_alp(f: np.ndarray, bits: np.ndarray, tree: tuple, hint) -> bytes | None:
    """The ALP payload with the exponent and integer codec of ``tree`` (an earlier block's
    choice), when every value is exact at that exponent and the size is within the hint's
    margin; else None."""
    e, itree = tree
    with _quiet():
        ok, r = _alp_ok(f, bits, _POW10[e])
    if not np.logical_and.reduce(ok):
        return None
    ip = _ints.sub_plan(r.astype(np.int64).view(np.uint64), signed=True, only=itree)
    if not hint.accept(6 + ip.size, len(f)):
        return None
    return _ALP_HDR.pack(e, 0) + bytes((ip.tag,)) + ip.build()


def encode(f: np.ndarray, hint=None) -> tuple[int, bytes]:
    """Encode float64 values with the smallest float codec. Returns (tag, payload).

    ``hint`` (rusts.codecs.Hint, optional): the column's earlier choice; when it was ALP with
    no exception, this block tries the same exponent and integer codec first (sizing only
    that one) and keeps them when they fit within the hint's margin.
    """
    f = np.ascontiguousarray(f, dtype=np.float64)
    bits = f.view(np.uint64)
    n = len(f)
    if n == 0:
        return T.RAW, b""
    if n <= _ints.SMALL:
        return _encode_small(f, bits)
    if bits[0] == bits[-1] and np.logical_and.reduce(bits == bits[0]):
        return T.CONST, bits[:1].astype("<u8").tobytes()
    trees: list | None = None
    if hint is not None:
        tree = hint.tree("alp", n)
        if tree is not None:
            got = _hinted_alp(f, bits, tree, hint)
            if got is not None:
                return T.ALP, got
        trees = []
    best_tag, best = T.RAW, None
    best_size = 8 * n
    gorilla: list = []  # computed once, when ALP asks (exceptions) or after it

    def gorilla_size() -> int:
        if not gorilla:
            x = _xors(bits)
            gorilla.append(_Gorilla(x) if gorilla_lower_bound(x)[1] < 8 * n else None)
        return gorilla[0].size if gorilla[0] is not None else 8 * n

    with _quiet():
        p = _alp_best(f, bits, gorilla_size, trees)
    if p is not None and len(p) < best_size:
        best_tag, best, best_size = T.ALP, p, len(p)
    if not gorilla and best_size > 4 + (n + 7) // 8:  # else Gorilla's bound already loses
        x = _xors(bits)
        if gorilla_lower_bound(x)[1] < best_size:
            gorilla.append(_Gorilla(x))  # the exact size first: packing only if it wins
    if gorilla and gorilla[0] is not None and gorilla[0].size < best_size:
        best_tag, best, best_size = T.GORILLA, gorilla[0].build(), gorilla[0].size
    if best is None:
        best = bits.astype("<u8", copy=False).tobytes()
    if hint is not None:
        if best_tag == T.ALP and trees and trees[-1][2] == 0:
            hint.remember("alp", trees[-1][:2], best_size, n)
        else:
            hint.remember("alp", None, best_size, n)
    return best_tag, best


def encode_as(tag: int, f: np.ndarray) -> bytes:
    """The payload of a given float codec (for tests and benchmarks)."""
    f = np.ascontiguousarray(f, dtype=np.float64)
    bits = f.view(np.uint64)
    if tag == T.ALP:
        e = alp_exponent(f, bits) if len(f) else 0
        return alp_encode(f, bits, 0 if e is None else e, force=True)
    if tag == T.GORILLA:
        return gorilla_encode(_xors(bits))
    if tag in (T.RAW, T.CONST):
        return _ints.encode_as(tag, bits)
    raise CodecError(f"not a float codec: {tag}")


def decode(tag: int, payload, n: int) -> np.ndarray:
    """Inverse of :func:`encode`, returning the uint64 bit patterns."""
    if tag == T.ALP:
        return alp_decode(payload, n)
    if tag == T.GORILLA:
        return gorilla_decode(payload, n)
    if tag in (T.RAW, T.CONST):
        return _ints.decode(tag, payload, n)
    raise CodecError(f"unknown float codec tag {tag:#04x}")
