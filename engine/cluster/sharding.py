"""Shard assignment, columnar: which shard every row of a :class:`~rusts.model.WriteBatch` goes to.

Strategies (the original's names):

* ``BySeries``: ``xxh64(series key) % shard_count`` (the series key is the canonical
  ``measurement,tag=value,...`` of :func:`rusts.model.series_key`, so tag order in the input
  does not matter).
* ``ByMeasurement``: ``xxh64(measurement) % shard_count``.
* ``ByTime``: ``floor(timestamp / bucket) % shard_count`` (bucket: ``time_bucket_ns``).
* ``Composite``: ``(xxh64(series key) + floor(timestamp / bucket)) % shard_count``: a series
  moves to the next shard every bucket, so one hot series spreads over time and one time bucket
  spreads over series.

Hashes are xxh64 of the UTF-8 bytes (seed 0): stable across processes and machines (Python's
``hash()`` is salted per process and must never place data). The work is one C-level hash per
series (``map`` over the frame's keys) and numpy over rows; no Python step per point.
"""

from __future__ import annotations

import numpy as np
import xxhash

from rusts.model import WriteBatch

_h64 = xxhash.xxh64_intdigest


def hash_strings(values) -> np.ndarray:
    """xxh64 of each string's UTF-8 bytes (uint64)."""
    return np.fromiter(map(_h64, map(str.encode, values)), dtype=np.uint64, count=len(values))


def _bucket_mod(ts: np.ndarray, bucket: int, n: int) -> np.ndarray:
    return np.mod(np.floor_divide(ts, bucket), n).astype(np.uint64)


class Sharder:
    """Assigns rows to shards for one cluster's strategy and shard count."""

    def __init__(self, strategy: str, shard_count: int, time_bucket_ns: int) -> None:
        self.strategy = strategy
        self.n = int(shard_count)
        self.bucket = int(time_bucket_ns)
        self._measurement_shard: dict[str, int] = {}

    def measurement_shard(self, measurement: str) -> int:
        s = self._measurement_shard.get(measurement)
        if s is None:
            if len(self._measurement_shard) > 100_000:
                self._measurement_shard.clear()
            s = self._measurement_shard[measurement] = _h64(measurement.encode()) % self.n
        return s

    def frame_row_shards(self, frame) -> np.ndarray:
        """The shard (int64) of every row of ``frame`` (a :class:`rusts.model.Frame`)."""
        n = np.uint64(self.n)
        st = self.strategy
        if st == "ByTime":
            return _bucket_mod(frame.timestamps, self.bucket, self.n).astype(np.int64)
        if st == "ByMeasurement":
            m0 = frame.layout()[0]
            if m0 is not None:
                return np.full(len(frame), self.measurement_shard(m0), dtype=np.int64)
            per_series = np.fromiter(map(self.measurement_shard, frame.measurements), np.int64,
                                     len(frame.measurements))
            return np.repeat(per_series, frame.counts())
        h = hash_strings(frame.keys)
        if st == "BySeries":
            return np.repeat((h % n).astype(np.int64), frame.counts())
        # Composite
        rows_h = np.repeat(h % n, frame.counts())
        return ((rows_h + _bucket_mod(frame.timestamps, self.bucket, self.n)) % n).astype(np.int64)

    def split(self, batch: WriteBatch) -> dict[int, WriteBatch]:
        """``batch``'s rows grouped by shard: shard -> a batch of its rows (input order kept)."""
        parts: dict[int, list] = {}
        for frame in batch.frames:
            shards = self.frame_row_shards(frame)
            if not len(shards):
                continue
            present = np.unique(shards)
            if len(present) == 1:
                parts.setdefault(int(present[0]), []).append(frame)
                continue
            for s in present.tolist():
                sub = frame.take_rows(shards == s)
                if sub is not None:
                    parts.setdefault(s, []).append(sub)
        return {s: WriteBatch.from_frames(frames) for s, frames in sorted(parts.items())}

    def shards_for(self, measurement: str, start: int, end: int) -> list[int]:
        """The shards a query over ``measurement`` and ``[start, end]`` can touch (pruning:
        ByMeasurement by name, ByTime by the time buckets of the range)."""
        if self.strategy == "ByMeasurement":
            return [self.measurement_shard(measurement)]
        if self.strategy == "ByTime":
            first, last = start // self.bucket, end // self.bucket
            if last - first + 1 < self.n:
                return sorted({b % self.n for b in range(first, last + 1)})
        return list(range(self.n))
