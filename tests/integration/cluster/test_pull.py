"""The appliers' long-lived pull (rusts.cluster.pull) against a real nats-server: every message in
stream order with one request per batch rather than per take, an idle take returning empty, and
a deleted consumer reported so that the applier resubscribes."""

from __future__ import annotations

import asyncio

import pytest

from rusts.cluster import pull as pull_mod
from rusts.cluster.nats_bridge import NatsUnavailable
from tests.integration.cluster.conftest import running_nats


@pytest.fixture
def one_nats(tmp_path):
    yield from running_nats(tmp_path, 1)


def test_messages_arrive_in_order_with_few_requests_and_a_lost_consumer_is_reported(one_nats, monkeypatch):
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

    monkeypatch.setattr(pull_mod, "PULL_BATCH", 100)
    monkeypatch.setattr(pull_mod, "PULL_EXPIRES", 0.5)

    async def main():
        nc = await nats.connect(one_nats.urls[0])
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="S", subjects=["s"]))
        for i in range(250):
            await js.publish("s", str(i).encode())
        await js.add_consumer("S", ConsumerConfig(durable_name="c", name="c", ack_policy=AckPolicy.ALL))
        p = await pull_mod.ShardPull(nc, "S", "c").start()
        got = []
        while len(got) < 250:
            msgs = await p.take(64, 2.0)
            assert msgs and len(msgs) <= 64
            got += msgs
            await msgs[-1].ack()
        assert [int(m.data) for m in got] == list(range(250))
        assert [m.metadata.sequence.stream for m in got] == list(range(1, 251))
        assert p.requests == 3  # 100 messages a request, not one request per take
        assert await p.take(64, 0.3) == []  # idle: nothing after the timeout
        await js.publish("s", b"250")
        assert [m.data for m in await p.take(64, 2.0)] == [b"250"]  # delivered without a new take's request
        await asyncio.sleep(1.2)  # the request expired (408) while idle: the next take asks again
        await js.publish("s", b"251")
        assert [m.data for m in await p.take(64, 2.0)] == [b"251"]
        await js.delete_consumer("S", "c")
        with pytest.raises(NatsUnavailable):
            for _ in range(5):  # the request outstanding on the deleted consumer ends with a status
                await p.take(64, 1.0)
        await p.unsubscribe()
        await nc.close()

    asyncio.run(main())
