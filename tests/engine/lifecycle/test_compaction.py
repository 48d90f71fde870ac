"""Compaction: the planner's decision table, the worker against a point model, crash points."""

from __future__ import annotations

import os
import shutil

import attrs
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rusts.lifecycle.compaction as compaction
from rusts.lifecycle.compaction import (CompactionTask, compact_and_commit, delete_segment_files, plan, run_compaction)
from rusts.errors import StorageError
from rusts.storage.manifest import Manifest, SegmentMeta
from rusts.model import Column, FieldType
from rusts.query.rowset import RowSet
from rusts.storage.segment import SegmentReader, SeriesData, write_segment
from rusts.lifecycle.tombstones import LifecycleState, Tombstone, field_predicate_json, merge_with_tombstones

DAY = 86_400 * 10**9
HOUR = 3_600 * 10**9


# =============================================================================== planner
def M(name, part=0, level=0, tier="hot", lo=None, hi=None):
    lo = part * DAY + HOUR if lo is None else lo
    hi = part * DAY + 2 * HOUR if hi is None else hi
    return SegmentMeta(file=name, partition=part, min_time=lo, max_time=hi, size=100, series_count=1,
                       point_count=10, level=level, tier=tier)


def seqs(mapping):
    return lambda m: mapping[m.file]


def names(task):
    return [m.file for m in task.inputs]


NOW = 10 * DAY + 12 * HOUR  # inside partition 10


def test_few_fresh_segments_need_nothing():
    metas = [M(f"s{i}", part=10) for i in range(3)]
    assert plan(metas, now_ns=NOW, partition_ns=DAY) == []


def test_a_run_of_max_segments_level0_segments_is_merged_into_level1():
    metas = [M("big", 10, level=1)] + [M(f"s{i}", 10) for i in range(4)]
    order = {"big": 1, "s0": 2, "s1": 3, "s2": 4, "s3": 5}
    (t,) = plan(metas, now_ns=NOW, partition_ns=DAY, seq_of=seqs(order))
    assert (t.reason, t.whole, t.level, t.tier) == ("merge", False, 1, "hot")
    assert names(t) == ["s0", "s1", "s2", "s3"]


def test_runs_are_contiguous_in_age_order_and_lowest_level_first():
    # age order: L1 L1 L1 L1 L0 L0 -> the L1 run (L0 run too short)
    metas = [M(f"a{i}", 10, level=1) for i in range(4)] + [M("b0", 10), M("b1", 10)]
    order = {m.file: i for i, m in enumerate(metas)}
    (t,) = plan(metas[::-1], now_ns=NOW, partition_ns=DAY, seq_of=seqs(order))
    assert names(t) == ["a0", "a1", "a2", "a3"] and t.level == 2
    # L0 L1 L0 L0 L0: the L0 segments around the L1 are not contiguous -> no run of 4
    mixed = [M("x0", 10), M("y", 10, level=1), M("x1", 10), M("x2", 10), M("x3", 10)]
    assert plan(mixed, now_ns=NOW, partition_ns=DAY, seq_of=seqs({m.file: i for i, m in enumerate(mixed)})) == []


def test_too_many_segments_forces_a_whole_merge():
    metas = [M(f"s{i}", 10, level=i % 2) for i in range(13)]  # alternating levels: no run
    (t,) = plan(metas, now_ns=NOW, partition_ns=DAY, seq_of=seqs({m.file: i for i, m in enumerate(metas)}))
    assert (t.reason, t.whole, len(t.inputs), t.level) == ("merge", True, 13, 2)
    assert plan(metas[:12], now_ns=NOW, partition_ns=DAY,
                seq_of=seqs({m.file: i for i, m in enumerate(metas)})) == []


def test_an_ended_partition_is_merged_to_one_segment_after_settling():
    metas = [M("a", 9), M("b", 9)]
    just_ended = 10 * DAY + 10**9
    assert plan(metas, now_ns=just_ended, partition_ns=DAY) == []
    (t,) = plan(metas, now_ns=10 * DAY + 2 * HOUR, partition_ns=DAY)
    assert (t.partition, t.reason, t.whole, t.tier) == (9, "merge", True, "hot")
    assert plan([M("a", 9)], now_ns=NOW, partition_ns=DAY) == []


def test_old_partitions_go_cold_once():
    hot = [M("a", 2)]
    (t,) = plan(hot, now_ns=NOW, partition_ns=DAY, cold_after_ns=7 * DAY)
    assert (t.reason, t.tier, t.whole) == ("tier", "cold", True)
    assert plan([M("a", 2, tier="cold")], now_ns=NOW, partition_ns=DAY, cold_after_ns=7 * DAY) == []
    (t,) = plan([M("a", 2, tier="cold"), M("late", 2)], now_ns=NOW, partition_ns=DAY, cold_after_ns=7 * DAY)
    assert (t.reason, t.tier) == ("tier", "cold")
    # partition 3 ends at day 4: 6.5 days old, not yet cold
    assert plan([M("a", 3)], now_ns=NOW, partition_ns=DAY, cold_after_ns=7 * DAY) == []


def test_tombstones_trigger_a_whole_rewrite_only_of_segments_older_and_overlapping():
    a, b = M("a", 10), M("b", 10, lo=10 * DAY + 5 * HOUR, hi=10 * DAY + 6 * HOUR)
    order = seqs({"a": 1, "b": 3})
    stone = Tombstone(1, "cpu", 10 * DAY, 10 * DAY + 3 * HOUR, None, None, created_seq=2)
    (t,) = plan([a, b], now_ns=NOW, partition_ns=DAY, tombstones=[stone], seq_of=order)
    assert (t.reason, t.whole, names(t)) == ("tombstone", True, ["a", "b"])
    late = Tombstone(1, "cpu", 10 * DAY, 10 * DAY + 3 * HOUR, None, None, created_seq=1)  # a is not older
    assert plan([a, b], now_ns=NOW, partition_ns=DAY, tombstones=[late], seq_of=order) == []
    elsewhere = Tombstone(1, "cpu", 10 * DAY + 7 * HOUR, 11 * DAY, None, None, created_seq=5)
    assert plan([a, b], now_ns=NOW, partition_ns=DAY, tombstones=[elsewhere], seq_of=order) == []
    # with segment contents, a tombstone of a measurement the segment lacks does nothing
    contents = lambda m: {"mem": (m.min_time, m.max_time)}  # noqa: E731
    assert plan([a, b], now_ns=NOW, partition_ns=DAY, tombstones=[stone], seq_of=order, contents=contents) == []
    with pytest.raises(StorageError, match="seq_of"):
        plan([a], now_ns=NOW, partition_ns=DAY, tombstones=[stone])


def test_retention_rewrites_partitions_where_one_measurement_expired_and_drops_none_twice():
    seg = M("a", 3)
    contents = {"a": {"cpu": (3 * DAY, 3 * DAY + 5), "mem": (3 * DAY, 3 * DAY + 5)}}
    cut = {"cpu": 5 * DAY}  # cpu expired (partition 3 ends at day 4), mem has no policy
    (t,) = plan([seg], now_ns=NOW, partition_ns=DAY, retention_cutoffs=cut, contents=lambda m: contents[m.file])
    assert (t.reason, t.whole) == ("retention", True)
    # after the rewrite cpu is gone from the segment: no task again
    contents["a"] = {"mem": (3 * DAY, 3 * DAY + 5)}
    assert plan([seg], now_ns=NOW, partition_ns=DAY, retention_cutoffs=cut, contents=lambda m: contents[m.file]) == []
    # a cutoff inside the partition waits until the partition is wholly expired for cpu
    contents["a"] = {"cpu": (3 * DAY, 3 * DAY + 5), "mem": (3 * DAY, 3 * DAY + 5)}
    assert plan([seg], now_ns=NOW, partition_ns=DAY, retention_cutoffs={"cpu": 3 * DAY + 3},
                contents=lambda m: contents[m.file]) == []


def test_wholly_expired_segments_are_left_to_the_sweeper():
    metas = [M("old", 1), M("old2", 1), M("new", 9)]
    tasks = plan(metas, now_ns=NOW, partition_ns=DAY, retention_cutoffs={"*": 5 * DAY})
    assert [t.partition for t in tasks] == [9] or tasks == []
    assert all("old" not in names(t) for t in tasks)


def test_tasks_are_ordered_by_reason_and_the_plan_is_pure():
    metas = [M("cold", 1), M("t1", 9), M("t2", 9), M("x", 10)]
    stone = Tombstone(1, "cpu", 10 * DAY, 11 * DAY, None, None, created_seq=9)
    order = seqs({"cold": 1, "t1": 2, "t2": 3, "x": 4})
    kw = dict(now_ns=NOW, partition_ns=DAY, cold_after_ns=5 * DAY, tombstones=[stone], seq_of=order)
    tasks = plan(metas, **kw)
    assert [(t.partition, t.reason) for t in tasks] == [(10, "tombstone"), (9, "merge"), (1, "tier")]
    assert plan(list(reversed(metas)), **kw) == tasks


# =============================================================================== worker
def sd(sid, ts, **fields):
    ts = np.asarray(ts, dtype=np.int64)
    cols = {}
    for name, vals in fields.items():
        vals = list(vals)
        mask = np.array([v is not None for v in vals], dtype=bool)
        arr = np.array([0.0 if v is None else v for v in vals], dtype=np.float64)
        if mask.any():
            cols[name] = Column(FieldType.FLOAT, arr, None if mask.all() else mask)
    return SeriesData(sid, f"{'cpu' if sid < 100 else 'mem'},host=h{sid}", ts, cols)


def dump(readers_or_paths) -> dict:
    """{sid: {t: {field: value}}} of the union of readers, later readers win (like a query)."""
    out: dict = {}
    for r in readers_or_paths:
        if isinstance(r, str):
            r = SegmentReader.open(r)
        for s in r.read_all():
            d = out.setdefault(s.series_id, {})
            for i, t in enumerate(s.timestamps.tolist()):
                fields = {n: float(c.values[i]) for n, c in s.columns.items() if c.mask is None or c.mask[i]}
                d.setdefault(t, {}).update(fields)
    return out


def counter_paths(d):
    n = iter(range(1000))

    def f():
        name = f"out-{next(n)}.seg"
        return name, os.path.join(d, name)

    return f


series_st = st.dictionaries(st.sampled_from([1, 2, 3, 101]),
                            st.dictionaries(st.integers(0, 40), st.tuples(st.sampled_from([None, 1.0, 4.0]),
                                                                            st.sampled_from([None, 2.0])),
                                            max_size=10), max_size=4)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(series_st, min_size=1, max_size=4), st.integers(-1, 45), st.booleans(),
       st.sampled_from(["hot", "cold"]))
def test_run_compaction_equals_the_model(tmp_path_factory, inputs, cutoff, with_stone, tier):
    d = str(tmp_path_factory.mktemp("c"))
    paths, parts_by_sid = [], {}
    for k, spec in enumerate(inputs):
        series = []
        for sid in sorted(spec):
            rows_ = {t: f for t, f in spec[sid].items() if f != (None, None)}
            if not rows_:
                continue
            ts = sorted(rows_)
            s = sd(sid, ts, v=[rows_[t][0] for t in ts], w=[rows_[t][1] for t in ts])
            series.append(s)
            parts_by_sid.setdefault(sid, []).append((RowSet(s.timestamps, s.columns, True), k + 1))
        p = os.path.join(d, f"in{k}.seg")
        write_segment(p, series)
        paths.append(p)
    readers = [SegmentReader.open(p) for p in paths]
    stones = [Tombstone(1, "cpu", 5, 20, None, field_predicate_json([{"field": "v", "op": ">", "value": 2}]),
                        created_seq=len(inputs))] if with_stone else []
    cuts = {"cpu": cutoff}  # mem keeps everything
    res = run_compaction(readers, counter_paths(d), tier=tier, tombstones=stones, retention_cutoffs=cuts,
                         reader_seqs=list(range(1, len(inputs) + 1)))
    want: dict = {}
    tomb = 0
    for sid, parts in parts_by_sid.items():
        rs, dead = merge_with_tombstones(sid, parts, stones if sid < 100 else [])
        tomb += dead
        rows_ = dump_rowset(rs)
        if sid < 100:
            rows_ = {t: f for t, f in rows_.items() if t >= cutoff}
        if rows_:
            want[sid] = rows_
    got = dump([p for _, p in ((n, i.path) for n, i in res.outputs)])
    assert got == want
    assert res.points_out == sum(len(v) for v in want.values())
    assert res.rows_tombstoned == tomb
    assert res.output_seq == max(len(inputs), *(t.created_seq for t in stones)) if stones else len(inputs)
    for _, info in res.outputs:
        r = SegmentReader.open(info.path)
        assert r.tier == tier
        assert r.compression == ("best" if tier == "cold" else "default")
    if not want:
        assert res.outputs == ()


def dump_rowset(rs):
    out = {}
    for i, t in enumerate(rs.timestamps.tolist()):
        out[t] = {n: float(c.values[i]) for n, c in rs.columns.items() if c.mask is None or c.mask[i]}
    return out


def test_large_merges_split_into_several_files_and_keep_every_point(tmp_path):
    d = str(tmp_path)
    for k in range(3):
        write_segment(os.path.join(d, f"i{k}.seg"),
                      [sd(sid, np.arange(k * 100, k * 100 + 100), v=np.arange(100.0)) for sid in range(1, 6)])
    readers = [SegmentReader.open(os.path.join(d, f"i{k}.seg")) for k in range(3)]
    res = run_compaction(readers, counter_paths(d), max_output_points=700)
    # 5 series x 300 points; a file is closed once it holds >= 700 points (series are never split)
    assert [i.point_count for _, i in res.outputs] == [900, 600]
    assert dump([i.path for _, i in res.outputs]) == dump(readers)
    assert res.points_in == res.points_out == 1500


def test_cold_outputs_use_large_blocks(tmp_path):
    d = str(tmp_path)
    write_segment(os.path.join(d, "i.seg"), [sd(1, np.arange(40000), v=np.arange(40000.0) % 7)], block_rows=4096)
    r = SegmentReader.open(os.path.join(d, "i.seg"))
    res = run_compaction([r], counter_paths(d), tier="cold")
    out = SegmentReader.open(res.outputs[0][1].path)
    assert out.block_rows == 16384 and len(out.blocks(1)) == 3
    assert dump([out]) == dump([r])


def test_failure_deletes_the_outputs_already_written(tmp_path, monkeypatch):
    d = str(tmp_path)
    write_segment(os.path.join(d, "i.seg"), [sd(s, np.arange(100), v=np.arange(100.0)) for s in (1, 2, 3)])
    r = SegmentReader.open(os.path.join(d, "i.seg"))
    real = compaction.write_segment
    calls = []

    def flaky(path, series, **kw):
        calls.append(path)
        if len(calls) == 2:
            raise StorageError("disk full")
        return real(path, series, **kw)

    monkeypatch.setattr(compaction, "write_segment", flaky)
    with pytest.raises(StorageError, match="disk full"):
        run_compaction([r], counter_paths(d), max_output_points=100)
    assert sorted(os.listdir(d)) == ["i.seg"]


def test_nothing_surviving_writes_no_file(tmp_path):
    d = str(tmp_path)
    write_segment(os.path.join(d, "i.seg"), [sd(1, [1, 2, 3], v=[1, 2, 3])])
    r = SegmentReader.open(os.path.join(d, "i.seg"))

    def no_paths():
        raise AssertionError("no output expected")

    res = run_compaction([r], no_paths, retention_cutoffs={"*": 10})
    assert res.outputs == () and res.rows_expired == 3


# =============================================================================== crash points
class Crash(BaseException):
    """A kill -9: nothing after it runs."""


def _setup(data_dir):
    """Three flushed segments of partition 0 and a tombstone recorded between them."""
    m, _ = Manifest.load(data_dir)
    ls = LifecycleState.from_extra(m.state.extra)
    specs = [
        [sd(1, [10, 20, 30], v=[1, 2, 3]), sd(101, [10, 20], v=[7, 8])],
        [sd(1, [20, 40], v=[20, 40], w=[None, 1.0]), sd(2, [5, 6], v=[5, 6])],
        [sd(1, [30, 50], v=[None, 50], w=[3.0, None])],
    ]
    for k, series in enumerate(specs):
        name, path = m.new_segment_path(0)
        info = write_segment(path, series)
        meta = SegmentMeta(file=name, partition=0, min_time=info.min_time, max_time=info.max_time, size=info.size,
                           series_count=info.series_count, point_count=info.point_count)
        ls = ls.with_flush([name])
        if k == 1:  # DELETE FROM cpu WHERE time >= 15 AND time < 35 AND v > 2, after the 2nd flush
            pred = field_predicate_json([{"field": "v", "op": ">", "value": 2}])
            ls2, _ = ls.with_tombstone("cpu", 15, 35, None, pred)
            m.commit(add=[meta], extra=ls.to_extra(m.state.extra))
            m.commit(extra=ls2.to_extra(m.state.extra))
            ls = ls2
            continue
        m.commit(add=[meta], extra=ls.to_extra(m.state.extra))
    return m


def visible(data_dir) -> tuple[dict, set[str]]:
    """What a query sees after a restart: load, then merge live segments in age order with tombstones."""
    m, _ = Manifest.load(data_dir)
    ls = LifecycleState.from_extra(m.state.extra)
    live = ls.age_order(m.state.segments)
    on_disk = {f for f in os.listdir(m.segments_dir) if f.endswith(".seg")}
    assert on_disk == {s.file for s in live}, "after load, exactly the live segments are on disk"
    readers = [SegmentReader.open(m.path_of(s)) for s in live]
    out = {}
    sids = sorted({int(x) for r in readers for x in r.series_ids.tolist()})
    for sid in sids:
        parts = [(RowSet(*r.read(sid), True), ls.seq_of(s)) for r, s in zip(readers, live) if r.has_series(sid)]
        meas = "cpu" if sid < 100 else "mem"
        rs, _ = merge_with_tombstones(sid, parts, [t for t in ls.tombstones if t.measurement == meas])
        if len(rs):
            out[sid] = dump_rowset(rs)
    return out, {s.file for s in live}


POINTS = ["before_write", "after_write", "manifest_tmp_written", "manifest_renamed", "first_old_deleted", "done"]


@pytest.mark.parametrize("point", POINTS)
def test_crash_at_each_step_leaves_old_or_new_never_both_and_the_same_data(tmp_path, monkeypatch, point):
    data = tmp_path / "data"
    m = _setup(data)
    before, old_files = visible(data)
    # at the DELETE t=20 had v=20 (overwritten by flush 2) and t=30 v=3: both deleted; t=30 was
    # written again afterwards (w=3) and that survives
    assert before[1] == {10: {"v": 1.0}, 30: {"w": 3.0}, 40: {"v": 40.0, "w": 1.0}, 50: {"v": 50.0}}
    m, _ = Manifest.load(data)
    (task,) = plan(m.state.segments, now_ns=10**6, partition_ns=10**6 * 10,
                   tombstones=LifecycleState.from_extra(m.state.extra).tombstones,
                   seq_of=LifecycleState.from_extra(m.state.extra).seq_of)
    assert task.reason == "tombstone" and task.whole
    snap = tmp_path / "at_crash"

    def crash_here(name):
        if name == point:
            shutil.copytree(data, snap)  # the disk as a kill -9 would leave it
            raise Crash(name)

    real_write, real_replace, real_unlink = compaction.write_segment, os.replace, os.unlink

    def write(path, series, **kw):
        crash_here("before_write")
        info = real_write(path, series, **kw)
        crash_here("after_write")
        return info

    def replace(src, dst, *a, **k):
        if "MANIFEST-" in os.fspath(dst):
            crash_here("manifest_tmp_written")
            real_replace(src, dst, *a, **k)
            crash_here("manifest_renamed")
            return
        real_replace(src, dst, *a, **k)

    def unlink(p, *a, **k):
        real_unlink(p, *a, **k)
        if os.fspath(p).endswith(".seg"):
            crash_here("first_old_deleted")

    monkeypatch.setattr(compaction, "write_segment", write)
    monkeypatch.setattr(os, "replace", replace)
    try:
        outcome = compact_and_commit(m, task)
        monkeypatch.setattr(os, "unlink", unlink)
        delete_segment_files(m, outcome.removed)
        crash_here("done")
    except Crash:
        pass
    monkeypatch.undo()
    after, live = visible(snap)
    assert after == before
    new_files = live - old_files
    assert live == old_files or (live.isdisjoint(old_files) and len(new_files) == 1), live
    if point in ("before_write", "after_write", "manifest_tmp_written"):
        assert live == old_files
    else:
        assert live.isdisjoint(old_files)
        # the applied tombstone is gone: the rewrite made it physical
        assert LifecycleState.from_extra(Manifest.load(snap)[0].state.extra).tombstones == ()


def test_old_files_stay_readable_for_a_query_holding_them(tmp_path):
    data = tmp_path / "data"
    m = _setup(data)
    readers = {s.file: SegmentReader.open(m.path_of(s)) for s in m.state.segments}
    (task,) = plan(m.state.segments, now_ns=10**6, partition_ns=10**7,
                   tombstones=LifecycleState.from_extra(m.state.extra).tombstones,
                   seq_of=LifecycleState.from_extra(m.state.extra).seq_of)
    before = {f: dump([r]) for f, r in readers.items()}
    outcome = compact_and_commit(m, task, readers=readers)
    assert delete_segment_files(m, outcome.removed) == [s.file for s in outcome.removed]
    assert not any(os.path.exists(m.path_of(f)) for f in readers)
    assert {f: dump([r]) for f, r in readers.items()} == before  # mapped pages outlive the unlink
    with pytest.raises(StorageError, match="live"):
        delete_segment_files(m, outcome.added)


def test_inputs_gone_meanwhile_abort_without_commit(tmp_path):
    data = tmp_path / "data"
    m = _setup(data)
    ls = LifecycleState.from_extra(m.state.extra)
    (task,) = plan(m.state.segments, now_ns=10**6, partition_ns=10**7, tombstones=ls.tombstones, seq_of=ls.seq_of)
    m.commit(remove=[task.inputs[0]])  # e.g. the retention sweeper dropped it
    version = m.state.version
    with pytest.raises(StorageError, match="no longer live"):
        compact_and_commit(m, task)
    assert m.state.version == version
    assert len(os.listdir(m.segments_dir)) == 3  # the dropped one is only unreferenced; nothing new


def test_task_defaults():
    t = CompactionTask(1, (), "hot", "merge")
    assert t.whole and t.level == 1


def test_cold_tier_waits_until_the_partition_is_cold_for_writes():
    """Old enough for the cold tier, but a flush landed in it 5 s ago: neither tiered nor merged
    yet (one rewrite later, into the cold tier); once idle, tiered whole; a late write into a
    cold partition makes it hot again until it is idle again."""
    segs = [attrs.evolve(M("a", 2), created=1000.0), attrs.evolve(M("b", 2), created=1095.0)]
    kw = dict(now_ns=NOW, partition_ns=DAY, cold_after_ns=DAY, cold_idle_secs=20)
    assert plan(segs, now_wall=1100.0, **kw) == []
    (t,) = plan(segs, now_wall=1116.0, **kw)
    assert (t.reason, t.tier, t.whole) == ("tier", "cold", True)
    late = [attrs.evolve(M("c", 2, level=3, tier="cold"), created=500.0), attrs.evolve(M("d", 2), created=1095.0)]
    assert plan(late, now_wall=1100.0, **kw) == []
    (t,) = plan(late, now_wall=1200.0, **kw)
    assert (t.reason, t.tier, [m.file for m in t.inputs]) == ("tier", "cold", ["c", "d"])
