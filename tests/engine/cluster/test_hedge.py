"""Hedged shard requests: a stalled owner's shards are answered by another owner after the hedge
delay; an owner that answers, fails or is the only one left is handled as before."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import trio

from rusts.cluster.hedge import Suspects, hedged
from rusts.errors import QueryError, RustsError

FOREVER = 1e9


class FakeNode:
    """A coordinator ``me`` whose peers answer after a given delay (or fail)."""

    def __init__(self, owners: dict[int, tuple[str, ...]], delays: dict[str, float],
                 errors: dict[str, Exception] | None = None, live=None) -> None:
        self.cfg = SimpleNamespace(node_id="me", hedge_after_secs=0.5, dead_after_secs=3.0)
        self.owners = owners
        self.delays = delays
        self.errors = errors or {}
        self.live = live or set(delays)
        self.asked: list[tuple[str, tuple[int, ...]]] = []
        self.hedge_stats = {"hedged": 0, "hedge_won": 0}
        self.suspects = Suspects(3.0)

    async def _partial(self, who, op, q, shards):
        self.asked.append((who, tuple(shards)))
        await trio.sleep(self.delays[who])
        if who in self.errors:
            raise self.errors[who]
        return {"from": who, "shards": list(shards)}

    def _assign(self, shards, exclude, missing):
        plan = {}
        for s in shards:
            live = [o for o in self.owners[s] if o not in exclude and o in self.live]
            if not live:
                missing[s] = "none"
                continue
            plan.setdefault(self.suspects.prefer(live)[0], []).append(s)
        return plan


OWNERS = {1: ("a", "b"), 4: ("a", "c"), 7: ("a", "b")}


async def test_a_stalled_owner_is_hedged_and_the_hedges_answer(autojump_clock):
    node = FakeNode(OWNERS, {"a": FOREVER, "b": 0.1, "c": 0.2})
    t0 = trio.current_time()
    parts = await hedged(node, "a", "query", None, [1, 4, 7], set())
    assert trio.current_time() - t0 == pytest.approx(0.7)  # the delay, then the slower hedge
    assert sorted((p["from"], tuple(p["shards"])) for p in parts) == [("b", (1, 7)), ("c", (4,))]
    assert node.hedge_stats == {"hedged": 1, "hedge_won": 1}
    assert "a" in node.suspects and node.suspects.prefer(["a", "b"]) == ["b"]
    await trio.sleep(3.1)
    assert "a" not in node.suspects  # suspicion ends after dead_after_secs


async def test_an_owner_answering_in_time_or_before_the_hedges_wins(autojump_clock):
    node = FakeNode(OWNERS, {"a": 0.2, "b": 0.1, "c": 0.1})
    assert await hedged(node, "a", "query", None, [1, 4], set()) == [{"from": "a", "shards": [1, 4]}]
    assert node.asked == [("a", (1, 4))] and node.hedge_stats["hedged"] == 0
    node = FakeNode(OWNERS, {"a": 0.7, "b": 5.0, "c": 5.0})  # slow, but faster than its hedges
    assert await hedged(node, "a", "query", None, [1, 4], set()) == [{"from": "a", "shards": [1, 4]}]
    assert node.hedge_stats == {"hedged": 1, "hedge_won": 0} and "a" not in node.suspects


async def test_failures_and_owners_without_a_peer(autojump_clock):
    # a failing owner fails at once (the fan-out moves its shards to another owner)
    node = FakeNode(OWNERS, {"a": 0.1, "b": 0.1}, errors={"a": RustsError("gone")})
    with pytest.raises(RustsError, match="gone"):
        await hedged(node, "a", "query", None, [1], set())
    assert node.asked == [("a", (1,))]
    # no other live owner of shard 4: no hedge, the original's answer is awaited
    node = FakeNode(OWNERS, {"a": 2.0, "b": 0.1})
    assert await hedged(node, "a", "query", None, [1, 4], set()) == [{"from": "a", "shards": [1, 4]}]
    assert node.hedge_stats["hedged"] == 0
    # a failing hedge leaves the original to finish; when both fail, the original's error
    node = FakeNode(OWNERS, {"a": 1.0, "b": 0.1}, errors={"b": RustsError("hedge broke")})
    assert await hedged(node, "a", "query", None, [1], set()) == [{"from": "a", "shards": [1]}]
    node = FakeNode(OWNERS, {"a": 1.0, "b": 0.1}, errors={"b": RustsError("hedge broke"), "a": RustsError("late")})
    with pytest.raises(RustsError, match="late"):
        await hedged(node, "a", "query", None, [1], set())
    # a bad query is reported at once, whichever side finds it
    node = FakeNode(OWNERS, {"a": FOREVER, "b": 0.1}, errors={"b": QueryError("bad field")})
    with pytest.raises(QueryError, match="bad field"):
        await hedged(node, "a", "query", None, [1], set())
    # this node's own shards and hedge_after_secs = 0 are never hedged
    node = FakeNode(OWNERS, {"me": 2.0, "a": 2.0, "b": 0.1})
    assert (await hedged(node, "me", "query", None, [1], set()))[0]["from"] == "me"
    node.cfg.hedge_after_secs = 0
    assert (await hedged(node, "a", "query", None, [1], set()))[0]["from"] == "a"
    assert node.hedge_stats["hedged"] == 0
