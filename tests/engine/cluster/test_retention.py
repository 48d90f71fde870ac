"""The cluster's retention policies: one set in the metadata KV, changed through any node with the
single node's rules, enforced by every shard database that shares it."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

import rusts
from rusts.cluster.retention import KEY, ClusterRetention
from rusts.config import RetentionPolicy
from rusts.errors import QueryError
from rusts.lifecycle.policies import PolicyStore, make_policy


class FakeKV:
    """The metadata bucket with revisions: create-if-absent, get, compare-and-set update."""

    def __init__(self) -> None:
        self.data: dict[str, tuple[bytes, int]] = {}
        self.rev = 0
        self.before_update = None  # a concurrent writer, called once before the next update

    async def kv_create(self, bucket, key, value):
        if key in self.data:
            return False
        self.rev += 1
        self.data[key] = (value, self.rev)
        return True

    async def kv_entry(self, bucket, key):
        return self.data.get(key, (None, 0))

    async def kv_update(self, bucket, key, value, last):
        if self.before_update is not None:
            hook, self.before_update = self.before_update, None
            await hook()
        if self.data.get(key, (None, 0))[1] != last:
            return False
        self.rev += 1
        self.data[key] = (value, self.rev)
        return True


class Bridge:
    async def call(self, fn, *args, _timeout=None):
        return await fn(*args)


def node(kv: FakeKV, configured=()) -> ClusterRetention:
    n = SimpleNamespace(bridge=Bridge(), link=kv, config=SimpleNamespace(retention_policies=tuple(configured)),
                        dbs={}, cfg=SimpleNamespace(heartbeat_secs=1))
    return ClusterRetention(n)


WEEK = RetentionPolicy(name="week", measurement="*", duration=7 * 86400)


async def test_changes_through_any_node_answer_as_one_node_with_the_same_history(tmp_path):
    kv = FakeKV()
    a, b = node(kv, [WEEK]), node(kv, [RetentionPolicy(name="other", duration=60)])
    await a.bootstrap()
    await b.bootstrap()  # the first node's configuration is the cluster's base; b's is not used
    one = PolicyStore.open(tmp_path, [WEEK])  # a single node with a's configuration
    assert b.policies.to_json() == a.policies.to_json() == one.to_json()

    steps = [(a, "add", make_policy("cpu_1h", "cpu", "1h")),
             (b, "update", "week", {"duration": "30d", "tier_after": "1d"}),
             (a, "add", make_policy("mem", "mem", 600)),
             (b, "remove", "cpu_1h"),
             (a, "remove", "week")]  # a configured policy: removed by name, as on one node
    for who, op, *args in steps:
        got = await who.change(op, *args)
        getattr(one, op)(*args[:1], **(args[1] if op == "update" else {}))
        assert got == one.to_json(), op
        other = b if who is a else a
        await other.refresh()
        assert await other.list_json() == one.to_json()
    assert [p["source"] for p in one.to_json()] == ["api"]

    # bad requests get the single node's errors (message and SQLSTATE), and change nothing
    before = kv.data[KEY]
    for op, args, method in [("add", (make_policy("mem", "*", 60),), lambda: one.add(make_policy("mem", "*", 60))),
                             ("remove", ("nope",), lambda: one.remove("nope")),
                             ("update", ("mem", {"name": "x"}), lambda: one.update("mem", name="x")),
                             ("update", ("mem", {"duration": 60, "tier_after": 120}),
                              lambda: one.update("mem", duration=60, tier_after=120))]:
        with pytest.raises(QueryError) as want:
            method()
        with pytest.raises(QueryError) as got:
            await b.change(op, *args)
        assert (str(got.value), got.value.sqlstate) == (str(want.value), want.value.sqlstate)
    assert kv.data[KEY] == before


async def test_a_concurrent_change_is_not_lost():
    kv = FakeKV()
    a, b = node(kv), node(kv)
    await a.bootstrap()
    await b.bootstrap()

    async def meanwhile():  # b changes the policies between a's read and a's write
        await b.change("add", make_policy("by_b", "*", "2d"))

    kv.before_update = meanwhile
    await a.change("add", make_policy("by_a", "cpu", "1d"))
    await b.refresh()
    assert [p["name"] for p in a.policies.to_json()] == [p["name"] for p in b.policies.to_json()] == \
        ["by_a", "by_b"]


async def test_shard_databases_enforce_the_cluster_policies_at_once(tmp_path):
    kv = FakeKV()
    r = node(kv)
    await r.bootstrap()
    now = time.time_ns()
    hour = 3600 * 10**9
    async with rusts.open(tmp_path / "s0") as s0, rusts.open(tmp_path / "s1") as s1:
        r.node.dbs = {0: s0, 1: s1}
        for db in (s0, s1):
            r.attach(db)
            await db.write(f"cpu,host=a v=1 {now - 3 * hour}\ncpu,host=a v=2 {now - 1000}\n"
                           f"mem,host=a v=3 {now - 3 * hour}")

        async def counts(db):
            out = {}
            for m in ("cpu", "mem"):
                rs = await db.query({"measurement": m, "time_range": {"start": 0, "end": now + hour}})
                out[m] = len(rs)
            return out

        assert [await counts(db) for db in (s0, s1)] == [{"cpu": 2, "mem": 1}] * 2
        await node(kv).change("add", make_policy("cpu_2h", "cpu", "2h"))  # through another node
        assert [await counts(db) for db in (s0, s1)] == [{"cpu": 2, "mem": 1}] * 2  # not read yet
        assert await r.refresh()
        assert [await counts(db) for db in (s0, s1)] == [{"cpu": 1, "mem": 1}] * 2
        await r.change("update", "cpu_2h", {"measurement": "*"})
        assert [await counts(db) for db in (s0, s1)] == [{"cpu": 1, "mem": 0}] * 2
