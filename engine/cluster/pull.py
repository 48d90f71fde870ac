"""One long-lived pull per shard consumer (asyncio side, used by :class:`NatsLink`).

nats-py's ``PullSubscription.fetch`` sends one or two pull requests per call (a ``no_wait`` probe,
then a lingering request) and, once a message came, waits for a full batch until the request
expires. An applier that fetches whatever is there, over and over, pays a JetStream request per
fetch (two when idle) and up to the expiry in latency. Instead, :class:`ShardPull` keeps *one*
pull request outstanding on the consumer (``PULL_BATCH`` messages or ``PULL_MAX_BYTES``, expiring
after ``PULL_EXPIRES``) on a core NATS subscription of its own inbox: the server pushes messages
into that subscription as they are stored, :meth:`ShardPull.take` returns what has arrived
(waiting only for the first message), and a new request is sent only when the last one is used
up, expired or ended by the server (a status message: 408 expired, 409 e.g. a leadership
change). So a busy shard costs one request per ``PULL_BATCH`` messages and an idle one a request
per ``PULL_EXPIRES`` seconds (``PullSubscription.fetch`` with a 1 s wait: two a second).

A request lost with a consumer leader's failover is noticed at its expiry (a new one is sent);
the applier's idle bounds check resubscribes when the stream holds messages not delivered.
A request answered with another status (404, 409 or 503: the consumer deleted, lost with its
server, or refusing the request) raises :class:`NatsUnavailable` and the applier resubscribes
with a new consumer. The bytes one request can bring are bounded (``PULL_MAX_BYTES``) and the subscription's pending
limit allows two requests' worth (a stale one may still deliver while its successor does).
"""

from __future__ import annotations

import asyncio
import json

PULL_BATCH = 1024
PULL_EXPIRES = 5.0  # seconds
PULL_MAX_BYTES = 32 << 20
_API = "$JS.API"


def status_of(msg) -> str | None:
    """The status code of a JetStream status message (no payload, a ``Status`` header)."""
    h = msg.headers
    if h and not msg.data:
        return h.get("Status")
    return None


class ShardPull:
    """The pull of one shard consumer: one outstanding request, messages read as they arrive."""

    def __init__(self, nc, stream: str, consumer: str) -> None:
        self.nc = nc
        self.subject = f"{_API}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self.inbox = nc.new_inbox()  # request n is answered on <inbox>.<n>
        self.sub = None
        self.queue: asyncio.Queue = asyncio.Queue()  # delivered messages, in order
        self.left = 0  # messages the outstanding request may still bring
        self.expires_at = 0.0  # loop time at which it expires (0: none outstanding)
        self.requests = 0
        self.current = ""  # the reply subject of the outstanding request

    async def start(self) -> "ShardPull":
        async def deliver(msg) -> None:  # nats-py's per-subscription task, in delivery order
            self.queue.put_nowait(msg)

        self.sub = await self.nc.subscribe(self.inbox + ".*", cb=deliver, pending_msgs_limit=4 * PULL_BATCH,
                                           pending_bytes_limit=4 * PULL_MAX_BYTES)
        return self

    async def unsubscribe(self) -> None:
        if self.sub is not None:
            try:
                await self.sub.unsubscribe()
            except Exception:
                pass
            self.sub = None

    async def _request(self) -> None:
        req = {"batch": PULL_BATCH, "expires": int(PULL_EXPIRES * 1e9), "max_bytes": PULL_MAX_BYTES}
        self.requests += 1
        self.current = f"{self.inbox}.{self.requests}"
        await self.nc.publish(self.subject, json.dumps(req).encode(), reply=self.current)
        self.left = PULL_BATCH
        # the server's 408 normally ends it first; this is for a request lost with its consumer leader
        self.expires_at = asyncio.get_running_loop().time() + PULL_EXPIRES + 1.0

    def _outstanding(self) -> bool:
        return self.left > 0 and asyncio.get_running_loop().time() < self.expires_at

    async def take(self, batch: int, timeout: float) -> list:
        """Up to ``batch`` messages: what has arrived, after waiting up to ``timeout`` for the
        first one ([] when none came)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        out: list = []
        while len(out) < batch:
            if not self._outstanding():
                await self._request()
            if out:  # more only if already here
                try:
                    msg = self.queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
            else:
                wait = min(deadline, self.expires_at) - loop.time()
                if wait <= 0:
                    if loop.time() >= deadline:
                        break
                    self.left = 0  # expired: a new request at the loop's top
                    continue
                try:
                    msg = await asyncio.wait_for(self.queue.get(), wait)
                except (asyncio.TimeoutError, TimeoutError):
                    continue
            status = status_of(msg)
            if status is None:  # (a message of an earlier request still counts as one)
                if msg.subject == self.current:
                    self.left -= 1
                out.append(msg)
            elif status == "408" and msg.subject == self.current:
                self.left = 0  # expired: ask again
            elif status != "100" and msg.subject == self.current:
                # 404 / 409 / 503: the consumer is gone (deleted, its server lost) or no longer
                # takes this request: the applier resubscribes (a new consumer)
                self.left = 0
                if out:
                    break
                from rusts.cluster.nats_bridge import NatsUnavailable

                desc = msg.headers.get("Description", "") if msg.headers else ""
                raise NatsUnavailable(f"pull from {self.subject.rsplit('.', 2)[-2]}: status {status} {desc}".rstrip())
        return out
