"""Many blocks of one column encoded in one vectorised pass (``rusts.codecs.encode_blocks``).

The segment writer cuts a column into hundreds of blocks (hourly, time-aligned: ~1,000 values
each), and :func:`rusts.codecs.encode` spends most of its time on per-block numpy calls, not on
the values. Here the values of every block are one concatenated array with block offsets, and
each step (ranges, bit widths, Rice parameters and sizes, run lengths, bit packing, the unary
streams) is one numpy call over all blocks; only the final framing (header, LZ4/Zstd wrapper,
CRC) is per block. The blocks are ordinary codec blocks (docs/format/codecs.md): every reader
decodes them with :func:`rusts.codecs.decode`.

The codecs used are a subset, chosen per block by exact size:

* timestamps: DELTA_FOR (width 0 for a constant interval);
* integers: CONST, FOR, FOR_RADIX, ZIGZAG_RICE, DELTA_ZERORUN (its runs and non-zero deltas
  sub-blocks CONST / FOR / FOR_RADIX / ZIGZAG_RICE) when at least 1/8 of the deltas are zero;
* floats: CONST, or ALP without exceptions at the column's exponent (its integers as above);
* strings of a column with at most 64 distinct values: CONST, STR_DICT (indices as above).

A block this subset does not fit (floats needing exceptions or another exponent, booleans,
high-cardinality strings, blocks under 64 values) is returned as None: the caller encodes it with
:func:`rusts.codecs.encode`. Rice codes compete without the per-block planner's decode-speed
margin: on such data the planner picks DELTA_ZERORUN trees with Rice sub-blocks, which decode
with the same numpy steps.
"""

from __future__ import annotations

import collections
import operator
import struct

import numpy as np

from rusts.codecs import _bits
from rusts.codecs._block import _SMALL, COMPRESSION_LEVELS, TIERS, frame
from rusts.codecs._ints import _radix_plan
from rusts.codecs._floats import _ALP_HDR, _POW10, _alp_ok
from rusts.codecs._format import TYPE_FLOAT, TYPE_INT, TYPE_STRING, TYPE_UINT, Tag as T
from rusts.codecs._strings import _DICT_HDR, _utf8 as _sutf8, section as _section
from rusts.errors import CodecError

_FOR_HDR = struct.Struct("<QB")
_DFOR_HDR = struct.Struct("<QQB")
_ZR_HDR = struct.Struct("<QII")
_RADIX_HDR = struct.Struct("<QQB")
_U64 = struct.Struct("<Q")
MIN_BLOCK = 64  # smaller blocks go to the per-block encoder (its small-block rules)


def _packed_sizes(n: np.ndarray, w: np.ndarray) -> np.ndarray:
    """:func:`rusts.codecs._bits.packed_size` of every (count, width) pair."""
    lanes = np.where(n >= _bits.PAD_LANES_FROM, -(-n // 64), n // 64)
    tail = np.where(n >= _bits.PAD_LANES_FROM, 0, n % 64)
    return lanes * w * 8 + ((tail * w + 7) >> 3)


def pack_many(u: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int) -> list[bytes]:
    """:func:`rusts.codecs._bits.pack` of ``u[starts[i]:ends[i]]`` at ``width`` bits, for every
    i: the lanes of all blocks (and each block's tail, as one more zero-padded lane whose
    stream is cut to its bytes) packed as one (64, lanes) matrix, then read out block by block
    in the layout's word order with one gather."""
    k = len(starts)
    if width == 0 or k == 0:
        return [b""] * k
    n = ends - starts
    big = n >= _bits.PAD_LANES_FROM
    lanes = np.where(big, -(-n // 64), n // 64)
    tail = np.where(big, 0, n % 64)
    ncol = lanes + (tail > 0)
    cstart = np.zeros(k + 1, np.int64)
    np.cumsum(ncol, out=cstart[1:])
    colblk = np.repeat(np.arange(k), ncol)
    lane = np.arange(int(cstart[-1]), dtype=np.int64) - cstart[:-1][colblk]
    lb = lanes[colblk]
    is_tail = lane >= lb
    base = starts[colblk] + np.where(is_tail, 64 * lb, lane)
    step = np.where(is_tail, 1, lb)
    # row k of a column holds value base + k * step (zero past the block's end)
    idx = base[None, :] + np.arange(64, dtype=np.int64)[:, None] * step[None, :]
    nu = len(u)
    np.copyto(idx, nu, where=idx >= ends[colblk][None, :])
    uext = np.empty(nu + 1, np.uint64)
    uext[:nu] = u
    uext[nu] = 0
    v = uext[idx]
    _, _, straddle, slots = _bits._lane_plan(width)
    shift = ((np.arange(64, dtype=np.uint64) * np.uint64(width)) & np.uint64(63))[:, None]
    nst = len(straddle)
    rows = np.empty((65 + nst, v.shape[1]), dtype=np.uint64)
    np.left_shift(v, shift, out=rows[:64])
    if nst:
        np.right_shift(v[straddle], np.uint64(64) - shift[straddle], out=rows[64:64 + nst])
    rows[64 + nst] = 0
    words = np.bitwise_or.reduce(rows[slots], axis=1)  # (width, columns)
    # each block: its lane words row-major (width x lanes), then its tail column's words
    wcount = width * ncol
    wst = np.zeros(k + 1, np.int64)
    np.cumsum(wcount, out=wst[1:])
    wb = np.repeat(np.arange(k), wcount)
    p = np.arange(int(wst[-1]), dtype=np.int64) - wst[:-1][wb]
    lw = lanes[wb]
    in_lane = p < width * lw
    safe = np.maximum(lw, 1)
    r = np.where(in_lane, p // safe, p - width * lw)
    c = cstart[:-1][wb] + np.where(in_lane, p % safe, lw)
    stream = words[r, c].astype("<u8", copy=False).tobytes()
    out = []
    for a, nl, t in zip((8 * wst[:-1]).tolist(), (8 * width * lanes).tolist(), tail.tolist()):
        if t:
            out.append(stream[a:a + nl + ((t * width + 7) >> 3)])
        else:
            out.append(stream[a:a + nl])
    return out


class _Ints:
    """Integer sub-blocks (tag byte + payload) for many blocks of one integer column."""

    def __init__(self, u: np.ndarray, starts: np.ndarray, signed: bool, top: bool) -> None:
        self.u = np.ascontiguousarray(u, dtype=np.uint64)
        self.starts = starts  # B + 1 offsets, every block non-empty
        self.signed = signed
        self.top = top  # DELTA_ZERORUN allowed (not inside another one)

    def build(self) -> list[bytes | None]:
        u, st = self.u, self.starts
        a = st[:-1]
        n = np.diff(st)
        k = len(n)
        if self.signed:
            s = u.view(np.int64)
            lo = np.minimum.reduceat(s, a).view(np.uint64)
            hi = np.maximum.reduceat(s, a).view(np.uint64)
        else:
            lo = np.minimum.reduceat(u, a)
            hi = np.maximum.reduceat(u, a)
        span = hi - lo
        self._span = span
        width = _bits.bit_length(span)
        size = np.where(span == 0, 8, 9 + _packed_sizes(n, width))
        kind = np.where(span == 0, 0, 1)  # 0 CONST, 1 FOR, 2 RICE, 3 ZERORUN, 4 RADIX
        seg = np.repeat(np.arange(k), n)
        z = _bits.zigzag(u)
        zf = np.add.reduceat(z.astype(np.float64), a)
        zmax = np.maximum.reduceat(z, a)
        mean = zf / n
        k0 = np.where(mean >= 1, np.floor(np.log2(np.maximum(mean, 1.0))), 0).astype(np.int64)
        exact = zmax.astype(np.float64) < float((1 << 62)) / n
        rice_ok = exact & (k0 <= 56) & (span > 0)
        rice_k = np.zeros(k, np.int64)
        rice_size = np.full(k, np.iinfo(np.int64).max)
        if rice_ok.any():
            kk = k0[rice_ok]
            lo_k, hi_k = max(int(kk.min()) - 1, 0), int(kk.max())
            if hi_k - lo_k <= 3:  # a few parameters for the whole column: scalar shifts
                for c in range(lo_k, hi_k + 1):
                    q = np.add.reduceat((z >> np.uint64(c)).view(np.int64), a)
                    sz = 1 + _packed_sizes(n, c) + (q + n + 7) // 8
                    better = rice_ok & ((k0 == c) | (k0 - 1 == c) | ((k0 == 0) & (c == 0)))
                    better &= (q <= 64 * n) & (sz < rice_size)
                    rice_size = np.where(better, sz, rice_size)
                    rice_k = np.where(better, c, rice_k)
            else:
                for cand in (k0 - 1, k0):
                    c = np.maximum(cand, 0)
                    q = np.add.reduceat((z >> c[seg].astype(np.uint64)).view(np.int64), a)
                    sz = 1 + _packed_sizes(n, c) + (q + n + 7) // 8
                    better = rice_ok & (q <= 64 * n) & (sz < rice_size)
                    rice_size = np.where(better, sz, rice_size)
                    rice_k = np.where(better, c, rice_k)
        use_rice = (rice_size < size) & (kind == 1)
        size = np.where(use_rice, rice_size, size)
        kind = np.where(use_rice, 2, kind)
        radix: dict[int, tuple[int, int, int]] = {}
        small = np.flatnonzero((span > 0) & (span < (1 << 20)) & (n >= 64) & (kind != 0))
        for i in small.tolist():
            rp = _radix_plan(int(n[i]), int(span[i]))
            if rp is not None and rp[2] < size[i]:
                radix[i] = rp
                size[i] = rp[2]
                kind[i] = 4
        zr: dict[int, bytes] = {}
        if self.top:
            zr = self._zerorun(seg, n, kind, size)
            for i, body in zr.items():
                kind[i] = 3
        out: list[bytes | None] = [None] * k
        for i in np.flatnonzero(kind == 0).tolist():
            out[i] = bytes((T.CONST,)) + _U64.pack(int(lo[i]))
        d = u - lo[seg] if (kind == 1).any() else u
        for w in np.unique(width[kind == 1]).tolist():
            sel = np.flatnonzero((kind == 1) & (width == w))
            bodies = pack_many(d, a[sel], st[1:][sel], w)
            for i, body in zip(sel.tolist(), bodies):
                out[i] = bytes((T.FOR,)) + _FOR_HDR.pack(int(lo[i]), w) + body
        if (kind == 2).any():
            self._rice(out, np.flatnonzero(kind == 2), z, seg, n, rice_k)
        if radix:
            self._radix(out, radix, lo, seg, n)
        for i, body in zr.items():
            out[i] = body
        return out

    def _rice(self, out: list, sel: np.ndarray, z: np.ndarray, seg: np.ndarray, n: np.ndarray,
              rk: np.ndarray) -> None:
        cnt = n[sel]
        if len(sel) < len(n):  # the chosen blocks' values, back to back
            pick = np.zeros(len(n), bool)
            pick[sel] = True
            zz = z[np.repeat(pick, n)]
        else:
            zz = z
        ks = rk[sel]
        one_k = bool((ks == ks[0]).all())
        kv = np.uint64(ks[0]) if one_k else np.repeat(ks.astype(np.uint64), cnt)
        q = (zz >> kv).view(np.int64)
        bst = np.zeros(len(sel) + 1, np.int64)
        np.cumsum(cnt, out=bst[1:])
        q += 1
        ends = np.cumsum(q)  # stop bit of each value + 1, over all blocks' streams
        before = np.zeros(len(sel), np.int64)
        before[1:] = ends[bst[1:-1] - 1]
        nbits = ends[bst[1:] - 1] - before
        nbytes = (nbits + 7) // 8
        boff = np.zeros(len(sel) + 1, np.int64)
        np.cumsum(nbytes, out=boff[1:])
        ends -= 1
        ends += np.repeat(8 * boff[:-1] - before, cnt)  # each stream starts at a byte
        bits = np.ones(int(boff[-1]) * 8, dtype=np.uint8)
        bits[ends] = 0
        unary = np.packbits(bits, bitorder="little").tobytes()
        if one_k:
            rem = zz & np.uint64((1 << int(ks[0])) - 1)
        else:
            rem = zz & ((np.uint64(1) << kv) - np.uint64(1))
        bodies: dict[int, bytes] = {}
        for kk in np.unique(ks).tolist():
            pick = np.flatnonzero(ks == kk)
            for j, body in zip(pick.tolist(), pack_many(rem, bst[pick], bst[pick + 1], kk)):
                bodies[j] = body
        boff_l = boff.tolist()
        for j, (i, k) in enumerate(zip(sel.tolist(), ks.tolist())):
            out[i] = bytes((T.ZIGZAG_RICE, k)) + bodies[j] + unary[boff_l[j]:boff_l[j + 1]]

    def _radix(self, out: list, radix: dict, lo: np.ndarray, seg: np.ndarray, n: np.ndarray) -> None:
        """FOR_RADIX bodies, the blocks of one (radix, group) computed together."""
        u, a = self.u, self.starts[:-1]
        groups: dict[tuple[int, int, int], list[int]] = {}
        for i, (g, cw, _) in radix.items():
            r = int(self._span[i]) + 1
            groups.setdefault((r, g, cw), []).append(i)
        for (r, g, cw), idx in groups.items():
            sel = np.array(idx, np.int64)
            cnt = n[sel]
            m = -(-cnt // g)
            moff = np.zeros(len(sel) + 1, np.int64)
            np.cumsum(m, out=moff[1:])
            digits = np.zeros(int(moff[-1]) * g, np.uint64)
            vst = np.zeros(len(sel) + 1, np.int64)
            np.cumsum(cnt, out=vst[1:])
            local = np.repeat(np.arange(len(sel)), cnt)
            src = np.arange(int(vst[-1]), dtype=np.int64) + (a[sel] - vst[:-1])[local]
            dest = np.arange(int(vst[-1]), dtype=np.int64) + (g * moff[:-1] - vst[:-1])[local]
            digits[dest] = u[src] - lo[sel][local]
            digits = digits.reshape(-1, g)
            code = digits[:, g - 1].copy()
            rr = np.uint64(r)
            for j in range(g - 2, -1, -1):
                code *= rr
                code += digits[:, j]
            for j, body in enumerate(pack_many(code, moff[:-1], moff[1:], cw)):
                i = idx[j]
                out[i] = bytes((T.FOR_RADIX,)) + _RADIX_HDR.pack(int(lo[i]), r, g) + body

    def _zerorun(self, seg, n, kind, size) -> dict[int, bytes]:
        """DELTA_ZERORUN bodies of the blocks where it is smaller than ``size``."""
        u, st = self.u, self.starts
        a = st[:-1]
        eq = u[1:] == u[:-1]
        if np.count_nonzero(eq) * 8 < len(u) - len(a):  # too few zero deltas in the column
            return {}
        zero = np.empty(len(u), bool)
        zero[0] = False
        zero[1:] = eq
        zero[a] = False  # a block's first value has no delta
        nz_blocks = np.add.reduceat(zero.view(np.int8), a, dtype=np.int64)
        cand = (kind != 0) & (n >= 2) & (nz_blocks * 8 >= n - 1) & (nz_blocks < n - 1)
        if not cand.any():
            return {}
        sel = np.flatnonzero(cand)
        # the deltas of the candidate blocks (a block's first value has none), back to back
        keep = np.repeat(cand, n) if len(sel) < len(n) else np.ones(len(u), bool)
        keep[a] = False
        dd = (u[1:] - u[:-1])[keep[1:]]
        zz = zero[keep]
        m = len(zz)
        dcount = n[sel] - 1
        bpos = np.zeros(len(sel) + 1, np.int64)  # block starts in the deltas
        np.cumsum(dcount, out=bpos[1:])
        # runs: alternating non-zero / zero runs per block, a non-zero run first (maybe empty)
        change = np.empty(m, bool)
        change[0] = True
        np.not_equal(zz[1:], zz[:-1], out=change[1:])
        change[bpos[:-1]] = True
        rstart = np.flatnonzero(change)
        rlen = np.diff(np.append(rstart, m))
        rblk = np.searchsorted(bpos, rstart, side="right") - 1  # local block of each run
        rzero = zz[rstart]
        lead = (rstart == bpos[rblk]) & rzero  # block starting with a zero run: an empty run first
        nr = len(rstart) + int(lead.sum())
        runs = np.zeros(nr, np.uint64)
        pos = np.arange(len(rstart)) + np.cumsum(lead)
        runs[pos] = rlen.astype(np.uint64)
        rcount = np.bincount(rblk, minlength=len(sel)) + np.bincount(rblk[lead], minlength=len(sel))
        rst = np.zeros(len(sel) + 1, np.int64)
        np.cumsum(rcount, out=rst[1:])
        nonzero = ~zz
        nzv = dd[nonzero]
        ncount = np.add.reduceat(nonzero.view(np.int8), bpos[:-1], dtype=np.int64)
        if (ncount == 0).any() or (rcount == 0).any():
            return {}
        nst = np.zeros(len(sel) + 1, np.int64)
        np.cumsum(ncount, out=nst[1:])
        rsub = _Ints(runs, rst, signed=False, top=False).build()
        nsub = _Ints(nzv, nst, signed=True, top=False).build()
        out = {}
        for j, i in enumerate(sel.tolist()):
            r, z = rsub[j], nsub[j]
            if r is None or z is None:
                continue
            if 16 + len(r) + len(z) < size[i]:
                out[i] = (bytes((T.DELTA_ZERORUN,)) + _ZR_HDR.pack(int(u[a[i]]), int(rcount[j]), len(r))
                          + r + z)
        return out



def _timestamps(u: np.ndarray, st: np.ndarray) -> list[tuple[int, bytes] | None]:
    a = st[:-1]
    n = np.diff(st)
    k = len(n)
    d = np.empty(len(u), np.uint64)
    d[0] = 0
    np.subtract(u[1:], u[:-1], out=d[1:])
    d[a] = 0
    ds = d.view(np.int64)
    big = np.iinfo(np.int64).max
    # min/max delta of each block, over its deltas only (slot 0 excluded)
    dmask = np.ones(len(u), bool)
    dmask[a] = False
    lo = np.minimum.reduceat(np.where(dmask, ds, big), a)
    hi = np.maximum.reduceat(np.where(dmask, ds, -big - 1), a)
    single = n == 1
    lo = np.where(single, 0, lo).view(np.uint64)
    hi = np.where(single, 0, hi).view(np.uint64)
    width = _bits.bit_length(hi - lo)
    seg = np.repeat(np.arange(k), n)
    slots = d - lo[seg]
    slots[a] = 0
    out: list = [None] * k
    for w in np.unique(width).tolist():
        if w > 64:
            continue
        sel = np.flatnonzero(width == w)
        for i, body in zip(sel.tolist(), pack_many(slots, a[sel], st[1:][sel], w)):
            out[i] = (T.DELTA_FOR, _DFOR_HDR.pack(int(u[a[i]]), int(lo[i]), w) + body)
    return out


def _floats(f: np.ndarray, st: np.ndarray) -> list[tuple[int, bytes] | None]:
    a = st[:-1]
    n = np.diff(st)
    k = len(n)
    bits = f.view(np.uint64)
    out: list = [None] * k
    same = np.minimum.reduceat(bits, a) == np.maximum.reduceat(bits, a)
    # the column's exponent: the smallest that makes a strided sample exact
    sample = f[:: max(1, len(f) // 512)]
    e = None
    with np.errstate(all="ignore"):
        for cand in range(0, 11):
            ok, _ = _alp_ok(sample, sample.view(np.uint64), _POW10[cand])
            if ok.all():
                e = cand
                break
        alp = np.zeros(k, bool)
        if e is not None:
            ok, r = _alp_ok(f, bits, _POW10[e])
            alp = np.logical_and.reduceat(ok, a) & ~same
    for i in np.flatnonzero(same).tolist():
        out[i] = (T.CONST, bits[a[i]:a[i] + 1].astype("<u8").tobytes())
    if alp.any():
        sel = np.flatnonzero(alp)
        take = np.repeat(alp, n)
        ints = r[take].astype(np.int64).view(np.uint64)
        cnt = n[sel]
        sst = np.zeros(len(sel) + 1, np.int64)
        np.cumsum(cnt, out=sst[1:])
        subs = _Ints(ints, sst, signed=True, top=True).build()
        head = _ALP_HDR.pack(e, 0)
        for j, i in enumerate(sel.tolist()):
            if subs[j] is not None:
                out[i] = (T.ALP, head + subs[j])
    return out


_MAX_DICT = 64  # distinct values of a column up to which its string blocks are batched


def few_string_codes(values: np.ndarray, limit: int) -> tuple[np.ndarray, list] | None:
    """(uint8 codes, distinct values) of an object array holding at most ``limit`` (< 256)
    distinct str, else None. The distinct values are read off a sample, most frequent first,
    and each is matched by one comparison over the values not matched yet: about one pass over
    the array for flags and names (a few common values), none per value in Python."""
    n = len(values)
    try:
        counts = collections.Counter(values[:: max(1, n // 512)].tolist())
    except TypeError:  # unhashable: not strings
        return None
    ulist = [x for x, _ in counts.most_common()]
    if len(ulist) > limit or not all(type(x) is str for x in ulist):
        return None
    codes = np.zeros(n, np.uint8)
    rest = None  # positions not matched yet (None: all)
    for c, x in enumerate(ulist):
        sub = values if rest is None else values[rest]
        m = sub == x
        if rest is None:
            rest = np.flatnonzero(~m)
        else:
            codes[rest[m]] = c
            rest = rest[~m]
        if not len(rest):
            return codes, ulist
    return None  # values the sample missed


def _string_codes(values: np.ndarray) -> tuple[np.ndarray, list] | None:
    """(uint8 codes, distinct values) of an object column of at most :data:`_MAX_DICT` str,
    else None: :func:`few_string_codes` for a few distinct values, else one dictionary."""
    got = few_string_codes(values, 4)
    if got is not None:
        return got
    lst = values.tolist()
    try:
        ulist = list(dict.fromkeys(lst))
    except TypeError:
        return None
    if len(ulist) > _MAX_DICT or not all(type(x) is str for x in ulist):
        return None
    index = dict(zip(ulist, range(len(ulist))))
    return np.frombuffer(bytes(operator.itemgetter(*lst)(index)), dtype=np.uint8), ulist


def _strings(values: np.ndarray, st: np.ndarray) -> list[tuple[int, bytes] | None]:
    """STR_DICT (CONST for one distinct value) of every block of a low-cardinality string
    column: the distinct values are found once for the column, each block's dictionary (in
    first-appearance order, as the per-block encoder builds it) from the first position of each
    value in the block, and the indices of all blocks are one integer column."""
    a = st[:-1]
    n = np.diff(st)
    k = len(n)
    out: list = [None] * k
    total = len(values)
    if total < 2:
        return out
    codes = _string_codes(values)
    if codes is None:
        return out
    codes, ulist = codes
    K = len(ulist)
    if K == 1:  # one value in the whole column: every block is CONST
        b, flags = _sutf8(ulist[0])
        return [(T.CONST, bytes((flags,)) + b)] * k
    pos = np.arange(total, dtype=np.int64)
    first = np.empty((K, k), np.int64)
    for c in range(K):
        first[c] = np.minimum.reduceat(np.where(codes == c, pos, total), a)
    present = first < st[1:]
    kb = present.sum(axis=0)
    order = np.argsort(first, axis=0, kind="stable")  # codes of block b by first appearance
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(K)[:, None], axis=0)
    seg = np.repeat(np.arange(k), n)
    if K == 2:  # index = code, or its flip in blocks whose first value is the second one
        idx = (codes ^ np.repeat(rank[0].astype(np.uint8), n)).astype(np.uint64)
    else:
        idx = rank[codes, seg].astype(np.uint64)
    utf = [_sutf8(x) for x in ulist]
    len8 = np.array([len(b) for b, _ in utf], np.int64)
    raw_low = n * (1 + int(len8.min()))  # STR_RAW takes at least this (exact size if needed)
    subs = _Ints(idx, st, signed=False, top=True).build()
    sections: dict[tuple, bytes] = {}
    for i in range(k):
        kk = int(kb[i])
        if kk == 1:
            b, flags = utf[int(codes[a[i]])]
            out[i] = (T.CONST, bytes((flags,)) + b)
            continue
        if kk * 2 > n[i] or subs[i] is None:
            continue
        key = tuple(order[:kk, i].tolist())
        dsec = sections.get(key)
        if dsec is None:
            dsec = sections[key] = _section([ulist[c] for c in key])
        payload = _DICT_HDR.pack(kk, len(dsec)) + dsec + subs[i]
        if len(payload) < raw_low[i] or len(payload) < n[i] + int(len8[codes[a[i]:st[i + 1]]].sum()):
            out[i] = (T.STR_DICT, payload)
    return out


def encode_blocks(values: np.ndarray, bounds: np.ndarray, *, vtype: int, timestamps: bool = False,
                  compression: str = "default", tier: str = "hot") -> list[bytes | None]:
    """Encode ``values[bounds[i]:bounds[i+1]]`` for every i as codec blocks (see the module
    docstring); None for a block to encode with :func:`rusts.codecs.encode` instead.

    ``values``: float64 (``vtype`` TYPE_FLOAT), int64 (TYPE_INT, also timestamps), uint64
    (TYPE_UINT) or an object array of str (TYPE_STRING); ``bounds``: non-decreasing int64 offsets starting at 0 and ending at
    ``len(values)``. Other value types give only None.
    """
    if compression not in COMPRESSION_LEVELS or tier not in TIERS:
        raise CodecError(f"unknown compression {compression!r} or tier {tier!r}")
    bounds = np.asarray(bounds, dtype=np.int64)
    nb = len(bounds) - 1
    out: list[bytes | None] = [None] * nb
    if nb <= 0 or vtype not in (TYPE_FLOAT, TYPE_INT, TYPE_UINT, TYPE_STRING):
        return out
    cnt = np.diff(bounds)
    big = np.flatnonzero(cnt >= MIN_BLOCK)
    if not len(big):
        return out
    # the blocks handled here, concatenated
    if len(big) == nb:
        v = values
        st = bounds
    else:
        take = np.repeat(cnt >= MIN_BLOCK, cnt)
        v = values[take]
        st = np.zeros(len(big) + 1, np.int64)
        np.cumsum(cnt[big], out=st[1:])
    if vtype == TYPE_FLOAT:
        got = _floats(np.ascontiguousarray(v, dtype=np.float64), st)
    elif vtype == TYPE_STRING:
        got = _strings(np.asarray(v, dtype=object), st)
    elif timestamps:
        got = _timestamps(np.ascontiguousarray(v).view(np.uint64), st)
    else:
        u = np.ascontiguousarray(v).view(np.uint64)
        got = [None if s is None else (s[0], s[1:]) for s in
               _Ints(u, st, signed=vtype == TYPE_INT, top=True).build()]
    for j, i in enumerate(big.tolist()):
        g = got[j]
        if g is not None:
            out[i] = frame(g[0], vtype, int(cnt[i]), g[1], compression, tier, bare=int(cnt[i]) <= _SMALL)
    return out
