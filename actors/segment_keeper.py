"""The segment keeper: the one owner of the manifest and of the open segment readers.

Every change to the set of live segments or to the lifecycle state (sequences, tombstones) is a
message to this actor:

- the flusher publishes a frozen memtable's new segments (:class:`Publish`);
- the compactor replaces a task's inputs with its outputs (:class:`Replace`);
- the retention sweeper drops wholly expired segments (:class:`Drop`);
- a delete records a tombstone (:class:`Tombstone`).

The keeper applies them one at a time, so commits are serialised by construction (no lock). Each
manifest commit (a write and an fsync) runs in a worker thread. When it returns, the keeper
publishes a new :class:`SegmentView` in the event loop thread: the manifest state and its readers
are swapped in one step. A query's snapshot reads the view with no await, so it never sees a
manifest entry without its reader, nor a reader of a segment that is gone. Replaced files are
unlinked after the swap; a query still holding their readers keeps valid mappings (POSIX), and
the space is freed when it lets go.

Each request carries a :class:`~rusts.messages.Reply` that is always resolved: with the commit's
outcome, or with the error that left the manifest unchanged. The loop ends when every sender is
closed (the Database closes it after the flusher, the compactor and the sweeper have stopped).
"""

from __future__ import annotations

import logging
import types
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import trio

from rusts.errors import ClosedError, StorageError
from rusts.lifecycle.compaction import (CompactionResult, CompactionTask, Outcome, commit_compaction,
                                        compact_and_commit, delete_segment_files, remove_outputs)
from rusts.lifecycle.tombstones import LifecycleState
from rusts.messages import Reply
from rusts.storage.manifest import Manifest, ManifestState, SegmentMeta

log = logging.getLogger("rusts.actors.segment_keeper")


@attrs.frozen
class SegmentView:
    """What queries read: one manifest state and a reader for each of its segments."""

    state: ManifestState
    readers: Mapping[str, Any]  # segment file -> SegmentReader (read-only mapping)


@attrs.frozen(eq=False)
class Publish:
    """New segments of one flushed memtable; ``readers`` are already open (same order)."""

    metas: tuple[SegmentMeta, ...]
    readers: tuple[Any, ...]
    flushed_seq: int
    reply: Reply


@attrs.frozen(eq=False)
class Replace:
    """Commit a compaction. ``result`` is None when the keeper is to run the (small) task itself;
    otherwise it was written outside, from the tombstones ``seen`` when it started."""

    task: CompactionTask
    result: CompactionResult | None
    seen: tuple
    retention_cutoffs: Mapping[str, int]
    compression: str
    block_rows: int
    block_time_ns: int | None
    reply: Reply


@attrs.frozen(eq=False)
class Drop:
    """Drop these segments (wholly expired); those no longer live are skipped."""

    metas: tuple[SegmentMeta, ...]
    reply: Reply


@attrs.frozen(eq=False)
class Tombstone:
    """Record a delete (visible at once to queries; applied physically by compaction)."""

    measurement: str
    start: int
    end: int
    series: tuple[int, ...] | None
    field_predicate: str | None
    reply: Reply


class SegmentKeeper:
    """The keeper's state. Only :func:`run_segment_keeper` changes it; others read :attr:`view`."""

    def __init__(self, manifest: Manifest, readers: dict, *, measurement_of: Callable[[int], str]) -> None:
        self.manifest = manifest
        self._measurement_of = measurement_of
        self.view = SegmentView(manifest.state, types.MappingProxyType(dict(readers)))

    # ------------------------------------------------------------------ applying one message
    async def apply(self, msg) -> Any:
        if isinstance(msg, Publish):
            return await self._publish(msg)
        if isinstance(msg, Replace):
            return await self._replace(msg)
        if isinstance(msg, Drop):
            return await self._drop(msg)
        if isinstance(msg, Tombstone):
            return await self._tombstone(msg)
        raise TypeError(f"segment keeper: unknown message {type(msg).__name__}")

    def _swap(self, added: Mapping[str, Any] = {}, removed=()) -> None:
        """Publish the manifest's committed state with its readers (loop thread, no await)."""
        readers = dict(self.view.readers)
        for f in removed:
            readers.pop(f, None)  # not closed: a running query may still hold it
        readers.update(added)
        self.view = SegmentView(self.manifest.state, types.MappingProxyType(readers))

    def _commit(self, **kw) -> ManifestState:
        return self.manifest.commit(**kw)

    async def _publish(self, msg: Publish) -> ManifestState:
        def commit():
            cur = self.manifest.state
            ls = LifecycleState.from_extra(cur.extra).with_flush([m.file for m in msg.metas])
            return self._commit(add=msg.metas, flushed_seq=msg.flushed_seq, extra=ls.to_extra(cur.extra))

        try:
            state = await trio.to_thread.run_sync(commit)
        except BaseException:
            for r in msg.readers:
                r.close()
            raise
        self._swap({m.file: r for m, r in zip(msg.metas, msg.readers)})
        return state

    async def _replace(self, msg: Replace) -> Outcome:
        from rusts.storage.segment import SegmentReader

        task, man = msg.task, self.manifest

        def run_here():
            readers = {m.file: self.view.readers[m.file] for m in task.inputs if m.file in self.view.readers}
            return compact_and_commit(
                man, task, readers=readers, index_measurement_of=self._measurement_of,
                retention_cutoffs=msg.retention_cutoffs, compression=msg.compression,
                block_rows=msg.block_rows, block_time_ns=msg.block_time_ns)

        if msg.result is None:
            outcome = await trio.to_thread.run_sync(run_here)
        elif task.whole and tuple(msg.seen) != LifecycleState.from_extra(man.state.extra).tombstones:
            # a delete (or another compaction) changed the tombstones meanwhile: redo it here
            remove_outputs(msg.result)
            outcome = await trio.to_thread.run_sync(run_here)
        else:
            outcome = await trio.to_thread.run_sync(commit_compaction, man, task, msg.result)
        def open_outputs():
            opened = {}
            for m in outcome.added:
                try:
                    opened[m.file] = SegmentReader.open(man.path_of(m))
                except (StorageError, OSError) as e:  # committed anyway: a query that needs
                    log.error("cannot open new segment %s: %s", m.file, e)  # it reports it
            return opened

        self._swap(await trio.to_thread.run_sync(open_outputs), [m.file for m in outcome.removed])
        await trio.to_thread.run_sync(delete_segment_files, man, outcome.removed)
        return outcome

    async def _drop(self, msg: Drop) -> int:
        live = {m.file for m in self.manifest.state.segments}
        gone = tuple(m for m in msg.metas if m.file in live)
        if not gone:
            return 0

        def commit():
            cur = self.manifest.state
            ls = LifecycleState.from_extra(cur.extra).without(gone)
            # two manifest generations: a fallback from a damaged newest one names no unlinked file
            return self._commit(remove=gone, extra=ls.to_extra(cur.extra), survive_fallback=True)

        await trio.to_thread.run_sync(commit)
        self._swap(removed=[m.file for m in gone])
        await trio.to_thread.run_sync(delete_segment_files, self.manifest, gone)
        return len(gone)

    async def _tombstone(self, msg: Tombstone):
        def commit():
            cur = self.manifest.state
            ls, stone = LifecycleState.from_extra(cur.extra).with_tombstone(
                msg.measurement, msg.start, msg.end, series=msg.series, field_predicate=msg.field_predicate)
            # two manifest generations: a fallback from a damaged newest one keeps the delete
            self._commit(extra=ls.to_extra(cur.extra), survive_fallback=True)
            return stone

        stone = await trio.to_thread.run_sync(commit)
        self._swap()
        return stone


async def run_segment_keeper(keeper: SegmentKeeper, inbox: trio.MemoryReceiveChannel,
                             task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Actor loop: apply each message in turn, shielded (a shutdown never cuts a commit between
    the manifest write and the view swap). Ends when every sender has closed the channel."""
    task_status.started()
    # shielded while waiting too: cancelled from outside, it still answers the flusher's commit
    # (shielded itself) until every sender has closed, or that commit waited forever
    with trio.CancelScope(shield=True):
        async for msg in inbox:
            try:
                out = await keeper.apply(msg)
            except Exception as e:
                msg.reply.fail(e)
            else:
                msg.reply.set(out)


class SegmentKeeperClient:
    """The senders' side: one method per message, each awaiting the keeper's reply."""

    def __init__(self, send: trio.MemorySendChannel, keeper: SegmentKeeper) -> None:
        self._send = send
        self._keeper = keeper

    @property
    def view(self) -> SegmentView:
        """The current view (read synchronously in the loop thread; immutable)."""
        return self._keeper.view

    async def _ask(self, make) -> Any:
        reply = Reply()
        try:
            await self._send.send(make(reply))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ClosedError("the database is shutting down") from None
        return await reply.wait()

    async def publish(self, metas, readers, flushed_seq: int) -> ManifestState:
        return await self._ask(lambda r: Publish(tuple(metas), tuple(readers), int(flushed_seq), r))

    async def replace(self, task: CompactionTask, result: CompactionResult | None, *, seen=(),
                      retention_cutoffs: Mapping[str, int], compression: str, block_rows: int,
                      block_time_ns: int | None) -> Outcome:
        return await self._ask(lambda r: Replace(task, result, tuple(seen), dict(retention_cutoffs),
                                                 compression, int(block_rows), block_time_ns, r))

    async def drop(self, metas) -> int:
        return await self._ask(lambda r: Drop(tuple(metas), r))

    async def tombstone(self, measurement: str, start: int, end: int, *, series=None,
                        field_predicate: str | None = None):
        return await self._ask(lambda r: Tombstone(measurement, int(start), int(end),
                                                   None if series is None else tuple(series),
                                                   field_predicate, r))

    async def aclose(self) -> None:
        await self._send.aclose()


__all__ = ["Drop", "Publish", "Replace", "SegmentKeeper", "SegmentKeeperClient", "SegmentView",
           "Tombstone", "run_segment_keeper"]
