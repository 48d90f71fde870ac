"""The compactor actor over simulated months (trio autojump clock), pokes, failures, shutdown."""

from __future__ import annotations

import attrs
import trio

from rusts.actors.compactor import CompactNow, run_compactor
from rusts.lifecycle.compaction import plan
from rusts.errors import StorageError
from rusts.storage.manifest import SegmentMeta
from rusts.messages import Reply

NS = 10**9
DAY = 86_400
MAX_SEGMENTS = 4


async def inline(fn, *args):
    """Run plan_fn in the loop: the autojump clock would advance while a worker thread runs."""
    return fn(*args)


class World:
    """A fake database: live segment metas with data sequences, time from the trio clock."""

    def __init__(self) -> None:
        self.metas: list[SegmentMeta] = []
        self.seq: dict[str, int] = {}
        self.n = 0
        self.max_after_pass = 0
        self.executed: list = []

    def now_ns(self) -> int:
        return int(trio.current_time() * NS)

    def flush(self) -> None:
        t = self.now_ns()
        self.n += 1
        m = SegmentMeta(file=f"f{self.n}", partition=t // (DAY * NS), min_time=t - 60 * NS, max_time=t, size=1000,
                        series_count=1, point_count=100)
        self.metas.append(m)
        self.seq[m.file] = self.n

    def plan(self, metas):
        tasks = plan(metas, now_ns=self.now_ns(), partition_ns=DAY * NS, max_segments=MAX_SEGMENTS,
                     cold_after_ns=7 * DAY * NS, seq_of=lambda m: self.seq[m.file])
        if not tasks:
            per = {}
            for m in metas:
                per[m.partition] = per.get(m.partition, 0) + 1
            self.max_after_pass = max(self.max_after_pass, *per.values(), 0)
        return tasks

    async def execute(self, task):
        await trio.sleep(5)  # simulated work; flushes go on meanwhile
        names = {m.file for m in task.inputs}
        assert names <= {m.file for m in self.metas}
        self.n += 1
        out = attrs.evolve(task.inputs[-1], file=f"c{self.n}", level=task.level, tier=task.tier,
                           min_time=min(m.min_time for m in task.inputs),
                           max_time=max(m.max_time for m in task.inputs))
        self.seq[out.file] = max(self.seq[m.file] for m in task.inputs)
        self.metas = [m for m in self.metas if m.file not in names] + [out]
        self.executed.append(task)


async def test_months_of_small_flushes_keep_partitions_bounded_and_old_ones_cold(autojump_clock):
    w = World()
    days = 45
    stats: dict = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: run_compactor(
            interval_secs=1800, get_metas=lambda: w.metas, plan_fn=w.plan, execute_task=w.execute,
            stats=stats, offload=inline, task_status=task_status))
        for _ in range(days * 96):  # a flush every 15 minutes
            await trio.sleep(900)
            w.flush()
        await trio.sleep(3 * 3600)  # > settle (1 h) + interval: yesterday's partition is merged
        nursery.cancel_scope.cancel()
    now_part = w.now_ns() // (DAY * NS)
    per: dict[int, list[SegmentMeta]] = {}
    for m in w.metas:
        per.setdefault(m.partition, []).append(m)
    assert sorted(per) == list(range(per and min(per), now_part + 1))
    # the stated bound: <= 3 * max_segments per partition after every pass
    assert 0 < w.max_after_pass <= 3 * MAX_SEGMENTS
    for p, segs in per.items():
        if (p + 1) * DAY * NS <= w.now_ns() - 7 * DAY * NS:
            assert [(m.tier, len(segs)) for m in segs] == [("cold", 1)], p
        elif p < now_part:
            assert len(segs) == 1 and segs[0].tier == "hot", p
    assert stats["tasks"] == len(w.executed) and stats.get("failures", 0) == 0
    assert set(stats["tasks_by_reason"]) == {"merge", "tier"}
    # every cold partition was re-encoded once: 96 flushes -> run merges, one whole merge, one tiering
    assert sum(1 for t in w.executed if t.reason == "tier") == sum(
        1 for p in per if (p + 1) * DAY * NS <= w.now_ns() - 7 * DAY * NS)


async def test_a_poke_runs_a_pass_at_once_and_replies(autojump_clock):
    w = World()
    for _ in range(MAX_SEGMENTS):
        w.flush()
    send, recv = trio.open_memory_channel(10)
    stats: dict = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: run_compactor(
            interval_secs=10**6, get_metas=lambda: w.metas, plan_fn=w.plan, execute_task=w.execute,
            inbox=recv, stats=stats, offload=inline, task_status=task_status))
        t0 = trio.current_time()
        reply = Reply()
        await send.send(CompactNow(reply))
        summary = await reply.wait()
        assert summary == {"tasks": 1, "failed": 0, "backlog": 0}
        assert trio.current_time() - t0 < 60  # not the 10**6 s interval
        assert len(w.metas) == 1 and w.metas[0].level == 1
        await send.aclose()  # shutdown: the actor returns
    assert stats["passes"] == 1


async def test_a_failing_task_is_counted_and_retried_next_interval(autojump_clock):
    w = World()
    for _ in range(MAX_SEGMENTS):
        w.flush()
    attempts = []

    async def flaky(task):
        attempts.append(trio.current_time())
        if len(attempts) == 1:
            raise StorageError("disk full")
        await w.execute(task)

    stats: dict = {}
    with trio.move_on_after(250):
        await run_compactor(interval_secs=100, get_metas=lambda: w.metas, plan_fn=w.plan, execute_task=flaky,
                            stats=stats, offload=inline)
    assert stats["failures"] == 1 and "disk full" in stats["last_error"]
    assert len(attempts) == 2 and attempts[1] - attempts[0] >= 100
    assert len(w.metas) == 1 and stats["tasks"] == 1


async def test_cancellation_never_interrupts_a_running_task(autojump_clock):
    w = World()
    for _ in range(MAX_SEGMENTS):
        w.flush()
    started = trio.Event()

    async def slow(task):
        started.set()
        await trio.sleep(30)
        await w.execute(task)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: run_compactor(interval_secs=1, get_metas=lambda: w.metas, plan_fn=w.plan,
                                                 execute_task=slow, offload=inline))
        await started.wait()
        nursery.cancel_scope.cancel()
    assert len(w.executed) == 1 and len(w.metas) == 1
