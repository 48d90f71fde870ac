"""Async mode's outbox: accepted shard messages, durable on this node, published in the background.

A write in ``Async`` mode is acknowledged once its shard messages are in this log (appended and
fsynced: :class:`rusts.storage.wal.Wal`, the engine's own checksummed segmented log, under
``<data_dir>/cluster/outbox/``). A background task publishes them in order and then records the
last published record in ``published.json`` (atomic replace, fsynced); sealed log segments below
it are deleted. After a crash the node replays the records after ``published.json`` and publishes
them again: the ones that did reach JetStream carry the same message id and are dropped by its
duplicate window (two minutes); past that window a duplicate is harmless, because applying is
idempotent (last write wins per series, timestamp and field).

Bounded: ``outbox_max_bytes`` of unpublished payload; beyond it writes get 503 with Retry-After.

Record payload: ``u32 shard | u16 len(msg id) | msg id (utf-8) | message``.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from collections import deque
from pathlib import Path

import trio

from rusts.errors import OverloadedError

log = logging.getLogger("rusts.cluster.outbox")

_HEAD = struct.Struct("<IH")
CURSOR = "published.json"


def pack(shard: int, msg_id: str, payload: bytes) -> bytes:
    mid = msg_id.encode()
    return _HEAD.pack(shard, len(mid)) + mid + payload


def unpack(rec: bytes) -> tuple[int, str, bytes]:
    shard, n = _HEAD.unpack_from(rec)
    o = _HEAD.size
    return shard, bytes(rec[o:o + n]).decode(), bytes(rec[o + n:])


class Outbox:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        from rusts.storage.wal import Wal

        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_bytes)
        self.wal, report = Wal.open(self.dir / "log", segment_max_bytes=16 << 20)
        for path, off in report.torn_tail_truncated:
            log.warning("outbox %s: torn tail truncated at offset %d", path, off)
        self.published = self._read_cursor()
        self.pending: deque = deque()  # (wal seq, shard, msg id, payload)
        self.bytes = 0
        for seq, rec in self.wal.replay(self.published):
            s, mid, p = unpack(rec)
            self.pending.append((seq, s, mid, p))
            self.bytes += len(p)
        if self.pending:
            log.info("outbox: %d message(s) from before the restart to publish", len(self.pending))
        self._lock = trio.Lock()
        self._wake = trio.Event()

    def _read_cursor(self) -> int:
        try:
            return int(json.loads((self.dir / CURSOR).read_bytes())["seq"])
        except FileNotFoundError:
            return 0

    def _write_cursor(self, seq: int) -> None:
        tmp = self.dir / (CURSOR + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, json.dumps({"seq": int(seq)}).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.dir / CURSOR)
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    async def put(self, items: list[tuple[int, bytes, str]]) -> None:
        """Make ``items`` durable here (or raise 503 when the outbox is full)."""
        size = sum(len(p) for _, p, _ in items)
        if self.bytes + size > self.max_bytes:
            raise OverloadedError(f"cluster outbox is full ({self.bytes} bytes waiting for NATS); retry later",
                                  retry_after=2.0)
        self.bytes += size  # reserved now, so concurrent writers cannot overshoot the bound
        recs = [pack(s, mid, p) for s, p, mid in items]
        try:
            async with self._lock:  # one appender at a time: sequence order = pending order
                def append():
                    last = self.wal.append(recs)
                    self.wal.sync()
                    return last

                last = await trio.to_thread.run_sync(append)
                first = last - len(items) + 1
                for k, (s, p, mid) in enumerate(items):
                    self.pending.append((first + k, s, mid, p))
        except BaseException:
            self.bytes -= size
            raise
        self._wake.set()

    async def run(self, publish) -> None:
        """Publish pending messages in order with ``await publish(items)`` (retrying)."""
        while True:
            if not self.pending:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            batch = [self.pending[i] for i in range(min(64, len(self.pending)))]
            try:
                await publish([(s, p, mid) for _, s, mid, p in batch])
            except OverloadedError as e:
                log.info("outbox: %s; retrying", e)
                await trio.sleep(0.5)
                continue
            last = batch[-1][0]
            await trio.to_thread.run_sync(self._write_cursor, last)
            self.published = last
            for _ in batch:
                self.pending.popleft()
            self.bytes -= sum(len(p) for _, _, _, p in batch)
            try:
                async with self._lock:  # the Wal is not thread-safe: never beside an append
                    await trio.to_thread.run_sync(lambda: self.wal.checkpoint(last, retention_secs=0,
                                                                              now=0.0))
            except Exception as e:  # only disk space is at stake: keep publishing
                log.warning("outbox: checkpoint failed: %s", e)

    def close(self) -> None:
        self.wal.close()
