"""The query workers: every request answered exactly once, the pool size bounds concurrency,
deadlines and cancellation stop a query (and its thread), shutdown drains the queue."""

from __future__ import annotations

import threading
import time

import pytest
import trio

from rusts.actors.query_worker import JsonQuery, WorkerStats, ask, run_query_workers
from rusts.errors import ClosedError, QueryCancelled, QueryError
from rusts.query.control import busy_threads, checkpoint, offload


async def start(nursery, handler, count=2):
    send, recv = trio.open_memory_channel(8)
    stats = WorkerStats()
    await nursery.start(lambda task_status: run_query_workers(
        inbox=recv, handlers={JsonQuery: handler}, count=count, stats=stats, task_status=task_status))
    return send, stats


def q(send, payload, timeout=10.0):
    return ask(send, lambda reply, ctl: JsonQuery(payload, reply, ctl), timeout)


async def test_answers_and_errors_reach_the_requester():
    async def handler(req):
        if req.query == "bad":
            raise QueryError("no such thing")
        return req.query * 2

    async with trio.open_nursery() as n:
        send, stats = await start(n, handler)
        assert await q(send, 21) == 42
        with pytest.raises(QueryError, match="no such thing"):
            await q(send, "bad")
        assert (stats.answered, stats.failed) == (1, 1)
        await send.aclose()


async def test_the_pool_size_bounds_concurrency():
    running = 0
    peak = 0

    async def handler(req):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await trio.sleep(0.05)
        running -= 1
        return req.query

    async with trio.open_nursery() as n:
        send, stats = await start(n, handler, count=3)
        results = []

        async def one(i):
            results.append(await q(send, i))

        async with trio.open_nursery() as clients:
            for i in range(10):
                clients.start_soon(one, i)
        assert sorted(results) == list(range(10)) and peak == 3
        await send.aclose()


async def test_a_query_past_its_deadline_stops_its_thread():
    stopped = threading.Event()

    def spin():
        try:
            while True:  # numpy-style work with checkpoints between blocks
                time.sleep(0.001)
                checkpoint()
        finally:
            stopped.set()

    async def handler(req):
        return await offload(spin)

    async with trio.open_nursery() as n:
        send, stats = await start(n, handler)
        with pytest.raises(QueryCancelled, match="time limit"):
            await q(send, None, timeout=0.2)
        assert await trio.to_thread.run_sync(stopped.wait, 2.0)
        assert busy_threads() == 0 and stats.cancelled == 1
        await send.aclose()


async def test_a_requester_that_goes_away_cancels_its_query():
    started = trio.Event()
    cancelled = trio.Event()

    async def handler(req):
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    async with trio.open_nursery() as n:
        send, stats = await start(n, handler)
        with trio.move_on_after(5) as client:
            async with trio.open_nursery() as c:
                c.start_soon(q, send, None)
                await started.wait()
                c.cancel_scope.cancel()  # the client disconnects
        assert not client.cancelled_caught
        with trio.fail_after(2):
            await cancelled.wait()
        await send.aclose()


async def test_closing_the_channel_drains_queued_requests_then_the_workers_end():
    async def handler(req):
        await trio.sleep(0.01)
        return req.query

    async with trio.open_nursery() as n:
        send, stats = await start(n, handler, count=1)
        results = []

        async def one(i):
            results.append(await q(send, i))

        async with trio.open_nursery() as clients:
            for i in range(5):
                clients.start_soon(one, i)
            await trio.sleep(0.001)
            await send.aclose()
        assert sorted(results) == [0, 1, 2, 3, 4]
    with pytest.raises(ClosedError):
        await q(send, 1)
