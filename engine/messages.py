"""Shared message plumbing for actors: a one-shot :class:`Reply` and the CPU limiter.

Actors receive frozen attrs messages on trio memory channels. A request that needs an answer
carries a :class:`Reply`; the actor resolves it exactly once with a value or an exception.
"""

from __future__ import annotations

from typing import Any

import attrs
import trio


@attrs.define(eq=False)
class Reply:
    """A one-shot answer slot. The actor calls :meth:`set` or :meth:`fail`; the caller awaits
    :meth:`wait`, which returns the value or raises the exception."""

    _event: trio.Event = attrs.field(factory=trio.Event)
    _value: Any = None
    _error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self._event.is_set()

    def set(self, value: Any = None) -> None:
        if self._event.is_set():
            return
        self._value = value
        self._event.set()

    def fail(self, error: BaseException) -> None:
        if self._event.is_set():
            return
        self._error = error
        self._event.set()

    async def wait(self) -> Any:
        await self._event.wait()
        if self._error is not None:
            raise self._error
        return self._value


_cpu_limiter: trio.CapacityLimiter | None = None


def cpu_limiter() -> trio.CapacityLimiter:
    """Limiter for CPU-heavy work moved off the event loop (decode, aggregate, encode, parse)."""
    global _cpu_limiter
    if _cpu_limiter is None:
        import os
        _cpu_limiter = trio.CapacityLimiter(max(2, os.cpu_count() or 2))
    return _cpu_limiter


async def run_cpu(fn, *args):
    """Run CPU-heavy ``fn(*args)`` in a worker thread (numpy releases the GIL)."""
    return await trio.to_thread.run_sync(fn, *args, limiter=cpu_limiter())
