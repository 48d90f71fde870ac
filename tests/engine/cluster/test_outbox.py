"""Async mode's outbox: durable before the acknowledgement, replayed after a restart, bounded."""

from __future__ import annotations

import pytest
import trio

from rusts.cluster.outbox import Outbox
from rusts.errors import OverloadedError


async def test_unpublished_messages_survive_a_reopen_and_publish_in_order(tmp_path):
    ob = Outbox(tmp_path / "ob", max_bytes=1 << 20)
    await ob.put([(3, b"a" * 10, "id-1"), (5, b"b" * 20, "id-2")])
    await ob.put([(3, b"c" * 30, "id-3")])
    assert ob.bytes == 60
    ob.close()  # a crash before anything was published: only the log on disk is left

    ob = Outbox(tmp_path / "ob", max_bytes=1 << 20)
    assert [(s, mid, p[:1]) for _, s, mid, p in ob.pending] == [(3, "id-1", b"a"), (5, "id-2", b"b"),
                                                                (3, "id-3", b"c")]
    sent = []

    async def publish(items):
        sent.extend(items)

    async with trio.open_nursery() as n:
        n.start_soon(ob.run, publish)
        while ob.pending:
            await trio.sleep(0.01)
        n.cancel_scope.cancel()
    assert [mid for _, _, mid in sent] == ["id-1", "id-2", "id-3"] and ob.bytes == 0
    ob.close()
    assert not Outbox(tmp_path / "ob", max_bytes=1 << 20).pending  # published: not replayed again


async def test_publish_failures_are_retried_and_a_full_outbox_refuses(tmp_path):
    ob = Outbox(tmp_path / "ob", max_bytes=100)
    await ob.put([(0, b"x" * 60, "m1")])
    with pytest.raises(OverloadedError, match="outbox is full") as ei:
        await ob.put([(1, b"y" * 60, "m2")])
    assert ei.value.retry_after >= 1
    calls = []

    async def flaky(items):
        calls.append(items)
        if len(calls) == 1:
            raise OverloadedError("NATS is unreachable", retry_after=1)

    async with trio.open_nursery() as n:
        n.start_soon(ob.run, flaky)
        while ob.pending:
            await trio.sleep(0.01)
        n.cancel_scope.cancel()
    assert len(calls) == 2 and calls[1] == [(0, b"x" * 60, "m1")]
    await ob.put([(1, b"y" * 60, "m2")])  # room again once published
