"""Retention policies of the whole cluster: one set, kept in the metadata KV, enforced by every
shard database of every owner.

The policies are the key ``retention`` of the bucket ``rusts_<cluster>_meta``, a JSON object in
the layout of a single node's ``retention.json`` plus the configured base
(``{"format": 1, "base": [...], "set": [...], "removed": [...]}``, docs/cluster.md): ``base``
is the ``retention_policies`` of the ``rusts.yml`` of the first node that started (created with
the KV's atomic "only if absent"; a node whose file differs logs it and uses the cluster's), and
``set``/``removed`` are what was changed over the API since, exactly as on one node. So
``GET /retention_policies`` and ``SHOW RETENTION POLICIES`` answer, through any node, what one
node with the same history would answer (``source`` ``config`` or ``api``).

* **Changes** (``POST``, ``PUT``/``PATCH``, ``DELETE /retention_policies``) through any node are
  a read-modify-write of that key with optimistic concurrency (``update`` with the revision read;
  a concurrent change makes it read again and retry), validated with the single node's rules
  and messages (:class:`rusts.lifecycle.policies.PolicyStore`).
* **Enforcement**: every shard database of a node shares one :class:`ClusterPolicies` (in place of
  its own policy store), which the node refreshes from the KV every ``heartbeat_secs`` (and at
  once after a change through it). Queries cut expired rows at once on every owner (the shard
  database's query start), the shard databases' sweepers drop expired segments and compaction
  rewrites partly expired partitions, as on one node. Until the KV has been read after a start
  a node enforces no policy (it deletes nothing it may have to keep) and serves no query
  (it is not connected yet).
"""

from __future__ import annotations

import json
import logging
import threading

from rusts.errors import OverloadedError, QueryError, RustsError
from rusts.lifecycle.policies import PolicyStore, _policy_json, make_policy

log = logging.getLogger("rusts.cluster.retention")

KEY = "retention"
FORMAT = 1
ATTEMPTS = 8  # read-modify-write rounds before a change gives up (503) under concurrent changes


def _policies(items) -> list:
    return [make_policy(d["name"], d.get("measurement", "*"), d["duration"], d.get("tier_after")) for d in items]


class _Store(PolicyStore):
    """A :class:`PolicyStore` held in memory (the KV is where it persists): the single node's
    validation, error messages and ``source`` marks, from and to the KV's JSON body."""

    def __init__(self, body: dict | None = None) -> None:
        body = body or {}
        if body.get("format", FORMAT) != FORMAT:
            raise ValueError(f"unknown retention format {body.get('format')!r}")
        self.path = None
        self._lock = threading.Lock()
        self.version = 0
        self._base = {p.name: p for p in _policies(body.get("base", []))}
        self._set = {p.name: p for p in _policies(body.get("set", []))}
        self._removed = {str(n) for n in body.get("removed", [])}

    def _save(self) -> None:
        self.version += 1

    def body(self) -> dict:
        def js(d):
            return [_policy_json(p) for p in sorted(d.values(), key=lambda p: p.name)]

        return {"format": FORMAT, "base": js(self._base), "set": js(self._set), "removed": sorted(self._removed)}


def encode(store: _Store) -> bytes:
    return json.dumps(store.body(), sort_keys=True).encode()


def decode(raw: bytes) -> _Store:
    return _Store(json.loads(raw))


class ClusterPolicies:
    """What a shard database's lifecycle asks of its policy store (``list``, ``get``,
    ``to_json``), answered from the cluster's policies; one object shared by the node's shard
    databases, its contents swapped when the KV changes."""

    def __init__(self) -> None:
        self._store = _Store()
        self.revision = 0  # the KV revision the policies come from (0: not read yet)

    def list(self):
        return self._store.list()

    def get(self, name: str):
        return self._store.get(name)

    def to_json(self) -> list[dict]:
        return self._store.to_json()

    def body(self) -> dict:
        return self._store.body()

    def replace(self, store: _Store, revision: int) -> bool:
        """Take ``store`` (read at ``revision``); True when the policies changed."""
        if revision <= self.revision and self.revision:
            return False
        changed = store.body() != self._store.body()
        self._store, self.revision = store, revision
        return changed


class ClusterRetention:
    """This node's side of the cluster's retention policies (module doc)."""

    def __init__(self, node) -> None:
        self.node = node
        self.policies = ClusterPolicies()

    async def _entry(self) -> tuple[bytes | None, int]:
        n = self.node
        return await n.bridge.call(n.link.kv_entry, "meta", KEY, _timeout=10.0)

    async def bootstrap(self) -> None:
        """Create the cluster's policies from this node's configuration unless they exist, and
        read them (raises NatsUnavailable: the caller retries)."""
        n = self.node
        mine = _Store({"base": [_policy_json(p) for p in n.config.retention_policies]})
        created = await n.bridge.call(n.link.kv_create, "meta", KEY, encode(mine), _timeout=10.0)
        await self.refresh()
        if not created and self.policies.body()["base"] != mine.body()["base"]:
            log.warning("the retention policies of this node's configuration differ from the cluster's "
                        "(kept in NATS since the first node started); using the cluster's")

    async def refresh(self) -> bool:
        """Re-read the policies; apply them to the shard databases when they changed."""
        raw, rev = await self._entry()
        if raw is None:
            return False
        try:
            store = decode(raw)
        except (ValueError, KeyError, TypeError, QueryError) as e:
            log.error("the cluster's retention policies in NATS are unreadable (%s); keeping the last ones", e)
            return False
        if self.policies.replace(store, rev):
            log.info("cluster retention policies (revision %d): %s", rev,
                     ", ".join(f"{p.name}={p.measurement}:{p.duration}s" for p in store.list()) or "none")
            self.poke()
            return True
        return False

    def poke(self) -> None:
        """Let every shard database's sweeper apply the policies now."""
        for db in list(self.node.dbs.values()):
            lc = getattr(db, "lifecycle", None)
            if lc is not None:
                lc.poke_sweeper()

    def attach(self, db) -> None:
        """Make shard database ``db`` enforce the cluster's policies."""
        db.lifecycle.policies = self.policies

    async def run(self) -> None:
        import trio

        while True:
            await trio.sleep(self.node.cfg.heartbeat_secs)
            try:
                await self.refresh()
            except RustsError as e:
                log.debug("retention refresh: %s", e)

    async def change(self, op: str, *args) -> list[dict]:
        """Apply ``op`` (``add`` a policy, ``update`` name + changes, ``remove`` name) to the
        cluster's policies; the policies after it. Bad input: the single node's QueryError."""
        n = self.node
        for _ in range(ATTEMPTS):
            raw, rev = await self._entry()
            store = decode(raw) if raw is not None else _Store()
            if op == "add":
                store.add(args[0])
            elif op == "update":
                store.update(args[0], **args[1])
            elif op == "remove":
                store.remove(args[0])
            else:
                raise ValueError(op)
            if raw is None:
                ok = await n.bridge.call(n.link.kv_create, "meta", KEY, encode(store), _timeout=10.0)
            else:
                ok = await n.bridge.call(n.link.kv_update, "meta", KEY, encode(store), rev, _timeout=10.0)
            if ok:
                await self.refresh()
                return self.policies.to_json()
        raise OverloadedError("the cluster's retention policies changed concurrently too often; retry",
                              retry_after=1.0)

    async def list_json(self) -> list[dict]:
        """The cluster's policies, read from the KV now (equal through every node)."""
        await self.refresh()
        return self.policies.to_json()


__all__ = ["ClusterPolicies", "ClusterRetention", "decode", "encode"]
