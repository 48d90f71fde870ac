"""The WAL writer actor: owns the :class:`rusts.storage.wal.Wal`, assigns sequence numbers, group-commits.

Inbox messages: :class:`WalAppend` (a write; the caller encoded the payload with
``rusts.storage.walrecord.encode_batch``), :class:`WalCheckpoint` (from the flusher), :class:`WalSync`
and :class:`WalStats`. Every accepted write leaves as a :class:`MemtableInsert` on
``downstream``, in sequence order; the memtable resolves the writer's reply.

Group commit: after one message arrives, everything already queued is drained with
``receive_nowait`` (up to :data:`MAX_GROUP_BYTES` of payload) and the appends of the group go
to the Wal as one ``append`` (one ``write()``) and, in ``every_write`` mode, one fsync, in one
worker-thread hop. Control messages keep their position in the group: a run of appends before
a :class:`WalSync` is written before the sync answers.

Durability modes:

* ``every_write``: forward (and so ack) only after the group's fsync returned.
* ``periodic``: forward after ``write()``; a background task fsyncs every ``sync_interval_ms``
  when something was written since the last fsync.
* ``os_default``: forward after ``write()``; never fsync explicitly (except on shutdown and
  :class:`WalSync`), the kernel writes back when it likes.
* ``none``: no file (``wal`` is None); seqs are still assigned from ``next_seq``.

Failure: the first Wal error that leaves the Wal failed (an fsync error, fsyncgate) poisons the
actor: that group's and every later :class:`WalAppend` reply fails with ``WalFailedError`` (HTTP
503) and is never forwarded. A failed ``write()`` that the Wal undid (ENOSPC, EIO) fails only its
group and starts an *unavailable episode*: one WARNING line, then every append is answered at once
with the same :class:`~rusts.errors.StorageUnavailableError` (``DiskFullError`` for a full disk,
503 + Retry-After) without touching the disk, except one probe group every
:data:`PROBE_INTERVAL` seconds that really tries the write. The first group that succeeds ends
the episode (one INFO line with its length and the writes refused): writes resume within a probe
interval of space coming back, and a client hammering a full disk costs no I/O and no log spam.

File I/O runs in worker threads under this actor's own ``CapacityLimiter(1)`` and is never
abandoned on cancellation (an abandoned fsync could still succeed or fail after we answered),
with two exceptions that keep writes from waiting on the disk or on the GIL: a small group
without fsync (``periodic``, ``os_default``) is written from the event loop when the limiter is
free and no rotation is due (one page-cache ``write()``, cheaper than a thread hop), and the
periodic fsync runs outside the limiter (``Wal.sync`` fsyncs a duplicate descriptor), so
appends go on while a slow disk syncs.
The final fsync on shutdown is shielded. Writers are never left hanging: on cancellation every
reply still held (and every message still queued) is failed with ``ClosedError``.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import attrs
import trio

from rusts.errors import (ClosedError, ConfigError, StorageError, StorageUnavailableError,
                          WalFailedError)
from rusts.messages import Reply
from rusts.model import WriteBatch
from rusts.storage.wal import Wal

log = logging.getLogger("rusts.actors.wal")

MODES = ("every_write", "periodic", "os_default", "none")
MAX_GROUP_BYTES = 16 << 20  # stop draining the inbox into one group beyond this much payload
INLINE_APPEND_BYTES = 512 << 10  # groups up to this size are written from the loop (no fsync modes)
PROBE_INTERVAL = 0.25  # seconds between real write attempts while the disk is full / failing


@attrs.frozen(eq=False)
class WalAppend:
    """A write to log. ``payload`` is ``encode_batch(batch)``; ``reply`` gets the seq. ``sids``
    (one series id per series of ``batch.frames``) travel on to the memtable, so each key is
    looked up once per write."""

    batch: WriteBatch
    payload: bytes
    reply: Reply
    sids: Any = None


@attrs.frozen(eq=False)
class MemtableInsert:
    """To the memtable: insert ``batch`` as of ``seq`` and resolve ``reply``; ``sids`` as
    resolved by the writer (None: the memtable resolves them)."""

    batch: WriteBatch
    seq: int
    reply: Reply
    sids: Any = None


@attrs.frozen
class WalCheckpoint:
    """From the flusher: every record with seq <= ``upto_seq`` is in published segments."""

    upto_seq: int


@attrs.frozen(eq=False)
class WalSync:
    """fsync now (shutdown, tests); ``reply.set(last_seq)`` once durable."""

    reply: Reply


@attrs.frozen(eq=False)
class WalStats:
    """``reply.set(dict)`` with the Wal's and the actor's statistics."""

    reply: Reply


def _as_storage_error(e: BaseException) -> StorageError:
    if isinstance(e, StorageError):
        return e
    return StorageError(f"WAL failure: {e!r}")


@attrs.define(eq=False)
class _WalWriter:
    wal: Wal | None
    mode: str
    sync_interval: float
    retention_secs: float | None
    next_seq: int
    downstream: trio.MemorySendChannel
    limiter: trio.CapacityLimiter = attrs.field(factory=lambda: trio.CapacityLimiter(1))
    failed: StorageError | None = None
    downstream_gone: bool = False
    dirty: bool = False
    held: dict = attrs.field(factory=dict)  # id -> message whose reply we still owe
    unavailable: StorageUnavailableError | None = None  # the current episode's error
    unavailable_since: float = 0.0
    episode_rejected: int = 0
    probe_at: float = 0.0  # monotonic time of the next real write attempt in an episode
    stats: dict = attrs.field(factory=lambda: {
        "groups": 0, "appends": 0, "max_group": 0, "forwarded": 0, "rejected": 0,
        "explicit_syncs": 0, "periodic_syncs": 0, "checkpoints": 0,
        "unavailable_episodes": 0, "rejected_unavailable": 0})

    # -- thread helpers ---------------------------------------------------------------------

    async def _io(self, fn, *args):
        return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    def _append_inline(self, payloads: list[bytes]) -> int | None:
        """Append a small group without fsync right here in the event loop, or return None.

        A ``write()`` of a few hundred KB to the page cache takes well under a millisecond, less
        than the hop to a worker thread; and under load each hop waits for the GIL twice (the
        thread, then the loop coming back), up to the 5 ms switch interval each. Only when no
        fsync is due, the group does not rotate the segment (that fsyncs) and no other WAL
        operation holds the limiter (a periodic fsync in a thread)."""
        if self.mode == "every_write":
            return None
        fits = getattr(self.wal, "fits_active", None)  # test doubles may lack it: thread path
        size = sum(map(len, payloads))
        if fits is None or size > INLINE_APPEND_BYTES or not fits(size + 32 * len(payloads)):
            return None
        try:
            self.limiter.acquire_nowait()
        except trio.WouldBlock:
            return None
        try:
            return self.wal.append(payloads)
        finally:
            self.limiter.release()

    def _append_sync(self, payloads: list[bytes], fsync: bool) -> int:
        last = self.wal.append(payloads)
        if fsync:
            self.wal.sync()
        return last

    def _poison(self, e: BaseException, what: str) -> StorageError:
        err = e if isinstance(e, WalFailedError) else WalFailedError(
            f"WAL failed ({what}): {e}", retry_after=30.0)
        if self.failed is None:
            self.failed = err
            log.error("WAL failed; rejecting all writes until restart",
                      extra={"during": what, "error": str(err)})
        return err

    def _last_seq(self) -> int:
        return self.next_seq - 1 if self.wal is None else self.wal.last_seq

    # -- message handling -------------------------------------------------------------------

    async def handle(self, group: list) -> None:
        self.held = {id(m): m for m in group}
        run: list[WalAppend] = []
        for msg in group:
            if isinstance(msg, WalAppend):
                run.append(msg)
                continue
            if run:
                await self.commit(run)
                run = []
            await self.control(msg)
            self._release(msg)
        if run:
            await self.commit(run)
        self.held = {}

    def _release(self, msg) -> None:
        self.held.pop(id(msg), None)

    def _reject(self, appends: list[WalAppend], err: StorageError) -> None:
        for m in appends:
            m.reply.fail(err)
            self._release(m)
        self.stats["rejected"] += len(appends)

    async def commit(self, appends: list[WalAppend]) -> None:
        st = self.stats
        st["groups"] += 1
        st["appends"] += len(appends)
        st["max_group"] = max(st["max_group"], len(appends))
        if self.failed is not None:
            self._reject(appends, WalFailedError(f"WAL is failed: {self.failed}", retry_after=30.0))
            return
        if self.unavailable is not None and trio.current_time() < self.probe_at:
            self._refuse(appends)  # in an episode, between probes: no I/O at all
            return
        if self.downstream_gone:
            self._reject(appends, ClosedError("the memtable is gone"))
            return
        if self.wal is None:
            first = self.next_seq
            self.next_seq += len(appends)
        else:
            payloads = [m.payload for m in appends]
            try:
                last = self._append_inline(payloads)
                if last is None:
                    last = await self._io(self._append_sync, payloads, self.mode == "every_write")
            except Exception as e:
                err = _as_storage_error(e)
                if getattr(self.wal, "failed", True):
                    self._reject(appends, self._poison(e, "append"))
                elif isinstance(err, StorageUnavailableError):
                    self._start_episode(err)
                    self._refuse(appends)
                else:
                    log.warning("WAL write failed; group rejected", extra={"error": str(err)})
                    self._reject(appends, err)
                return
            if self.unavailable is not None:
                self._end_episode()
            first = last - len(appends) + 1
            if self.mode == "periodic":
                self.dirty = True
        for i, m in enumerate(appends):
            try:
                await self.downstream.send(MemtableInsert(m.batch, first + i, m.reply, m.sids))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.downstream_gone = True
                self._reject(appends[i:], ClosedError("the memtable is gone"))
                return
            self._release(m)
            st["forwarded"] += 1

    # -- unavailable episodes (full disk, I/O errors the Wal undid) ------------------------

    def _start_episode(self, err: StorageUnavailableError) -> None:
        self.probe_at = trio.current_time() + PROBE_INTERVAL
        if self.unavailable is None:
            self.unavailable = err
            self.unavailable_since = trio.current_time()
            self.episode_rejected = 0
            self.stats["unavailable_episodes"] += 1
            self._note(str(err), new_episode=True)
            log.warning("WAL writes refused until the disk accepts them again (503 + Retry-After; "
                        "retried every %.2fs)", PROBE_INTERVAL, extra={"error": str(err)})

    def _refuse(self, appends: list[WalAppend]) -> None:
        self.episode_rejected += len(appends)
        self.stats["rejected_unavailable"] += len(appends)
        self._note(str(self.unavailable), refused=len(appends))
        self._reject(appends, self.unavailable)

    def _end_episode(self) -> None:
        log.warning("WAL writes resumed after %.1fs; %d write(s) were refused meanwhile",
                    trio.current_time() - self.unavailable_since, self.episode_rejected,
                    extra={"error": str(self.unavailable)})
        self.unavailable = None
        self._note(None)

    def _note(self, error: str | None, **kw) -> None:
        note = getattr(self.wal, "note_unavailable", None)  # test doubles may lack it
        if note is not None:
            note(error, **kw)

    async def control(self, msg) -> None:
        if isinstance(msg, WalSync):
            await self.sync_now(msg.reply)
        elif isinstance(msg, WalStats):
            msg.reply.set(self.statistics())
        elif isinstance(msg, WalCheckpoint):
            await self.checkpoint(msg.upto_seq)
        else:
            log.error("WAL writer: unknown message", extra={"message": repr(msg)})
            reply = getattr(msg, "reply", None)
            if isinstance(reply, Reply):
                reply.fail(StorageError(f"unknown WAL message {type(msg).__name__}"))

    async def sync_now(self, reply: Reply | None) -> None:
        if self.failed is not None:
            if reply is not None:
                reply.fail(WalFailedError(f"WAL is failed: {self.failed}", retry_after=30.0))
            return
        if self.wal is not None:
            self.dirty = False
            try:
                await self._io(self.wal.sync)
            except Exception as e:
                err = self._poison(e, "sync")
                if reply is not None:
                    reply.fail(err)
                return
            self.stats["explicit_syncs"] += 1
        if reply is not None:
            reply.set(self._last_seq())

    async def checkpoint(self, upto_seq: int) -> None:
        if self.wal is None:
            return
        fn = functools.partial(self.wal.checkpoint, upto_seq,
                               retention_secs=self.retention_secs, now=time.time())
        try:
            removed = await self._io(fn)
        except Exception as e:
            if getattr(self.wal, "failed", False):
                self._poison(e, "checkpoint")
            else:
                log.warning("WAL checkpoint failed", extra={"error": str(e)})
            return
        self.stats["checkpoints"] += 1
        if removed:
            log.debug("WAL segments removed", extra={"count": len(removed), "upto_seq": upto_seq})

    async def periodic(self) -> None:
        while True:
            await trio.sleep(self.sync_interval)
            if not self.dirty or self.failed is not None:
                continue
            self.dirty = False
            try:
                # not under the limiter: appends go on while the disk syncs (Wal.sync fsyncs a
                # duplicate descriptor; a slow fsync on a busy disk held every write for
                # hundreds of ms)
                await trio.to_thread.run_sync(self.wal.sync)
            except Exception as e:
                self._poison(e, "periodic sync")
                return
            self.stats["periodic_syncs"] += 1

    def statistics(self) -> dict:
        out = dict(self.wal.statistics()) if self.wal is not None else {}
        out.update(self.stats)
        out.update(mode=self.mode, last_seq=self._last_seq(),
                   failed=self.failed is not None,
                   error=None if self.failed is None else str(self.failed),
                   unavailable=None if self.unavailable is None else str(self.unavailable))
        return out

    # -- shutdown ---------------------------------------------------------------------------

    def fail_held(self, inbox: trio.MemoryReceiveChannel) -> None:
        """Fail every reply we still owe, including messages still queued in the inbox."""
        err = ClosedError("the WAL writer stopped")
        pending = list(self.held.values())
        self.held = {}
        while True:
            try:
                pending.append(inbox.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
        for m in pending:
            reply = getattr(m, "reply", None)
            if isinstance(reply, Reply):
                reply.fail(err)

    async def final_sync(self) -> None:
        if self.wal is None:
            return
        if self.failed is None:
            try:
                await self._io(self.wal.sync)
            except Exception as e:
                self._poison(e, "final sync")
        try:
            await self._io(self.wal.close)
        except Exception as e:  # pragma: no cover - close only logs
            log.warning("WAL close failed", extra={"error": str(e)})


async def run_wal_writer(wal: Wal | None, *, mode: str, sync_interval_ms: int,
                         retention_secs: float | None, next_seq: int,
                         inbox: trio.MemoryReceiveChannel, downstream: trio.MemorySendChannel,
                         task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Run the WAL writer until ``inbox`` closes (then fsync, close the Wal and ``downstream``).

    Args:
        wal: the opened log (already replayed by the caller), or None in mode ``none``.
        mode: ``every_write``, ``periodic``, ``os_default`` or ``none``.
        sync_interval_ms: fsync period in ``periodic`` mode.
        retention_secs: how long sealed segments are kept after a checkpoint covers them
            (None: forever).
        next_seq: the first seq to hand out at least (the Wal is advanced to it if behind).
        inbox: WalAppend / WalCheckpoint / WalSync / WalStats messages.
        downstream: where MemtableInsert messages go, in seq order.
        task_status: for ``nursery.start``; started once the actor accepts messages.

    Raises:
        ConfigError: unknown mode, or a Wal missing (or given in mode ``none``).
    """
    if mode not in MODES:
        raise ConfigError(f"unknown WAL mode {mode!r}; expected one of {', '.join(MODES)}",
                          key="wal.mode")
    if (wal is None) != (mode == "none"):
        raise ConfigError("WAL mode 'none' takes no Wal and every other mode needs one",
                          key="wal.mode")
    if mode == "periodic" and sync_interval_ms <= 0:
        raise ConfigError("sync_interval_ms must be > 0 in periodic mode",
                          key="wal.sync_interval_ms")
    w = _WalWriter(wal, mode, sync_interval_ms / 1000.0, retention_secs, next_seq, downstream)
    try:
        async with trio.open_nursery() as nursery:
            if wal is not None and next_seq > wal.last_seq + 1:
                try:
                    await w._io(wal.advance, next_seq)
                except Exception as e:
                    if getattr(wal, "failed", True):
                        w._poison(e, "advance")
                    else:  # full disk: the first append creates the segment
                        log.warning("WAL advance failed", extra={"error": str(e)})
            if mode == "periodic":
                nursery.start_soon(w.periodic)
            task_status.started()
            try:
                await _loop(w, inbox)
            finally:
                with trio.CancelScope(shield=True):
                    w.fail_held(inbox)
                    await w.final_sync()
                nursery.cancel_scope.cancel()
    finally:
        downstream.close()


async def _loop(w: _WalWriter, inbox: trio.MemoryReceiveChannel) -> None:
    while True:
        try:
            first = await inbox.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return
        group = [first]
        size = len(getattr(first, "payload", b""))
        closed = False
        while size < MAX_GROUP_BYTES:
            try:
                msg = inbox.receive_nowait()
            except trio.WouldBlock:
                break
            except (trio.EndOfChannel, trio.ClosedResourceError):
                closed = True
                break
            group.append(msg)
            size += len(getattr(msg, "payload", b""))
        await w.handle(group)
        if closed:
            return
