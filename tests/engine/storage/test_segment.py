"""Segment files: round trips, block pre-aggregates, partial reads, corruption handling."""

import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rusts.errors import CorruptionError, StorageError
from rusts.model import Column, FieldType
from rusts.storage.segment import SegmentReader, SeriesData, write_segment

F, I, U, S, B = FieldType.FLOAT, FieldType.INTEGER, FieldType.UNSIGNED, FieldType.STRING, FieldType.BOOLEAN


def _values(ft, n, rng):
    if ft == F:
        return np.round(rng.normal(50, 20, n), 2)
    if ft == I:
        return rng.integers(-(2**62), 2**62, n, dtype=np.int64)
    if ft == U:
        return rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    if ft == B:
        return rng.random(n) < 0.3
    return np.array([f"v{x}" for x in rng.integers(0, 20, n)], dtype=object)


def make_series(sid, n, rng, sparse=(), fields=(("f", F), ("i", I), ("u", U), ("s", S), ("b", B)),
                start=0):
    ts = start + np.cumsum(rng.integers(1, 20_000_000_000, n)).astype(np.int64)
    cols = {}
    for name, ft in fields:
        mask = None
        if name in sparse:
            mask = rng.random(n) < 0.4
            if not mask.any():
                continue
        cols[name] = Column(ft, _values(ft, n, rng), mask)
    return SeriesData(sid, f"cpu,host=h{sid}", ts, cols)


def assert_same(ts, cols, s: SeriesData, rows=slice(None)):
    np.testing.assert_array_equal(ts, s.timestamps[rows])
    expect = {}
    for name, c in s.columns.items():
        m = np.ones(len(s.timestamps), bool) if c.mask is None else c.mask
        if m[rows].any():
            expect[name] = (c.type, c.values[rows], m[rows])
    assert set(cols) == set(expect)
    for name, (ft, values, mask) in expect.items():
        col = cols[name]
        assert col.type == ft
        got_mask = np.ones(len(ts), bool) if col.mask is None else col.mask
        np.testing.assert_array_equal(got_mask, mask)
        if ft == F:
            np.testing.assert_array_equal(col.values[mask].view(np.uint64), values[mask].view(np.uint64))
        else:
            assert col.values.dtype == ft.dtype
            assert list(col.values[mask]) == list(values[mask])


@pytest.fixture
def mixed(tmp_path):
    rng = np.random.default_rng(7)
    series = [
        make_series(1, 10_000, rng),                       # 3 blocks
        make_series(3, 1, rng),                            # single row
        make_series(4, 5_000, rng, sparse=("f", "s", "b")),  # sparse fields across 2 blocks
        make_series(9, 300, rng, fields=(("f", I), ("g", F))),  # "f" with another type
        make_series(2**63 + 5, 4097, rng, sparse=("u",)),  # id beyond int64, block of 1 row
    ]
    path = tmp_path / "mixed.seg"
    info = write_segment(path, series, block_rows=4096)
    return path, series, info


def test_round_trip_all_types(mixed):
    path, series, info = mixed
    assert info.series_count == 5 and info.point_count == sum(len(s) for s in series)
    assert info.value_count == sum(len(c.valid()) for s in series for c in s.columns.values())
    assert info.size == os.path.getsize(path)
    assert info.min_time == min(int(s.timestamps[0]) for s in series)
    assert info.max_time == max(int(s.timestamps[-1]) for s in series)
    assert not Path(str(path) + ".tmp").exists()
    with SegmentReader.open(path) as r:
        assert r.min_time == info.min_time and r.max_time == info.max_time
        assert r.tier == "hot" and r.compression == "default"
        assert r.series_ids.tolist() == [s.series_id for s in series]
        assert r.series_keys() == {s.series_id: s.key for s in series}
        for s in series:
            assert r.has_series(s.series_id) and r.may_contain(s.series_id)
            assert r.field_types(s.series_id) == {n: c.type for n, c in s.columns.items()}
            ts, cols = r.read(s.series_id)
            assert_same(ts, cols, s)
        assert [d.series_id for d in r.read_all()] == [s.series_id for s in series]
        for d, s in zip(r.read_all(), series):
            assert d.key == s.key
            assert_same(d.timestamps, d.columns, s)
        assert not r.has_series(2) and r.read(2)[0].size == 0 and r.blocks(2).rows.size == 0
        assert r.field_types()["s"] == S


def test_read_subset_of_fields_and_blocks(mixed):
    path, series, _ = mixed
    s = series[0]
    with SegmentReader.open(path) as r:
        bt = r.blocks(1)
        assert bt.rows.tolist() == [4096, 4096, 1808]
        assert bt.min_time.tolist() == s.timestamps[[0, 4096, 8192]].tolist()
        assert bt.max_time.tolist() == s.timestamps[[4095, 8191, 9999]].tolist()
        ts, cols = r.read(1, ["i", "nope"], blocks=np.array([2, 0]))
        rows = np.r_[0:4096, 8192:10000]
        np.testing.assert_array_equal(ts, s.timestamps[rows])
        assert list(cols) == ["i"]
        np.testing.assert_array_equal(cols["i"].values, s.columns["i"].values[rows])
        ts, cols = r.read(1, [], blocks=np.array([1]))
        assert len(ts) == 4096 and cols == {}
        with pytest.raises(StorageError):
            r.read(1, blocks=np.array([3]))
        # series 9 has "f" as an integer: names resolve per series
        ts, cols = r.read(9, ["f"])
        assert cols["f"].type == I


def test_sparse_field_absent_from_selected_blocks_is_omitted(tmp_path):
    n = 300
    ts = np.arange(n, dtype=np.int64)
    mask = np.zeros(n, bool)
    mask[250:260] = True  # only in the last block of 100 rows
    s = SeriesData(1, "m", ts, {"a": Column(F, np.arange(n, dtype=float)),
                               "rare": Column(S, np.array(["x"] * n, dtype=object), mask)})
    write_segment(tmp_path / "s.seg", [s], block_rows=100)
    with SegmentReader.open(tmp_path / "s.seg") as r:
        _, cols = r.read(1, blocks=np.array([0, 1]))
        assert set(cols) == {"a"}
        _, cols = r.read(1, blocks=np.array([0, 2]))
        assert cols["rare"].mask.sum() == 10 and cols["rare"].mask[150:160].all()
        assert r.field_stats(1, "rare").count.tolist() == [0, 0, 10]
        assert math.isnan(r.field_stats(1, "rare").min[0])


def test_block_stats_equal_numpy(mixed):
    path, series, _ = mixed
    with SegmentReader.open(path) as r:
        for s in series:
            bt = r.blocks(s.series_id)
            edges = np.r_[0, np.cumsum(bt.rows.astype(np.int64))]
            for name, c in s.columns.items():
                fs = r.field_stats(s.series_id, name)
                for k in range(len(bt)):
                    sl = slice(edges[k], edges[k + 1])
                    m = np.ones(edges[k + 1] - edges[k], bool) if c.mask is None else c.mask[sl]
                    v = c.values[sl][m]
                    assert fs.count[k] == len(v)
                    if len(v) == 0 or c.type == S:
                        continue
                    if c.type == B:
                        assert fs.sum[k] == v.sum() and fs.min[k] == v.min() and fs.max[k] == v.max()
                    elif c.type == F:
                        assert fs.sum[k] == pytest.approx(v.sum(), rel=1e-12)
                        assert fs.min[k] == v.min() and fs.max[k] == v.max()
                    else:
                        assert fs.sum[k] == pytest.approx(float(v.astype(float).sum()), rel=1e-12)
                        assert fs.min[k] == float(v.min()) and fs.max[k] == float(v.max())
        assert r.field_stats(1, "nope").count.tolist() == [0, 0, 0]


def test_invalid_input_leaves_no_file(tmp_path):
    rng = np.random.default_rng(1)
    a, b = make_series(2, 10, rng), make_series(1, 10, rng)
    with pytest.raises(StorageError):
        write_segment(tmp_path / "x.seg", [a, b])
    bad_ts = SeriesData(1, "m", np.array([1, 1], dtype=np.int64), {"a": Column(F, np.zeros(2))})
    with pytest.raises(StorageError):
        write_segment(tmp_path / "x.seg", [bad_ts])
    short = SeriesData(1, "m", np.array([1, 2], dtype=np.int64), {"a": Column(F, np.zeros(3))})
    with pytest.raises(StorageError):
        write_segment(tmp_path / "x.seg", [short])
    assert list(tmp_path.iterdir()) == []


def test_empty_segment(tmp_path):
    info = write_segment(tmp_path / "e.seg", [])
    assert info.series_count == 0 and info.point_count == 0
    with SegmentReader.open(tmp_path / "e.seg") as r:
        assert r.series_keys() == {} and list(r.read_all()) == [] and not r.may_contain(1)


def _flip(path, offset):
    raw = bytearray(Path(path).read_bytes())
    raw[offset] ^= 0x5A
    Path(path).write_bytes(bytes(raw))


def test_corrupt_chunk_only_affects_its_series(mixed):
    path, series, _ = mixed
    with SegmentReader.open(path) as r:
        off = int(r._c_off[r._b_chunk_start[int(r._series_block_start[2])]])  # first chunk of series 4
    _flip(path, off + 3)
    with SegmentReader.open(path) as r:
        with pytest.raises(CorruptionError) as ei:
            r.read(4)
        assert ei.value.path == str(path) and ei.value.offset == off
        for s in series:
            if s.series_id != 4:
                assert_same(*r.read(s.series_id), s)
        # the other block of series 4 is still readable
        ts, _ = r.read(4, blocks=np.array([1]))
        np.testing.assert_array_equal(ts, series[2].timestamps[4096:])


@pytest.mark.parametrize("where", ["header", "footer", "trailer"])
def test_corrupt_metadata_fails_open(mixed, where):
    path, _, _ = mixed
    size = os.path.getsize(path)
    with SegmentReader.open(path) as r:
        footer = r._footer_offset
    off = {"header": 2, "footer": footer + (size - 32 - footer) // 2, "trailer": size - 3}[where]
    _flip(path, off)
    with pytest.raises(CorruptionError) as ei:
        SegmentReader.open(path)
    assert ei.value.path == str(path)


def test_truncated_or_missing_file_fails_open(mixed, tmp_path):
    path, _, _ = mixed
    raw = Path(path).read_bytes()
    for cut in (0, 10, 47, len(raw) // 2, len(raw) - 1):
        p = tmp_path / f"t{cut}.seg"
        p.write_bytes(raw[:cut])
        with pytest.raises(CorruptionError):
            SegmentReader.open(p)
    with pytest.raises(CorruptionError):
        SegmentReader.open(tmp_path / "absent.seg")


def test_every_single_byte_flip_is_detected_or_harmless(tmp_path):
    """Exhaustive: one flipped byte never yields wrong values (only CorruptionError)."""
    rng = np.random.default_rng(3)
    series = [make_series(1, 20, rng, sparse=("f",)), make_series(2, 3, rng, fields=(("s", S), ("i", I)))]
    path = tmp_path / "small.seg"
    write_segment(path, series, block_rows=16)
    raw = path.read_bytes()
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
            for s in series:
                try:
                    ts, cols = r.read(s.series_id)
                except CorruptionError:
                    continue
                assert_same(ts, cols, s)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_round_trip_property(data):
    seed = data.draw(st.integers(0, 2**32 - 1))
    nseries = data.draw(st.integers(0, 6))
    block_rows = data.draw(st.sampled_from([1, 3, 64, 4096]))
    compression = data.draw(st.sampled_from(["none", "fast", "default", "best"]))
    tier = data.draw(st.sampled_from(["hot", "cold"]))
    rng = np.random.default_rng(seed)
    series = []
    for sid in sorted(rng.choice(1000, nseries, replace=False).tolist()):
        n = int(rng.integers(1, 200))
        sparse = tuple(x for x in "fiusb" if rng.random() < 0.5)
        series.append(make_series(sid, n, rng, sparse=sparse))
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "p.seg")
        write_segment(p, series, compression=compression, tier=tier, block_rows=block_rows)
        with SegmentReader.open(p) as r:
            assert r.tier == tier and r.compression == compression
            for s in series:
                assert_same(*r.read(s.series_id), s)
                nb = len(r.blocks(s.series_id))
                assert nb == -(-len(s) // block_rows)
                pick = np.flatnonzero(rng.random(nb) < 0.5)
                rows = np.concatenate([np.arange(b * block_rows, min((b + 1) * block_rows, len(s)))
                                       for b in pick]) if len(pick) else np.zeros(0, np.int64)
                assert_same(*r.read(s.series_id, blocks=pick), s, rows)


def test_close_and_failed_write(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    s = make_series(1, 50, rng)
    s2 = SeriesData(2, "m", np.arange(3, dtype=np.int64),
                    {"never": Column(F, np.zeros(3), np.zeros(3, bool)), "a": Column(I, np.arange(3))})
    write_segment(tmp_path / "a.seg", [s, s2])
    r = SegmentReader.open(tmp_path / "a.seg")
    bt = r.blocks(1)  # index arrays stay valid after close
    assert r.field_types(2) == {"a": I} and "never" not in r.field_types()
    r.close()
    assert bt.rows.tolist() == [50]
    from rusts.errors import ClosedError
    with pytest.raises(ClosedError):
        r.read(1)

    def boom(*a):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(StorageError):
        write_segment(tmp_path / "b.seg", [s])
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.seg"]


def test_read_blocks_gives_each_block_as_read_does(mixed):
    path, series, _ = mixed
    with SegmentReader.open(path) as r:
        for s in series:
            nb = len(r.blocks(s.series_id).rows)
            parts = r.read_blocks(s.series_id)
            assert len(parts) == nb
            for b, (ts, cols) in enumerate(parts):
                ref_ts, ref_cols = r.read(s.series_id, blocks=np.array([b]))
                np.testing.assert_array_equal(ts, ref_ts)
                assert set(cols) == set(ref_cols)  # fields without a value in the block are left out
                for name, (ft, values, mask) in cols.items():
                    ref = ref_cols[name]
                    assert ft == ref.type and values.dtype == ft.dtype and len(values) == len(ts)
                    present = np.ones(len(ts), bool) if mask is None else mask
                    np.testing.assert_array_equal(present, np.ones(len(ts), bool) if ref.mask is None else ref.mask)
                    assert list(values[present]) == list(ref.values[present])
        # a field subset, blocks in any order and repeated: sorted distinct blocks
        parts = r.read_blocks(1, ["i", "nope"], np.array([2, 0, 2]))
        assert [len(t) for t, _ in parts] == [4096, 1808]
        assert all(list(c) == ["i"] for _, c in parts)
        assert r.read_blocks(2) == []
        with pytest.raises(StorageError):
            r.read_blocks(1, blocks=np.array([3]))


def test_read_of_one_block_gives_writable_arrays(mixed):
    path, _, _ = mixed
    with SegmentReader.open(path) as r:
        ts, cols = r.read(1, blocks=np.array([2]))
        assert ts.flags.writeable and all(c.values.flags.writeable for c in cols.values())


def test_count_blocks_counts_the_blocks_overlapping_a_range(mixed):
    path, series, _ = mixed
    s = series[0]
    t = s.timestamps
    with SegmentReader.open(path) as r:
        bt = r.blocks(1)
        for start, end in [(t[0], t[-1] + 1), (t[0], t[4096]), (t[4095], t[4096] + 1), (t[-1] + 1, t[-1] + 9),
                           (0, t[0]), (t[5000], t[5001]), (t[8191] + 1, t[8192])]:
            start, end = int(start), int(end)
            expect = int(np.count_nonzero((bt.max_time >= start) & (bt.min_time < end)))
            assert r.count_blocks(1, start, end) == expect
        assert r.count_blocks(2, 0, 2**62) == 0
