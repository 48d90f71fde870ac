"""Busy polling keeps the loop awake only between answers that come close together."""

import time
from contextlib import asynccontextmanager

import trio

from rusts.busypoll import BusyPoll


@asynccontextmanager
async def running(window: float):
    bp = BusyPoll(window)
    async with trio.open_nursery() as n:
        n.start_soon(bp.run)
        yield bp
        n.cancel_scope.cancel()


async def busy_wait(secs: float) -> None:
    """Let the loop run for ``secs`` without sleeping (so a polling task gets its turns)."""
    t = time.perf_counter()
    while time.perf_counter() - t < secs:
        await trio.lowlevel.checkpoint()


async def test_polls_for_the_window_after_the_last_answer_then_sleeps():
    async with running(0.02) as bp:
        await trio.sleep(0.03)
        assert bp.spins == 0  # nothing answered yet: asleep
        bp.begin()
        await trio.sleep(0.01)
        assert bp.spins == 0  # a request in flight: no polling (its thread may need the GIL)
        bp.end()
        await busy_wait(0.01)
        assert bp.spins > 0  # polling after the answer
        await trio.sleep(0.05)  # the window passed
        before = bp.spins
        await trio.sleep(0.05)
        assert bp.spins == before  # asleep again


async def test_window_zero_never_polls():
    async with running(0) as bp:
        bp.begin()
        bp.end()
        await busy_wait(0.01)
        assert bp.spins == 0


async def test_overlapping_requests_poll_only_after_the_last_one():
    async with running(0.05) as bp:
        bp.begin()
        bp.begin()
        bp.end()
        await busy_wait(0.01)
        assert bp.spins == 0  # one still in flight
        bp.end()
        await busy_wait(0.005)
        assert bp.spins > 0
