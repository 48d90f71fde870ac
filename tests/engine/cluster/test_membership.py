"""Membership's heartbeat under NATS trouble, with a fake NATS link and trio's virtual clock.

A node whose heartbeat is not stored within ``dead_after_secs`` refuses queries (it may be on the
minority side of a partition), so a NATS hiccup must not make the heartbeat look stale for longer
than the hiccup: a failed put is retried at once, a put stuck on a dead connection is abandoned
well before ``dead_after_secs``, and a slow re-read of the other members never delays it. (The CI
failure this came from: a NATS server killed mid-ingest, a put waiting out the client's 5 s
publish timeout, then a re-read, then a 1 s sleep: 7 s without a heartbeat, a 503.)"""

from __future__ import annotations

import types

import trio
import trio.testing

from rusts.cluster.config import ClusterConfig, NodeConfig
from rusts.cluster.membership import Membership
from rusts.cluster.nats_bridge import NatsUnavailable


class FakeLink:
    def __init__(self, fail_puts: int = 0, stuck_puts: int = 0, refresh_hangs: bool = False) -> None:
        self.fail_puts = fail_puts
        self.stuck_puts = stuck_puts
        self.refresh_hangs = refresh_hangs
        self.puts: list[float] = []  # trio time of every put attempt

    async def kv_put(self, bucket, key, value) -> None:
        self.puts.append(trio.current_time())
        if self.stuck_puts:
            self.stuck_puts -= 1
            await trio.sleep_forever()  # a request sent on a connection that just died
        if self.fail_puts:
            self.fail_puts -= 1
            raise NatsUnavailable("no servers available")

    async def kv_get_many(self, bucket, keys):
        if self.refresh_hangs:
            await trio.sleep_forever()
        return {}


class FakeBridge:
    async def call(self, fn, *args, _timeout: float = 30.0, **kwargs):
        with trio.move_on_after(_timeout):
            return await fn(*args, **kwargs)
        raise NatsUnavailable(f"NATS call did not finish within {_timeout:g}s")


def node(link: FakeLink):
    cfg = ClusterConfig(node_id="n0", nodes=(NodeConfig("n0", "127.0.0.1:1", (0,)),), shard_count=1,
                        heartbeat_secs=1.0, dead_after_secs=3.0)
    return types.SimpleNamespace(cfg=cfg, bridge=FakeBridge(), link=link)


def run_for(link: FakeLink, seconds: float) -> None:
    async def main():
        m = Membership(node(link))
        with trio.move_on_after(seconds):
            await m.run()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_failed_heartbeat_is_retried_at_once_not_a_heartbeat_later() -> None:
    link = FakeLink(fail_puts=3)
    run_for(link, 1.5)
    gaps = [b - a for a, b in zip(link.puts, link.puts[1:])]
    assert gaps[:3] and all(g <= 0.25 for g in gaps[:3]), gaps  # the 3 failures: retried within 0.2 s
    assert len(link.puts) >= 4


def test_a_put_stuck_on_a_dead_connection_is_abandoned_well_before_dead_after() -> None:
    link = FakeLink(stuck_puts=2)
    run_for(link, 4.0)
    # two stuck puts of at most dead_after_secs / 3 each, then a success: stored within ~2.5 s
    assert len(link.puts) >= 3 and link.puts[2] - link.puts[0] <= 2.5, link.puts


def test_a_slow_reread_of_the_members_does_not_delay_the_heartbeat() -> None:
    link = FakeLink(refresh_hangs=True)
    run_for(link, 5.5)
    assert len(link.puts) >= 5, link.puts  # one a second, as if the re-read were instant
