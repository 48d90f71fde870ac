"""Busy polling keeps the loop awake only between answers that come close together."""

import time

import trio

from rusts.busypoll import BusyPoll


async def test_polls_for_the_window_after_the_last_answer_then_sleeps():
    bp = BusyPoll(0.02)
    async with trio.open_nursery() as n:
        n.start_soon(bp.run)
        await trio.sleep(0.03)
        assert bp.spins == 0  # nothing answered yet: asleep
        bp.begin()
        await trio.sleep(0.01)
        assert bp.spins == 0  # a request in flight: no polling (its thread may need the GIL)
        bp.end()
        t = time.perf_counter()
        while time.perf_counter() - t < 0.01:
            await trio.lowlevel.checkpoint()
        assert bp.spins > 0  # polling after the answer
        await trio.sleep(0.05)  # the window passed
        before = bp.spins
        await trio.sleep(0.05)
        assert bp.spins == before  # asleep again
        n.cancel_scope.cancel()


async def test_window_zero_never_polls():
    bp = BusyPoll(0)
    async with trio.open_nursery() as n:
        n.start_soon(bp.run)
        bp.begin()
        bp.end()
        await trio.sleep(0.02)
        assert bp.spins == 0
        n.cancel_scope.cancel()


async def test_overlapping_requests_poll_only_after_the_last_one():
    bp = BusyPoll(0.05)
    async with trio.open_nursery() as n:
        n.start_soon(bp.run)
        bp.begin()
        bp.begin()
        bp.end()
        await trio.sleep(0.01)
        assert bp.spins == 0  # one still in flight
        bp.end()
        await trio.sleep(0)
        t = time.perf_counter()
        while time.perf_counter() - t < 0.005:
            await trio.lowlevel.checkpoint()
        assert bp.spins > 0
        n.cancel_scope.cancel()
