"""The flusher actor: tables written in order, then dropped and checkpointed; a failing write is
retried with backoff and the table stays until it succeeds."""

from __future__ import annotations

import attrs
import trio

from rusts.actors.flusher import run_flusher
from rusts.actors.memtable import FlushRequest


@attrs.define
class FakeTable:
    id: int
    points: int
    last_seq: int


async def run(tables, write_table):
    events = []
    stats: dict = {}
    send, recv = trio.open_memory_channel(16)

    async def checkpoint(seq):
        events.append(("checkpoint", seq))

    async with trio.open_nursery() as n:
        await n.start(lambda task_status: run_flusher(
            inbox=recv, write_table=write_table, on_flushed=lambda tid: events.append(("dropped", tid)),
            checkpoint=checkpoint, stats=stats, task_status=task_status))
        for t in tables:
            await send.send(FlushRequest(t))
        await send.aclose()
    return events, stats


async def test_tables_are_written_in_order_then_dropped_then_checkpointed():
    written = []

    async def write_table(t):
        written.append(t.id)
        await trio.sleep(0)

    events, stats = await run([FakeTable(1, 10, 5), FakeTable(2, 3, 9)], write_table)
    assert written == [1, 2]
    assert events == [("dropped", 1), ("checkpoint", 5), ("dropped", 2), ("checkpoint", 9)]
    assert stats["flushes"] == 2 and stats["flushed_points"] == 13


async def test_a_failed_write_is_retried_and_nothing_is_dropped_before_it_succeeds(autojump_clock):
    attempts = []
    events_at_failure = []

    async def write_table(t):
        attempts.append(trio.current_time())
        if len(attempts) < 3:
            raise OSError(28, "No space left on device")

    events, stats = await run([FakeTable(1, 4, 2)], write_table)
    assert len(attempts) == 3
    assert attempts[1] - attempts[0] >= 0.1 and attempts[2] - attempts[1] >= 0.2  # backoff
    assert events == [("dropped", 1), ("checkpoint", 2)] and not events_at_failure
    assert stats["flush_errors"] == 2 and "No space" in stats["last_flush_error"]
