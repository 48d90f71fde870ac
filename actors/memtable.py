"""The memtable actor: applies WAL-ordered inserts, rotates tables, hands frozen ones to the flusher.

Owns :class:`rusts.memory.tables.MemtableState`. Inbox messages: ``MemtableInsert`` (from the WAL
writer, in sequence order) and :class:`ForceRotate`. The flusher reports a published table through
a synchronous callback that calls :meth:`MemtableState.drop` in the loop thread (a message would
need a second sender on this inbox, which would keep it open at shutdown). Rotation triggers:
``max_size_mb``, ``max_points``, ``max_age_secs`` of the active table. Queries read it through
:meth:`MemtableState.snapshot` in the event loop thread (chunks are immutable arrays).
When the inbox closes, the active table is rotated and the flusher channel closed, so shutdown
flushes everything.

Sealing (turning new chunks into sorted, query-ready blocks, :meth:`Table.seal_job`) runs in a
worker thread, one at a time, and is installed in the loop thread: done inline it held the loop
for 5 to 23 ms after a 10 MiB write (150k rows merged into the blocks already sealed), and every
request on the server waited that long. It starts once enough rows arrived (``SEAL_ROWS``), or
when a query was handed unsealed writes (``Table.on_tail_read``): a query sorts a few unsealed
writes itself, for its series, and without that signal every later query would sort them again
(a dashboard over data written every 15 s paid it on each refresh).
"""

from __future__ import annotations

import logging
import time

import attrs
import trio

from rusts.memory.tables import MemtableState, Table
from rusts.messages import Reply

log = logging.getLogger("rusts.actors.memtable")


@attrs.frozen(eq=False)
class FlushRequest:
    """To the flusher: write this frozen table to segments."""

    table: Table


@attrs.frozen(eq=False)
class ForceRotate:
    """Rotate now (flush on demand); reply.set(table id or None) once the rotation is queued."""

    reply: Reply


@attrs.define(eq=False)
class MemtableLimits:
    max_bytes: int
    max_points: int
    max_age_secs: float


async def run_memtable(state: MemtableState, *, limits: MemtableLimits, resolve_sids, inbox,
                       flusher: trio.MemorySendChannel, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Actor loop. ``resolve_sids(batch) -> series ids`` (one per series of ``batch.frames``, in frame order)."""

    async def rotate(reason: str) -> int | None:
        t = state.rotate()
        if t is None:
            return None
        log.debug("rotate memtable", extra={"reason": reason, "points": t.points, "table": t.id})
        await flusher.send(FlushRequest(t))
        return t.id

    async def age_timer():
        while True:
            await trio.sleep(min(1.0, max(0.05, limits.max_age_secs / 4)))
            a = state.active
            if a.points and time.monotonic() - a.created >= limits.max_age_secs:
                await rotate("age")

    sealing = False
    seal_limiter = trio.CapacityLimiter(1)

    async def seal_off_loop(table: Table, queried: bool = False) -> None:
        nonlocal sealing
        try:
            while queried or table.needs_seal():
                queried = False
                job = table.seal_job()
                if job is None:
                    break
                token, compute = job
                table.install_sealed(token, await trio.to_thread.run_sync(compute, limiter=seal_limiter))
        finally:
            sealing = False

    async with trio.open_nursery() as nursery:

        def tail_read(table: Table) -> None:
            """A query read unsealed writes (each query sorts them again for its series): seal
            them now, off the loop, whatever their number of rows."""
            nonlocal sealing
            if not sealing and not table.frozen:
                try:
                    nursery.start_soon(seal_off_loop, table, True)
                except RuntimeError:  # the actor is stopping: the query sorts them itself
                    return
                sealing = True

        state.set_tail_hook(tail_read)
        nursery.start_soon(age_timer)
        task_status.started()
        async with flusher:
            async for msg in inbox:
                kind = type(msg).__name__
                if kind == "MemtableInsert":
                    try:
                        sids = msg.sids if msg.sids is not None else resolve_sids(msg.batch)
                        state.active.insert_frames(msg.batch.frames, sids, msg.seq, seal=False)
                    except BaseException as e:  # never leave a writer hanging
                        msg.reply.fail(e)
                        raise
                    msg.reply.set(msg.seq)
                    a = state.active
                    if not sealing and a.needs_seal():
                        sealing = True
                        nursery.start_soon(seal_off_loop, a)
                    if a.points >= limits.max_points:
                        await rotate("points")
                    elif a.bytes >= limits.max_bytes:
                        await rotate("size")
                elif isinstance(msg, ForceRotate):
                    msg.reply.set(await rotate("forced"))
                else:
                    log.error("memtable: unknown message %r", msg)
            # inbox closed: shutdown. Flush what is left.
            state.set_tail_hook(None)
            await rotate("shutdown")
            nursery.cancel_scope.cancel()
