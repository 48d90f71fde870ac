"""The database: recovery, the supervised actors, and the embedded API.

Use it from any trio program::

    async with rusts.open("./data") as db:
        await db.write("cpu,host=a usage=1.5 1700000000000000000")
        rs = await db.query({"measurement": "cpu", "time_range": {"start": 0, "end": 2**62}})
        print(rs.to_rows())

Startup order (supervisor): lock the data directory, load the manifest, the series index and the
schema, open every segment (a corrupt one is quarantined and reported, the rest keep serving),
repair the WAL tail and replay records newer than the manifest's ``flushed_seq`` into the memtable,
then start flusher -> memtable -> WAL writer, each with ``nursery.start``. Shutdown runs the other
way: closing the WAL inbox makes the WAL writer fsync and close, the memtable rotate what it holds,
and the flusher write it out, so a graceful stop leaves the WAL empty of unflushed data.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import trio

from rusts.storage.damage import problems as damage_problems
from rusts.errors import ClosedError, CorruptionError, DataDirLockedError, OverloadedError, QueryError
from rusts.query.executor import ResultSet, Snapshot, execute, select_series
from rusts.memory.tables import MemtableState, Table
from rusts.messages import Reply, run_cpu
from rusts.model import LineError, WriteBatch, parse_series_key
from rusts.query.model import Query, from_json

log = logging.getLogger("rusts.db")

HOUR_NS = 3_600_000_000_000
INLINE_PARSE_BYTES = 128 << 10
#: a write arriving while others queue for the parser, and the last parse waited longer than
#: this, is shed (503 + Retry-After) instead of queued: clients back off rather than time out
PARSE_WAIT_BUDGET_SECS = 2.0
"""Bodies shorter than this are parsed on the event loop (a 78 KB, 384-line fleet report takes
about 2.5 ms); longer ones in a worker thread."""


@attrs.frozen
class WriteResult:
    points: int
    errors: tuple[LineError, ...] = ()


def _is_small(snap: Snapshot, sids: np.ndarray, q: Query) -> bool:
    """Whether a query touches so little data (at most 8 series, 4 segment blocks each way,
    20,000 memtable rows) that running it on the event loop costs less than a thread hop."""
    if len(sids) > 8:
        return False
    if sum(len(c) for parts in snap.memtable.values() for c in parts) > 20_000:
        return False
    blocks = 0
    for r in snap.segments:
        for sid in sids.tolist():
            blocks += r.count_blocks(sid, q.start, q.end)
            if blocks > 4 and not (q.limit is not None and q.limit <= 1000 and not q.is_aggregate):
                return False
    return True


def _frame_keys(frames) -> list[str]:
    """The series keys of ``frames``, in frame order (the memtable's sid order)."""
    if len(frames) == 1:
        return frames[0].keys
    out: list[str] = []
    for f in frames:
        out.extend(f.keys)
    return out


class Database:
    """One open database. Create with :func:`open`; all methods run in the trio loop."""

    def __init__(self, config) -> None:
        self.config = config
        st = config.storage
        self.data_dir = Path(st.data_dir)
        self.wal_dir = Path(st.wal_dir) if st.wal_dir else self.data_dir / "wal"
        self.partition_ns = int(st.partition_duration_hours * HOUR_NS)
        self.state = MemtableState()
        from rusts.memory.recent import RecentData

        self.recent = RecentData(int(config.query.recent_cache_mb) << 20)
        self._tags_cache: dict[str, dict[str, str]] = {}
        self.ready = False
        self.closed = False
        self.started_at = time.time()
        self.problems: list[str] = []
        self.segments = None  # SegmentKeeperClient: the manifest and readers' owner, after recovery
        self.flusher_stats: dict[str, Any] = {}
        self.query_stats = {"count": 0, "errors": 0, "total_ms": 0.0}
        self.write_stats = {"requests": 0, "points": 0, "values": 0, "rejected_lines": 0}
        self._flush_events: dict[int, trio.Event] = {}
        self._lock_fd: int | None = None
        self._wal = None
        self._next_seq = 1
        self._parse_limiter = trio.CapacityLimiter(1)
        self._parse_wait = 0.0  # how long the last large parse waited for the parser
        self.lifecycle = None
        from rusts.actors.query_worker import WorkerStats

        self.worker_stats = WorkerStats()
        self._query_send, self._query_recv = trio.open_memory_channel(4 * max(1, config.query.max_concurrent))
        self._workers_done = trio.Event()
        from rusts.sql.duck import configure

        configure(int(config.query.memory_limit_mb))  # DuckDB's share of the query memory limit
        self._background: trio.Nursery | None = None

    # ------------------------------------------------------------------ recovery (sync, thread)
    def _lock(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.data_dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise DataDirLockedError(
                f"data directory {self.data_dir} is in use by another rusts process") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            finally:
                os.close(self._lock_fd)
                self._lock_fd = None

    def _recover(self) -> None:
        from rusts.storage.index import SeriesIndex
        from rusts.storage.manifest import Manifest
        from rusts.storage.schema import SchemaRegistry
        from rusts.storage.segment import SegmentReader

        self._lock()
        readers: dict[str, Any] = {}  # segment file -> SegmentReader, handed to the keeper
        try:
            self.manifest, problems = Manifest.load(self.data_dir)
            self.problems.extend(problems)
            index_dir = self.data_dir / "index"
            index_dir.mkdir(parents=True, exist_ok=True)
            self.index = SeriesIndex.open(index_dir)
            self.schema = SchemaRegistry.open(index_dir)
            st = self.config.storage  # rusts.security: storage.max_series limits (schema check)
            self.schema.limit_series(self.index, st.max_series, st.max_series_per_measurement)
            for part in (self.index, self.schema):  # damage found (and set aside) on open
                self.problems.extend(getattr(part, "problems", ()))
                if getattr(part, "needs_rebuild", False) and not part.problems and self.manifest.state.segments:
                    self.problems.append(f"{part.path} was missing; rebuilt from the segment files")
            schema_empty = not self.schema.measurements() or getattr(self.schema, "needs_rebuild", False)
            for meta in list(self.manifest.state.segments):
                path = self.data_dir / "segments" / meta.file
                try:
                    r = SegmentReader.open(path)
                except (CorruptionError, OSError) as e:
                    moved = self.manifest.quarantine(meta, str(e))
                    msg = f"segment {meta.file} is corrupt and was quarantined to {moved}: {e}"
                    log.error(msg)
                    self.problems.append(msg)
                    continue
                readers[meta.file] = r
                keys = r.series_keys()
                missing = [(sid, k) for sid, k in keys.items() if self.index.get(k) is None]
                if missing:
                    self.index.ensure(missing)
                if schema_empty:
                    for sid, k in keys.items():
                        m, _ = parse_series_key(k)
                        for f, ft in r.field_types(sid).items():
                            self.schema.ensure(m, f, ft)
            self._replay_wal()
            from rusts.actors.segment_keeper import SegmentKeeper, SegmentKeeperClient
            from rusts.lifecycle.manager import Lifecycle

            keeper = SegmentKeeper(self.manifest, readers, measurement_of=self.index.measurement_of)
            self._keeper_send, self._keeper_recv = trio.open_memory_channel(64)
            self._keeper = keeper
            self.segments = SegmentKeeperClient(self._keeper_send, keeper)

            self.lifecycle = Lifecycle(self)
        except BaseException:
            self._unlock()
            raise

    def _replay_wal(self) -> None:
        st = self.config.storage
        flushed = self.manifest.state.flushed_seq
        last = flushed
        from rusts.storage.wal import has_records

        if st.wal_durability == "none" and not has_records(self.wal_dir):
            self._wal = None
        else:
            from rusts.storage.wal import Wal
            from rusts.storage.walrecord import decode_batch

            wal, report = Wal.open(self.wal_dir, segment_max_bytes=int(st.wal_segment_max_mb) << 20,
                                   quarantine_dir=self.data_dir / "quarantine", expect_from=flushed + 1)
            self._wal = wal
            for path, off in report.torn_tail_truncated:
                self.problems.append(f"WAL {path}: torn tail truncated at offset {off}")
            for item in report.corrupt:
                self.problems.append(f"WAL {item[0]}: corrupt record at offset {item[1]}: {item[2]}")
            replayed = 0
            for seq, payload in wal.replay(flushed):
                try:
                    batch = decode_batch(payload)
                except CorruptionError as e:
                    self.problems.append(f"WAL record {seq} undecodable: {e}")
                    continue
                batch = self.schema.check(batch)
                frames = batch.frames
                sids = self.index.lookup_or_create(_frame_keys(frames))
                self.state.active.insert_frames(frames, sids, seq)
                replayed += batch.point_count
                last = max(last, seq)
                if self.state.active.points >= self.config.storage.memtable.max_points:
                    self.state.rotate()
            last = max(last, wal.last_seq)
            if replayed:
                log.info("replayed %d points from the WAL", replayed)
            if st.wal_durability == "none":  # an earlier run's records replayed; none are logged now
                wal.close()
                self._wal = None
        self._next_seq = last + 1
        # rows already in segments are only readable from segments
        for meta in self.manifest.state.segments:
            self.recent.raise_floor(int(meta.max_time))

    # ------------------------------------------------------------------ flushing
    def _segment_options(self) -> dict:
        st = self.config.storage
        return {"compression": st.compression, "tier": "hot", "block_rows": st.block_rows,
                "block_time_ns": int(st.block_duration_secs) * 10**9 or None}

    def _write_segments(self, parts: dict[int, list]) -> list:
        from rusts.storage.segment import write_segment

        metas = []
        for part, series in sorted(parts.items()):
            rel, path = self.manifest.new_segment_path(part)
            info = write_segment(path, series, **self._segment_options())
            metas.append(self._meta(rel, part, info))
        return metas

    @staticmethod
    def _meta(rel: str, part: int, info):
        from rusts.storage.manifest import SegmentMeta

        return SegmentMeta(file=rel, partition=part, min_time=info.min_time, max_time=info.max_time,
                           size=info.size, series_count=info.series_count,
                           point_count=info.point_count, level=0, tier="hot", created=time.time())

    async def _encode_table(self, table: Table) -> list:
        """Write the segments of a frozen table; returns their manifest entries (not committed).

        Big tables are encoded in the flush worker process (rusts.storage.flushproc), so the encoding
        does not hold this process's GIL; small ones in a worker thread."""
        from rusts.storage import flushproc
        from rusts.memory.sealed import flush_payload, partitions_of

        parts = table.flush_parts()  # (loop thread: queries may seal the table meanwhile)
        if not flushproc.use_process(table.series_chunks, table.points):
            return await run_cpu(lambda: self._write_segments(
                flushproc.write_partitions_parts(flush_payload(parts), self.partition_ns)))

        def work():  # in a worker thread: gather, name the files, encode in the process
            payload = flush_payload(parts)
            names = {p: self.manifest.new_segment_path(p)
                     for p in partitions_of(payload, self.partition_ns)}
            infos = flushproc.run_in_process(payload, self.partition_ns,
                                             {p: path for p, (_, path) in names.items()},
                                             self._segment_options())
            return [self._meta(names[p][0], p, info) for p, info in sorted(infos.items())]

        return await trio.to_thread.run_sync(work)

    async def _write_table(self, table: Table) -> None:
        from rusts.storage.segment import SegmentReader

        metas = await self._encode_table(table)
        # the index log and schema file are fsynced in a worker thread, not on the event loop
        # (index.persist swaps its pending list under a lock; the schema snapshot is taken here)
        schema_snap = self.schema.take_snapshot()
        try:
            await trio.to_thread.run_sync(self.index.persist)
            await trio.to_thread.run_sync(self.schema.write_snapshot, schema_snap)
        except BaseException:
            if schema_snap is not None:
                self.schema._dirty = True
            raise

        # open the new segments before the commit (off the loop: a footer of thousands of
        # series takes tens of ms to read); the keeper publishes them with the commit
        readers = await trio.to_thread.run_sync(
            lambda: [SegmentReader.open(self.manifest.path_of(m)) for m in metas])
        await self.segments.publish(metas, readers, table.last_seq)

    def _on_flushed(self, table_id: int) -> None:
        for t in self.state.immutables:
            if t.id == table_id:
                self.recent.add(t)  # kept in memory for recent-window queries (rusts.memory.recent)
        self.state.drop(table_id)
        ev = self._flush_events.pop(table_id, None)
        if ev is not None:
            ev.set()

    # ------------------------------------------------------------------ actors
    async def _run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        import rusts.protocols.line_protocol  # noqa: F401  (import now, not on the first write)

        from rusts.actors.memtable import FlushRequest, MemtableLimits
        from rusts.actors.wal_writer import WalCheckpoint

        st = self.config.storage
        wal_send, wal_recv = trio.open_memory_channel(1024)
        mem_send, mem_recv = trio.open_memory_channel(1024)
        fl_send, fl_recv = trio.open_memory_channel(float("inf"))
        self._wal_send = wal_send
        self._mem_send = mem_send
        for t in self.state.immutables:  # rotated during replay
            fl_send.send_nowait(FlushRequest(t))

        async def checkpoint(seq: int) -> None:
            try:
                await wal_send.send(WalCheckpoint(seq))
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass

        limits = MemtableLimits(max_bytes=int(st.memtable.max_size_mb * 1024 * 1024),
                                max_points=int(st.memtable.max_points),
                                max_age_secs=float(st.memtable.max_age_secs))

        def resolve(batch: WriteBatch):
            return self.index.lookup_or_create(_frame_keys(batch.frames))

        from rusts.actors.segment_keeper import run_segment_keeper

        async with trio.open_nursery() as outer:
            # the keeper starts first and stops last: it outlives every task that commits
            await outer.start(run_segment_keeper, self._keeper, self._keeper_recv)
            await outer.start(self._run_actors, fl_send, fl_recv, wal_recv, mem_send, mem_recv,
                              checkpoint, limits, resolve)
            task_status.started()

    async def _run_actors(self, fl_send, fl_recv, wal_recv, mem_send, mem_recv, checkpoint, limits,
                          resolve, task_status=trio.TASK_STATUS_IGNORED) -> None:
        from rusts.actors.flusher import run_flusher
        from rusts.actors.memtable import run_memtable
        from rusts.actors.wal_writer import run_wal_writer

        st = self.config.storage
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(lambda task_status: run_flusher(
                    inbox=fl_recv, write_table=lambda t: self._write_table(t), on_flushed=self._on_flushed,
                    checkpoint=checkpoint, stats=self.flusher_stats, task_status=task_status))
                await nursery.start(lambda task_status: run_memtable(
                    self.state, limits=limits, resolve_sids=resolve, inbox=mem_recv, flusher=fl_send,
                    task_status=task_status))
                await nursery.start(lambda task_status: run_wal_writer(
                    self._wal, mode=st.wal_durability, sync_interval_ms=int(st.wal_sync_interval_ms),
                    retention_secs=st.wal_retention_secs, next_seq=self._next_seq, inbox=wal_recv,
                    downstream=mem_send, task_status=task_status))
                await nursery.start(self.lifecycle.run)
                nursery.start_soon(self._run_workers)
                nursery.start_soon(self._warm_up)
                self._background = nursery
                self.ready = True
                task_status.started()
        finally:
            # every task that commits has ended: the segment keeper may stop now
            await self._keeper_send.aclose()

    async def _warm_up(self) -> None:
        """Load DuckDB and the SQL sandbox's list of refused functions in a worker thread at start:
        done by the first SQL statement instead, it held the event loop for about a second."""
        from rusts.security.sandbox import refused_functions

        try:
            await trio.to_thread.run_sync(refused_functions)
        except Exception as e:  # noqa: BLE001 - the first statement will try again and report
            log.warning("SQL warm-up failed: %s", e)

    def spawn_background(self, job) -> None:
        """Run ``await job()`` as a task of the database's supervised nursery (work that
        helps later queries, such as learning a plan template; it must not raise)."""
        if self._background is None or self.closed:
            return
        self._background.start_soon(job)

    async def _run_workers(self) -> None:
        from rusts.actors.query_worker import run_query_workers

        try:
            await run_query_workers(inbox=self._query_recv, handlers=self._query_handlers(),
                                    count=max(1, int(self.config.query.max_concurrent)), stats=self.worker_stats)
        finally:
            self._workers_done.set()

    async def _shutdown(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.ready = False
        with trio.CancelScope(shield=True):
            await self._query_send.aclose()  # queued and running queries finish (bounded)
            with trio.move_on_after(min(10.0, float(self.config.query.timeout_secs))):
                await self._workers_done.wait()
            await self._wal_send.aclose()
            if self.lifecycle is not None:
                await self.lifecycle.close()

    # ------------------------------------------------------------------ public API
    def _check_open(self) -> None:
        if self.closed:
            raise ClosedError("the database is shut down")
        if not self.ready:
            raise ClosedError("the database is starting (recovery in progress); retry shortly")

    async def write(self, data: bytes | str, *, precision: str = "ns",
                    default_time: int | None = None) -> WriteResult:
        """Write line protocol. Returns the points stored and per-line errors (partial write)."""
        from rusts.protocols.line_protocol import line_getter, parse

        self._check_open()
        self._check_overload()
        body = data.encode() if isinstance(data, str) else bytes(data)
        if len(body) < INLINE_PARSE_BYTES:
            # a few ms at most: cheaper here than a thread hop, which under load waits for the
            # GIL twice (going and coming back), up to the 5 ms switch interval each
            batch = parse(body, precision=precision, default_time=default_time,
                          max_line_bytes=self.config.server.max_line_bytes)
        else:
            # one parse at a time: the parser is mostly Python, so concurrent parses only contend
            # for the GIL (measured: 4 parallel parses were slower than 1)
            if self._parse_wait > PARSE_WAIT_BUDGET_SECS and self._parse_limiter.statistics().tasks_waiting:
                raise OverloadedError("writes are queued for the parser: the server is behind; retry later")
            queued = time.monotonic()

            def job():
                self._parse_wait = time.monotonic() - queued
                return parse(body, precision=precision, default_time=default_time,
                             max_line_bytes=self.config.server.max_line_bytes)

            batch = await trio.to_thread.run_sync(job, limiter=self._parse_limiter)
        return await self.write_batch(batch, line_getter(body))

    def _check_overload(self) -> None:
        hard = int(self.config.storage.memtable.hard_limit_mb) * 1024 * 1024
        if self.state.total_bytes > hard:
            raise OverloadedError("memtable is over its hard limit while the flusher catches up; retry later",
                                  retry_after=1.0)

    async def write_batch(self, batch: WriteBatch,
                          original_line: Callable[[int], str] | None = None,
                          wal_payload: bytes | None = None) -> WriteResult:
        """Write a parsed, columnar batch (schema-checked here). ``wal_payload``: the batch's
        WAL encoding when the caller has it (a cluster shard applying its stream), kept when
        the schema check keeps the batch unchanged."""
        from rusts.actors.wal_writer import WalAppend

        self._check_open()
        given = batch
        batch = self.schema.check(batch, original_line)
        if batch is not given:
            wal_payload = None
        self.write_stats["requests"] += 1
        self.write_stats["rejected_lines"] += len(batch.errors)
        if batch.point_count:
            sids = self.index.lookup_or_create(_frame_keys(batch.frames))
            if self._wal is not None and wal_payload is not None:
                payload = wal_payload
            elif self._wal is not None:
                from rusts.storage.walrecord import encode_batch
                payload = encode_batch(batch) if batch.point_count < 2000 else await run_cpu(encode_batch, batch)
            else:
                payload = b""
            reply = Reply()
            try:
                await self._wal_send.send(WalAppend(batch, payload, reply, sids))
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                raise ClosedError("the database is shutting down") from None
            await reply.wait()
            self.write_stats["points"] += batch.point_count
            self.write_stats["values"] += batch.value_count
        return WriteResult(batch.point_count, tuple(batch.errors))

    @property
    def readers(self):
        """The open segment readers by file (read-only; owned by the segment keeper)."""
        return self.segments.view.readers

    def _reader(self, view, meta):
        r = view.readers.get(meta.file)
        if r is None:  # the keeper could not open it (logged): this query meets the error
            from rusts.storage.segment import SegmentReader

            r = SegmentReader.open(self.manifest.path_of(meta))
        return r

    def snapshot(self, sids: np.ndarray, start: int, end: int) -> Snapshot:
        """Consistent read view, taken synchronously (no await) in the loop: segments in age
        order (older first, so newer writes win), their lifecycle sequences, live tombstones.
        The segments and their readers come from one :class:`SegmentView` of the keeper."""
        view = self.segments.view
        ls, stones = self.lifecycle.state(view.state)
        segs, seqs = [], []
        for meta in ls.age_order(view.state.segments):
            if meta.max_time < start or meta.min_time >= end:
                continue
            segs.append(self._reader(view, meta))
            seqs.append(ls.seq_of(meta))
        return Snapshot(tuple(segs), self._memtable_snapshot(sids), tuple(seqs), stones)

    def _memtable_snapshot(self, sids: np.ndarray) -> dict:
        """Memtable rows per series. For a few series of one measurement (a one-device trend)
        they come from the tables' columnar pieces (rusts.memory.recent), so a query does not pay for
        per-series views of every series written since the previous query."""
        if 0 < len(sids) <= 16:
            try:
                ms = {self.index.measurement_of(int(s)) for s in sids.tolist()}
            except KeyError:
                ms = set()
            if len(ms) == 1:
                from rusts.memory.recent import memtable_rowsets

                m = ms.pop()
                return memtable_rowsets(self.recent, self.state.tables(), m, sids, self.schema.fields(m))
        return self.state.snapshot(sids)

    def tags_map(self, sids: np.ndarray) -> dict[int, dict[str, str]]:
        """Tag dict of every series id (shared, read-only dicts, memoised by series key)."""
        cache = self._tags_cache
        key_of = self.index.key_of
        out = {}
        for s in sids.tolist():
            k = key_of(s)
            t = cache.get(k)
            if t is None:
                if len(cache) >= 1_000_000:
                    cache.clear()
                t = cache[k] = dict(self.index.tags_of(s))
            out[s] = t
        return out

    # ------------------------------------------------------------------ queries (adapters)
    def _ask(self, make):
        from rusts.actors.query_worker import ask

        self._check_open()
        qc = self.config.query
        return ask(self._query_send, make, float(qc.timeout_secs), int(qc.memory_limit_mb) << 20)

    async def query(self, q: Query | dict) -> ResultSet:
        """Run a JSON-API query (dict) or a :class:`Query`; returns a columnar :class:`ResultSet`.
        Answered by a query worker under ``query.timeout_secs``."""
        from rusts.actors.query_worker import JsonQuery

        return await self._ask(lambda reply, ctl: JsonQuery(q, reply, ctl))

    async def sql(self, text: str, params=None, *, extra_tables=None, route: str = "auto",
                  now_ns: int | None = None):
        """Run one SQL statement (see :func:`rusts.sql.runner.execute_sql`); returns its
        :class:`~rusts.sql.output.SqlOutput`. Answered by a query worker."""
        from rusts.actors.query_worker import SqlStatement

        return await self._ask(lambda reply, ctl: SqlStatement(text, params, reply, ctl, extra_tables, route, now_ns))

    async def describe_sql(self, text: str, *, extra_tables=None):
        """Parameter count and result columns of a statement (pgwire Describe)."""
        from rusts.actors.query_worker import DescribeSql

        return await self._ask(lambda reply, ctl: DescribeSql(text, reply, ctl, extra_tables))

    # ------------------------------------------------------------------ queries (in a worker)
    def _query_handlers(self) -> dict:
        from rusts.actors.query_worker import DescribeSql, JsonQuery, SqlStatement
        from rusts.sql import runner

        max_rows = int(self.config.query.max_rows)

        def bounded(answer):
            if len(answer) > max_rows:
                from rusts.errors import QueryLimitError

                raise QueryLimitError(f"query answer has {len(answer)} rows, more than query.max_rows "
                                      f"({max_rows}): add a LIMIT, narrow the range or aggregate")
            return answer

        async def json_query(req):
            return bounded(await self.run_query(req.query))

        async def sql_statement(req):
            return bounded(await runner.execute_sql(self, req.text, req.params, extra_tables=req.extra_tables,
                                                    now_ns=req.now_ns, route=req.route))

        async def describe(req):
            return await runner.describe_sql(self, req.text, extra_tables=req.extra_tables)

        return {JsonQuery: json_query, SqlStatement: sql_statement, DescribeSql: describe}

    async def run_query(self, q: Query | dict) -> ResultSet:
        """Answer a JSON-API query here (in the calling task: a query worker, or the SQL layer
        running in one). Adapters call :meth:`query`."""
        from rusts.query.control import offload

        if not isinstance(q, Query):
            q = from_json(q)
        t0 = time.perf_counter()
        if self.lifecycle is not None:  # retention: expired rows vanish from answers at once
            from rusts.lifecycle.policies import query_start

            start = query_start(q.start, q.measurement, self.lifecycle.cutoffs())
            if start != q.start:
                q = attrs.evolve(q, start=start, end=max(q.end, start))
        try:
            sids = select_series(self.index, q)
            field_types = self.schema.fields(q.measurement)
            snap = self.snapshot(sids, q.start, q.end)
            tags = self.tags_map(sids)
            from rusts.query.executor import _check_agg_types
            from rusts.query import vector_route
            from rusts.sql.vector import fits_one_series, one_series, seen_buckets

            small = _is_small(snap, sids, q)
            # one series' buckets: they cut through blocks, so the executor would decode them
            # all; the vector path's one-series lane does the same with less overhead
            if q.interval is not None and q.aggregations and fits_one_series(q, sids) \
                    and all(a.field is None or a.field in field_types for a in q.aggregations) and small:
                _check_agg_types(q, field_types)  # the executor's errors, word for word
                rs = seen_buckets(q, one_series(snap, q, int(sids[0]), field_types))
            elif vector_route.covers(q, field_types):
                _check_agg_types(q, field_types)
                rs = await offload(lambda: vector_route.json_answer(snap, q, sids, tags.__getitem__, field_types),
                                   small=small)
            else:
                # a few blocks of a few series run inline: cheaper than the hop to a thread
                rs = await offload(lambda: execute(snap, q, sids, tags.__getitem__, field_types), small=small)
        except QueryError:
            self.query_stats["errors"] += 1
            raise
        self.query_stats["count"] += 1
        self.query_stats["total_ms"] += (time.perf_counter() - t0) * 1000
        return rs

    async def flush(self) -> None:
        """Rotate the active memtable and wait until everything in memory is in segments."""
        from rusts.actors.memtable import ForceRotate

        self._check_open()
        reply = Reply()
        await self._mem_send.send(ForceRotate(reply))
        await reply.wait()
        # _on_flushed drops a table from immutables and fires its event in one synchronous step,
        # so every table still listed here will fire the event registered now.
        events = [self._flush_events.setdefault(t.id, trio.Event()) for t in self.state.immutables]
        for ev in events:
            await ev.wait()

    async def delete(self, measurement: str, start: int = -(2**63), end: int = 2**63 - 1,
                     tag_filters=(), field_predicates=()) -> dict:
        """Delete matching points (tombstone now, physical removal at compaction)."""
        self._check_open()
        self._recent_barrier()
        return await self.lifecycle.delete(measurement, start, end, tuple(tag_filters), tuple(field_predicates))

    def _recent_barrier(self) -> None:
        """Rows in memory right now may be deleted: none of them serves the in-memory read path
        once flushed (rusts.memory.recent)."""
        live = self.state.tables()
        self.recent.barrier(max([t.last_seq for t in live] + [self._next_seq]), live)

    async def drop_measurement(self, measurement: str) -> dict:
        """Drop a measurement: its points, series and schema."""
        self._check_open()
        self._recent_barrier()
        return await self.lifecycle.drop_measurement(measurement)

    def health(self) -> dict:
        """``{"status": "healthy"}``, or ``"degraded"`` with the reasons while every query worker
        is busy or every CPU worker thread is taken (by queries that run, or were cancelled and
        have not stopped yet)."""
        from rusts.messages import cpu_limiter
        from rusts.query.control import busy_threads

        ws = self.worker_stats
        reasons = []
        if ws.workers and ws.busy >= ws.workers:
            reasons.append(f"all {ws.workers} query workers are busy")
        lim = cpu_limiter()
        if lim.available_tokens == 0 and busy_threads():
            reasons.append(f"all {int(lim.total_tokens)} CPU worker threads are busy "
                           f"({busy_threads()} running queries)")
        if not reasons:
            return {"status": "healthy"}
        return {"status": "degraded", "reasons": reasons, "query_workers": ws.to_json()}

    def measurements(self) -> list[str]:
        return sorted(self.index.measurements())

    def statistics(self) -> dict:
        if not hasattr(self, "manifest") or not hasattr(self, "_wal_send"):
            return {"ready": False, "problems": list(self.problems),
                    "uptime_secs": round(time.time() - self.started_at, 3)}
        segs = self.segments.view.state.segments
        parts: dict[int, dict] = {}
        for m in segs:
            p = parts.setdefault(m.partition, {"partition": m.partition, "segments": 0, "bytes": 0,
                                               "points": 0, "min_time": m.min_time, "max_time": m.max_time})
            p["segments"] += 1
            p["bytes"] += m.size
            p["points"] += m.point_count
            p["min_time"] = min(p["min_time"], m.min_time)
            p["max_time"] = max(p["max_time"], m.max_time)
        tiers: dict[str, int] = {}
        for m in segs:
            tiers[m.tier] = tiers.get(m.tier, 0) + m.size
        wal = self._wal.statistics() if self._wal is not None else {"mode": "none"}
        qs = dict(self.query_stats)
        qs["mean_ms"] = round(qs["total_ms"] / qs["count"], 3) if qs["count"] else 0.0
        return {
            "memtable": self.state.statistics(),
            "wal": {"durability": self.config.storage.wal_durability, **wal},
            "segments": {"count": len(segs), "bytes": sum(m.size for m in segs),
                         "points": sum(m.point_count for m in segs), "bytes_per_tier": tiers},
            "partitions": sorted(parts.values(), key=lambda p: p["partition"]),
            "series": {"count": self.index.series_count, "measurements": len(self.index.measurements())},
            "writes": dict(self.write_stats),
            "flusher": dict(self.flusher_stats),
            "queries": {**qs, "workers": self.worker_stats.to_json()},
            "lifecycle": self.lifecycle.statistics() if self.lifecycle is not None else {},
            "problems": list(self.problems) + damage_problems(self.readers.values()),
            "uptime_secs": round(time.time() - self.started_at, 3),
        }


def _make_config(data_dir, config, overrides: dict):
    from rusts.config import Config

    cfg = config if config is not None else Config()
    st = cfg.storage
    changes = {}
    if data_dir is not None:
        changes["data_dir"] = str(data_dir)
    mem_changes = {k[len("memtable_"):]: v for k, v in overrides.items() if k.startswith("memtable_")}
    for k, v in overrides.items():
        if not k.startswith("memtable_"):
            changes[k] = v
    if mem_changes:
        changes["memtable"] = attrs.evolve(st.memtable, **mem_changes)
    if changes:
        cfg = attrs.evolve(cfg, storage=attrs.evolve(st, **changes))
    return cfg


@asynccontextmanager
async def running(db: Database):
    """Recover ``db`` and run its actors for the duration of the ``async with``."""
    await trio.to_thread.run_sync(db._recover)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(db._run)
            try:
                yield db
            finally:
                await db._shutdown()
    finally:
        db._unlock()


@asynccontextmanager
async def open(data_dir: str | os.PathLike | None = None, *, config=None, **storage_overrides):
    """Open (recover) a database and run its actors for the duration of the ``async with``.

    ``storage_overrides`` set ``storage`` keys, e.g. ``wal_durability="every_write"``, or memtable
    keys with a ``memtable_`` prefix (``memtable_max_points=1000``).
    """
    cfg = _make_config(data_dir, config, storage_overrides)
    async with running(Database(cfg)) as db:
        yield db
