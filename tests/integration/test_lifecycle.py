"""Lifecycle pieces driven through the real Database: compaction under ingest, tiering, retention,
physical deletes, restart. Queries must match a numpy reference at every step.

The Database's own compactor and sweeper run on timers; this module drives their decisions
itself (a simulated clock, chosen policies) and commits through the Database's segment keeper,
as they do.
"""

from __future__ import annotations

import numpy as np
import pytest

import rusts.db
from rusts.actors.compactor import compaction_pass
from rusts.lifecycle.compaction import plan
from rusts.lifecycle.policies import cutoffs, expired_partitions, make_policy
from rusts.lifecycle.tombstones import LifecycleState, field_predicate_json

HOUR = 3_600 * 10**9
MIN = 60 * 10**9
HOSTS = ["a", "b", "c", "d"]
FIELDS = ["x", "y", "z"]


class Lifecycle:
    """What the Database's execute_task and sweep do (docs/lifecycle.md, sections 4 and 6)."""

    def __init__(self, db, *, cold_after_ns=None, policies=()) -> None:
        self.db = db
        self.cold_after_ns = cold_after_ns
        self.policies = list(policies)
        self.max_segments_after_pass = 0
        self.now_ns = 0

    def cutoffs(self):
        return cutoffs(self.policies, self.now_ns, self.db.measurements())

    def plan(self, metas):
        ls = LifecycleState.from_extra(self.db.manifest.state.extra)
        tasks = plan(metas, now_ns=self.now_ns, partition_ns=self.db.partition_ns, max_segments=4,
                     cold_after_ns=self.cold_after_ns, tombstones=ls.tombstones, seq_of=ls.seq_of,
                     retention_cutoffs=self.cutoffs())
        if not tasks:
            per: dict[int, int] = {}
            for m in metas:
                per[m.partition] = per.get(m.partition, 0) + 1
            self.max_segments_after_pass = max(self.max_segments_after_pass, *per.values(), 0)
        return tasks

    async def execute(self, task):
        db = self.db
        st = db.config.storage
        return await db.segments.replace(task, None, retention_cutoffs=self.cutoffs(),
                                         compression=st.compression, block_rows=st.block_rows,
                                         block_time_ns=None)

    async def compact(self, stats=None):
        return await compaction_pass(get_metas=lambda: self.db.manifest.state.segments, plan_fn=self.plan,
                                     execute_task=self.execute, stats={} if stats is None else stats)

    async def sweep(self):
        db = self.db
        gone = expired_partitions(db.manifest.state.segments, self.cutoffs())
        return await db.segments.drop(gone) if gone else 0


class Reference:
    """Every point written, last write wins per field: {(host, t): {field: value}}."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, int], dict[str, float]] = {}

    def write_lines(self, rng, t0: int, n_steps: int, step: int, overwrite_from: int | None = None) -> str:
        lines = []
        for k in range(n_steps):
            t = t0 + k * step
            for h in HOSTS:
                fields = {f: float(np.round(rng.uniform(0, 100), 2)) for f in FIELDS if rng.random() < 0.8}
                if not fields:
                    fields = {"x": 1.0}
                self.rows.setdefault((h, t), {}).update(fields)
                lines.append(f"cpu,host={h} " + ",".join(f"{f}={v}" for f, v in fields.items()) + f" {t}")
        if overwrite_from is not None:  # rewrite a few older points (late data, last write wins)
            for h in HOSTS[:2]:
                t = overwrite_from
                self.rows.setdefault((h, t), {}).update({"x": 555.0})
                lines.append(f"cpu,host={h} x=555.0 {t}")
        return "\n".join(lines)

    def raw(self, start, end):
        return sorted((h, t, tuple(sorted(f.items()))) for (h, t), f in self.rows.items() if start <= t < end)

    def mean_per_bucket(self, field, start, end, interval):
        out = {}
        for (h, t), f in self.rows.items():
            if start <= t < end and field in f:
                out.setdefault((h, t - t % interval), []).append(f[field])
        return {k: float(np.mean(v)) for k, v in out.items()}


async def query_raw(db, start, end):
    rs = await db.query({"measurement": "cpu", "time_range": {"start": start, "end": end}})
    return sorted((r["tags"]["host"], r["timestamp"], tuple(sorted(r["fields"].items()))) for r in rs.to_rows())


async def query_mean(db, field, start, end, interval):
    rs = await db.query({"measurement": "cpu", "time_range": {"start": start, "end": end}, "group_by": ["host"],
                         "aggregation": {"function": "Mean", "field": field, "interval_nanos": interval}})
    return {(r["tags"]["host"], r["timestamp"]): r["fields"][f"mean_{field}"] for r in rs.to_rows()}


def assert_means_equal(got, want):
    assert got.keys() == want.keys()
    for k in want:
        assert abs(got[k] - want[k]) < 1e-9, k


async def test_ingest_with_small_flushes_stays_bounded_and_answers_stay_exact(tmp_path):
    rng = np.random.default_rng(3)
    ref = Reference()
    start = 1_700_000_000 * 10**9 // HOUR * HOUR
    end = start + 6 * HOUR
    async with rusts.db.open(tmp_path / "data", partition_duration_hours=1, wal_durability="none",
                             cold_after_hours=None) as db:
        lc = Lifecycle(db)
        stats: dict = {}
        for i in range(72):  # 6 partitions, a flush every 5 simulated minutes
            t0 = start + i * 5 * MIN
            late = start + (i - 6) * 5 * MIN if i % 9 == 8 else None  # overwrite 30 minutes back
            await db.write(ref.write_lines(rng, t0, 10, 30 * 10**9, overwrite_from=late))
            await db.flush()
            lc.now_ns = t0 + 5 * MIN
            await lc.compact(stats)
            if i % 12 == 11:
                assert await query_raw(db, start, end) == ref.raw(start, end)
        assert 0 < lc.max_segments_after_pass <= 12
        assert stats["tasks"] > 0 and stats.get("failures", 0) == 0
        assert await query_raw(db, start, end) == ref.raw(start, end)
        assert_means_equal(await query_mean(db, "x", start, end, 10 * MIN), ref.mean_per_bucket("x", start, end, 10 * MIN))

        # later: every ended partition is merged to one segment, then the old ones go cold
        lc.now_ns = end + 2 * HOUR
        lc.cold_after_ns = 5 * HOUR  # partitions that ended by start + 3 h
        await lc.compact(stats)
        parts: dict[int, list] = {}
        for m in db.manifest.state.segments:
            parts.setdefault(m.partition, []).append(m)
        assert all(len(v) == 1 for v in parts.values())
        tiers = {p: v[0].tier for p, v in parts.items()}
        assert sorted(tiers.values()) == ["cold"] * 3 + ["hot"] * 3
        stats_tiers = db.statistics()["segments"]["bytes_per_tier"]
        assert stats_tiers["cold"] > 0 and stats_tiers["hot"] > 0
        assert await query_raw(db, start, end) == ref.raw(start, end)
        assert_means_equal(await query_mean(db, "y", start, end, HOUR), ref.mean_per_bucket("y", start, end, HOUR))
        segs_before = {m.file for m in db.manifest.state.segments}

    # restart: the same files, the same answers (both tiers read transparently)
    async with rusts.db.open(tmp_path / "data", partition_duration_hours=1, wal_durability="none",
                             cold_after_hours=None) as db:
        assert {m.file for m in db.manifest.state.segments} == segs_before
        assert await query_raw(db, start, end) == ref.raw(start, end)
        on_disk = {p.name for p in db.manifest.segments_dir.iterdir()}
        assert on_disk == segs_before


async def test_retention_drops_whole_partitions_and_compaction_makes_a_delete_physical(tmp_path):
    rng = np.random.default_rng(5)
    ref = Reference()
    start = 1_700_000_000 * 10**9 // HOUR * HOUR
    async with rusts.db.open(tmp_path / "data", partition_duration_hours=1, wal_durability="none",
                             cold_after_hours=None) as db:
        for i in range(4):  # 4 partitions, one flush each
            await db.write(ref.write_lines(rng, start + i * HOUR, 12, 5 * MIN))
            await db.flush()
        lc = Lifecycle(db, policies=[make_policy("short", "*", "2h")])
        lc.now_ns = start + 4 * HOUR + 1  # partitions 0 and 1 wholly older than 2 hours
        assert await lc.sweep() == 2
        assert len(db.manifest.state.segments) == 2
        kept_from = start + 2 * HOUR
        ref.rows = {k: v for k, v in ref.rows.items() if k[1] >= kept_from}
        assert await query_raw(db, start, start + 4 * HOUR) == ref.raw(start, start + 4 * HOUR)
        assert len(list(db.manifest.segments_dir.iterdir())) == 2

        # DELETE FROM cpu WHERE host = 'a' AND time in the third hour AND x > 50, made physical
        sid_a = int(db.index.get("cpu,host=a"))
        t_lo, t_hi = start + 2 * HOUR, start + 3 * HOUR
        await db.segments.tombstone("cpu", t_lo, t_hi, series=[sid_a], field_predicate=field_predicate_json(
            [{"field": "x", "op": ">", "value": 50}]))
        lc.policies = []
        stats: dict = {}
        await lc.compact(stats)
        assert stats["tasks_by_reason"] == {"tombstone": 1}
        deleted = {k for k, f in ref.rows.items() if k[0] == "a" and t_lo <= k[1] < t_hi and f.get("x", 0) > 50}
        assert deleted and stats["rows_tombstoned"] == len(deleted)
        for k in deleted:
            del ref.rows[k]
        assert await query_raw(db, start, start + 4 * HOUR) == ref.raw(start, start + 4 * HOUR)
        assert LifecycleState.from_extra(db.manifest.state.extra).tombstones == ()  # applied, collected


async def test_a_flush_between_two_merges_of_one_pass_keeps_last_write_wins(tmp_path):
    start = 1_700_000_000 * 10**9 // HOUR * HOUR
    async with rusts.db.open(tmp_path / "data", partition_duration_hours=1, wal_durability="none",
                             cold_after_hours=None) as db:
        lc = Lifecycle(db)
        lc.now_ns = start + 30 * MIN
        for i in range(16):  # 16 flushes -> 4 level-1 segments after the L0 run merges
            await db.write(f"cpu,host=a x={i}.0 {start + i * MIN}")
            await db.flush()
            if i % 4 == 3:
                tasks = lc.plan(db.manifest.state.segments)
                assert tasks[0].reason == "merge" and tasks[0].level == 1
                await lc.execute(tasks[0])
        (task,) = lc.plan(db.manifest.state.segments)
        assert (task.level, len(task.inputs)) == (2, 4)
        # a flush commits while the compactor is between plans: it overwrites the first point
        await db.write(f"cpu,host=a x=99.0 {start}")
        await db.flush()
        await lc.execute(task)
        rows = await query_raw(db, start, start + HOUR)
        assert rows[0] == ("a", start, (("x", 99.0),))


async def test_cold_blocks_answer_bucketed_aggregates_from_sub_block_statistics(tmp_path, monkeypatch):
    """Cold blocks span a day; hourly (and coarser) aggregates come from their per-hour
    statistics without decoding, and every aggregate equals the answer of the hot layout."""
    import rusts.query.aggregate as aggregate
    import rusts.query.reading as reading

    rng = np.random.default_rng(11)
    day = 24 * HOUR
    start = 1_700_000_000 * 10**9 // day * day
    end = start + 2 * day
    lines = []
    for h in HOSTS:
        t = start + np.cumsum(rng.integers(20, 100, 4000)) * 10**9
        t = t[t < end]
        for k, ts in enumerate(t.tolist()):
            fields = {f: float(np.round(rng.uniform(0, 100), 2)) for f in FIELDS if rng.random() < 0.7}
            fields = fields or {"x": 1.5}
            lines.append(f"cpu,host={h} " + ",".join(f"{f}={v}" for f, v in fields.items()) + f" {ts}")
    aggs = [{"function": fn, "field": "y"} for fn in ("Count", "Sum", "Mean", "Min", "Max")] + [{"function": "Count"}]
    ranges = [(start, end), (start + 5 * HOUR, start + 30 * HOUR), (start + 5 * HOUR + 7 * MIN, end - 13 * MIN)]
    intervals = [HOUR, 2 * HOUR, 90 * MIN, 30 * MIN, None]

    async def answers(db):
        out = {}
        for a in aggs:
            for lo, hi in ranges:
                for iv in intervals:
                    agg = dict(a, **({"interval_nanos": iv} if iv else {}))
                    rs = await db.query({"measurement": "cpu", "time_range": {"start": lo, "end": hi},
                                         "group_by": ["host"], "aggregation": agg})
                    out[(a["function"], a.get("field"), lo, hi, iv)] = {
                        (r["tags"]["host"], r["timestamp"]): r["fields"] for r in rs.to_rows()}
        return out

    def assert_same(got_all, want_all):
        assert got_all.keys() == want_all.keys()
        for k in want_all:
            assert got_all[k].keys() == want_all[k].keys(), k
            for row, fields in want_all[k].items():
                for name, v in fields.items():
                    got = got_all[k][row][name]
                    assert (got is None) == (v is None), (k, row, name)
                    if v is not None:
                        assert got == pytest.approx(v, rel=1e-12, abs=1e-9), (k, row, name)

    async with rusts.db.open(tmp_path / "data", partition_duration_hours=24, wal_durability="none") as db:
        await db.write("\n".join(lines))
        await db.flush()
        hot = await answers(db)
        lc = Lifecycle(db, cold_after_ns=HOUR)
        lc.now_ns = end + 2 * HOUR
        await lc.compact()
        assert {m.tier for m in db.manifest.state.segments} == {"cold"}
        decoded_tiers = []
        real = reading._read_segment

        def spy(src, sid, fields, blocks):
            decoded_tiers.append(src.reader.tier)
            return real(src, sid, fields, blocks)

        cold = await answers(db)  # grouped: the vector path (rusts.query.vector_route)
        # the executor's statistics path (ungrouped aggregates, cluster partial answers): the
        # same answers, and blocks decoded only where the statistics do not suffice
        import rusts.query.vector_route as vector_route

        monkeypatch.setattr(vector_route, "covers", lambda q, ftypes: False)
        for mod in (reading, aggregate):  # every module that decodes segment blocks
            monkeypatch.setattr(mod, "_read_segment", spy)
        assert_same(await answers(db), cold)
        assert_same(cold, hot)
        # the aligned hourly and two-hourly queries decoded no block at all
        decoded_tiers.clear()
        for iv in (HOUR, 2 * HOUR):
            await db.query({"measurement": "cpu", "time_range": {"start": start + 5 * HOUR, "end": start + 30 * HOUR},
                            "group_by": ["host"], "aggregation": {"function": "Mean", "field": "y", "interval_nanos": iv}})
        assert decoded_tiers == []
        await db.query({"measurement": "cpu", "time_range": {"start": start + 5 * HOUR + 7 * MIN, "end": end},
                        "group_by": ["host"], "aggregation": {"function": "Mean", "field": "y", "interval_nanos": HOUR}})
        assert decoded_tiers and set(decoded_tiers) == {"cold"}  # the partial first hour is decoded
