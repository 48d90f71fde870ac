"""Direct mode: write through the embedded database (the code the server runs), in-process.

The database is opened with the WAL off (``wal_durability="none"``: the input file is the
recovery source) and a large memtable, and it holds the data directory's exclusive lock, so a
running server is refused (:class:`rusts.errors.DataDirLockedError`). Batches reach the memtable
whole and tables rotate between batches, so the segments on disk always hold whole batches.

Interruptions: Ctrl-C or SIGTERM stops reading, flushes what was written and exits 130, leaving
a complete prefix of the input. A hard kill (SIGKILL, power loss) loses what was still in memory
since the last flush (at most one memtable: ``--memtable-mb``); the database still opens with
whole batches only. ``--resume`` flushes every ``--checkpoint-rows`` rows and records the
position after each flush, so a re-run continues from there.
"""

from __future__ import annotations

import os
import signal

import trio

from rusts.importer.errors import TargetError
from rusts.importer.mapping import to_write_batch, value_count
from rusts.importer.pipeline import Unit, account, units


def prepare_direct(u: Unit):
    """In the reader thread: the unit's WriteBatch (and its value count)."""
    if u.lp is not None:
        from rusts.protocols.line_protocol import parse

        b = parse(u.lp)
        return b, b.value_count
    nb = u.norm.batch
    if not nb.num_rows:
        return None, 0
    return to_write_batch(nb, u.plan, u.norm.rows), value_count(nb, u.plan)


async def load_keys_direct(db, measurement: str, column: str):
    from rusts.errors import QueryError
    from rusts.importer.dedup import KeySet, distinct_sql
    from rusts.sql.runner import execute_sql

    try:
        out = await execute_sql(db, distinct_sql(measurement, column))
    except QueryError:  # no such measurement or column yet: nothing to skip
        return KeySet(column, [])
    vals, mask = out.values[0], out.masks[0]
    return KeySet(column, vals if mask is None else vals[mask])


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 4))


async def run_direct(opts, cfg, stats, progress, *, dedup_column=None, state=None,
                     checkpoint_rows: int = 1_000_000, memtable_mb: int = 64,
                     workers: int | None = None) -> bool:
    """Import into the data directory of ``cfg``; returns False when interrupted.

    Flushes are encoded in ``workers`` processes (rusts.storage.flushproc), a flush's time
    partitions split between them; the memtables are not sealed as they fill (nothing queries)."""
    import rusts
    from rusts.errors import DataDirLockedError
    from rusts.storage import flushproc

    import attrs

    mem_points = max(2 * opts.batch_size, 4 * memtable_mb * 1024)  # rotation by size first
    # nothing queries recent data during an import: no copy of flushed tables kept in memory
    cfg = attrs.evolve(cfg, query=attrs.evolve(cfg.query, recent_cache_mb=0))
    try:
        ctx = rusts.open(config=cfg, wal_durability="none", memtable_max_points=mem_points,
                         memtable_max_size_mb=memtable_mb, memtable_hard_limit_mb=2 * memtable_mb,
                         memtable_max_age_secs=10**9)
        prev = flushproc.configure(mode="always", workers=workers or default_workers())
        flushproc.prestart()
        try:
            async with ctx as db:
                db.state.set_seal_rows(2**62)
                return await _import(db, opts, stats, progress, dedup_column, state, checkpoint_rows)
        finally:
            flushproc.configure(mode=prev[0], workers=prev[1])
    except DataDirLockedError as e:
        raise TargetError(f"{e}: stop rusts-server first, or import through it without --direct") from None


async def _import(db, opts, stats, progress, dedup_column, state, checkpoint_rows) -> bool:
    keys = await load_keys_direct(db, opts.measurement, dedup_column) if dedup_column else None
    start_file, start_pos = (state.file_index, state.position) if state is not None else (0, 0)
    it = units(opts, start_file, start_pos, keys, prepare_direct)
    stop = trio.Event()
    hard = int(db.config.storage.memtable.hard_limit_mb) << 20
    committed = state.committed_rows if state is not None else 0
    last_ckpt = committed
    interrupted = False
    pos = None

    def next_unit():
        return next(it, None)

    async def watch_signals(task_status=trio.TASK_STATUS_IGNORED):
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as sigs:
            task_status.started()
            async for _ in sigs:
                stop.set()
                return

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(watch_signals)
            send, recv = trio.open_memory_channel(2)

            async def reader():
                async with send:
                    while not stop.is_set():
                        u = await trio.to_thread.run_sync(next_unit)
                        if u is None:
                            return
                        await send.send(u)

            nursery.start_soon(reader)
            async with recv:
                async for u in recv:
                    batch, values = u.payload
                    account(stats, u)
                    if batch is not None and batch.point_count:
                        while db.state.total_bytes > hard:  # the flusher is behind: wait for it
                            await trio.sleep(0.02)
                        res = await db.write_batch(batch)
                        stats.points_written += res.points
                        stats.values_written += written_values(values, batch.point_count, res.points)
                        stats.batches += 1
                        count_errors(stats, u, res.errors)
                    committed += u.rows
                    pos = (u.file_index, u.position)
                    progress.update()
                    if state is not None and committed - last_ckpt >= checkpoint_rows:
                        await db.flush()
                        state.save(*pos, committed)
                        last_ckpt = committed
                    if stop.is_set():
                        interrupted = True
                        break
            if stop.is_set():
                interrupted = True
            nursery.cancel_scope.cancel()
    except BaseException:
        with trio.CancelScope(shield=True):  # keep what was written: whole batches
            try:
                await db.flush()
                if state is not None and pos is not None:
                    state.save(*pos, committed)
            except Exception:  # the original error matters more
                pass
        raise
    with trio.CancelScope(shield=True):
        t0 = trio.current_time()
        await db.flush()
        stats.flush_secs = trio.current_time() - t0
        if state is not None:
            if interrupted:
                if pos is not None:
                    state.save(*pos, committed)
            else:
                state.save(len(opts.files), 0, committed, complete=True)
    return not interrupted


def count_errors(stats, u: Unit, errors) -> None:
    """Count rejected rows (lines) by message, with the first one's place in its file."""
    if not errors:
        return
    msgs: dict[str, list] = {}
    for e in errors:
        msgs.setdefault(e.error_message, []).append(e.line_number)
    for msg, lines in msgs.items():
        if u.lp is not None:
            where = f"{u.path} line {u.first_row + lines[0] - 1}"
        else:
            where = f"{u.path} row {lines[0]}"
        stats.reject(msg, len(lines), where)


def written_values(values: int, sent_points: int, written_points: int) -> int:
    """Values written when the target rejected some rows (proportional: exact when none was)."""
    if written_points == sent_points or not sent_points:
        return values
    return round(values * written_points / sent_points)
