"""The query workers: a pool of supervised tasks behind one channel that answer every query.

Adapters (HTTP, pgwire, the embedded API) never run a query themselves: they send a frozen
request (:class:`JsonQuery`, :class:`SqlStatement`, :class:`DescribeSql`) carrying a
:class:`~rusts.messages.Reply` and a :class:`~rusts.query.control.QueryControl`, and await the
reply. A worker takes the next request, runs its handler as that query
(:func:`rusts.query.control.run_under`: the deadline of ``query.timeout_secs`` counts from when
the adapter asked, queue time included) and answers the reply exactly once.

* The pool size is the concurrency limit (``query.max_concurrent``): a request waits in the
  channel until a worker is free; the channel is bounded, so a flood of requests waits in the
  adapters (backpressure) instead of growing a queue without bound.
* A request whose control was cancelled before a worker took it (client gone) is answered with
  the cancellation and never run.
* CPU work leaves the loop through :func:`rusts.query.control.offload`; a cancelled query's
  thread is interrupted (DuckDB) or stops at its next checkpoint.
* Failure policy: a handler's exception is the reply's error (the worker goes on). Anything that
  escapes a worker (a bug in this module) stops the database: the supervisor's nursery fails.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import attrs
import trio

from rusts.errors import ClosedError
from rusts.messages import Reply
from rusts.query.control import QueryControl, run_under

log = logging.getLogger("rusts.actors.query")


@attrs.frozen(eq=False)
class JsonQuery:
    """A JSON-API query (a dict, or a :class:`rusts.query.model.Query`)."""

    query: Any
    reply: Reply
    control: QueryControl


@attrs.frozen(eq=False)
class SqlStatement:
    """One SQL statement with its ``$n`` parameters; ``extra_tables`` are Arrow tables made
    queryable for it (pgwire's catalog)."""

    text: str
    params: Sequence | None
    reply: Reply
    control: QueryControl
    extra_tables: Mapping | None = None
    route: str = "auto"
    now_ns: int | None = None


@attrs.frozen(eq=False)
class DescribeSql:
    """Parameter count and result columns of a statement, without reading data."""

    text: str
    reply: Reply
    control: QueryControl
    extra_tables: Mapping | None = None


Handler = Callable[[Any], Awaitable[Any]]


@attrs.define
class WorkerStats:
    """Counters of the pool, read by ``/health`` and ``/stats``."""

    workers: int = 0
    busy: int = 0
    answered: int = 0
    failed: int = 0
    cancelled: int = 0

    def to_json(self) -> dict:
        return attrs.asdict(self)


async def run_query_workers(*, inbox: trio.MemoryReceiveChannel, handlers: Mapping[type, Handler],
                            count: int, stats: WorkerStats,
                            task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Run ``count`` workers on ``inbox`` until it is closed and drained (or cancelled)."""
    stats.workers = count
    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(_worker, inbox.clone(), handlers, stats, name=f"rusts query worker {i}")
        await inbox.aclose()  # the clones keep the channel open
        task_status.started()


async def _worker(inbox: trio.MemoryReceiveChannel, handlers: Mapping[type, Handler], stats: WorkerStats) -> None:
    async with inbox:
        async for req in inbox:
            await _answer(req, handlers[type(req)], stats)


async def _answer(req, handler: Handler, stats: WorkerStats) -> None:
    ctl: QueryControl = req.control
    if ctl.cancelled:
        stats.cancelled += 1
        req.reply.fail(ctl.error())
        return
    stats.busy += 1
    try:
        result = await run_under(ctl, handler, req)
    except trio.Cancelled:
        req.reply.fail(ClosedError("the server is shutting down"))
        raise
    except Exception as e:  # noqa: BLE001 - every error is the requester's answer
        if ctl.cancelled:
            stats.cancelled += 1
        else:
            stats.failed += 1
        req.reply.fail(e)
    else:
        stats.answered += 1
        req.reply.set(result)
    finally:
        stats.busy -= 1


async def ask(send: trio.MemorySendChannel, make: Callable[[Reply, QueryControl], Any], timeout: float,
              memory_limit: int | None = None) -> Any:
    """Send the request ``make(reply, control)`` to the workers and await the answer.

    If the caller is cancelled (client gone, pgwire CancelRequest), the query is cancelled too:
    a worker running it stops, a request still queued is never run."""
    ctl = QueryControl(timeout, memory_limit)
    reply = Reply()
    try:
        try:
            await send.send(make(reply, ctl))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ClosedError("the database is shutting down") from None
        return await reply.wait()
    except trio.Cancelled:
        ctl.cancel("the client went away")
        raise
