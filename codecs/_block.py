"""Block framing: codec tag, type, value count, optional LZ4/Zstd, CRC32.

Layout (little-endian)::

    0   u8   codec tag (rusts.codecs._format.Tag)
    1   u8   low nibble: value type (FieldType: 0 float, 1 int, 2 uint, 3 string, 4 bool)
             high nibble: wrapper (0 none, 1 LZ4 block, 2 Zstd frame)
    2   u32  value count (at most 2**24)
    [6  u32  payload length before the wrapper; only when wrapped]
    ..       payload (wrapped or not)
    -4  u32  CRC32 (zlib polynomial) of every preceding byte of the block

The wrapper is kept only when it makes the block smaller; Zstd ``best`` tries level 15 only
when level 3 saves at least 1/32 of the payload. The cold tier also keeps the exact smallest
integer codec, without the margins that favour fast decoders. ``compression`` maps to:

=========  =========================  ==========================
setting    tier "hot"                 tier "cold"
=========  =========================  ==========================
none       no wrapper                 no wrapper
fast       LZ4 (acceleration 8)       Zstd level 1
default    LZ4 (default)              Zstd level 3
best       LZ4 HC level 9             Zstd level 15
=========  =========================  ==========================

Decoding checks the CRC before anything else, then every length, so a corrupt or truncated
block raises :class:`rusts.errors.CodecError` and never yields wrong values.
"""

from __future__ import annotations

import functools
import struct
import threading
import zlib

import lz4.block
import numpy as np
import zstandard

from rusts.codecs import _bools, _floats, _ints, _strings
from rusts.codecs._format import (MAX_COUNT, MAX_RAW_BYTES, TAGS_BY_TYPE, TYPE_BOOL, TYPE_FLOAT,
                                  TYPE_INT, TYPE_STRING, TYPE_UINT, Tag, Wrap)
from rusts.errors import CodecError

COMPRESSION_LEVELS: tuple[str, ...] = ("none", "fast", "default", "best")
TIERS: tuple[str, ...] = ("hot", "cold")

_HDR = struct.Struct("<BBI")
_U32 = struct.Struct("<I")
_ZSTD_LEVEL = {"fast": 1, "default": 3, "best": 15}
_ZSTD_PROBE = 3  # "best" tries level 15 only when level 3 saves at least 1/32 (docs/format/codecs.md)
# zstandard (de)compressor objects must not be shared between threads (encode and decode run in
# worker threads), so each thread keeps its own.
_local = threading.local()


def _zstd_compressor(level: int) -> zstandard.ZstdCompressor:
    cache = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    cctx = cache.get(level)
    if cctx is None:
        cctx = cache[level] = zstandard.ZstdCompressor(
            level=level, write_content_size=False, write_checksum=False)
    return cctx


def _zstd_decompressor() -> zstandard.ZstdDecompressor:
    dctx = getattr(_local, "decompressor", None)
    if dctx is None:
        dctx = _local.decompressor = zstandard.ZstdDecompressor()
    return dctx


def _type_of(values: np.ndarray, timestamps: bool) -> int:
    kind = values.dtype.kind
    if timestamps:
        if kind not in "iu":
            raise CodecError(f"timestamps must be int64, got {values.dtype}")
        return TYPE_INT
    if kind == "f":
        return TYPE_FLOAT
    if kind == "i":
        return TYPE_INT
    if kind == "u":
        return TYPE_UINT
    if kind == "b":
        return TYPE_BOOL
    if kind in "OUT":
        return TYPE_STRING
    raise CodecError(f"no codec for dtype {values.dtype}")


_SMALL = 16  # numeric blocks of at most this many values are never wrapped


def _wrap(payload: bytes, compression: str, tier: str) -> tuple[int, bytes]:
    if compression == "none" or len(payload) < 32:
        return Wrap.NONE, payload
    if tier == "hot":
        if compression == "fast":
            out = lz4.block.compress(payload, mode="fast", acceleration=8, store_size=False)
        elif compression == "best":
            out = lz4.block.compress(payload, mode="high_compression", compression=9,
                                     store_size=False)
        else:
            out = lz4.block.compress(payload, store_size=False)
        wrap = Wrap.LZ4
    else:
        level = _ZSTD_LEVEL[compression]
        out = _zstd_compressor(min(level, _ZSTD_PROBE)).compress(payload)
        if level > _ZSTD_PROBE and len(out) * 32 <= len(payload) * 31:
            # compressible at all: the high level may gain more (dense codec output, where it
            # would gain under 0.1% for six times the work, stops at the probe)
            out = _zstd_compressor(level).compress(payload)
        wrap = Wrap.ZSTD
    if len(out) + 4 < len(payload):
        return wrap, out
    return Wrap.NONE, payload


class Hint:
    """What the encoder chose for the previous block of one column, so that the next block of
    the same column (the segment writer keeps one per series and field) sizes that codec only,
    instead of every candidate: blocks of one column usually share their best codec, and on
    the ~1,000-value blocks of hourly time-aligned blocks the search is most of the encoding.

    The choice is kept when the block's size per value is not above what the last full search
    found (DELTA_ZERORUN is sized too when at least 1/8 of the deltas are zero: a gauge sitting
    at a bound), and every :data:`REPLAN` blocks the full search runs again; otherwise (a
    different codec would be needed, an exception in ALP, CONST) the block gets the full
    search, and the hint follows it. The cold tier never uses hints (it keeps the exact
    smallest codec). The format is unchanged: only the choice.
    """

    REPLAN = 16
    MARGIN = 1.0
    __slots__ = ("_kind", "_tree", "_per_value", "_left")

    def __init__(self) -> None:
        self._kind: str | None = None
        self._tree = None
        self._per_value = 0.0
        self._left = 0

    def tree(self, kind: str, n: int):
        """The remembered choice for a block of ``n`` values of ``kind``, or None (search)."""
        if self._tree is None or self._kind != kind or self._left <= 0:
            return None
        self._left -= 1
        return self._tree

    def accept(self, size: int, n: int) -> bool:
        return size <= self._per_value * n * self.MARGIN

    def remember(self, kind: str, tree, size: int, n: int) -> None:
        self._kind, self._tree, self._per_value, self._left = kind, tree, size / max(n, 1), self.REPLAN


def encode(values: np.ndarray, *, timestamps: bool = False, compression: str = "default",
           tier: str = "hot", codec: int | None = None, hint: Hint | None = None) -> bytes:
    """Encode one block of values into a framed, self-describing, checksummed byte string.

    Args:
        values: 1-d array: int64 (with ``timestamps=True``: timestamp codecs), float64, int64,
            uint64, bool, or object array of str.
        timestamps: the values are int64 ns timestamps (usually sorted, often regular).
        compression: one of :data:`COMPRESSION_LEVELS`.
        tier: ``"hot"`` (LZ4 wrapper) or ``"cold"`` (Zstd wrapper).
        codec: force this :class:`~rusts.codecs.Tag` instead of choosing the smallest (tests,
            benchmarks).
        hint: a :class:`Hint` kept for one column across its blocks: the encoder tries the
            codec of the column's previous block first (ignored on the cold tier).

    Returns:
        The block bytes; :func:`decode` gives back the exact values and dtype.

    Raises:
        CodecError: unsupported dtype, non-str in a string column, too many values, or an
            unknown compression/tier name.
    """
    if compression not in COMPRESSION_LEVELS:
        raise CodecError(f"unknown compression {compression!r}; expected one of "
                         f"{', '.join(COMPRESSION_LEVELS)}")
    if tier not in TIERS:
        raise CodecError(f"unknown tier {tier!r}; expected 'hot' or 'cold'")
    values = np.asarray(values)
    if values.ndim != 1:
        raise CodecError(f"a block holds a 1-d array, got {values.ndim} dimensions")
    n = len(values)
    if n > MAX_COUNT:
        raise CodecError(f"a block holds at most {MAX_COUNT} values, got {n}")
    vtype = _type_of(values, timestamps)
    token = _ints.EXACT.set(True) if tier == "cold" else None
    try:
        tag, payload = _encode_payload(values, vtype, timestamps, codec,
                                       None if token is not None else hint)
    finally:
        if token is not None:
            _ints.EXACT.reset(token)
    # a few dense bytes: LZ4/Zstd rarely win
    return frame(tag, vtype, n, payload, compression, tier, bare=n <= _SMALL and vtype != TYPE_STRING)


def frame(tag: int, vtype: int, n: int, payload: bytes, compression: str, tier: str, *, bare: bool) -> bytes:
    """A block from its encoded payload: header, the payload (compressed unless ``bare`` or
    compression does not pay), CRC."""
    wrap, body = (Wrap.NONE, payload) if bare else _wrap(payload, compression, tier)
    if wrap == Wrap.NONE:
        head = _HDR.pack(tag, vtype, n)
    else:
        head = _HDR.pack(tag, vtype | (wrap << 4), n) + _U32.pack(len(payload))
    block = head + body
    return block + _U32.pack(zlib.crc32(block))


def _encode_payload(values: np.ndarray, vtype: int, timestamps: bool, codec: int | None,
                    hint: Hint | None = None) -> tuple[int, bytes]:
    """(tag, payload) of the smallest codec (or of ``codec``)."""
    if codec is not None:
        tag, payload = _encode_as(codec, vtype, values)
    elif vtype == TYPE_FLOAT:
        tag, payload = _floats.encode(values.astype(np.float64, copy=False), hint)
    elif vtype in (TYPE_INT, TYPE_UINT):
        dt = np.int64 if vtype == TYPE_INT else np.uint64
        u = np.ascontiguousarray(values.astype(dt, copy=False)).view(np.uint64)
        tag, payload = _ints.encode(u, signed=vtype == TYPE_INT, timestamps=timestamps, hint=hint)
    elif vtype == TYPE_BOOL:
        tag, payload = _bools.encode(values)
    else:
        if values.dtype.kind != "O":
            values = values.astype(object)
        tag, payload = _strings.encode(values)
    return tag, payload


def _encode_as(tag: int, vtype: int, values: np.ndarray) -> tuple[int, bytes]:
    if tag not in TAGS_BY_TYPE[vtype]:
        raise CodecError(f"codec {tag} does not apply to value type {vtype}")
    if vtype == TYPE_FLOAT:
        return tag, _floats.encode_as(tag, values.astype(np.float64, copy=False))
    if vtype in (TYPE_INT, TYPE_UINT):
        dt = np.int64 if vtype == TYPE_INT else np.uint64
        u = np.ascontiguousarray(values.astype(dt, copy=False)).view(np.uint64)
        return tag, _ints.encode_as(tag, u, signed=vtype == TYPE_INT)
    if vtype == TYPE_BOOL:
        return tag, _bools.encode_as(tag, values)
    return tag, _strings.encode_as(tag, values.astype(object, copy=False))


def _header(block) -> tuple[int, int, int, int]:
    if len(block) < 10:
        raise CodecError(f"block truncated: {len(block)} bytes, a block has at least 10")
    tag, tw, n = _HDR.unpack_from(block)
    vtype, wrap = tw & 0x0F, tw >> 4
    if vtype not in TAGS_BY_TYPE:
        raise CodecError(f"unknown value type {vtype}")
    if tag not in TAGS_BY_TYPE[vtype]:
        raise CodecError(f"unknown codec tag {tag:#04x} for value type {vtype}")
    if wrap > Wrap.ZSTD:
        raise CodecError(f"unknown compression wrapper {wrap}")
    if n > MAX_COUNT:
        raise CodecError(f"block claims {n} values, more than the limit {MAX_COUNT}")
    return tag, vtype, wrap, n


def decoded_count(block: bytes | memoryview) -> int:
    """The number of values in ``block``, read from its header without decoding."""
    return _header(memoryview(block))[3]


def decode(block: bytes | memoryview) -> np.ndarray:
    """Decode a block made by :func:`encode`.

    Returns:
        The values with their exact dtype: int64, float64, uint64, bool or object (str).

    Raises:
        CodecError: the block is truncated, corrupt (CRC mismatch), or of an unknown codec,
            type or wrapper; the message names what is wrong.
    """
    mv = memoryview(block)
    if mv.ndim != 1 or mv.itemsize != 1:
        mv = mv.cast("B")
    size = len(mv)
    if size < 10:
        _header(mv)  # raises
    tag, tw, n = _HDR.unpack_from(mv)
    wrap = tw >> 4
    fn = _DECODERS.get((tag, tw & 0x0F))
    if fn is None or wrap > 2 or n > MAX_COUNT:
        _header(mv)  # raises, naming the bad field
    (crc,) = _U32.unpack_from(mv, size - 4)
    if zlib.crc32(mv[:-4]) != crc:
        raise CodecError(f"block CRC mismatch ({size} bytes, tag {tag:#04x})")
    try:
        if wrap:
            return fn(_unwrap(mv, wrap, tw & 0x0F, n), n)
        return fn(mv[6:-4], n)
    except CodecError:
        raise
    except (ValueError, IndexError, TypeError, OverflowError, struct.error, MemoryError,
            zstandard.ZstdError, RecursionError) as exc:
        raise CodecError(f"corrupt block payload (tag {tag:#04x}): {exc}") from None


def _unwrap(mv: memoryview, wrap: int, vtype: int, n: int):
    if wrap == Wrap.NONE:
        return mv[6:-4]
    if len(mv) < 14:
        raise CodecError("wrapped block truncated")
    (raw_len,) = _U32.unpack_from(mv, 6)
    # No codec needs more than 24 bytes a value (ALP with every value an exception), so a
    # corrupt size cannot make the decompressor allocate much; strings have no such bound.
    limit = MAX_RAW_BYTES if vtype == TYPE_STRING else 24 * n + 64
    if raw_len > limit:
        raise CodecError(f"block claims a {raw_len}-byte payload, over the limit of {limit}")
    body = mv[10:-4]
    if wrap == Wrap.LZ4:
        try:
            out = lz4.block.decompress(body, uncompressed_size=raw_len)
        except lz4.block.LZ4BlockError as exc:
            raise CodecError(f"LZ4 payload corrupt: {exc}") from None
    else:
        try:
            out = _zstd_decompressor().decompress(body, max_output_size=raw_len)
        except zstandard.ZstdError as exc:
            raise CodecError(f"Zstd payload corrupt: {exc}") from None
    if len(out) != raw_len:
        raise CodecError(f"decompressed payload is {len(out)} bytes, header says {raw_len}")
    return memoryview(out)


def _decoders() -> dict:
    """(tag, value type) -> function(payload, n) returning the values with their dtype."""
    table = {}
    for tag in TAGS_BY_TYPE[TYPE_FLOAT]:
        table[tag, TYPE_FLOAT] = (lambda t: lambda p, n: _floats.decode(t, p, n).view(np.float64))(
            int(tag))
    table[Tag.ALP, TYPE_FLOAT] = lambda p, n: _floats.alp_decode(p, n).view(np.float64)
    for tag in TAGS_BY_TYPE[TYPE_INT]:
        table[tag, TYPE_INT] = (lambda t: lambda p, n: _ints.decode(t, p, n).view(np.int64))(
            int(tag))
        table[tag, TYPE_UINT] = functools.partial(_ints.decode, int(tag))
    for tag in TAGS_BY_TYPE[TYPE_BOOL]:
        table[tag, TYPE_BOOL] = functools.partial(_bools.decode, int(tag))
    for tag in TAGS_BY_TYPE[TYPE_STRING]:
        table[tag, TYPE_STRING] = functools.partial(_strings.decode, int(tag))
    return table


_DECODERS = _decoders()
