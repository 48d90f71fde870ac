"""The retention sweeper actor: applies the retention policies periodically.

It calls ``sweep()`` once at start and then every ``interval_secs`` (and at once when poked with
:class:`SweepNow`, e.g. after a policy change over HTTP). ``sweep`` belongs to the Database: it
computes the cutoffs from the policy store, asks the segment keeper to drop wholly expired
segments (one ``Drop`` message, one manifest commit) and pokes the compactor for partially expired partitions. A failing sweep is logged and counted;
the next interval tries again. Queries never depend on the sweeper: they filter expired rows
themselves, so a late or failed sweep costs disk space, never correctness.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

import attrs
import trio

from rusts.messages import Reply

log = logging.getLogger("rusts.actors.retention")


@attrs.frozen(eq=False)
class SweepNow:
    """Poke: sweep now. ``reply`` (optional) gets the sweep's result."""

    reply: Reply | None = None


async def run_retention_sweeper(*, interval_secs: float, sweep: Callable[[], Any],
                                inbox: trio.MemoryReceiveChannel | None = None, stats: dict | None = None,
                                task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Actor loop; returns when ``inbox`` is closed, else runs until cancelled.

    Args:
        interval_secs: time between sweeps.
        sweep: sync or async callable; its return value is kept as ``stats["last_result"]``.
        inbox: :class:`SweepNow` pokes.
        stats: dict updated in place: ``runs``, ``last_run_at`` (unix time), ``last_result``,
            ``failures``, ``last_error``.
    """
    stats = {} if stats is None else stats
    task_status.started()
    replies: list[Reply] = []
    while True:
        try:
            with trio.CancelScope(shield=True):
                result = sweep()
                if inspect.isawaitable(result):
                    result = await result
        except Exception as e:
            stats["failures"] = stats.get("failures", 0) + 1
            stats["last_error"] = f"{type(e).__name__}: {e}"
            log.error("retention sweep failed: %s", e)
            for r in replies:
                r.fail(e)
        else:
            stats["runs"] = stats.get("runs", 0) + 1
            stats["last_run_at"] = time.time()
            stats["last_result"] = result
            for r in replies:
                r.set(result)
        replies = []
        if inbox is None:
            await trio.sleep(interval_secs)
            continue
        with trio.move_on_after(interval_secs):
            try:
                msg = await inbox.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return
            if msg.reply is not None:
                replies.append(msg.reply)
            while True:
                try:
                    more = inbox.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
                if more.reply is not None:
                    replies.append(more.reply)
