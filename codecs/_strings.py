"""String codecs: dictionary with bit-packed indices, and raw back-to-back UTF-8.

Strings are numpy object arrays of ``str``. Any Python ``str`` round-trips, including empty
strings, NUL characters, very long strings and lone surrogates (those are encoded with UTF-8
``surrogatepass`` and a flag says so).

String section (the STR_RAW payload, also used for the dictionary), little-endian::

    flags   u8     bit 0: surrogatepass encoding; bit 1: length-prefixed mode
    [if bit 1: llen u32, lengths: integer sub-block of the n UTF-8 byte lengths]
    data    rest   UTF-8; in separator mode the strings joined by NUL (U+0000)

Separator mode (no string contains NUL) decodes with one ``bytes.decode`` and one ``str.split``,
both in C; length-prefixed mode is the fallback.

STR_DICT payload::

    k       u32    dictionary size (distinct values, in order of first appearance)
    dlen    u32    length of the dictionary's string section
    dict    dlen   string section of the k distinct values
    idx     rest   integer sub-block: n indices into the dictionary (FOR bit-packs them at
                   ceil(log2 k) bits)

CONST payload: flags u8 then the UTF-8 of the single value. The encoder takes the dictionary
when it is smaller than the raw section (low cardinality), else raw.
"""

from __future__ import annotations

import operator
import struct

import numpy as np

from rusts.codecs import _ints
from rusts.codecs._format import T
from rusts.errors import CodecError

_SURR = 1
_LENGTHS = 2
_U32 = struct.Struct("<I")
_DICT_HDR = struct.Struct("<II")


def _as_list(values: np.ndarray) -> list:
    lst = values.tolist()
    for s in (lst[0], lst[-1]) if lst else ():
        if not isinstance(s, str):
            raise CodecError(f"string column holds a {type(s).__name__}, not str")
    return lst


def _utf8(text: str) -> tuple[bytes, int]:
    try:
        return text.encode("utf-8"), 0
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass"), _SURR


def section(lst: list) -> bytes:
    """The string section for a list of str."""
    try:
        joined = "\0".join(lst)
    except TypeError as exc:
        raise CodecError(f"string column holds a non-str value: {exc}") from None
    if joined.count("\0") == max(len(lst) - 1, 0):
        data, flags = _utf8(joined)
        return bytes((flags,)) + data
    parts = [_utf8(s) for s in lst]
    flags = _LENGTHS | max(f for _, f in parts)
    lengths = np.fromiter((len(b) for b, _ in parts), dtype=np.uint64, count=len(parts))
    sub = _ints.encode_sub(lengths, signed=False)
    return bytes((flags,)) + _U32.pack(len(sub)) + sub + b"".join(b for b, _ in parts)


def _text(data, flags: int) -> str:
    try:
        return bytes(data).decode("utf-8", "surrogatepass" if flags & _SURR else "strict")
    except UnicodeDecodeError as exc:
        raise CodecError(f"string data is not valid UTF-8: {exc.reason}") from None


def _objects(parts: list) -> np.ndarray:
    out = np.empty(len(parts), dtype=object)
    out[:] = parts
    return out


def read_section(buf, n: int) -> np.ndarray:
    """Inverse of :func:`section`: an object array of ``n`` str."""
    if len(buf) < 1:
        raise CodecError("string section truncated")
    flags = buf[0]
    if flags & ~(_SURR | _LENGTHS):
        raise CodecError(f"unknown string flags {flags:#04x}")
    if not flags & _LENGTHS:
        if n == 0:
            if len(buf) != 1:
                raise CodecError("string section has trailing bytes")
            return np.empty(0, dtype=object)
        parts = _text(buf[1:], flags).split("\0")
        if len(parts) != n:
            raise CodecError(f"string section holds {len(parts)} values, expected {n}")
        return _objects(parts)
    if len(buf) < 5:
        raise CodecError("string section truncated")
    (llen,) = _U32.unpack_from(buf, 1)
    if len(buf) < 5 + llen:
        raise CodecError("string lengths truncated")
    lengths = _ints.decode_sub(buf[5:5 + llen], n)
    data = bytes(buf[5 + llen:])
    if n and int(lengths.max()) > len(data):
        raise CodecError("string lengths exceed the data")
    ends = np.cumsum(lengths, dtype=np.uint64)
    if (int(ends[-1]) if n else 0) != len(data):
        raise CodecError("string lengths disagree with the data size")
    starts = (ends - lengths).tolist()
    surr = "surrogatepass" if flags & _SURR else "strict"
    try:
        parts = [data[a:b].decode("utf-8", surr) for a, b in zip(starts, ends.tolist())]
    except UnicodeDecodeError as exc:
        raise CodecError(f"string data is not valid UTF-8: {exc.reason}") from None
    return _objects(parts)


def encode(values: np.ndarray) -> tuple[int, bytes]:
    """Encode an object array of str. Returns (tag, payload)."""
    lst = _as_list(values)
    n = len(lst)
    if n == 0:
        return T.STR_RAW, section(lst)
    try:
        if n > _PREFIX:
            # low cardinality: the distinct values usually all show up in a prefix, and then
            # its dictionary indexes the whole block (_lookup gives None when one is missing)
            uniq = dict.fromkeys(lst[:_PREFIX])
            got = _lookup(lst, uniq) if len(uniq) * 2 <= _PREFIX else None
            if got is None:
                uniq = dict.fromkeys(lst)
        else:
            uniq = dict.fromkeys(lst)
            got = None
    except TypeError:
        raise CodecError("string column holds an unhashable, non-str value") from None
    k = len(uniq)
    if k == 1:
        if not isinstance(lst[0], str):
            raise CodecError(f"string column holds a {type(lst[0]).__name__}, not str")
        data, flags = _utf8(lst[0])
        return T.CONST, bytes((flags,)) + data
    if k * 2 > n:
        return T.STR_RAW, section(lst)
    ulist = list(uniq)
    if n <= _ints.SMALL:  # small block: build both, no numpy
        raw = section(lst)
        dsec = section(ulist)
        index = {s: i for i, s in enumerate(ulist)}
        tag, sub = _ints.small_payload(list(map(index.__getitem__, lst)))  # k >= 2: not RAW
        payload = _DICT_HDR.pack(k, len(dsec)) + dsec + bytes((tag,)) + sub
        return (T.STR_DICT, payload) if len(payload) < len(raw) else (T.STR_RAW, raw)
    dsec = section(ulist)  # checks that every distinct value (so every value) is a str
    codes = _codes(got if got is not None else _lookup(lst, uniq), k)
    counts = np.bincount(codes, minlength=k)
    # the raw section's size, without building it: NUL separators plus every value's bytes
    raw_size = n + int(counts @ _utf8_lengths(ulist))
    p = _ints.plan_codes(codes, counts)
    payload = (_DICT_HDR.pack(k, len(dsec)) + dsec + bytes((p.tag,)) + p.build())
    if len(payload) < raw_size:
        return T.STR_DICT, payload
    return T.STR_RAW, section(lst)


_PREFIX = 256


def _lookup(lst: list, uniq: dict) -> tuple | None:
    """Every value's dictionary index (``lst`` holds at least 2 values), or None if one is
    not in ``uniq``. The lookups all run in C (``itemgetter``)."""
    index = dict(zip(uniq, range(len(uniq))))
    try:
        return operator.itemgetter(*lst)(index)
    except KeyError:
        return None


def _codes(got: tuple, k: int) -> np.ndarray:
    """The indices as an array: uint8 for at most 256 distinct values (``bytes`` of the tuple,
    the fastest conversion from Python ints), else int64."""
    if k <= 256:
        return np.frombuffer(bytes(got), dtype=np.uint8)
    return np.fromiter(got, dtype=np.int64, count=len(got))


def _utf8_lengths(ulist: list) -> np.ndarray:
    try:
        return np.fromiter(map(len, map(str.encode, ulist)), dtype=np.int64, count=len(ulist))
    except UnicodeEncodeError:  # lone surrogates: surrogatepass, as section() encodes them
        return np.fromiter((len(_utf8(s)[0]) for s in ulist), dtype=np.int64, count=len(ulist))


def encode_as(tag: int, values: np.ndarray) -> bytes:
    """The payload of a given string codec (for tests and benchmarks)."""
    lst = _as_list(values)
    raw = section(lst)
    if tag == T.STR_RAW:
        return raw
    if tag == T.CONST:
        if not lst or any(s != lst[0] for s in lst):
            raise CodecError("CONST needs equal values")
        data, flags = _utf8(lst[0])
        return bytes((flags,)) + data
    if tag == T.STR_DICT:
        return _dict_payload(lst, list(dict.fromkeys(lst)))[0]
    raise CodecError(f"not a string codec: {tag}")


def _dict_payload(lst: list, ulist: list) -> tuple[bytes, np.ndarray]:
    """STR_DICT payload and the codes (int64) of ``lst`` given its distinct values."""
    dsec = section(ulist)
    index = {s: i for i, s in enumerate(ulist)}
    if len(lst) < 2:
        codes = np.array([index[s] for s in lst], dtype=np.int64)
    else:  # itemgetter looks every value up in C
        codes = np.fromiter(operator.itemgetter(*lst)(index), dtype=np.int64, count=len(lst))
    sub = _ints.encode_sub(codes.view(np.uint64), signed=False)
    return _DICT_HDR.pack(len(ulist), len(dsec)) + dsec + sub, codes


def decode(tag: int, payload, n: int) -> np.ndarray:
    """Inverse of :func:`encode`."""
    if tag == T.STR_RAW:
        return read_section(payload, n)
    if tag == T.CONST:
        if len(payload) < 1 or payload[0] & ~_SURR:
            raise CodecError("string CONST payload malformed")
        out = np.empty(n, dtype=object)
        out[:] = _text(payload[1:], payload[0])
        return out
    if tag == T.STR_DICT:
        if len(payload) < 8:
            raise CodecError("string dictionary truncated")
        k, dlen = _DICT_HDR.unpack_from(payload)
        if k > max(n, 1) or len(payload) < 8 + dlen or (n and k == 0):
            raise CodecError("string dictionary header out of range")
        uniq = read_section(payload[8:8 + dlen], k)
        idx = _ints.decode_sub(payload[8 + dlen:], n)
        if n and int(idx.max()) >= k:
            raise CodecError("string dictionary index out of range")
        return uniq[idx.astype(np.intp)]
    raise CodecError(f"unknown string codec tag {tag:#04x}")
