"""rusts.codecs: pure ``ndarray -> bytes -> ndarray`` block codecs for time-series columns.

The storage layer calls :func:`encode` on a block of one column (typically 4,096 values) and
:func:`decode` to get it back; the block is self-describing (codec tag, type, count, optional
LZ4/Zstd wrapper, CRC32). The byte format is documented in ``docs/format/codecs.md``.
Everything is vectorised with numpy: no per-value Python loop on numeric data.
"""

from rusts.codecs._block import COMPRESSION_LEVELS as COMPRESSION_LEVELS
from rusts.codecs._block import TIERS as TIERS
from rusts.codecs._batch import MIN_BLOCK as BATCH_MIN_BLOCK
from rusts.codecs._batch import encode_blocks as encode_blocks
from rusts.codecs._block import Hint as Hint
from rusts.codecs._block import decode as decode
from rusts.codecs._block import decoded_count as decoded_count
from rusts.codecs._block import encode as encode
from rusts.codecs._format import Tag as Tag

__all__ = ["BATCH_MIN_BLOCK", "COMPRESSION_LEVELS", "Hint", "TIERS", "Tag", "decode", "decoded_count", "encode", "encode_blocks"]
