"""The retention sweeper over simulated months (trio autojump clock), run-time policy changes, failures."""

from __future__ import annotations

import pytest
import trio

from rusts.actors.retention import SweepNow, run_retention_sweeper
from rusts.storage.manifest import SegmentMeta
from rusts.messages import Reply
from rusts.lifecycle.policies import PolicyStore, cutoffs, expired_partitions, make_policy

NS = 10**9
DAY = 86_400


class World:
    """One segment per simulated day; ``sweep`` drops wholly expired ones like the Database does."""

    def __init__(self, store: PolicyStore) -> None:
        self.store = store
        self.metas: list[SegmentMeta] = []
        self.dropped = 0

    def add_day(self) -> None:
        t = int(trio.current_time() * NS)
        p = t // (DAY * NS)
        self.metas.append(SegmentMeta(file=f"p{p}", partition=p, min_time=p * DAY * NS,
                                      max_time=(p + 1) * DAY * NS - 1, size=1, series_count=1, point_count=1))

    def sweep(self) -> int:
        now = int(trio.current_time() * NS)
        gone = expired_partitions(self.metas, cutoffs(self.store.list(), now))
        names = {m.file for m in gone}
        self.metas = [m for m in self.metas if m.file not in names]
        self.dropped += len(gone)
        return len(gone)

    def oldest_age_days(self) -> float:
        now = trio.current_time() * NS
        return (now - min(m.min_time for m in self.metas)) / (DAY * NS)


async def test_four_months_keep_thirty_days(autojump_clock, tmp_path):
    store = PolicyStore.open(tmp_path, [make_policy("month", "*", "30d")])
    w = World(store)
    stats: dict = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: run_retention_sweeper(
            interval_secs=3600, sweep=w.sweep, stats=stats, task_status=task_status))
        for day in range(120):
            w.add_day()
            await trio.sleep(DAY)
            # the newest dropped day lay wholly before now - 30 d; at most one hour late
            if day > 31:
                assert 30 <= w.oldest_age_days() <= 31 + 1 / 24 + 1e-9
        nursery.cancel_scope.cancel()
    assert len(w.metas) in (30, 31)
    assert w.dropped == 120 - len(w.metas)
    assert stats["runs"] == pytest.approx(120 * 24, abs=2) and stats.get("failures", 0) == 0


async def test_a_policy_change_applies_at_once_when_poked(autojump_clock, tmp_path):
    store = PolicyStore.open(tmp_path, [make_policy("month", "*", "30d")])
    w = World(store)
    for _ in range(20):
        w.add_day()
        await trio.sleep(DAY)
    send, recv = trio.open_memory_channel(4)
    stats: dict = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: run_retention_sweeper(
            interval_secs=10**6, sweep=w.sweep, inbox=recv, stats=stats, task_status=task_status))
        assert len(w.metas) == 20  # nothing older than 30 days
        store.update("month", duration="7d")
        t0 = trio.current_time()
        reply = Reply()
        await send.send(SweepNow(reply))
        assert await reply.wait() == 13  # days 0..12 lie wholly before now - 7 d
        assert trio.current_time() - t0 < 1
        await send.aclose()
    assert len(w.metas) == 7 and stats["runs"] == 2


async def test_a_failing_sweep_is_counted_and_the_next_one_runs(autojump_clock):
    calls = []

    async def sweep():
        calls.append(trio.current_time())
        if len(calls) == 2:
            raise OSError("disk gone")
        return "ok"

    stats: dict = {}
    with trio.move_on_after(350):
        await run_retention_sweeper(interval_secs=100, sweep=sweep, stats=stats)
    assert len(calls) == 4
    assert stats["runs"] == 3 and stats["failures"] == 1 and "disk gone" in stats["last_error"]
    assert stats["last_result"] == "ok" and stats["last_run_at"] > 0
