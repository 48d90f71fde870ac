"""Codec tags and type codes of the block format (see docs/format/codecs.md).

Tag values are stored on disk. They are append-only: never renumber or reuse one, even after a
codec is retired (retired tags stay listed here and in the format document as reserved).
"""

from __future__ import annotations

import enum


class Tag(enum.IntEnum):
    """The codec tag: first byte of a block and of every nested sub-block."""

    RAW = 0x01          # numeric: n little-endian 8-byte words
    CONST = 0x02        # every value equal: one value
    FOR = 0x03          # frame of reference + bit-packing
    DELTA_FOR = 0x04    # first value, then deltas with frame of reference + bit-packing
    DOD_FOR = 0x05      # first value, first delta, then delta-of-deltas FOR + bit-packing
    ZIGZAG_VARINT = 0x06        # zigzag + LEB128 varint per value
    DELTA_ZIGZAG_VARINT = 0x07  # zigzag + LEB128 varint of (first value, deltas...)
    GORILLA = 0x08      # float64 XOR with the previous value, split streams
    ALP = 0x09          # float64 as decimal integers * 10^-e, exceptions aside
    BOOL_BITS = 0x0A    # bool bit-packed
    STR_DICT = 0x0B     # string dictionary + bit-packed indices
    STR_RAW = 0x0C      # strings back to back
    DELTA_ZERORUN = 0x0D  # first value, runs of zero / non-zero deltas, non-zero deltas
    ZIGZAG_RICE = 0x0E  # zigzag + Rice code (bit-packed remainders, unary quotients)
    FOR_RADIX = 0x0F    # frame of reference, g values of a small radix per bit-packed code


class Wrap(enum.IntEnum):
    """General-purpose compression over the codec payload (high nibble of byte 1)."""

    NONE = 0
    LZ4 = 1
    ZSTD = 2


# Type codes are rusts.model.FieldType values (low nibble of byte 1).
TYPE_FLOAT = 0
TYPE_INT = 1
TYPE_UINT = 2
TYPE_STRING = 3
TYPE_BOOL = 4

INT_TAGS = frozenset({Tag.RAW, Tag.CONST, Tag.FOR, Tag.DELTA_FOR, Tag.DOD_FOR,
                      Tag.ZIGZAG_VARINT, Tag.DELTA_ZIGZAG_VARINT, Tag.DELTA_ZERORUN,
                      Tag.ZIGZAG_RICE, Tag.FOR_RADIX})
FLOAT_TAGS = frozenset({Tag.RAW, Tag.CONST, Tag.GORILLA, Tag.ALP})
BOOL_TAGS = frozenset({Tag.CONST, Tag.BOOL_BITS})
STRING_TAGS = frozenset({Tag.CONST, Tag.STR_DICT, Tag.STR_RAW})

TAGS_BY_TYPE = {
    TYPE_FLOAT: FLOAT_TAGS,
    TYPE_INT: INT_TAGS,
    TYPE_UINT: INT_TAGS,
    TYPE_STRING: STRING_TAGS,
    TYPE_BOOL: BOOL_TAGS,
}

MAX_COUNT = 1 << 24  # values per block; bounds what a corrupt header can make decode allocate
MAX_RAW_BYTES = 1 << 30  # decompressed payload bound


class T:
    """Plain-int mirror of :class:`Tag` for hot paths: reading an IntEnum member costs ~0.1 us,
    a plain class attribute a tenth of that, and small blocks compare tags several times."""

    RAW = int(Tag.RAW)
    CONST = int(Tag.CONST)
    FOR = int(Tag.FOR)
    DELTA_FOR = int(Tag.DELTA_FOR)
    DOD_FOR = int(Tag.DOD_FOR)
    ZIGZAG_VARINT = int(Tag.ZIGZAG_VARINT)
    DELTA_ZIGZAG_VARINT = int(Tag.DELTA_ZIGZAG_VARINT)
    GORILLA = int(Tag.GORILLA)
    ALP = int(Tag.ALP)
    BOOL_BITS = int(Tag.BOOL_BITS)
    STR_DICT = int(Tag.STR_DICT)
    STR_RAW = int(Tag.STR_RAW)
    DELTA_ZERORUN = int(Tag.DELTA_ZERORUN)
    ZIGZAG_RICE = int(Tag.ZIGZAG_RICE)
    FOR_RADIX = int(Tag.FOR_RADIX)


assert {k: v for k, v in vars(T).items() if not k.startswith("_")} == {t.name: t.value for t in Tag}
