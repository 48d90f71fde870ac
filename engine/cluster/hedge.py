"""Hedged shard requests: a frozen or slow owner does not hold a query for the request timeout.

A coordinator asks one owner per shard (``ClusterNode._fan_out``). When a request to another
node has not been answered after ``hedge_after_secs`` (cluster.toml, default 0.5 s), the same
shards are also asked of their other live owners (one per shard, spread as usual), and whichever
covers the shards first wins: the original answer, or the hedges' answers together. The loser
is cancelled. An owner that lost to a hedge is *suspect* for ``dead_after_secs``: later queries
prefer its peers (it is still asked when it is a shard's only live owner), so a frozen owner
costs one hedge delay, not one per query, until its stale heartbeat marks it dead.

Errors: a request that fails (rather than stalls) ends as before, without waiting for the
delay: the fan-out retries its shards on another owner. A hedge that fails leaves the original
to finish; a bad query (400) fails at once whichever side reports it. A request is hedged at
most once, and only when every one of its shards has another live owner.
"""

from __future__ import annotations

import logging
import math

import trio

from rusts.errors import QueryError, RustsError

log = logging.getLogger("rusts.cluster.hedge")


class Suspects:
    """Owners that lost to a hedge recently (node id -> when)."""

    def __init__(self, period: float) -> None:
        self.period = period
        self._at: dict[str, float] = {}

    def add(self, node_id: str) -> None:
        self._at[node_id] = trio.current_time()

    def clear(self, node_id: str) -> None:
        self._at.pop(node_id, None)

    def __contains__(self, node_id: str) -> bool:
        t = self._at.get(node_id)
        return t is not None and trio.current_time() - t < self.period

    def prefer(self, owners: list[str]) -> list[str]:
        """``owners`` without the suspects, unless that leaves none."""
        return [o for o in owners if o not in self] or owners


async def hedged(node, node_id: str, op: str, q, shards: list[int], exclude: set[str]) -> list[dict]:
    """The partial answers covering ``shards``: ``node_id``'s, or (after the hedge delay) those
    of other live owners, whichever come first (module doc). Raises the original request's
    error when it fails and no hedge answered."""
    delay = node.cfg.hedge_after_secs
    if node_id == node.cfg.node_id or delay <= 0:
        return [await node._partial(node_id, op, q, shards)]
    stats = node.hedge_stats
    send, recv = trio.open_memory_channel(math.inf)

    async def ask(tag: str, who: str, ss: list[int]) -> None:
        try:
            send.send_nowait((tag, who, await node._partial(who, op, q, ss), None))
        except RustsError as e:
            send.send_nowait((tag, who, None, e))

    outcome: list = []  # [parts] or [error], decided inside the nursery, raised outside it

    async def race(n) -> None:
        n.start_soon(ask, "original", node_id, shards)
        with trio.move_on_after(delay):
            _tag, _who, part, err = await recv.receive()
            if err is None:
                node.suspects.clear(node_id)
            outcome.append([part] if err is None else err)
            return
        missing: dict[int, str] = {}
        plan = node._assign(shards, exclude | {node_id}, missing)
        hedges = plan if plan and not missing else {}
        if hedges:
            stats["hedged"] += 1
            log.info("cluster: node %s has not answered shards %s within %gs; also asking %s",
                     node_id, shards, delay, ", ".join(sorted(hedges)))
            for who, ss in hedges.items():
                n.start_soon(ask, "hedge", who, ss)
        got: list[dict] = []
        pending = set(hedges)
        original_error = None
        hedge_failed = not hedges
        while True:
            tag, who, part, err = await recv.receive()
            if isinstance(err, QueryError):
                outcome.append(err)
                return
            if tag == "original":
                if err is None:
                    node.suspects.clear(node_id)
                    outcome.append([part])
                    return
                original_error = err
            elif err is None:
                got.append(part)
                pending.discard(who)
                if not pending:
                    stats["hedge_won"] += 1
                    node.suspects.add(node_id)
                    outcome.append(got)
                    return
            else:
                log.info("cluster: hedge to node %s failed: %s", who, err)
                hedge_failed = True
            if original_error is not None and hedge_failed:
                outcome.append(original_error)
                return

    async with trio.open_nursery() as n:
        await race(n)
        n.cancel_scope.cancel()  # the loser(s)
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]
