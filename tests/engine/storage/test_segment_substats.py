"""Sub-block statistics (segment footer sections 24..31): per-interval pre-aggregates of blocks
that span several intervals, checked against numpy, plus corrupt-footer cases."""

from __future__ import annotations

import os
import struct
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rusts.storage.segment_format as segment_format
import rusts.storage.segment_writer as segment_writer
from rusts.errors import CorruptionError, StorageError
from rusts.model import Column, FieldType
from rusts.storage.segment import SegmentReader, SeriesData, write_segment

F, I, U, S, B = FieldType.FLOAT, FieldType.INTEGER, FieldType.UNSIGNED, FieldType.STRING, FieldType.BOOLEAN
SEC = 10**9
HOUR = 3600 * SEC


def _values(ft, n, rng, decimals):
    if ft == F:
        v = rng.normal(50, 20, n)
        return np.round(v, 2) if decimals else v
    if ft == I:
        return rng.integers(-(2**40), 2**40, n, dtype=np.int64)
    if ft == U:
        return rng.integers(0, 2**40, n, dtype=np.uint64)
    if ft == B:
        return rng.random(n) < 0.3
    return np.array([f"v{x}" for x in rng.integers(0, 20, n)], dtype=object)


def make_series(sid, n, rng, step, sparse=(), decimals=True, start=0):
    ts = start + np.cumsum(rng.integers(1, step, n)).astype(np.int64)
    cols = {}
    for name, ft in (("f", F), ("i", I), ("u", U), ("s", S), ("b", B)):
        mask = None
        if name in sparse:
            mask = rng.random(n) < 0.4
            if not mask.any():
                continue
        cols[name] = Column(ft, _values(ft, n, rng, decimals), mask)
    return SeriesData(sid, f"cpu,host=h{sid}", ts, cols)


def expected(r: SegmentReader, s: SeriesData, field, iv):
    """Entries computed from the input rows: (block, time, rows, count, sum, min, max) lists."""
    bt = r.blocks(s.series_id)
    edges = np.r_[0, np.cumsum(bt.rows.astype(np.int64))]
    out = []
    for k in range(len(bt)):
        ts = s.timestamps[edges[k]:edges[k + 1]]
        g = ts // iv
        if g[0] == g[-1]:
            continue
        for u in np.unique(g).tolist():
            rows = np.flatnonzero(g == u) + edges[k]
            if field is None:
                out.append((k, u * iv, len(rows), len(rows), None))
                continue
            c = s.columns.get(field)
            m = np.ones(len(s), bool) if c is None or c.mask is None else c.mask
            sel = rows[m[rows]] if c is not None else rows[:0]
            out.append((k, u * iv, len(rows), len(sel), None if c is None else (c.type, c.values[sel])))
    return out


def check(r: SegmentReader, s: SeriesData, iv):
    for field in (None, "f", "i", "u", "s", "b", "absent"):
        want = expected(r, s, field, iv)
        got = r.sub_stats(s.series_id, field)
        if not want:
            assert got is None or len(got.block) == 0
            continue
        assert got.interval == iv
        assert got.block.tolist() == [w[0] for w in want]
        assert got.time.tolist() == [w[1] for w in want]
        assert got.rows.tolist() == [w[2] for w in want]
        assert got.count.tolist() == [w[3] for w in want]
        for k, w in enumerate(want):
            if w[4] is None or w[3] == 0:
                if field is not None:
                    assert got.sum[k] == 0 and np.isnan(got.min[k]) and np.isnan(got.max[k])
                continue
            ft, v = w[4]
            if ft == S:
                assert np.isnan(got.sum[k]) and np.isnan(got.min[k]) and np.isnan(got.max[k])
            elif ft == B:
                assert (got.sum[k], got.min[k], got.max[k]) == (v.sum(), v.min(), v.max())
            else:
                assert got.sum[k] == pytest.approx(float(v.astype(float).sum()), rel=1e-12, abs=1e-9)
                assert got.min[k] == float(v.min()) and got.max[k] == float(v.max())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_sub_stats_equal_numpy_and_data_round_trips(data):
    seed = data.draw(st.integers(0, 2**32 - 1))
    iv = data.draw(st.sampled_from([7 * SEC, 60 * SEC, 300 * SEC, HOUR]))
    block_rows = data.draw(st.sampled_from([1, 5, 64, 16384]))
    tier = data.draw(st.sampled_from(["hot", "cold"]))
    compression = data.draw(st.sampled_from(["none", "default", "best"]))
    decimals = data.draw(st.booleans())
    rng = np.random.default_rng(seed)
    series = []
    for sid in sorted(rng.choice(1000, int(rng.integers(1, 5)), replace=False).tolist()):
        sparse = tuple(x for x in "fiusb" if rng.random() < 0.5)
        series.append(make_series(sid, int(rng.integers(1, 300)), rng, int(rng.integers(2, 40)) * SEC,
                                  sparse, decimals, start=int(rng.integers(-10**6, 10**6)) * SEC))
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "p.seg")
        write_segment(p, series, compression=compression, tier=tier, block_rows=block_rows, stats_interval_ns=iv)
        with SegmentReader.open(p) as r:
            for s in series:
                check(r, s, iv)
                ts, cols = r.read(s.series_id)
                np.testing.assert_array_equal(ts, s.timestamps)
                assert set(cols) == set(s.columns)


def test_hourly_entries_of_a_day_block_and_none_for_aligned_blocks(tmp_path):
    ts = np.arange(8640, dtype=np.int64) * 10 * SEC + 1_700_006_400 * SEC  # a day at 10 s, hour-aligned
    v = np.round(np.random.default_rng(1).uniform(0, 100, 8640), 2)
    s = SeriesData(1, "cpu,host=a", ts, {"f": Column(F, v)})
    write_segment(tmp_path / "day.seg", [s], block_rows=16384, stats_interval_ns=HOUR)
    with SegmentReader.open(tmp_path / "day.seg") as r:
        st_ = r.sub_stats(1, "f")
        assert len(st_.block) == 24 and st_.rows.tolist() == [360] * 24
        assert np.array_equal(st_.max, v.reshape(24, 360).max(axis=1))
    # blocks that never cross an interval (the hot, time-aligned layout) carry no entries and
    # the file has no sub-block sections at all: the layout of files written before them
    write_segment(tmp_path / "hot.seg", [s], block_rows=4096, block_time_ns=HOUR, stats_interval_ns=HOUR)
    write_segment(tmp_path / "old.seg", [s], block_rows=4096, block_time_ns=HOUR)
    assert (tmp_path / "hot.seg").read_bytes() == (tmp_path / "old.seg").read_bytes()
    with SegmentReader.open(tmp_path / "old.seg") as r:
        assert r.sub_interval_ns is None and r.sub_stats(1, "f") is None


def test_decimal_sums_are_correctly_rounded(tmp_path):
    ts = np.array([0, 1, HOUR, HOUR + 1], dtype=np.int64)
    v = np.array([0.1, 0.2, 1.1, 2.2])
    write_segment(tmp_path / "d.seg", [SeriesData(1, "m", ts, {"f": Column(F, v)})], stats_interval_ns=HOUR)
    with SegmentReader.open(tmp_path / "d.seg") as r:
        sums = r.sub_stats(1, "f").sum.tolist()
    assert sums == [0.3, 3.3]
    assert 0.1 + 0.2 != 0.3 and 1.1 + 2.2 != 3.3  # what a float64 sum gives


def test_non_decimal_and_special_floats_keep_numpy_semantics(tmp_path):
    ts = np.arange(6, dtype=np.int64) * HOUR // 2
    v = np.array([np.pi, np.inf, np.nan, -0.0, 1e300, -np.inf])
    write_segment(tmp_path / "x.seg", [SeriesData(1, "m", ts, {"f": Column(F, v)})], stats_interval_ns=HOUR)
    with SegmentReader.open(tmp_path / "x.seg") as r:
        st_ = r.sub_stats(1, "f")
    with np.errstate(all="ignore"):
        want = v.reshape(3, 2)
        assert np.array_equal(st_.sum, want.sum(axis=1), equal_nan=True)
        assert np.array_equal(st_.min, want.min(axis=1), equal_nan=True)
        assert np.array_equal(st_.max, want.max(axis=1), equal_nan=True)


def test_bad_interval_is_refused(tmp_path):
    s = SeriesData(1, "m", np.arange(3, dtype=np.int64), {"f": Column(F, np.zeros(3))})
    for iv in (-1, 2**62):
        with pytest.raises(StorageError):
            write_segment(tmp_path / "x.seg", [s], stats_interval_ns=iv)
    assert not os.path.exists(tmp_path / "x.seg")


# ----------------------------------------------------------------------------- corrupt footers
def _series():
    rng = np.random.default_rng(4)
    return [make_series(1, 200, rng, 60 * SEC, sparse=("f",)), make_series(2, 50, rng, 60 * SEC)]


def _col(values):
    return segment_writer._codec_column(np.asarray(values, np.float64), "default", "hot")


CORRUPTIONS = {
    "missing section": lambda secs: secs.pop(segment_format.SUB_MAX),
    "meta size": lambda secs: secs.__setitem__(segment_format.SUB_META, secs[segment_format.SUB_META][:16]),
    "zero interval": lambda secs: secs.__setitem__(
        segment_format.SUB_META, struct.pack("<QQQ", 0, *struct.unpack("<QQQ", secs[segment_format.SUB_META])[1:])),
    "block entry count": lambda secs: secs.__setitem__(
        segment_format.SUB_META, struct.pack("<QQQ", HOUR, 1, struct.unpack("<QQQ", secs[segment_format.SUB_META])[2])),
    "time not aligned": lambda secs: secs[segment_format.SUB_TIME].__setitem__(0, secs[segment_format.SUB_TIME][0] + 1),
    "time order": lambda secs: secs[segment_format.SUB_TIME].__setitem__(1, secs[segment_format.SUB_TIME][0]),
    "rows": lambda secs: secs[segment_format.SUB_ROWS].__setitem__(0, secs[segment_format.SUB_ROWS][0] + 1),
    "count over rows": lambda secs: secs[segment_format.SUB_COUNT].__setitem__(0, 10**6),
    "count vs chunk": lambda secs: secs[segment_format.SUB_COUNT].__setitem__(
        0, max(0, int(secs[segment_format.SUB_COUNT][0]) - 1)),
    "column too short": lambda secs: secs.__setitem__(segment_format.SUB_SUM, _col([1.0])),
    "column trailing bytes": lambda secs: secs.__setitem__(segment_format.SUB_MIN, secs[segment_format.SUB_MIN] + b"x"),
    "column block crc": lambda secs: secs.__setitem__(
        segment_format.SUB_MAX, secs[segment_format.SUB_MAX][:-1] + bytes([secs[segment_format.SUB_MAX][-1] ^ 1])),
    "column truncated": lambda secs: secs.__setitem__(segment_format.SUB_SUM, secs[segment_format.SUB_SUM][:6]),
}


@pytest.mark.parametrize("what", sorted(CORRUPTIONS))
def test_inconsistent_sub_sections_fail_open(tmp_path, monkeypatch, what):
    real = segment_writer._Writer._sub_sections

    def bad(self):
        secs = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in real(self).items()}
        CORRUPTIONS[what](secs)
        return secs

    monkeypatch.setattr(segment_writer._Writer, "_sub_sections", bad)
    write_segment(tmp_path / "bad.seg", _series(), stats_interval_ns=HOUR // 6)
    with pytest.raises(CorruptionError):
        # the codec columns are checked when first used; everything else on open
        with SegmentReader.open(tmp_path / "bad.seg") as r:
            assert what.startswith("column")
            ts, cols = r.read(1)  # the data itself stays readable
            assert len(ts) == 200
            r.sub_stats(1, "i")


def test_every_single_byte_flip_is_detected_or_harmless(tmp_path):
    series = _series()[1:]
    write_segment(tmp_path / "s.seg", series, block_rows=64, stats_interval_ns=HOUR // 6)
    raw = (tmp_path / "s.seg").read_bytes()
    with SegmentReader.open(tmp_path / "s.seg") as r:
        want = r.sub_stats(2, "f")
        assert len(want.block) > 0
    bad = tmp_path / "bad.seg"
    for off in range(len(raw)):
        data = bytearray(raw)
        data[off] ^= 0xFF
        bad.write_bytes(bytes(data))
        try:
            r = SegmentReader.open(bad)
        except CorruptionError:
            continue
        with r:
            got = r.sub_stats(2, "f")
            for name in ("block", "time", "rows", "count", "sum", "min", "max"):
                assert np.array_equal(getattr(got, name), getattr(want, name), equal_nan=True)
