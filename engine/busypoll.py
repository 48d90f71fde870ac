"""Busy polling: keep the event loop awake for a moment after each answer.

A client that sends one request after another (a dashboard refresh, a script, a benchmark) leaves
the server idle for a fraction of a millisecond between them. Sleeping in ``epoll_wait`` through
such a gap costs more than the gap: the CPU idles, the VM's vCPU may be descheduled, caches and
branch predictors go cold, and the next request runs up to 3x slower (``perf/idle_gap.py``).
Go's runtime spins before parking for the same reason; Linux offers ``SO_BUSY_POLL`` for NICs.

:class:`BusyPoll` is a trio task that, after an answer leaves no request in flight
(:meth:`BusyPoll.end`), keeps yielding to the scheduler for ``window`` seconds, so the loop polls
its sockets with a zero timeout instead of sleeping; when the window passes without another answer
it blocks until the next one. It costs CPU only while answers come closer together than the
window, and none on an idle server.
``server.busy_poll_us`` (default 2000; 0 turns it off) sets the window.
"""

from __future__ import annotations

import time

import trio


class BusyPoll:
    """Spins the trio loop for ``window`` seconds after the answers that leave none pending."""

    def __init__(self, window: float) -> None:
        self.window = float(window)
        self.until = 0.0
        self.busy = 0  # requests in flight: no polling then (their threads need the GIL)
        self.spins = 0  # loop passes spent polling (statistics)
        self._wake = trio.Event()

    def begin(self) -> None:
        """A request is being answered (no polling until none is: a query running in a worker
        thread needs the GIL that polling would hold)."""
        self.busy += 1

    def end(self) -> None:
        """An answer was sent: when none is pending, poll for the next ``window`` seconds."""
        self.busy -= 1
        if self.busy == 0 and self.window > 0:
            self.until = time.perf_counter() + self.window
            self._wake.set()

    async def run(self) -> None:
        """Run until cancelled (a system or nursery task)."""
        clock = time.perf_counter
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while clock() < self.until and not self.busy:
                self.spins += 1
                await trio.lowlevel.checkpoint()  # runnable again at once: epoll with timeout 0
