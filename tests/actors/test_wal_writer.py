"""The WAL writer actor: group commit, ordering, durability modes, checkpoints, failures."""

from __future__ import annotations

import errno
import pathlib

import numpy as np
import pytest
import trio
import trio.testing

from rusts.actors.wal_writer import (PROBE_INTERVAL, MemtableInsert, WalAppend, WalCheckpoint,
                                     WalStats, WalSync, run_wal_writer)
from rusts.errors import ClosedError, ConfigError, DiskFullError, StorageError
from rusts.messages import Reply
from rusts.model import Column, FieldType, SeriesRows, WriteBatch
from rusts.storage.wal import FileOps, Wal
from rusts.storage.walrecord import decode_batch, encode_batch


class RecordingWal(Wal):
    """A real Wal that logs its calls (from the worker thread) into ``events``."""

    events: list

    def append(self, payloads):
        last = super().append(payloads)
        self.events.append(("append", len(payloads)))
        return last

    def sync(self):
        super().sync()
        self.events.append(("sync",))


def open_wal(path, **kw) -> RecordingWal:
    wal, _ = RecordingWal.open(path, **kw)
    wal.events = []
    return wal


def batch(i: int) -> WriteBatch:
    s = SeriesRows("m", (("k", str(i)),), np.array([i], dtype=np.int64),
                   {"v": Column(FieldType.FLOAT, np.array([float(i)]))}, np.array([1]))
    return WriteBatch((s,))


def append_msg(i: int) -> WalAppend:
    b = batch(i)
    return WalAppend(b, encode_batch(b), Reply())


async def memtable(recv, got: list, events: list | None = None) -> None:
    """Stand-in for the memtable: records inserts and resolves the writers' replies."""
    async with recv:
        async for m in recv:
            assert isinstance(m, MemtableInsert)
            if events is not None:
                events.append(("forward", m.seq))
            got.append(m)
            m.reply.set(m.seq)


async def ask(send, cls):
    r = Reply()
    await send.send(cls(r))
    return await r.wait()


@pytest.mark.parametrize("mode", ["every_write", "periodic", "os_default"])
async def test_group_commit_one_write_and_ordering(tmp_path: pathlib.Path, mode: str) -> None:
    wal = open_wal(tmp_path)
    send, recv = trio.open_memory_channel(100)
    down_send, down_recv = trio.open_memory_channel(100)
    msgs = [append_msg(i) for i in range(50)]
    for m in msgs:
        send.send_nowait(m)  # all queued before the actor starts: one group
    got: list[MemtableInsert] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(memtable, down_recv, got, wal.events)
        await nursery.start(lambda task_status: run_wal_writer(
            wal, mode=mode, sync_interval_ms=60_000, retention_secs=None, next_seq=1,
            inbox=recv, downstream=down_send, task_status=task_status))
        seqs = [await m.reply.wait() for m in msgs]
        assert seqs == list(range(1, 51))
        stats = await ask(send, WalStats)
        assert stats["max_group"] == 50 and stats["groups"] == 1
        await send.aclose()
    assert [m.seq for m in got] == seqs
    assert [m.batch for m in got] == [m.batch for m in msgs]
    writes = [e for e in wal.events if e[0] == "append"]
    assert writes == [("append", 50)]
    forwards_before_shutdown = wal.events[:wal.events.index(("forward", 50)) + 1]
    syncs_before = forwards_before_shutdown.count(("sync",))
    if mode == "every_write":  # fsynced once, before anything was forwarded
        assert wal.events[:2] == [("append", 50), ("sync",)] and syncs_before == 1
    else:  # forwarded right after write(); the only fsync is the final one
        assert wal.events[1] == ("forward", 1) and syncs_before == 0
    assert wal.events[-1] == ("sync",)  # shutdown fsync
    wal2, report = Wal.open(tmp_path)
    assert report.records == 50
    replayed = [decode_batch(p).series[0].tags for _, p in wal2.replay()]
    assert replayed == [(("k", str(i)),) for i in range(50)]
    wal2.close()


class SignallingWal(RecordingWal):
    """Sets a trio event from the worker thread after each successful sync."""

    synced: trio.Event

    def sync(self):
        super().sync()
        trio.from_thread.run_sync(self.synced.set)


async def test_periodic_fsync_timer(tmp_path: pathlib.Path, autojump_clock) -> None:
    # Autojump treats a task waiting for a worker thread as blocked, so virtual time may run on
    # while a write is in its thread; the test therefore waits on events, not on timers, and
    # measures from the ack.
    wal, _ = SignallingWal.open(tmp_path)
    wal.events = []
    wal.synced = trio.Event()
    send, recv = trio.open_memory_channel(10)
    down_send, down_recv = trio.open_memory_channel(10)
    got: list = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(memtable, down_recv, got)
        await nursery.start(lambda task_status: run_wal_writer(
            wal, mode="periodic", sync_interval_ms=1000, retention_secs=None, next_seq=1,
            inbox=recv, downstream=down_send, task_status=task_status))
        m = append_msg(1)
        await send.send(m)
        assert await m.reply.wait() == 1
        t0 = trio.current_time()
        assert ("sync",) not in wal.events  # acked before any fsync
        await wal.synced.wait()
        assert trio.current_time() - t0 <= 1.0  # on the next tick
        wal.synced = trio.Event()
        await trio.sleep(10)  # nothing written since: no more fsyncs
        assert wal.events.count(("sync",)) == 1
        m = append_msg(2)
        await send.send(m)
        await m.reply.wait()
        t1 = trio.current_time()
        await wal.synced.wait()
        assert trio.current_time() - t1 <= 1.0
        assert wal.events.count(("sync",)) == 2
        await send.aclose()


async def test_mode_none_assigns_seqs_without_a_file(tmp_path: pathlib.Path) -> None:
    send, recv = trio.open_memory_channel(10)
    down_send, down_recv = trio.open_memory_channel(10)
    got: list = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(memtable, down_recv, got)
        await nursery.start(lambda task_status: run_wal_writer(
            None, mode="none", sync_interval_ms=0, retention_secs=None, next_seq=100,
            inbox=recv, downstream=down_send, task_status=task_status))
        msgs = [append_msg(i) for i in range(3)]
        for m in msgs:
            await send.send(m)
        assert [await m.reply.wait() for m in msgs] == [100, 101, 102]
        assert await ask(send, WalSync) == 102
        await send.aclose()
    assert list(tmp_path.iterdir()) == []


async def test_sync_after_appends_in_the_same_group_covers_them(tmp_path) -> None:
    wal = open_wal(tmp_path)
    send, recv = trio.open_memory_channel(10)
    down_send, down_recv = trio.open_memory_channel(10)
    a, b = append_msg(1), append_msg(2)
    r = Reply()
    for m in (a, WalSync(r), b):
        send.send_nowait(m)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(memtable, down_recv, [])
        await nursery.start(lambda task_status: run_wal_writer(
            wal, mode="os_default", sync_interval_ms=0, retention_secs=None, next_seq=1,
            inbox=recv, downstream=down_send, task_status=task_status))
        assert await r.wait() == 1  # the append queued before the sync is durable
        assert await b.reply.wait() == 2
        await send.aclose()
    assert wal.events[:3] == [("append", 1), ("sync",), ("append", 1)]


async def test_next_seq_ahead_of_the_wal_advances_it(tmp_path: pathlib.Path) -> None:
    wal = open_wal(tmp_path)
    send, recv = trio.open_memory_channel(10)
    down_send, down_recv = trio.open_memory_channel(10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(memtable, down_recv, [])
        await nursery.start(lambda task_status: run_wal_writer(
            wal, mode="every_write", sync_interval_ms=0, retention_secs=None, next_seq=500,
            inbox=recv, downstream=down_send, task_status=task_status))
        m = append_msg(1)
        await send.send(m)
        assert await m.reply.wait() == 500
        await send.aclose()


async def test_checkpoint_deletes_covered_segments(tmp_path: pathlib.Path) -> None:
    wal = open_wal(tmp_path, segment_max_bytes=200)
    send, recv = trio.open_memory_channel(10)
    down_send, down_recv = trio.open_memory_channel(10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(memtable, down_recv, [])
        await nursery.start(lambda task_status: run_wal_writer(
            wal, mode="every_write", sync_interval_ms=0, retention_secs=0, next_seq=1,
            inbox=recv, downstream=down_send, task_status=task_status))
        for i in range(6):  # 120-byte records in 200-byte segments: one segment each
            m = append_msg(i)
            await send.send(m)
            await m.reply.wait()
        files = sorted(tmp_path.glob("*.wal"))
        assert len(files) == 6
        await send.send(WalCheckpoint(4))
        stats = await ask(send, WalStats)  # processed in order: the checkpoint is done
        assert stats["segments_removed"] == 4
        assert sorted(tmp_path.glob("*.wal")) == files[4:]
        await send.aclose()


class FailingSyncWal:
    """A fake Wal: appends work, every sync raises (think EIO)."""

    def __init__(self) -> None:
        self.last_seq = 0
        self.appends = 0
        self.syncs = 0
        self.closed = False

    def append(self, payloads):
        self.appends += 1
        self.last_seq += len(payloads)
        return self.last_seq

    def sync(self):
        self.syncs += 1
        raise OSError(errno.EIO, "injected EIO")

    def advance(self, next_seq):
        self.last_seq = max(self.last_seq, next_seq - 1)

    def statistics(self):
        return {"last_seq": self.last_seq}

    def close(self):
        self.closed = True


async def test_fsync_failure_fails_the_group_and_every_later_write() -> None:
    wal = FailingSyncWal()
    send, recv = trio.open_memory_channel(10)
    down_send, down_recv = trio.open_memory_channel(10)
    got: list = []
    first = [append_msg(i) for i in range(3)]
    for m in first:
        send.send_nowait(m)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(memtable, down_recv, got)
        await nursery.start(lambda task_status: run_wal_writer(
            wal, mode="every_write", sync_interval_ms=0, retention_secs=None, next_seq=1,
            inbox=recv, downstream=down_send, task_status=task_status))
        for m in first:
            with pytest.raises(StorageError):
                await m.reply.wait()
        later = append_msg(9)
        await send.send(later)
        with pytest.raises(StorageError):
            await later.reply.wait()
        with pytest.raises(StorageError):
            await ask(send, WalSync)
        stats = await ask(send, WalStats)
        assert stats["failed"] and stats["rejected"] == 4
        await send.aclose()
    assert got == []  # nothing was ever forwarded (so never acked)
    assert wal.appends == 1 and wal.syncs == 1  # no retry of the fsync, not even at shutdown
    assert wal.closed


async def test_periodic_fsync_failure_poisons_later_writes(autojump_clock) -> None:
    wal = FailingSyncWal()
    send, recv = trio.open_memory_channel(10)
    down_send, down_recv = trio.open_memory_channel(10)
    got: list = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(memtable, down_recv, got)
        await nursery.start(lambda task_status: run_wal_writer(
            wal, mode="periodic", sync_interval_ms=100, retention_secs=None, next_seq=1,
            inbox=recv, downstream=down_send, task_status=task_status))
        m = append_msg(1)
        await send.send(m)
        assert await m.reply.wait() == 1  # periodic: acked after write()
        while not (await ask(send, WalStats))["failed"]:  # the background fsync fails
            await trio.sleep(0.05)
        assert wal.syncs == 1
        m2 = append_msg(2)
        await send.send(m2)
        with pytest.raises(StorageError):
            await m2.reply.wait()
        await send.aclose()
    assert [x.seq for x in got] == [1]


def stats_of(wal: Wal) -> dict:
    return wal.statistics()


async def test_failed_write_rejects_only_its_group(tmp_path: pathlib.Path) -> None:
    class NoSpaceOnce(FileOps):
        armed = False

        def write(self, fd, data):
            if NoSpaceOnce.armed:
                NoSpaceOnce.armed = False
                raise OSError(errno.ENOSPC, "injected ENOSPC")
            return super().write(fd, data)

    wal, _ = Wal.open(tmp_path, ops=NoSpaceOnce())
    send, recv = trio.open_memory_channel(10)
    down_send, down_recv = trio.open_memory_channel(10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(memtable, down_recv, [])
        await nursery.start(lambda task_status: run_wal_writer(
            wal, mode="every_write", sync_interval_ms=0, retention_secs=None, next_seq=1,
            inbox=recv, downstream=down_send, task_status=task_status))
        NoSpaceOnce.armed = True
        bad = append_msg(1)
        await send.send(bad)
        with pytest.raises(DiskFullError) as info:
            await bad.reply.wait()
        assert info.value.http_status == 503 and info.value.retry_after > 0
        # within the episode, a write is refused at once without touching the disk
        soon = append_msg(2)
        await send.send(soon)
        with pytest.raises(DiskFullError):
            await soon.reply.wait()
        assert stats_of(wal)["appends"] == 0
        await trio.sleep(PROBE_INTERVAL * 1.2)
        good = append_msg(3)
        await send.send(good)
        assert await good.reply.wait() == 1  # space is back; no seq was burnt
        await send.aclose()


async def test_shutdown_fsyncs_closes_wal_and_downstream(tmp_path: pathlib.Path) -> None:
    wal = open_wal(tmp_path)
    send, recv = trio.open_memory_channel(10)
    down_send, down_recv = trio.open_memory_channel(10)
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: run_wal_writer(
            wal, mode="os_default", sync_interval_ms=0, retention_secs=None, next_seq=1,
            inbox=recv, downstream=down_send, task_status=task_status))
        m = append_msg(1)
        await send.send(m)
        await send.aclose()
    assert wal.events == [("append", 1), ("sync",)]
    ins = down_recv.receive_nowait()
    assert ins.seq == 1
    with pytest.raises(trio.EndOfChannel):
        down_recv.receive_nowait()
    with pytest.raises(ClosedError):
        wal.append([b"x"])


async def test_cancelled_actor_fails_every_reply_it_holds(tmp_path: pathlib.Path) -> None:
    wal = open_wal(tmp_path)
    send, recv = trio.open_memory_channel(10)
    down_send, down_recv = trio.open_memory_channel(0)  # nobody reads: forwarding blocks
    msgs = [append_msg(i) for i in range(3)]
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: run_wal_writer(
            wal, mode="every_write", sync_interval_ms=0, retention_secs=None, next_seq=1,
            inbox=recv, downstream=down_send, task_status=task_status))
        await send.send(msgs[0])
        await trio.testing.wait_all_tasks_blocked()
        for m in msgs[1:]:
            await send.send(m)  # queued behind the blocked group
        nursery.cancel_scope.cancel()
    for m in msgs:
        with pytest.raises(ClosedError):
            await m.reply.wait()
    assert wal.events[-1] == ("sync",)  # shielded final fsync still ran


async def test_bad_configuration_is_rejected(tmp_path: pathlib.Path) -> None:
    send, recv = trio.open_memory_channel(1)
    down_send, _ = trio.open_memory_channel(1)
    with pytest.raises(ConfigError):
        await run_wal_writer(None, mode="sometimes", sync_interval_ms=0, retention_secs=None,
                             next_seq=1, inbox=recv, downstream=down_send)
    with pytest.raises(ConfigError):
        await run_wal_writer(None, mode="every_write", sync_interval_ms=0, retention_secs=None,
                             next_seq=1, inbox=recv, downstream=down_send)
