"""The Database's side of the data lifecycle: compaction and tiering tasks, the retention sweep,
deletes by predicate and dropping measurements (design: docs/lifecycle.md).

This module decides what to do; it never changes the manifest or the readers itself. Every
commit is a message to the segment keeper (:mod:`rusts.actors.segment_keeper`), which applies
commits one at a time and derives the new lifecycle state from the state it owns.
"""

from __future__ import annotations

import logging
import time

import trio

from rusts.lifecycle.compaction import plan
from rusts.errors import QueryError
from rusts.query.model import Aggregation, AggFunc, Query, TagFilter
from rusts.lifecycle.policies import PolicyStore, cold_after_ns, cutoffs, expired_partitions
from rusts.lifecycle.tombstones import LifecycleState, TombstoneSet, field_predicate_json

log = logging.getLogger("rusts.lifecycle")

HOUR_NS = 3_600_000_000_000


class Lifecycle:
    """Compaction, tiering, retention and deletes for one Database."""

    def __init__(self, db, *, max_segments: int = 4, compaction_interval_secs: float = 10.0,
                 retention_interval_secs: float = 60.0) -> None:
        self.db = db
        self.max_segments = max_segments
        self.compaction_interval_secs = compaction_interval_secs
        self.retention_interval_secs = retention_interval_secs
        self.policies = PolicyStore.open(db.data_dir, db.config.retention_policies)
        self.compaction_stats: dict = {}
        self.retention_stats: dict = {"runs": 0, "last_run_at": None, "partitions_dropped": 0}
        self.delete_stats: dict = {"deletes": 0, "points_deleted": 0, "measurements_dropped": 0}
        self._compact_send: trio.MemorySendChannel | None = None
        self._sweep_send: trio.MemorySendChannel | None = None
        self._cache: tuple[int, LifecycleState, TombstoneSet | None] | None = None

    # ------------------------------------------------------------------ state
    def state(self, st=None) -> tuple[LifecycleState, TombstoneSet | None]:
        """Lifecycle state of manifest state ``st`` (default: the keeper's current view), cached
        per version."""
        st = self.db.segments.view.state if st is None else st
        if self._cache is None or self._cache[0] != st.version:
            ls = LifecycleState.from_extra(st.extra)
            self._cache = (st.version, ls, TombstoneSet(ls.tombstones) if ls.tombstones else None)
        return self._cache[1], self._cache[2]

    def cutoffs(self, now_ns: int | None = None) -> dict[str, int]:
        pols = self.policies.list()
        if not pols:  # nothing expires (asked by every query)
            return {}
        now = time.time_ns() if now_ns is None else now_ns
        return cutoffs(pols, now, self.db.measurements())

    def cold_after(self) -> int | None:
        h = self.db.config.storage.cold_after_hours
        return cold_after_ns(self.policies.list(), int(h * HOUR_NS) if h else None)

    # ------------------------------------------------------------------ compaction
    def plan(self, metas, now_ns: int | None = None):
        ls, _ = self.state()
        return plan(metas, now_ns=time.time_ns() if now_ns is None else now_ns,
                    partition_ns=self.db.partition_ns, max_segments=self.max_segments,
                    cold_after_ns=self.cold_after(), tombstones=ls.tombstones, seq_of=ls.seq_of,
                    retention_cutoffs=self.cutoffs(now_ns),
                    cold_idle_secs=self.db.config.storage.cold_idle_secs)

    async def execute(self, task):
        """Run one compaction task: big ones are merged and encoded in the worker process,
        outside the keeper (flushes keep committing, the event loop keeps the GIL), then committed
        by the keeper, which re-checks the inputs and the tombstones; small ones are run by the
        keeper itself."""
        db = self.db
        st = db.config.storage
        cuts = self.cutoffs()
        block_time_ns = int(st.block_duration_secs) * 10**9 or None
        result, seen = None, ()
        if self._use_worker(task):
            from rusts.storage import flushproc
            from rusts.lifecycle.compaction import compact_files

            ls, _ = self.state()
            seen = ls.tombstones
            paths = [str(db.manifest.path_of(m)) for m in task.inputs]
            out = db.manifest.new_segment_path(task.partition)
            kwargs = dict(tier=task.tier, compression=st.compression, block_rows=st.block_rows,
                          tombstones=ls.tombstones if task.whole else (), retention_cutoffs=cuts,
                          reader_seqs=[ls.seq_of(m) for m in task.inputs], block_time_ns=block_time_ns)
            result = await trio.to_thread.run_sync(lambda: flushproc.call_in_process(
                "compact", (paths, out, kwargs), lambda: compact_files(paths, out, **kwargs)))
        return await db.segments.replace(task, result, seen=seen, retention_cutoffs=cuts,
                                         compression=st.compression, block_rows=st.block_rows,
                                         block_time_ns=block_time_ns)

    def _use_worker(self, task) -> bool:
        """Compactions of many series or many points go to the worker process, where their
        Python work does not hold this process's GIL (``RUSTS_FLUSH_PROCESS`` applies)."""
        from rusts.storage import flushproc

        series = sum(int(m.series_count) for m in task.inputs)
        points = sum(int(m.point_count) for m in task.inputs)
        # in a thread, a compaction's Python work holds the GIL against the queries' worker
        # threads, and every GIL handoff of a query's many small numpy steps can wait the 5 ms
        # switch interval: a 30 ms query took 270 ms while 30 small partitions were merged
        return flushproc.use_process(max(series, flushproc.PROCESS_MIN_SERIES if points >= 20_000 else 0))

    def poke_compactor(self) -> None:
        from rusts.actors.compactor import CompactNow
        from rusts.messages import Reply

        if self._compact_send is not None:
            try:
                self._compact_send.send_nowait(CompactNow(Reply()))
            except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                pass

    async def compact_now(self) -> dict:
        """Run a compaction pass now and wait for it: the pass in flight (if any) ends first.
        Returns the pass summary (``tasks``, ``failed``, ``backlog``)."""
        from rusts.actors.compactor import CompactNow
        from rusts.errors import ClosedError
        from rusts.messages import Reply

        reply = Reply()
        try:
            await self._compact_send.send(CompactNow(reply))
        except (AttributeError, trio.ClosedResourceError, trio.BrokenResourceError):
            raise ClosedError("the compactor is not running") from None
        return await reply.wait()

    def poke_sweeper(self) -> None:
        from rusts.actors.retention import SweepNow
        from rusts.messages import Reply

        if self._sweep_send is not None:
            try:
                self._sweep_send.send_nowait(SweepNow(Reply()))
            except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                pass

    # ------------------------------------------------------------------ retention
    async def sweep(self) -> int:
        db = self.db
        gone = expired_partitions(db.segments.view.state.segments, self.cutoffs())
        if gone:
            self.retention_stats["partitions_dropped"] += await db.segments.drop(gone)
        self.retention_stats["runs"] += 1
        self.retention_stats["last_run_at"] = time.time()
        self.poke_compactor()  # partly expired partitions are rewritten by compaction
        return len(gone)

    # ------------------------------------------------------------------ deletes
    async def delete(self, measurement: str, start: int, end: int, tag_filters: tuple[TagFilter, ...] = (),
                     field_predicates: tuple = ()) -> dict:
        """Delete the matching points that exist now; visible at once, physical at compaction."""
        from rusts.query.executor import select_series

        db = self.db
        if end <= start:
            raise QueryError("delete: the time range is empty (end must be after start)")
        pred = field_predicate_json(field_predicates) if field_predicates else None
        count = None
        if pred is None:
            q = Query(measurement, start, end, tag_filters, None, (Aggregation(AggFunc.Count),))
            rows = (await db.run_query(q)).to_rows()
            count = int(rows[0]["fields"].get("count") or 0) if rows else 0
        await db.flush()  # every matching point is in a segment older than the tombstone
        series = None
        if tag_filters:
            series = select_series(db.index, Query(measurement, start, end, tag_filters)).tolist()
            if not series:
                return {"measurement": measurement, "points_deleted": 0, "tombstone_id": None}
        stone = await db.segments.tombstone(measurement, start, end, series=series, field_predicate=pred)
        self.delete_stats["deletes"] += 1
        if count:
            self.delete_stats["points_deleted"] += count
        self.poke_compactor()
        return {"measurement": measurement, "points_deleted": count, "tombstone_id": stone.id}

    async def drop_measurement(self, measurement: str) -> dict:
        """DROP TABLE: every point of the measurement, its series and its schema."""
        db = self.db
        if measurement not in db.measurements():
            from rusts.errors import UnknownTableError
            raise UnknownTableError(f'relation "{measurement}" does not exist')
        out = await self.delete(measurement, -(2**63), 2**63 - 1)
        db.index.drop_measurement(measurement)
        db.schema.drop_measurement(measurement)
        db.index.persist()
        db.schema.persist()
        self.delete_stats["measurements_dropped"] += 1
        return out

    # ------------------------------------------------------------------ actors
    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        from rusts.actors.compactor import run_compactor
        from rusts.actors.retention import run_retention_sweeper

        c_send, c_recv = trio.open_memory_channel(16)
        s_send, s_recv = trio.open_memory_channel(16)
        self._compact_send, self._sweep_send = c_send, s_send
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: run_compactor(
                interval_secs=self.compaction_interval_secs, get_metas=lambda: self.db.segments.view.state.segments,
                plan_fn=self.plan, execute_task=self.execute, inbox=c_recv, stats=self.compaction_stats,
                task_status=task_status))
            await nursery.start(lambda task_status: run_retention_sweeper(
                interval_secs=self.retention_interval_secs, sweep=self.sweep, inbox=s_recv,
                stats=self.retention_stats, task_status=task_status))
            task_status.started()

    async def close(self) -> None:
        """Stop the compactor and the sweeper (each returns when its inbox closes)."""
        for ch in (self._compact_send, self._sweep_send):
            if ch is not None:
                await ch.aclose()

    def statistics(self) -> dict:
        ls, stones = self.state()
        return {"compaction": dict(self.compaction_stats), "retention": dict(self.retention_stats),
                "deletes": {**self.delete_stats, "tombstones": len(ls.tombstones)},
                "retention_policies": self.policies.to_json()}
