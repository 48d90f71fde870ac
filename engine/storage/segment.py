"""Segment files: the immutable, columnar, compressed on-disk form of one time partition.

Byte layout: ``docs/format/segment.md``. Design:

* **Wide per-series layout.** For each series (in series-id order) rows are cut into blocks of
  ``block_rows`` rows; a block is one timestamps chunk plus one chunk per field present in it.
  A field chunk holds only the present values, preceded by a bit-packed presence mask when some
  rows lack the field. Every chunk is a ``rusts.codecs`` block (its own CRC).
* **Pre-aggregates.** Every field chunk records count/sum/min/max, every block its
  min/max time and rows, so aggregates over blocks wholly inside a query range need no decoding.
* **Flat footer.** The index is ~20 flat little-endian arrays (structure of arrays), read with
  one ``pread``, one CRC and ``np.frombuffer`` each: opening costs the same for 10 or 100k series.
  Series keys (for rebuilding the series index) and field names are decoded lazily.
* **Python work per block, never per value.** The writer loops over blocks and fields; stats
  and masks are numpy reductions; the reader decodes the selected chunks and scatters them with
  boolean indexing.
* **Damage is contained.** A chunk failing its CRC raises ``CorruptionError(path, offset)`` for
  reads touching that chunk only; other series stay readable. Inside a query
  (:func:`rusts.storage.damage.collect_missing`) the damaged block reads as empty instead and is
  reported, so the series' other blocks still answer. A bad header, footer or trailer makes
  :meth:`SegmentReader.open` fail, and the engine quarantines the file.

Writing is atomic: ``<path>.tmp``, fsync, rename, fsync of the directory.
"""

from __future__ import annotations

from rusts.storage.segment_format import (  # noqa: F401 - the public names of the segment format
    FOOTER_ZSTD, MAGIC, VERSION, BlockTable, FieldStats, SegmentInfo, SeriesData, SubStats,
)
from rusts.storage.segment_reader import SegmentReader  # noqa: F401
from rusts.storage.segment_writer import write_segment  # noqa: F401
