"""Segments of hourly time-aligned blocks (the writer encodes each column's blocks in one
vectorised pass): every value, presence mask and block statistic reads back exactly."""

import numpy as np

from rusts.model import Column, FieldType
from rusts.storage.segment import SegmentReader, SeriesData, write_segment

from tests.engine.storage.test_segment import assert_same

F, I, U, S, B = FieldType.FLOAT, FieldType.INTEGER, FieldType.UNSIGNED, FieldType.STRING, FieldType.BOOLEAN
HOUR = 3600 * 10**9


def trips_like(sid: int, n: int, rng) -> SeriesData:
    ts = 1_700_000_000 * 10**9 + np.cumsum(rng.integers(1, 8 * 10**9, n)).astype(np.int64)
    sparse = rng.random(n) < 0.7
    sparse[:5] = False  # the first block has some rows without the field
    cols = {
        "miles": Column(F, np.round(rng.lognormal(1.3, 0.8, n), 2)),
        "tolls": Column(F, np.where(rng.random(n) < 0.92, 0.0, np.round(rng.uniform(3, 15, n), 2))),
        "noisy": Column(F, rng.normal(0, 1, n)),  # no decimal form: the per-block encoder
        "gap": Column(F, np.round(rng.normal(0, 10, n), 1), sparse),
        "loc": Column(I, rng.integers(1, 266, n)),
        "wide": Column(I, rng.integers(-(2**63), 2**63 - 1, n)),
        "count": Column(U, rng.integers(2**63, 2**64 - 1, n, dtype=np.uint64, endpoint=True)),
        "flag": Column(S, np.where(rng.random(n) < 0.05, "Y", "N").astype(object)),
        "base": Column(S, np.full(n, "B03404", dtype=object), sparse),
        "ok": Column(B, rng.random(n) < 0.5),
    }
    return SeriesData(sid, f"trips,s={sid}", ts, cols)


def test_hourly_blocks_read_back_exactly(tmp_path):
    rng = np.random.default_rng(3)
    series = [trips_like(1, 30_000, rng), trips_like(2, 3_000, rng)]
    path = tmp_path / "t.seg"
    info = write_segment(path, series, block_rows=4096, block_time_ns=HOUR, stats_interval_ns=HOUR)
    assert info.point_count == 33_000
    with SegmentReader.open(path) as r:
        for s in series:
            ts, cols = r.read(s.series_id)
            assert_same(ts, cols, s)
            bt = r.blocks(s.series_id)
            assert len(bt) == len(np.unique(s.timestamps // HOUR))  # hourly blocks
            edges = np.r_[0, np.cumsum(bt.rows.astype(np.int64))]
            for name in ("miles", "gap", "loc"):
                c = s.columns[name]
                fs = r.field_stats(s.series_id, name)
                for k in range(len(bt)):
                    sl = slice(edges[k], edges[k + 1])
                    v = c.values[sl] if c.mask is None else c.values[sl][c.mask[sl]]
                    assert fs.count[k] == len(v)
                    if len(v):
                        assert fs.min[k] == v.min() and fs.max[k] == v.max()
