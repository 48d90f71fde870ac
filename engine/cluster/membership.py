"""Membership and the shard map, kept in JetStream's key-value store.

* Bucket ``rusts_<cluster>_members``: one key per node (its id) with ``{"id", "address", "ts",
  "shards"}``, rewritten every ``heartbeat_secs``. A node is live while its heartbeat is younger
  than ``dead_after_secs`` (wall clock of the writer; the nodes' clocks are assumed to agree
  within a fraction of that, as NTP gives). The bucket's TTL drops keys of nodes long gone.
* Bucket ``rusts_<cluster>_meta`` (read with direct gets of known keys: listing keys would make
  the server create a consumer each time): ``shardmap`` (``{"shard": [owner ids]}``), created from
  ``cluster.toml`` by the first node to start and authoritative afterwards (every node reads it
  back and refreshes it; a file that disagrees is reported), and ``applied.<shard>.<node>``, the
  sequence each owner has applied (written by the appliers).
"""

from __future__ import annotations

import json
import logging
import time

import trio

from rusts.errors import RustsError

log = logging.getLogger("rusts.cluster.membership")


class Membership:
    def __init__(self, node) -> None:
        self.node = node
        self.cfg = node.cfg
        self.members: dict[str, dict] = {}
        self.shard_map: dict[int, tuple[str, ...]] = self.cfg.shard_map()
        self.applied: dict[tuple[int, str], int] = {}
        self.map_source = "cluster.toml"
        # when this node's own heartbeat was last stored by JetStream (a replicated KV put needs
        # a majority of the NATS servers): a node cut off from the majority stops serving its
        # local copies once this is older than dead_after_secs (rusts.cluster.node.serves)
        self.beat_ok_at = 0.0

    def live(self, node_id: str) -> bool:
        m = self.members.get(node_id)
        return m is not None and time.time() - float(m.get("ts", 0)) < self.cfg.dead_after_secs

    def owners(self, shard: int) -> tuple[str, ...]:
        return self.shard_map.get(shard, ())

    async def bootstrap_shard_map(self) -> None:
        node = self.node
        mine = {str(s): list(o) for s, o in self.cfg.shard_map().items()}
        created = await node.bridge.call(node.link.kv_create, "meta", "shardmap", json.dumps(mine).encode())
        if not created:
            raw = await node.bridge.call(node.link.kv_get, "meta", "shardmap")
            if raw:
                stored = json.loads(raw)
                if stored != mine:
                    log.warning("the shard map in NATS differs from this node's cluster.toml; "
                                "using the one in NATS")
                self.shard_map = {int(s): tuple(o) for s, o in stored.items()}
                self.map_source = "nats"
                return
        self.shard_map = self.cfg.shard_map()
        self.map_source = "nats"

    async def heartbeat_once(self) -> None:
        node = self.node
        me = self.cfg.this_node
        value = json.dumps({"id": me.id, "address": me.address, "ts": time.time(),
                            "shards": list(me.shards), "replica_shards": list(me.replica_shards)})
        t = time.time()
        # bounded well below dead_after_secs: a put lost with a connection that died (a NATS
        # server killed) is sent again through the new one instead of waiting out the client's
        # publish timeout, which alone could make this node's heartbeat look stale
        await node.bridge.call(node.link.kv_put, "members", me.id, value.encode(),
                               _timeout=max(0.5, self.cfg.dead_after_secs / 3))
        self.beat_ok_at = t

    def in_majority(self) -> bool:
        """This node's heartbeat reached the NATS majority within ``dead_after_secs``."""
        return time.time() - self.beat_ok_at < self.cfg.dead_after_secs

    async def refresh(self) -> None:
        """Re-read the members' heartbeats (direct gets of the configured node ids)."""
        node = self.node
        items = await node.bridge.call(node.link.kv_get_many, "members", [n.id for n in self.cfg.nodes])
        members = {}
        for k, v in items.items():
            try:
                members[k] = json.loads(v)
            except ValueError:
                continue
        self.members = members

    async def refresh_meta(self) -> None:
        """Re-read the shard map and every owner's applied sequence (for ``/cluster``)."""
        node = self.node
        keys = ["shardmap"] + [f"applied.{s}.{o}" for s, owners in self.shard_map.items() for o in owners]
        meta = await node.bridge.call(node.link.kv_get_many, "meta", keys)
        applied = {}
        for k, v in meta.items():
            if k.startswith("applied."):
                _, s, n = k.split(".", 2)
                applied[(int(s), n)] = int(v)
            elif k == "shardmap":
                self.shard_map = {int(s): tuple(o) for s, o in json.loads(v).items()}
        self.applied = applied

    async def run(self) -> None:
        """Two loops: the heartbeat is never delayed by a slow re-read of the others' (a direct
        get waiting for a KV leader's election), and a failed heartbeat is retried at once
        (after a short pause) rather than a whole ``heartbeat_secs`` later."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._beat_loop)
            nursery.start_soon(self._refresh_loop)

    async def _beat_loop(self) -> None:
        while True:
            try:
                await self.heartbeat_once()
            except RustsError as e:
                log.debug("membership heartbeat: %s", e)
                await trio.sleep(min(0.2, self.cfg.heartbeat_secs))
                continue
            await trio.sleep(self.cfg.heartbeat_secs)

    async def _refresh_loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except RustsError as e:
                log.debug("membership refresh: %s", e)
            await trio.sleep(self.cfg.heartbeat_secs)
