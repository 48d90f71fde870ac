"""Exact integer aggregates shared by every read path (executor, vector, columnar).

Integer and unsigned fields never take a float64 detour in MIN, MAX, SUM, FIRST and LAST: a
value above 2^53 would lose its low bits (``MIN`` of ``31053281322533953u`` came back as
``...952``).

* MIN/MAX reduce in the field's own dtype (int64 or uint64).
* SUM adds in the field's dtype, which wraps modulo 2^64; the wrapped sum equals the exact sum
  whenever the exact sum fits the type. A float64 sum of the same values, whose error is far
  below 2^62, tells which multiple of 2^64 the wrap lost: when the exact sum lies outside int64
  (INTEGER) or uint64 (UNSIGNED) the statement fails with "integer out of range" (SQLSTATE
  22003, PostgreSQL's error for int8 overflow) instead of answering a wrapped or rounded value.
* Block pre-aggregates are stored as float64 (docs/format/segment.md); for integer fields they
  are used only where they are exact (every value, and the sum of their magnitudes, below 2^53),
  else the block is decoded (:func:`stats_exact`).
"""

from __future__ import annotations

import numpy as np

from rusts.errors import QueryError
from rusts.model import FieldType

EXACT_F64 = float(2**53)
INT_TYPES = (FieldType.INTEGER, FieldType.UNSIGNED)


def int_dtype(ft) -> np.dtype | None:
    """int64/uint64 for INTEGER/UNSIGNED fields, else None."""
    if ft == FieldType.INTEGER:
        return np.dtype(np.int64)
    if ft == FieldType.UNSIGNED:
        return np.dtype(np.uint64)
    return None


def stats_exact(count, sums, mins, maxs) -> np.ndarray:
    """Which float64 pre-aggregate rows of an integer field are exact: no value (count 0), or
    every value and the sum of their magnitudes below 2^53 (then the float sum of integers is
    exact too, every partial sum being an integer below 2^53)."""
    cnt = np.asarray(count, dtype=np.int64)
    with np.errstate(invalid="ignore"):
        big = np.maximum(np.abs(np.asarray(mins, np.float64)), np.abs(np.asarray(maxs, np.float64)))
        ok = big * cnt.astype(np.float64) < EXACT_F64
    return (cnt == 0) | ok


def out_of_range() -> QueryError:
    return QueryError("integer out of range", sqlstate="22003")


def checked_sum(wrapped: np.ndarray, approx: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
    """The exact sums given their value modulo 2^64 (``wrapped``, int64 or uint64) and a float64
    approximation; raises "integer out of range" where the exact sum does not fit the dtype."""
    unsigned = wrapped.dtype.kind == "u"
    a = np.asarray(approx, dtype=np.float64)
    if present is not None:
        a = np.where(present, a, 0.0)
    suspect = (a >= 2.0**63) if unsigned else (np.abs(a) >= 2.0**62)
    if not suspect.any():
        return wrapped
    lo, hi = (0, 2**64 - 1) if unsigned else (-(2**63), 2**63 - 1)
    for i in np.flatnonzero(suspect).tolist():
        w = int(wrapped[i])
        k = round((a[i] - w) / 2.0**64)
        exact = w + k * 2**64
        if not lo <= exact <= hi:
            raise out_of_range()
    return wrapped


def int_mean(sums: np.ndarray, count: np.ndarray) -> np.ndarray:
    """AVG from exact integer sums: one rounding of the sum, one of the division."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums.astype(np.float64) / np.maximum(count, 1)


def min_max_fill(is_min: bool, dtype: np.dtype):
    """The identity of MIN or MAX in ``dtype`` (what an empty slot starts as)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return info.max if is_min else info.min
    return np.inf if is_min else -np.inf
