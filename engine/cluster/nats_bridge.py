"""NATS (JetStream) from trio: nats-py runs on its own asyncio loop in a dedicated thread.

Choice: a dedicated asyncio thread rather than trio-asyncio. nats-py is written for asyncio
and keeps background tasks (reader, flusher, ping, reconnect) alive between calls; running them on
a real asyncio loop in their own thread is how the library is tested upstream, keeps the trio
loop free of asyncio's scheduling, and costs one thread hop per call (a ``call_soon_threadsafe``
and a ``run_sync_soon`` back), which is small next to a network round trip. Every nats object
lives and is touched only in that thread: trio code calls :meth:`NatsBridge.call` with a
coroutine function of :class:`NatsLink` and awaits its result. Cancelling the trio side cancels
the asyncio future.

Errors: anything the NATS side raises while the servers are unreachable (no servers, timeouts,
connection closed or reconnecting, no responders) comes back as
:class:`rusts.errors.OverloadedError` (HTTP 503 with Retry-After); the HTTP layer never sees a
nats exception or a traceback.

Names: shard ``k`` of cluster ``c`` is the stream ``RUSTS_c_k`` with the subject ``rusts.c.s.k``;
metadata lives in the KV buckets ``rusts_c_members`` (heartbeats) and ``rusts_c_meta`` (shard
map, applied sequences); node-to-node query requests go to the subject ``rusts.c.q.<node_id>``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from rusts.errors import OverloadedError, RustsError

log = logging.getLogger("rusts.cluster.nats")

RETRY_AFTER = 2.0
PING_INTERVAL = 2  # seconds between client pings to the NATS server
OP_HEADER = "Rusts-Op"


def stream_name(cluster: str, shard: int) -> str:
    return f"RUSTS_{cluster}_{shard}"


def shard_subject(cluster: str, shard: int) -> str:
    return f"rusts.{cluster}.s.{shard}"


def query_subject(cluster: str, node_id: str) -> str:
    return f"rusts.{cluster}.q.{node_id}"


def _is_nats_error(e: BaseException) -> bool:
    import nats.errors

    return isinstance(e, (nats.errors.Error, asyncio.TimeoutError, ConnectionError, OSError))


class NatsUnavailable(OverloadedError):
    """The NATS servers cannot be reached (or did not answer in time): retry later."""


class NatsBridge:
    """An asyncio event loop in a daemon thread, called from trio."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self.loop = loop
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=main, name="rusts-nats", daemon=True)
        self._thread.start()
        ready.wait()

    def stop(self) -> None:
        if self.loop is not None and self._thread is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)
            self.loop = None

    async def call(self, fn: Callable[..., Awaitable[Any]], *args, _timeout: float = 30.0, **kwargs) -> Any:
        """Run ``await fn(*args, **kwargs)`` on the asyncio loop; return or raise its outcome.

        NATS failures are raised as :class:`NatsUnavailable`, and so is a call that has not
        finished after ``_timeout`` seconds (it is cancelled: a client call stuck across a
        reconnect must not stall its caller for ever)."""
        assert self.loop is not None, "bridge not started"
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()

        def wake(_f) -> None:
            try:
                token.run_sync_soon(done.set)
            except trio.RunFinishedError:
                pass

        fut = asyncio.run_coroutine_threadsafe(fn(*args, **kwargs), self.loop)
        fut.add_done_callback(wake)
        try:
            with trio.move_on_after(_timeout) as scope:
                await done.wait()
        except BaseException:
            fut.cancel()
            raise
        if scope.cancelled_caught:
            fut.cancel()
            raise NatsUnavailable(f"NATS call {getattr(fn, '__name__', fn)} did not finish within {_timeout:g}s",
                                  retry_after=RETRY_AFTER)
        try:
            return fut.result()
        except RustsError:
            raise
        except Exception as e:
            if _is_nats_error(e):
                raise NatsUnavailable(f"NATS unavailable: {type(e).__name__}: {e}".rstrip(": "),
                                      retry_after=RETRY_AFTER) from None
            raise

    def submit(self, fn: Callable[..., Awaitable[Any]], *args) -> None:
        """Start ``fn(*args)`` on the asyncio loop without waiting (fire and forget)."""
        if self.loop is not None:
            asyncio.run_coroutine_threadsafe(fn(*args), self.loop)


class NatsLink:
    """The NATS side of one node: connection, JetStream streams and KV buckets (asyncio only)."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.nc = None
        self.js = None
        self.members = None
        self.meta = None
        self.subs: dict[int, Any] = {}
        self._ensured: set[int] = set()
        self.max_payload = 1 << 20

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    async def connect(self) -> None:
        import nats

        c = self.cfg
        self.nc = await nats.connect(
            servers=list(c.nats.servers), connect_timeout=c.nats.connect_timeout_secs,
            allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
            # a server that stopped answering (a partition) is left after ~2 missed pings,
            # not after nats-py's default of 2 x 120 s
            ping_interval=PING_INTERVAL, max_outstanding_pings=2,
            name=f"rusts-{c.cluster_name}-{c.node_id}", **c.nats.connect_options())
        self.js = self.nc.jetstream(timeout=c.nats.publish_timeout_secs)
        self.max_payload = int(self.nc.max_payload)
        r = c.nats.stream_replicas
        name = c.cluster_name
        self.members = await self._bucket(f"rusts_{name}_members", ttl=max(10.0, 5 * c.dead_after_secs),
                                          replicas=r)
        self.meta = await self._bucket(f"rusts_{name}_meta", replicas=r)
        for s in range(c.shard_count):
            await self.ensure_stream(s)

    async def _bucket(self, name: str, **params):
        """Create the KV bucket, or bind the existing one when it has another configuration
        (another node created it first, or a setting changed since)."""
        import nats.js.errors

        try:
            return await self.js.create_key_value(bucket=name, history=1, **params)
        except nats.js.errors.BadRequestError as e:
            log.warning("KV bucket %s: %s (using it as it is)", name, e)
            return await self.js.key_value(name)

    async def close(self) -> None:
        if self.nc is not None:
            try:
                await asyncio.wait_for(self.nc.drain(), 3)
            except Exception:
                pass
            self.nc = None

    def _check(self) -> None:
        if not self.connected:
            raise NatsUnavailable("NATS is unreachable (cluster write log unavailable)",
                                  retry_after=RETRY_AFTER)

    async def ensure_stream(self, shard: int) -> None:
        from nats.js.api import StorageType, StreamConfig
        import nats.js.errors

        c = self.cfg
        cfg = StreamConfig(name=stream_name(c.cluster_name, shard),
                           subjects=[shard_subject(c.cluster_name, shard)],
                           num_replicas=c.nats.stream_replicas, storage=StorageType.FILE,
                           # the duplicate window may not exceed max_age (JetStream refuses the stream)
                           duplicate_window=min(120.0, c.nats.max_age_secs or 120.0),
                           max_age=c.nats.max_age_secs or None,
                           max_bytes=c.nats.max_bytes)
        try:
            await self.js.add_stream(cfg)
        except nats.js.errors.BadRequestError:  # exists with another config (limits changed)
            try:
                await self.js.update_stream(cfg)
            except nats.js.errors.BadRequestError as e:  # e.g. replicas of a running stream: keep it
                log.warning("stream %s: %s", cfg.name, e)
        self._ensured.add(shard)

    # ---------------------------------------------------------------- write log
    async def publish(self, shard: int, payload: bytes, msg_id: str, op: str | None = None) -> int:
        """Publish one shard message; returns its stream sequence (the JetStream ack). ``op``
        (header ``Rusts-Op``) marks a message that is not rows: ``delete`` or ``drop``."""
        self._check()
        headers = {"Nats-Msg-Id": msg_id}
        if op is not None:
            headers[OP_HEADER] = op
        ack = await self.js.publish(shard_subject(self.cfg.cluster_name, shard), payload, headers=headers)
        return int(ack.seq)

    async def publish_many(self, items: list[tuple[int, bytes, str]]) -> list[int]:
        """Publish several shard messages: shards concurrently, each shard's messages one after
        the other (so a shard's stream keeps their order); their stream sequences, in order."""
        self._check()
        by_shard: dict[int, list[int]] = {}
        for k, (s, *_) in enumerate(items):
            by_shard.setdefault(s, []).append(k)
        out = [0] * len(items)

        async def one_shard(idx: list[int]) -> None:
            for k in idx:
                out[k] = await self.publish(*items[k])

        await asyncio.gather(*(one_shard(idx) for idx in by_shard.values()))
        return out

    async def last_seqs(self, timeout: float = 2.0) -> dict[int, int]:
        """Last sequence of each shard stream (concurrently; a stream that does not answer in
        ``timeout``, e.g. while its leader is elected, is left out)."""
        self._check()

        async def one(s: int):
            try:
                si = await asyncio.wait_for(self.js.stream_info(stream_name(self.cfg.cluster_name, s)), timeout)
                return s, int(si.state.last_seq)
            except Exception:
                return s, None

        return {s: q for s, q in await asyncio.gather(*(one(s) for s in range(self.cfg.shard_count)))
                if q is not None}

    async def stream_bounds(self, shard: int) -> tuple[int, int]:
        """``(first, last)`` sequence the shard's stream holds (first = last + 1 when empty)."""
        self._check()
        si = await self.js.stream_info(stream_name(self.cfg.cluster_name, shard))
        return int(si.state.first_seq), int(si.state.last_seq)

    async def leader_msgs(self, shard: int, start: int, end: int) -> list[tuple[int, bytes, Any]]:
        """Messages ``start .. end`` of ``shard``'s stream as its leader holds them (the JetStream
        API's STREAM.MSG.GET, answered by the leader; not DIRECT.GET, which any replica answers):
        ``(seq, payload, msg)`` in order, stopping before the first sequence not found. Asked 32
        at a time."""
        import nats.js.errors

        self._check()
        stream = stream_name(self.cfg.cluster_name, shard)
        out: list[tuple[int, bytes, Any]] = []
        for lo in range(start, end + 1, 32):
            seqs = range(lo, min(end, lo + 31) + 1)
            got = await asyncio.gather(*(self.js.get_msg(stream, q) for q in seqs), return_exceptions=True)
            for q, m in zip(seqs, got):
                if isinstance(m, nats.js.errors.NotFoundError):
                    return out
                if isinstance(m, BaseException):
                    raise m
                out.append((q, m.data or b"", m))
        return out

    async def subscribe_shard(self, shard: int, start_seq: int) -> None:
        """(Re)create this node's durable pull consumer on ``shard``, delivering from ``start_seq``.

        Each subscription gets a consumer of its own name (``apply_<node>_<random>``), created
        with exactly this configuration; this node's earlier consumers on the stream are
        deleted first. (Reusing one durable name is not safe: the client binds to an existing
        consumer of that name without applying the new start sequence, and in a JetStream
        cluster a just-deleted consumer can still be found for a moment.)"""
        import uuid

        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        import nats.js.errors

        c = self.cfg
        stream = stream_name(c.cluster_name, shard)
        prefix = f"apply_{c.node_id}_"
        old = self.subs.pop(shard, None)
        if old is not None:
            try:
                await old.unsubscribe()
            except Exception:
                pass
        for ci in await self.js.consumers_info(stream):
            if ci.name.startswith(prefix) or ci.name == f"apply_{c.node_id}":
                try:
                    await self.js.delete_consumer(stream, ci.name)
                except nats.js.errors.NotFoundError:
                    pass
        name = prefix + uuid.uuid4().hex[:12]
        common = dict(name=name, durable_name=name, filter_subject=shard_subject(c.cluster_name, shard),
                      ack_policy=AckPolicy.ALL, ack_wait=60.0, max_ack_pending=-1)
        if start_seq <= 1:
            cc = ConsumerConfig(deliver_policy=DeliverPolicy.ALL, **common)
        else:
            cc = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start_seq, **common)
        await self.js.add_consumer(stream, config=cc)
        self.subs[shard] = await self.js.pull_subscribe_bind(durable=name, stream=stream)

    async def fetch(self, shard: int, batch: int, timeout: float, ack=None) -> list[tuple[int, bytes, Any]]:
        """Up to ``batch`` messages of ``shard``: ``(stream seq, payload, msg)``; [] on timeout.
        ``ack``: a message of the previous fetch to acknowledge first (cumulatively, as
        :meth:`ack`): one call from trio instead of two."""
        import nats.errors

        if ack is not None:
            await ack.ack()
        sub = self.subs.get(shard)
        if sub is None or not self.connected:
            await asyncio.sleep(timeout)
            return []
        try:
            msgs = await sub.fetch(batch, timeout=timeout)
        except (nats.errors.TimeoutError, TimeoutError):  # nothing new within the timeout
            return []
        return [(int(m.metadata.sequence.stream), m.data, m) for m in msgs]

    @staticmethod
    def op_of(msg) -> str | None:
        """The ``Rusts-Op`` header of a fetched message (None: a rows message)."""
        h = getattr(msg, "headers", None)
        return h.get(OP_HEADER) if h else None

    async def ack(self, msgs: list) -> None:
        """Acknowledge ``msgs`` (in stream order): the consumer acks cumulatively (AckPolicy.ALL),
        so one ack of the last one covers the batch."""
        if msgs:
            await msgs[-1].ack()

    # ---------------------------------------------------------------- key-value metadata
    async def kv_put(self, bucket: str, key: str, value: bytes) -> None:
        self._check()
        await getattr(self, bucket).put(key, value)

    async def kv_create(self, bucket: str, key: str, value: bytes) -> bool:
        """Create ``key`` unless it exists; True when this call created it."""
        import nats.js.errors

        try:
            await getattr(self, bucket).create(key, value)
            return True
        except nats.js.errors.KeyWrongLastSequenceError:
            return False

    async def kv_create_many(self, bucket: str, items: list[tuple[str, bytes]],
                             timeout: float = 5.0) -> dict[str, bool]:
        """Create each key unless it exists (concurrently); key -> True when this call created it."""
        self._check()

        async def one(k: str, v: bytes):
            return k, await asyncio.wait_for(self.kv_create(bucket, k, v), timeout)

        return dict(await asyncio.gather(*(one(k, v) for k, v in items)))

    async def kv_get(self, bucket: str, key: str) -> bytes | None:
        return (await self._entry(bucket, key))[0]

    async def kv_entry(self, bucket: str, key: str) -> tuple[bytes | None, int]:
        """``(value, revision)`` of ``key``; ``(None, 0)`` when absent."""
        self._check()
        return await self._entry(bucket, key)

    async def _entry(self, bucket: str, key: str) -> tuple[bytes | None, int]:
        import nats.js.errors

        try:
            e = await getattr(self, bucket).get(key)
        except nats.js.errors.KeyNotFoundError:
            return None, 0
        return e.value, int(e.revision)

    async def kv_update(self, bucket: str, key: str, value: bytes, last: int) -> bool:
        """Set ``key`` if its revision is still ``last`` (optimistic concurrency); False if not."""
        import nats.js.errors

        self._check()
        try:
            await getattr(self, bucket).update(key, value, last=last)
            return True
        except nats.js.errors.KeyWrongLastSequenceError:
            return False

    async def kv_get_many(self, bucket: str, keys: list[str], timeout: float = 2.0) -> dict[str, bytes]:
        """The values of ``keys`` (concurrent direct gets; missing or timed-out keys are left
        out). Listing a bucket's keys would make the server create a consumer each time."""

        async def one(k: str):
            try:
                return k, await asyncio.wait_for(self.kv_get(bucket, k), timeout)
            except (asyncio.TimeoutError, TimeoutError):
                return k, None

        self._check()
        return {k: v for k, v in await asyncio.gather(*(one(k) for k in keys)) if v}

    # ---------------------------------------------------------------- node-to-node requests
    async def serve_requests(self, subject: str, handler: Callable[[bytes], Awaitable[bytes]]) -> None:
        """Answer requests on ``subject`` with ``await handler(payload)`` (runs on this loop)."""

        async def on_msg(msg) -> None:
            try:
                reply = await handler(msg.data)
            except Exception as e:  # never leave a requester waiting for a timeout
                import orjson

                reply = orjson.dumps({"error": f"{type(e).__name__}: {e}", "status": 500})
            try:
                await msg.respond(reply)
            except Exception as e:
                log.warning("cannot answer a cluster request: %s", e)

        await self.nc.subscribe(subject, cb=on_msg)

    async def request(self, subject: str, payload: bytes, timeout: float) -> bytes:
        self._check()
        msg = await self.nc.request(subject, payload, timeout=timeout)
        return msg.data
