"""The memtable actor: inserts in order and replies, rotation by points, size, age and on demand,
and a shutdown that hands the last table to the flusher."""

from __future__ import annotations

import numpy as np
import trio
import trio.testing

from rusts.actors.memtable import FlushRequest, ForceRotate, MemtableLimits, run_memtable
from rusts.actors.wal_writer import MemtableInsert
from rusts.memory.tables import MemtableState
from rusts.messages import Reply
from rusts.model import Column, FieldType, SeriesRows, WriteBatch


def batch(n: int, start: int = 0) -> WriteBatch:
    ts = np.arange(start, start + n, dtype=np.int64)
    return WriteBatch((SeriesRows("m", (("k", "a"),), ts, {"v": Column(FieldType.FLOAT, ts.astype(float))},
                                  np.arange(1, n + 1)),))


async def start(nursery, **limits):
    state = MemtableState()
    lim = MemtableLimits(**{"max_bytes": 1 << 30, "max_points": 10**9, "max_age_secs": 3600.0, **limits})
    inbox_send, inbox = trio.open_memory_channel(16)
    fl_send, fl_recv = trio.open_memory_channel(16)
    await nursery.start(lambda task_status: run_memtable(
        state, limits=lim, resolve_sids=lambda b: np.array([7], dtype=np.uint64), inbox=inbox,
        flusher=fl_send, task_status=task_status))
    return state, inbox_send, fl_recv


async def insert(send, b: WriteBatch, seq: int) -> int:
    r = Reply()
    await send.send(MemtableInsert(b, seq, r))
    return await r.wait()


async def test_inserts_reply_with_their_sequence_and_are_readable():
    async with trio.open_nursery() as n:
        state, send, _ = await start(n)
        assert await insert(send, batch(3), 1) == 1
        assert await insert(send, batch(2, 10), 2) == 2
        assert state.active.points == 5 and state.active.last_seq == 2
        rows = state.snapshot([7])[7]
        assert sorted(np.concatenate([r.timestamps for r in rows]).tolist()) == [0, 1, 2, 10, 11]
        await send.aclose()


async def test_rotates_at_max_points_and_hands_the_table_to_the_flusher():
    async with trio.open_nursery() as n:
        state, send, fl = await start(n, max_points=4)
        await insert(send, batch(3), 1)
        assert state.immutables == []
        await insert(send, batch(3, 10), 2)  # 6 points >= 4: rotated
        req = fl.receive_nowait()
        assert isinstance(req, FlushRequest) and req.table.points == 6 and req.table.frozen
        assert state.active.points == 0 and state.immutables == [req.table]
        await send.aclose()


async def test_rotates_at_max_bytes():
    async with trio.open_nursery() as n:
        state, send, fl = await start(n, max_bytes=1)
        await insert(send, batch(1), 1)
        assert fl.receive_nowait().table.points == 1
        await send.aclose()


async def test_rotates_by_age():
    async with trio.open_nursery() as n:  # the age is the table's wall-clock age
        state, send, fl = await start(n, max_age_secs=0.2)
        await insert(send, batch(2), 1)
        with trio.fail_after(10):
            req = await fl.receive()
        assert req.table.points == 2
        await send.aclose()


async def test_force_rotate_replies_with_the_table_id_or_none():
    async with trio.open_nursery() as n:
        state, send, fl = await start(n)
        r = Reply()
        await send.send(ForceRotate(r))
        assert await r.wait() is None  # nothing to rotate
        await insert(send, batch(2), 1)
        r = Reply()
        await send.send(ForceRotate(r))
        tid = await r.wait()
        assert fl.receive_nowait().table.id == tid
        await send.aclose()


async def test_closing_the_inbox_flushes_what_is_left_and_closes_the_flusher_channel():
    async with trio.open_nursery() as n:
        state, send, fl = await start(n)
        await insert(send, batch(5), 1)
        await send.aclose()
        got = [req async for req in fl]  # ends: the actor closed the channel
    assert [r.table.points for r in got] == [5]


async def test_a_failing_insert_fails_its_writer_and_the_actor():
    state = MemtableState()
    lim = MemtableLimits(1 << 30, 10**9, 3600.0)
    send, inbox = trio.open_memory_channel(4)
    fl_send, _fl = trio.open_memory_channel(4)

    def boom(b):
        raise RuntimeError("index broken")

    r = Reply()
    try:
        async with trio.open_nursery() as n:
            await n.start(lambda task_status: run_memtable(state, limits=lim, resolve_sids=boom, inbox=inbox,
                                                           flusher=fl_send, task_status=task_status))
            await send.send(MemtableInsert(batch(1), 1, r))
    except* RuntimeError:
        pass
    else:
        raise AssertionError("the actor must fail loudly")
    try:
        await r.wait()
    except RuntimeError as e:
        assert "index broken" in str(e)
    else:
        raise AssertionError("the writer must get the error")


async def test_big_inserts_are_sealed_in_the_background_without_a_query():
    from rusts.memory.tables import SEAL_ROWS

    async with trio.open_nursery() as n:
        state, send, _ = await start(n)
        await insert(send, batch(SEAL_ROWS + 10), 1)
        table = state.active
        with trio.fail_after(10):
            while table._sealed_upto == 0:  # sealed by the actor's worker thread, not by a reader
                await trio.sleep(0.01)
        assert sum(len(b) for b in table._sealed["m"]) == SEAL_ROWS + 10
        rows = state.snapshot([7])[7]
        assert sum(len(r) for r in rows) == SEAL_ROWS + 10
        await send.aclose()


async def test_small_writes_a_query_read_unsealed_are_sealed_for_the_next_queries():
    from rusts.memory.views import UnsealedTail

    async with trio.open_nursery() as n:
        state, send, _ = await start(n)
        await insert(send, batch(3), 1)
        await insert(send, batch(2, 10), 2)
        table = state.active
        await trio.sleep(0.05)
        assert table._sealed_upto == 0  # few rows: nothing sealed them on the write path
        first = state.snapshot([7])
        assert any(isinstance(p, UnsealedTail) for p in first.parts)  # this query sorts them itself
        with trio.fail_after(10):
            while table._sealed_upto < 2:  # ... and the actor seals them off the loop
                await trio.sleep(0.01)
        later = state.snapshot([7])
        assert not any(isinstance(p, UnsealedTail) for p in later.parts)
        for view in (first, later):
            assert sorted(np.concatenate([r.timestamps for r in view[7]]).tolist()) == [0, 1, 2, 10, 11]
        await send.aclose()


async def test_series_ids_resolved_by_the_writer_are_not_looked_up_again():
    async with trio.open_nursery() as n:
        state, send, _ = await start(n)  # its resolver answers 7
        r = Reply()
        await send.send(MemtableInsert(batch(3), 1, r, np.array([42], dtype=np.uint64)))
        assert await r.wait() == 1
        assert sum(len(x) for x in state.snapshot([42])[42]) == 3 and not state.snapshot([7]).get(7)
        await send.aclose()
