"""The compactor actor: plans and runs compaction tasks one at a time, in the background.

Every ``interval_secs`` (and at once when poked with :class:`CompactNow`, e.g. after a flush or a
DELETE) it takes the live segment list, plans (``plan_fn``, in a worker thread via
:func:`rusts.messages.run_cpu`) and runs the first task with ``execute_task``, then re-plans from
the new segment list, until nothing is left or ``max_tasks_per_pass`` tasks ran. Re-planning after
every task keeps the plan true to the manifest even when a flush or the retention sweeper changed
it meanwhile.

``execute_task`` belongs to the Database's lifecycle: a big task's new segments are written in
the worker process, then a ``Replace`` message asks the segment keeper (the manifest's one owner)
to commit them (add new, remove old), swap the readers and unlink the old files; a small task is
run by the keeper itself. It runs shielded from cancellation so a shutdown never abandons a
written task before its commit; a shutdown therefore waits for at most one task. A failed task is logged and counted, and
the pass ends (retried at the next interval): the old segments stay live, nothing is lost.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
import trio

from rusts.messages import Reply, run_cpu

log = logging.getLogger("rusts.actors.compactor")


@attrs.frozen(eq=False)
class CompactNow:
    """Poke: run a pass now. ``reply`` (optional) gets the pass summary dict when it ends."""

    reply: Reply | None = None


def _bump(stats: dict, key: str, n: int = 1) -> None:
    stats[key] = stats.get(key, 0) + n


async def run_compactor(*, interval_secs: float, get_metas: Callable[[], Sequence[Any]],
                        plan_fn: Callable[[Sequence[Any]], list], execute_task: Callable[[Any], Awaitable[Any]],
                        inbox: trio.MemoryReceiveChannel | None = None, stats: dict | None = None,
                        max_tasks_per_pass: int = 64, offload: Callable[..., Awaitable[Any]] = run_cpu,
                        task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Actor loop; returns when ``inbox`` is closed (shutdown), else runs until cancelled.

    Args:
        interval_secs: time between passes.
        get_metas: the live segment metas (read in the event loop, no await).
        plan_fn: ``metas -> tasks`` (pure; run in a worker thread).
        execute_task: ``async task -> outcome``; the outcome's ``result`` (if any) feeds the stats.
        inbox: :class:`CompactNow` pokes.
        stats: dict updated in place (``passes``, ``tasks``, ``tasks_by_reason``, ``failures``,
            ``last_error``, ``backlog``, ``points_in``, ``points_out``, ``rows_tombstoned``,
            ``rows_expired``, ``last_pass_at``).
        max_tasks_per_pass: stop a pass after this many tasks (guards against re-planning loops).
        offload: ``await offload(fn, *args)`` runs ``plan_fn`` off the event loop (default
            :func:`rusts.messages.run_cpu`; simulated-time tests run it inline, since trio's
            autojump clock advances while a worker thread runs).
    """
    stats = {} if stats is None else stats
    stats.setdefault("backlog", 0)
    task_status.started()
    while True:
        replies: list[Reply] = []
        if inbox is None:
            await trio.sleep(interval_secs)
        else:
            with trio.move_on_after(interval_secs):
                try:
                    msg = await inbox.receive()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    return
                if msg.reply is not None:
                    replies.append(msg.reply)
                while True:  # coalesce pokes that arrived meanwhile
                    try:
                        more = inbox.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                        break
                    if more.reply is not None:
                        replies.append(more.reply)
        summary = await compaction_pass(get_metas=get_metas, plan_fn=plan_fn, execute_task=execute_task,
                                        stats=stats, max_tasks=max_tasks_per_pass, offload=offload)
        for r in replies:
            r.set(summary)


async def compaction_pass(*, get_metas, plan_fn, execute_task, stats: dict, max_tasks: int = 64,
                          offload: Callable[..., Awaitable[Any]] = run_cpu) -> dict:
    """One pass: plan, run the first task, re-plan, ... Returns ``{"tasks", "failed", "backlog"}``."""
    done = failed = 0
    backlog = 0
    _bump(stats, "passes")
    while done < max_tasks:
        metas = tuple(get_metas())
        tasks = await offload(plan_fn, metas)
        backlog = len(tasks)
        stats["backlog"] = backlog
        if not tasks:
            break
        task = tasks[0]
        t0 = time.perf_counter()
        try:
            with trio.CancelScope(shield=True):
                outcome = execute_task(task)
                if inspect.isawaitable(outcome):
                    outcome = await outcome
        except Exception as e:
            failed += 1
            _bump(stats, "failures")
            stats["last_error"] = f"{type(e).__name__}: {e}"
            log.error("compaction of partition %s (%s, %d segments) failed: %s", getattr(task, "partition", "?"),
                      getattr(task, "reason", "?"), len(getattr(task, "inputs", ())), e)
            break
        done += 1
        _bump(stats, "tasks")
        by_reason = stats.setdefault("tasks_by_reason", {})
        reason = getattr(task, "reason", "?")
        by_reason[reason] = by_reason.get(reason, 0) + 1
        stats["last_task_secs"] = round(time.perf_counter() - t0, 4)
        res = getattr(outcome, "result", None)
        if res is not None:
            for key, attr in (("points_in", "points_in"), ("points_out", "points_out"),
                              ("rows_tombstoned", "rows_tombstoned"), ("rows_expired", "rows_expired")):
                _bump(stats, key, int(getattr(res, attr, 0)))
        await trio.lowlevel.checkpoint()
    stats["backlog"] = max(backlog - 1, 0) if done == max_tasks else backlog
    stats["last_pass_at"] = time.time()
    return {"tasks": done, "failed": failed, "backlog": stats["backlog"]}
