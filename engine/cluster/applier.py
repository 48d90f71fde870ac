"""Shard appliers: each owned shard's JetStream stream applied into that shard's local database.

Each shard a node owns (primary or replica) has its own :class:`rusts.db.Database` under
``<data_dir>/cluster/shard-<k>/`` so a query for a set of shards reads exactly those shards, and a
shard can be dropped or rebuilt alone. One trio task per shard pulls batches from a durable
JetStream pull consumer and applies them with ``db.write_batch`` in stream order.

Applied sequence, crash consistency (docs/cluster.md, "Apply"):

1. apply messages ``a..b`` with ``write_batch`` (each returns once its WAL record is written;
   a run of consecutive rows messages is one write and one WAL record: :meth:`ShardApplier._apply`);
2. acknowledge them to JetStream (one cumulative ack, sent with the next fetch) and publish ``b``
   to the metadata KV (Sync-mode writers and ``/cluster`` lag read it there; at once in Sync
   mode, else at most every ``PUBLISH_EVERY`` seconds);
3. make the WAL durable (one fsync, :func:`_sync_wal`; nothing with ``wal_durability:
   every_write``), then write ``applied.json`` (``{"seq": b}``): temporary file and rename, not
   fsynced (losing it only makes the sequence older; fsynced when it records a missed count).
   In Sync mode after every batch, before step 2's publish; otherwise every ``SYNC_EVERY``
   seconds for everything applied by then (:meth:`ShardApplier.make_durable`), and at stop.

So the recorded sequence never runs ahead of durable data: a crash before step 3 leaves a
sequence that is too low (by at most ``SYNC_EVERY`` seconds of messages), and restart re-applies those messages, which is harmless because
applying is idempotent (last write wins per series, timestamp and field, and messages are
applied in stream order; redeliveries at or below the recorded sequence are skipped). The
local file, not the consumer's ack floor, is authoritative: on start the consumer is recreated
to deliver from ``seq + 1``, so a wiped shard directory replays its stream from the start.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import trio

from rusts.errors import CorruptionError, OverloadedError, RustsError
from rusts.model import WriteBatch

log = logging.getLogger("rusts.cluster.apply")

FETCH_BATCH = 256
FETCH_WAIT = 1.0  # a pull request's expiry (nats-py waits for a full batch until then once one message came)
PUBLISH_EVERY = 0.25
# Quorum and Async: the applied prefix is made durable (one WAL fsync, then applied.json) at most
# this often, not per batch (Sync mode: per batch, before the sequence is published)
SYNC_EVERY = 1.0
# resubscribing after NATS trouble, at most this many messages are read from the stream's leader
# (one request each) rather than through the consumer: what a replica may have diverged on is
# what was published during the trouble
LEADER_CATCH_UP = 4096
HOLE_CHECK_EVERY = 2.0  # an idle applier checks this often that the stream holds nothing it missed
APPLIED_FILE = "applied.json"
RUN_POINTS = 65536  # a run of messages applied as one write stops growing beyond this many points
RUN_BYTES = 8 << 20  # ... or this many message bytes


def read_applied(shard_dir: Path) -> tuple[int, int]:
    """``(applied sequence, messages missed)``: missed > 0 when the stream had already dropped
    messages this shard never applied (retention), so its data is incomplete."""
    try:
        with open(shard_dir / APPLIED_FILE, "rb") as fh:
            d = json.loads(fh.read())
            return int(d["seq"]), int(d.get("missed", 0))
    except FileNotFoundError:
        return 0, 0
    except (ValueError, KeyError, TypeError) as e:
        # e.g. empty after a power loss (the file is not fsynced): replaying the whole stream is
        # correct (idempotent), and a stream that dropped its start is then detected as missed
        log.warning("%s: unreadable applied sequence (%s); replaying the shard's stream", shard_dir / APPLIED_FILE, e)
        return 0, 0


def write_applied(shard_dir: Path, seq: int, missed: int = 0, durable: bool = False) -> None:
    """Replace the shard's applied sequence (temporary file, rename). Not fsynced unless
    ``durable``: it is written after the data it covers is durable, so losing it in a power
    failure only makes the sequence older, and re-applying is idempotent. A missed count (an
    incomplete copy must stay known) is written durably."""
    tmp = shard_dir / (APPLIED_FILE + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, json.dumps({"seq": int(seq), "missed": int(missed)} if missed else {"seq": int(seq)}).encode())
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, shard_dir / APPLIED_FILE)
    if durable:
        dfd = os.open(shard_dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


async def _sync_wal(db) -> None:
    """fsync the shard database's WAL (everything written so far becomes durable)."""
    if db.config.storage.wal_durability == "every_write":
        return
    from rusts.actors.wal_writer import WalSync
    from rusts.messages import Reply

    reply = Reply()
    await db._wal_send.send(WalSync(reply))  # (a public Database.sync_wal() would be nicer)
    await reply.wait()


def contiguous_run(msgs: list, applied: int) -> tuple[list, bool]:
    """The fetched ``(seq, data, msg)`` that follow ``applied`` without a gap, in sequence order
    (redeliveries of what is applied, and repeats, left out), and whether any later message was
    left out because one before it is missing: applying across a gap would record a sequence
    whose predecessors this copy never got."""
    new = sorted({m[0]: m for m in msgs if m[0] > applied}.values(), key=lambda m: m[0])
    n = 0
    while n < len(new) and new[n][0] == applied + 1 + n:
        n += 1
    return new[:n], n < len(new)


class ShardApplier:
    """Applies one shard's stream into its database; ``applied`` is the recorded sequence."""

    def __init__(self, shard: int, db, shard_dir: Path, bridge, link, node_id: str, schema=None) -> None:
        self.schema = schema  # rusts.cluster.schema.ClusterSchema: the cluster's field types
        self.shard = shard
        self.db = db
        self.dir = shard_dir
        self.bridge = bridge
        self.link = link
        self.node_id = node_id
        self.applied, self.missed = read_applied(shard_dir)
        self.errors = 0
        # fetches that returned messages, messages fetched, writes; messages read from the leader
        self.stats = {"fetches": 0, "messages": 0, "writes": 0, "leader_reads": 0}
        self.subscribed = False
        # the applied sequence in the KV (a replicated write in NATS): at most every
        # PUBLISH_EVERY seconds (the node publishes the tail), at once when ``eager`` (Sync mode
        # writers wait for it)
        self.eager = False
        self.published = -1
        self._published_at = -1e9
        # held while a batch is applied and recorded; a snapshot for a peer holds it to flush
        # exactly the applied prefix (rusts.cluster.rebuild)
        self.lock = trio.Lock()
        # the stream's last sequence when this copy first subscribed: until it applied that far
        # it does not answer queries (a restarted or rebuilt copy would answer stale data)
        self.target: int | None = None
        self.caught_up = False
        # a callable: True when a live peer could give a snapshot (run() then returns so that
        # the node rebuilds this copy instead of keeping an incomplete one); None: never
        self.can_rebuild = None
        self.rebuild_wanted = False
        self._rebuild_checked = 0.0
        self._bounds_checked = 0.0
        self._subscribed_once = False  # a later subscription follows NATS trouble
        self._to_ack = None  # the last message applied, acknowledged with the next fetch
        # what applied.json says (the durable prefix); a lock orders its writers
        self.recorded, self._recorded_missed = self.applied, self.missed
        self._record_lock = trio.Lock()

    @property
    def complete(self) -> bool:
        """False once the stream dropped messages this shard never applied: its data has a hole,
        so this node does not answer queries for the shard (another owner does; docs/cluster.md)."""
        return self.missed == 0

    @property
    def serving(self) -> bool:
        """Complete, and caught up with the stream as it was when this copy subscribed."""
        return self.missed == 0 and self.caught_up

    def _check_caught_up(self) -> None:
        if not self.caught_up and self.target is not None and self.applied >= self.target:
            self.caught_up = True
            log.info("shard %d: caught up with the stream (sequence %d); serving queries", self.shard, self.applied)

    def _mark_behind(self, seq: int) -> None:
        """This copy is known to lack messages up to ``seq``: it answers no query until it has
        applied them (another owner answers, or the query waits)."""
        if self.caught_up:
            log.info("shard %d: not serving queries until sequence %d is applied", self.shard, seq)
        self.caught_up = False
        self.target = max(self.target or 0, seq)

    def _note_missed(self, first: int) -> None:
        n = first - 1 - self.applied
        self.missed += n
        log.error("shard %d: the stream continues at %d but this node applied only up to %d: %d message(s) "
                  "lost here; the shard is not served by this node (rebuild it: docs/cluster.md)",
                  self.shard, first, self.applied, n)
        self.applied = first - 1

    async def _subscribe(self) -> bool:
        """Subscribe from ``applied + 1``; False (not subscribed) when this copy fell behind the
        stream's retained start and a live peer can give a snapshot: the node rebuilds it."""
        first, last = await self.bridge.call(self.link.stream_bounds, self.shard)
        if first > self.applied + 1:  # retention dropped what this shard still needed
            if self.can_rebuild is not None and self.can_rebuild():
                log.warning("shard %d: the stream starts at %d but this copy applied only up to %d: "
                            "rebuilding it from a peer's snapshot", self.shard, first, self.applied)
                self.rebuild_wanted = True
                return False
            self._note_missed(first)
            await self.make_durable()
        self._to_ack = None  # a message of the consumer being replaced
        if self._subscribed_once and 0 < last - self.applied <= LEADER_CATCH_UP:
            await self._catch_up_from_leader(last)
        await self.bridge.call(self.link.subscribe_shard, self.shard, self.applied + 1)
        self._subscribed_once = True
        if self.target is None:
            self.target = last
        self.subscribed = True
        self._check_caught_up()
        return True

    async def make_durable(self) -> None:
        """fsync the shard's WAL, then record the sequence applied before it in applied.json
        (with the missed count, fsynced when there is one). Concurrent with applying: every
        message at or below the sequence read here has its WAL record written already."""
        async with self._record_lock:
            seq, missed = self.applied, self.missed
            if seq == self.recorded and missed == self._recorded_missed:
                return
            await _sync_wal(self.db)  # durable before the applied sequence says so
            if missed:
                await trio.to_thread.run_sync(write_applied, self.dir, seq, missed, True)
            else:  # a small write and a rename: cheaper inline than a thread hop
                write_applied(self.dir, seq)
            self.recorded, self._recorded_missed = seq, missed

    async def _durable_loop(self) -> None:
        while True:
            await trio.sleep(SYNC_EVERY)
            if self.applied != self.recorded or self.missed != self._recorded_missed:
                try:
                    await self.make_durable()
                except RustsError as e:  # a failed WAL: writes fail too; retried next period
                    log.error("shard %d: recording the applied sequence: %s", self.shard, e)

    async def run(self) -> None:
        """Apply the stream until cancelled; returns only when this copy should be rebuilt from a
        peer's snapshot (``rebuild_wanted``: it misses messages the stream no longer holds).
        Meanwhile (not in Sync mode) the applied prefix is made durable every ``SYNC_EVERY``
        seconds, and once more when this returns or is cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._durable_loop)
                await self._run()
                nursery.cancel_scope.cancel()
        finally:
            with trio.move_on_after(5) as scope:
                scope.shield = True
                try:
                    await self.make_durable()
                except (RustsError, trio.BrokenResourceError, trio.ClosedResourceError) as e:
                    # the database is stopping too: the sequence stays older (re-applied at start)
                    log.info("shard %d: recording the applied sequence at stop: %r", self.shard, e)

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            if self.missed and self.can_rebuild is not None and trio.current_time() - self._rebuild_checked > 5.0:
                self._rebuild_checked = trio.current_time()
                if self.can_rebuild():  # an incomplete copy, and now a peer could repair it
                    self.rebuild_wanted = True
                    return
            step = "subscribe"
            try:
                if not self.subscribed:
                    if not await self._subscribe():
                        return
                    step = "publish applied"
                    await self._publish_applied()
                step = "fetch"
                ack, self._to_ack = self._to_ack, None
                msgs = await self.bridge.call(self.link.fetch, self.shard, FETCH_BATCH, FETCH_WAIT, ack,
                                              _timeout=FETCH_WAIT + 15.0)
                backoff = 0.2
            except RustsError as e:
                log.info("shard %d: %s: %s; retrying", self.shard, step, e)
                self.subscribed = False
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            if not msgs:
                if trio.current_time() - self._bounds_checked > HOLE_CHECK_EVERY:
                    # idle: did retention drop messages this copy never got (they are not
                    # delivered, so no fetch shows the hole)? Or does the stream hold messages
                    # the consumer does not deliver (a consumer left stale by a NATS partition or
                    # failover)? Resubscribing from applied + 1 settles both
                    self._bounds_checked = trio.current_time()
                    try:
                        first, last = await self.bridge.call(self.link.stream_bounds, self.shard)
                        if first > self.applied + 1 or last > self.applied:
                            if last > self.applied:
                                log.info("shard %d: the stream holds %d message(s) after %d that were not "
                                         "delivered; resubscribing", self.shard, last - self.applied, self.applied)
                                # after a partition heals its consumer may deliver nothing for a while
                                self._mark_behind(last)
                            self.subscribed = False
                    except RustsError:
                        pass
                continue
            self.stats["fetches"] += 1
            self.stats["messages"] += len(msgs)
            run, gap = contiguous_run(msgs, self.applied)
            if gap:
                # a hole: retention dropped messages, or the consumer delivered some of them to
                # an earlier pull whose answer was lost (a partition) and goes on with later ones.
                # Only the run that follows ``applied`` without a gap is applied; resubscribing
                # from applied + 1 delivers the rest (or tells that the stream dropped it)
                log.info("shard %d: delivered sequences %s after %d leave a gap; applying %d, then "
                         "resubscribing", self.shard, [m[0] for m in msgs][:8], self.applied, len(run))
                self.subscribed = False
                self._to_ack = None
                self._mark_behind(max(m[0] for m in msgs))
                if not run:
                    continue
            try:
                await self._apply_run(run)
            except RustsError as e:
                log.info("shard %d: schema: %s; retrying", self.shard, e)
                self.subscribed = False  # unacked: delivered again after resubscribing
                await trio.sleep(backoff)
                continue
            # acknowledged (cumulatively) with the next fetch: one NATS call less per batch. The
            # ack floor is not authoritative (applied.json is), so an ack lost in a crash or a
            # resubscription only means a redelivery, which is skipped
            if not gap:
                self._to_ack = msgs[-1][2]
            try:
                if self.eager or trio.current_time() - self._published_at >= PUBLISH_EVERY:
                    await self._publish_applied()
            except RustsError:
                self.subscribed = False

    async def _apply_run(self, run: list) -> None:
        """Decode and apply ``(seq, data, msg)`` following ``applied`` without a gap. Raises
        :class:`RustsError` when the cluster's field types cannot be read (nothing applied)."""
        from rusts.cluster.wire import decode

        decoded = []
        for seq, data, m in run:
            op = self.link.op_of(m)
            if op is not None:  # a delete or drop, in log order with the writes
                decoded.append((seq, (op, data)))
                continue
            try:
                decoded.append((seq, (decode(data), data)))
            except CorruptionError as e:
                self.errors += 1
                log.error("shard %d: message %d undecodable, skipped: %s", self.shard, seq, e)
                decoded.append((seq, None))
        if self.schema is not None:  # fields new to this shard get the cluster's type first
            await self.schema.seed(self.db, [b[0] for _, b in decoded
                                             if isinstance(b, tuple) and isinstance(b[0], WriteBatch)])
        async with self.lock:
            await self._apply(decoded)
        self._check_caught_up()

    async def _catch_up_from_leader(self, last: int) -> None:
        """Apply ``applied + 1 .. last`` as the stream's leader holds them (STREAM.MSG.GET is
        answered by the leader), not as a consumer delivers them. After NATS trouble this node's
        consumer may read the stream from a replica that diverged: NATS 2.9 lets a stream leader
        cut off in a minority keep messages it stored but never replicated (docs/cluster.md,
        "Catching up from the leader"), at sequences the majority gave to other messages."""
        while self.applied < last:
            end = min(last, self.applied + FETCH_BATCH)
            msgs = await self.bridge.call(self.link.leader_msgs, self.shard, self.applied + 1, end)
            run, _ = contiguous_run(msgs, self.applied)
            if not run:
                return  # not found (dropped by retention meanwhile): the consumer path tells
            self.stats["leader_reads"] += len(run)
            await self._apply_run(run)

    async def _apply(self, decoded: list) -> None:
        """Apply decoded messages in stream order, make them durable, record the applied sequence.

        A run of consecutive version-2 rows messages is applied as **one** write (one schema
        check, one index lookup, one WAL record: the messages' concatenation, one memtable
        insert): its frames in message order, so the memtable resolves duplicates exactly as if
        they came one by one (later wins), and the WAL record replays the same frames. A delete
        or drop, an undecodable or a version-1 message ends a run."""
        from rusts.cluster import wire

        applied_any = False
        i, n = 0, len(decoded)
        while i < n:
            seq, item = decoded[i]
            if item is not None and isinstance(item[0], str):  # (op, body)
                await self._apply_op(seq, *item)
                j = i + 1
            elif item is not None:
                batch, payload = item
                j = i + 1
                if wire.is_v2(payload):
                    points, size = batch.point_count, len(payload)
                    while j < n and points < RUN_POINTS and size < RUN_BYTES:
                        nxt = decoded[j][1]
                        if nxt is None or isinstance(nxt[0], str) or not wire.is_v2(nxt[1]):
                            break
                        points += nxt[0].point_count
                        size += len(nxt[1])
                        j += 1
                    if j > i + 1:
                        run = decoded[i:j]
                        batch = WriteBatch.from_frames([f for _, (b, _) in run for f in b.frames])
                        payload = wire.concat([p for _, (_, p) in run])
                await self._write(batch, payload)
                self.stats["writes"] += 1
            else:
                j = i + 1
            self.applied = decoded[j - 1][0]
            applied_any = True
            i = j
        if applied_any and (self.eager or self.missed):
            # Sync mode: durable and recorded before the sequence is published (writers wait for
            # it); otherwise every SYNC_EVERY seconds (run)
            await self.make_durable()

    async def _write(self, batch: WriteBatch, payload: bytes) -> None:
        while True:
            try:
                # the payload is the batch's encoding: the shard's WAL stores it as it is (no
                # second encoding) when the schema keeps every line
                res = await self.db.write_batch(batch, wal_payload=payload)
                break
            except OverloadedError:  # the shard's memtable is full: wait for the flusher
                await trio.sleep(0.5)
        if res.errors:
            self.errors += len(res.errors)

    async def publish_if_behind(self) -> None:
        """Publish the applied sequence when the KV has an older one (the throttled tail)."""
        if self.subscribed and self.published != self.applied:
            try:
                await self._publish_applied()
            except RustsError as e:
                log.debug("shard %d: publish applied: %s", self.shard, e)

    async def _apply_op(self, seq: int, op: str, data: bytes) -> None:
        """Apply a logged delete or drop (rusts.cluster.writer.ClusterWriter.log_op)."""
        from rusts.cluster.fanout import query_from_wire

        try:
            body = json.loads(data)
            if op == "delete":
                q = query_from_wire(body["query"])
                await self.db.delete(q.measurement, q.start, q.end, q.tag_filters,
                                     tuple(body.get("field_predicates") or ()))
            elif op == "drop":
                if body["measurement"] in self.db.measurements():
                    await self.db.drop_measurement(body["measurement"])
            else:
                raise ValueError(f"unknown operation {op!r}")
        except (RustsError, ValueError, KeyError, TypeError) as e:
            self.errors += 1
            log.error("shard %d: message %d (%s) not applied: %s", self.shard, seq, op, e)

    async def _publish_applied(self) -> None:
        applied = self.applied
        self._published_at = trio.current_time()
        await self.bridge.call(self.link.kv_put, "meta", f"applied.{self.shard}.{self.node_id}",
                               str(applied).encode())
        self.published = applied
