"""Boolean codecs.

* BOOL_BITS: ``ceil(n/8)`` bytes, value ``i`` is bit ``i % 8`` (LSB first) of byte ``i // 8``.
* CONST: one byte, 0 or 1.
"""

from __future__ import annotations

import numpy as np

from rusts.codecs._format import T
from rusts.errors import CodecError


def encode(values: np.ndarray) -> tuple[int, bytes]:
    """Encode a bool array. Returns (tag, payload)."""
    b = np.ascontiguousarray(values, dtype=bool)
    if len(b) and (b.all() or not b.any()):
        return T.CONST, bytes((int(b[0]),))
    return T.BOOL_BITS, np.packbits(b, bitorder="little").tobytes()


def encode_as(tag: int, values: np.ndarray) -> bytes:
    """The payload of a given bool codec (for tests and benchmarks)."""
    b = np.ascontiguousarray(values, dtype=bool)
    if tag == T.BOOL_BITS:
        return np.packbits(b, bitorder="little").tobytes()
    if tag == T.CONST and len(b) and (b.all() or not b.any()):
        return bytes((int(b[0]),))
    raise CodecError(f"bool codec {tag} cannot hold these values")


def decode(tag: int, payload, n: int) -> np.ndarray:
    """Inverse of :func:`encode`."""
    if tag == T.CONST:
        if len(payload) != 1 or payload[0] > 1:
            raise CodecError("bool CONST payload malformed")
        return np.full(n, bool(payload[0]))
    if tag == T.BOOL_BITS:
        if len(payload) != (n + 7) // 8:
            raise CodecError(f"bool payload is {len(payload)} bytes, expected {(n + 7) // 8}")
        return np.unpackbits(np.frombuffer(payload, dtype=np.uint8), count=n,
                             bitorder="little").view(bool)
    raise CodecError(f"unknown bool codec tag {tag:#04x}")
