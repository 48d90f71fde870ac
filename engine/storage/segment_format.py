"""Segment file format: constants, header/trailer/footer structs, and the plain data types that
writers and readers exchange (byte layout: ``docs/format/segment.md``)."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping

import attrs
import numpy as np
import zstandard

from rusts.model import Column

MAGIC = b"RUSTSSEG"
VERSION = 1
_HEADER = struct.Struct("<8sHHI")      # magic, version, flags, crc of the first 12 bytes
_TRAILER = struct.Struct("<QQIHH8s")   # footer offset, footer length, footer crc, version, flags, magic
FOOTER_ZSTD = 0x1  # trailer flag: the stored footer is one zstd frame


def _footer_crc(stored, flags: int) -> int:
    """CRC-32 of the stored footer bytes, continued over the flags when any is set (so a flipped
    flag is detected; files without flags keep the plain CRC of the first format)."""
    crc = zlib.crc32(stored)
    return zlib.crc32(struct.pack("<H", flags), crc) if flags else crc


_ZSTD_LOCAL = __import__("threading").local()


def _zstd_footer():
    c = getattr(_ZSTD_LOCAL, "c", None)
    if c is None:
        c = _ZSTD_LOCAL.c = zstandard.ZstdCompressor(level=3)
    return c
_DIR_HEAD = struct.Struct("<II")
_DIR_ENTRY = struct.Struct("<IIQQ")
_MIN_SIZE = _HEADER.size + _TRAILER.size

# footer section ids (docs/format/segment.md)
META, FIELD_NAMES, FIELD_NAME_OFFSETS, FIELD_TYPES = 1, 2, 3, 4
SERIES_IDS, SERIES_BLOCK_START, KEY_OFFSETS, KEYS = 5, 6, 7, 8
BLOCK_MIN_TIME, BLOCK_MAX_TIME, BLOCK_ROWS, BLOCK_TS_OFFSET, BLOCK_TS_LENGTH, BLOCK_CHUNK_START = (
    9, 10, 11, 12, 13, 14)
CHUNK_FIELD, CHUNK_OFFSET, CHUNK_LENGTH, CHUNK_MASK_LENGTH = 15, 16, 17, 18
CHUNK_COUNT, CHUNK_SUM, CHUNK_MIN, CHUNK_MAX = 19, 20, 21, 22
BLOOM = 23
# optional sub-block statistics (docs/format/segment.md, "Sub-block statistics")
SUB_META, BLOCK_SUB_START, SUB_TIME, SUB_ROWS, SUB_COUNT, SUB_SUM, SUB_MIN, SUB_MAX = range(24, 32)
_SUB_META = struct.Struct("<QQQ")  # interval_ns, block entries, chunk entries
_SUB_COLUMN_BLOCK = 65536  # values per codec block of a codec column
_INT64_MAX = 2**63 - 1
_DEC_POW = np.array([10.0 ** e for e in range(9)])[:, None]  # decimal sums: up to 8 digits

# (section id, dtype, which count gives its length: N, B, C, F, or +1 variants)
_ARRAYS = {
    FIELD_NAME_OFFSETS: ("<u8", "F+1"), FIELD_TYPES: ("u1", "F"),
    SERIES_IDS: ("<u8", "N"), SERIES_BLOCK_START: ("<u8", "N+1"), KEY_OFFSETS: ("<u8", "N+1"),
    BLOCK_MIN_TIME: ("<i8", "B"), BLOCK_MAX_TIME: ("<i8", "B"), BLOCK_ROWS: ("<u4", "B"),
    BLOCK_TS_OFFSET: ("<u8", "B"), BLOCK_TS_LENGTH: ("<u4", "B"), BLOCK_CHUNK_START: ("<u8", "B+1"),
    CHUNK_FIELD: ("<u4", "C"), CHUNK_OFFSET: ("<u8", "C"), CHUNK_LENGTH: ("<u4", "C"),
    CHUNK_MASK_LENGTH: ("<u4", "C"), CHUNK_COUNT: ("<u4", "C"), CHUNK_SUM: ("<f8", "C"),
    CHUNK_MIN: ("<f8", "C"), CHUNK_MAX: ("<f8", "C"),
}
_U32_MAX = 2**32 - 1


@attrs.frozen(eq=False)
class SeriesData:
    """All rows of one series for one segment: int64 timestamps strictly increasing, columns aligned."""

    series_id: int
    key: str
    timestamps: np.ndarray
    columns: Mapping[str, Column]

    def __len__(self) -> int:
        return len(self.timestamps)


@attrs.frozen
class SegmentInfo:
    """What :func:`write_segment` wrote."""

    path: str
    size: int
    min_time: int
    max_time: int
    series_count: int
    point_count: int
    value_count: int


@attrs.frozen(eq=False)
class BlockTable:
    """Per block of one series: first/last timestamp and row count."""

    min_time: np.ndarray
    max_time: np.ndarray
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)


@attrs.frozen(eq=False)
class SubStats:
    """Sub-block statistics of one series (and one field): one entry per statistics interval of
    each block that spans several intervals (blocks within one interval have none).

    ``block`` is the block index (as in :meth:`SegmentReader.blocks`) of each entry, and the
    entries of block k are ``[block_start[k], block_start[k+1])``; ``time`` is the interval start
    (a multiple of ``interval``), ``rows`` the block's rows in it; ``count``/``sum``/``min``/
    ``max`` are the field's pre-aggregates there (count 0, sum 0, min/max NaN where absent; for
    ``field=None`` count is the row count).
    """

    interval: int
    block_start: np.ndarray
    block: np.ndarray
    time: np.ndarray
    rows: np.ndarray
    count: np.ndarray
    sum: np.ndarray
    min: np.ndarray
    max: np.ndarray


@attrs.frozen(eq=False)
class FieldStats:
    """Per block of one series, pre-aggregates of one field (count 0, sum 0, min/max NaN where absent)."""

    count: np.ndarray
    sum: np.ndarray
    min: np.ndarray
    max: np.ndarray
