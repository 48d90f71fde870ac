"""The cluster write path: parse, split by shard (columnar), publish each shard's part, acknowledge.

Any node accepts a write. Each shard's rows are encoded as one message
(:func:`rusts.cluster.wire.encode`, frame-major: the owners decode it straight into the write
path's frames, and their shard WALs store it as it is) and published to the shard's JetStream subject with
a message id (``Nats-Msg-Id``: node, request uuid, shard, chunk), so a retried publish inside
JetStream's two-minute duplicate window is stored once. A part larger than the server's
``max_payload`` is cut into row chunks.

Acknowledgement by ``replication_mode``:

* ``Quorum``: every part's JetStream publish ack (the stream holds it on a majority of the NATS
  servers of that stream).
* ``Sync``: that, then every owner of each touched shard has applied at least the acked sequence
  (read from the applied sequences the owners publish in the metadata KV); so the write is
  readable on every owner when the client hears 204.
* ``Async``: the parts are appended (fsynced) to this node's bounded outbox
  (:mod:`rusts.cluster.outbox`), which a background task publishes in order; 503 when full.

NATS unreachable: 503 with Retry-After (:class:`~rusts.cluster.nats_bridge.NatsUnavailable`).
"""

from __future__ import annotations

import logging
import uuid

import numpy as np
import trio

from rusts.errors import OverloadedError, RustsError
from rusts.model import WriteBatch

log = logging.getLogger("rusts.cluster.writer")

INLINE_PARSE_BYTES = 128 << 10
PAYLOAD_HEADROOM = 4096


class SyncTimeout(RustsError):
    """Sync mode: the log holds the write but not every owner applied it in time."""

    http_status = 503


def _halves(batch: WriteBatch) -> list[WriteBatch]:
    frames = batch.frames
    if len(frames) > 1:
        mid = len(frames) // 2
        return [WriteBatch.from_frames(frames[:mid]), WriteBatch.from_frames(frames[mid:])]
    f = frames[0]
    keep = np.arange(len(f)) < len(f) // 2
    return [WriteBatch.from_frames([x]) for x in (f.take_rows(keep), f.take_rows(~keep)) if x is not None]


def encode_chunks(batch: WriteBatch, limit: int) -> list[bytes]:
    """``batch`` encoded as shard messages (:func:`rusts.cluster.wire.encode`) of at most
    ``limit`` bytes each (row chunks)."""
    from rusts.cluster.wire import encode

    payload = encode(batch)
    if len(payload) <= limit or batch.point_count <= 1:
        return [payload]
    return [p for half in _halves(batch) for p in encode_chunks(half, limit)]


class ClusterWriter:
    def __init__(self, node) -> None:
        self.node = node
        self.cfg = node.cfg
        self.stats = {"requests": 0, "points": 0, "messages": 0, "bytes": 0}

    async def write(self, body: bytes, precision: str = "ns"):
        from rusts.db import WriteResult
        from rusts.protocols.line_protocol import line_getter, parse

        node = self.node
        if len(body) < INLINE_PARSE_BYTES:
            batch = parse(body, precision=precision)
        else:
            batch = await trio.to_thread.run_sync(lambda: parse(body, precision=precision))
        if batch.point_count:  # the cluster-wide field types (rusts.cluster.schema)
            batch = await node.schema.check(batch, line_getter(body),
                                            provisional=self.cfg.replication_mode == "Async")
        if batch.point_count:
            limit = max(1024, node.max_payload - PAYLOAD_HEADROOM)
            parts = node.sharder.split(batch)
            rid = uuid.uuid4().hex

            def encode_all():
                return [(s, p, f"{node.cfg.node_id}-{rid}-{s}-{i}")
                        for s, b in parts.items() for i, p in enumerate(encode_chunks(b, limit))]

            items = encode_all() if batch.point_count < 2000 else await trio.to_thread.run_sync(encode_all)
            await self._send(items)
            self.stats["points"] += batch.point_count
        self.stats["requests"] += 1
        return WriteResult(batch.point_count, tuple(batch.errors))

    async def _send(self, items: list[tuple[int, bytes, str]]) -> None:
        node = self.node
        mode = self.cfg.replication_mode
        if mode == "Async":
            await node.outbox.put(items)  # durable here; published in the background (outbox.py)
            return
        seqs = await self._publish(items)
        if mode == "Sync":
            want: dict[int, int] = {}
            for (s, _, _), q in zip(items, seqs):
                want[s] = max(want.get(s, 0), q)
            await node.wait_applied(want, self.cfg.sync_timeout_secs)

    async def log_op(self, op: str, body: dict, shards: list[int]) -> None:
        """Put a delete or drop (``op``) into the logs of ``shards``, ordered with the writes
        before it; acknowledged like a write (``Async``: published at once, not via the outbox,
        so it needs NATS)."""
        import orjson

        rid = uuid.uuid4().hex
        payload = orjson.dumps(body)
        items = [(s, payload, f"{self.cfg.node_id}-{rid}-{s}-op", op) for s in shards]
        seqs = await self._publish(items)
        if self.cfg.replication_mode == "Sync":
            await self.node.wait_applied({s: q for (s, *_), q in zip(items, seqs)}, self.cfg.sync_timeout_secs)

    async def _publish(self, items) -> list[int]:
        node = self.node
        try:
            seqs = await node.bridge.call(node.link.publish_many, items)
        except OverloadedError:
            if not node.nats_connected:
                raise
            # one retry with the same message ids: JetStream stores each id once
            seqs = await node.bridge.call(node.link.publish_many, items)
        self.stats["messages"] += len(items)
        self.stats["bytes"] += sum(len(it[1]) for it in items)
        return seqs
