"""Schema agreement: a field's type is decided once for the cluster (the KV), every node rejects a
conflicting line as one node does, and a shard database learns the cluster's type before applying."""

from __future__ import annotations

import pytest

from rusts.cluster.nats_bridge import NatsUnavailable
from rusts.cluster.schema import ClusterSchema, schema_key
from rusts.model import FieldType
from rusts.protocols.line_protocol import parse
from rusts.storage.schema import SchemaRegistry


class FakeKV:
    """The metadata bucket: create-if-absent and get, like JetStream KV (or down)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.down = False
        self.calls = 0

    async def kv_get_many(self, bucket, keys):
        self._up()
        return {k: self.data[k] for k in keys if k in self.data}

    async def kv_create_many(self, bucket, items):
        self._up()
        out = {}
        for k, v in items:
            out[k] = k not in self.data
            self.data.setdefault(k, v)
        return out

    def _up(self):
        self.calls += 1
        if self.down:
            raise NatsUnavailable("NATS is unreachable", retry_after=2.0)


class Bridge:
    async def call(self, fn, *args, _timeout=None):
        return await fn(*args)


def lines_of(body: bytes):
    return lambda n: body.split(b"\n")[n - 1].decode()


async def check(node: ClusterSchema, body: bytes, **kw):
    return await node.check(parse(body), lines_of(body), **kw)


async def test_a_conflicting_line_gets_the_single_node_error_on_every_node():
    kv = FakeKV()
    a, b = ClusterSchema(Bridge(), kv), ClusterSchema(Bridge(), kv)
    first = b"cpu,host=a usage=1.5,n=1i 1"
    assert not (await check(a, first)).errors
    assert kv.data[schema_key("cpu", "usage")] == b"float"

    bad = b"cpu,host=b usage=2i 2\ncpu,host=c n=5i 3"
    single = SchemaRegistry()
    single.check(parse(first))
    want = single.check(parse(bad), lines_of(bad))
    for node in (a, b):  # b never saw the first write: it learns the type from the KV
        got = await check(node, bad)
        assert got.errors == want.errors and got.point_count == want.point_count == 1
        assert 'input field "usage" on measurement "cpu" is type integer, already exists as type float' \
            in got.errors[0].error_message
    assert b.known[("cpu", "usage")] == FieldType.FLOAT


async def test_known_fields_cost_no_kv_call_and_the_first_proposal_wins():
    kv = FakeKV()
    a, b = ClusterSchema(Bridge(), kv), ClusterSchema(Bridge(), kv)
    await check(a, b"m v=1i 1")
    n = kv.calls
    await check(a, b"m v=2i 2\nm v=3i 3")
    assert kv.calls == n  # decided once, cached
    # b proposes v as float: the stored integer wins and b's line is rejected
    got = await check(b, b"m v=1.5 4")
    assert got.point_count == 0 and "already exists as type integer" in got.errors[0].error_message


async def test_nats_down_is_503_except_async_which_decides_locally():
    kv = FakeKV()
    kv.down = True
    node = ClusterSchema(Bridge(), kv)
    with pytest.raises(NatsUnavailable):
        await check(node, b"m v=1i 1")
    got = await check(node, b"m v=1i 1", provisional=True)
    assert got.point_count == 1 and not got.errors


async def test_a_shard_database_learns_the_cluster_type_before_applying():
    kv = FakeKV()
    node = ClusterSchema(Bridge(), kv)
    await check(node, b"m v=1i 1")

    class ShardDb:
        schema = SchemaRegistry()

    # a message accepted while NATS was down proposes float; the shard applies the cluster's type
    late = parse(b"m v=2.5 2")
    await node.seed(ShardDb, [late])
    assert ShardDb.schema.field_type("m", "v") == FieldType.INTEGER
    assert ShardDb.schema.check(late).point_count == 0
