"""The flusher actor: turns frozen memtables into published segment files, in order.

For each :class:`~rusts.actors.memtable.FlushRequest` it awaits ``write_table(table)`` (which
encodes one segment per time partition in a worker thread or the worker process, persists the
series index and schema, and has the segment keeper commit the manifest with the table's last WAL
sequence and publish the new readers), then tells the memtable the table
can be dropped and the WAL what is now durable elsewhere. A failed flush is retried with backoff
and logged; the table stays queryable in memory meanwhile, so no acknowledged point is lost.
"""

from __future__ import annotations

import logging

import trio

log = logging.getLogger("rusts.actors.flusher")


async def run_flusher(*, inbox, write_table, on_flushed, checkpoint, stats: dict,
                      task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Actor loop. ``on_flushed(table_id)`` runs synchronously in the loop once the table's
    segments are published (the memtable drops the table in that same step); ``checkpoint(seq)``
    is an async callable telling the WAL writer. The loop ends when the memtable closes the inbox."""
    task_status.started()
    async for req in inbox:
        table = req.table
        delay = 0.1
        t_fail = None
        while True:
            try:
                with trio.CancelScope(shield=True):
                    await write_table(table)
                break
            except Exception as e:  # disk full, I/O error: keep the data, retry
                stats["flush_errors"] = stats.get("flush_errors", 0) + 1
                stats["last_flush_error"] = str(e)
                # one line per episode (a full disk would otherwise log every retry)
                (log.error if t_fail is None else log.debug)("flush failed, retrying with backoff: %s", e)
                t_fail = trio.current_time() if t_fail is None else t_fail
                await trio.sleep(delay)
                delay = min(delay * 2, 5.0)
        if t_fail is not None:
            log.warning("flush succeeded after failing for %.1fs", trio.current_time() - t_fail)
        stats["flushes"] = stats.get("flushes", 0) + 1
        stats["flushed_points"] = stats.get("flushed_points", 0) + table.points
        on_flushed(table.id)
        await checkpoint(table.last_seq)
