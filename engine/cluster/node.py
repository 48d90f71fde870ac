"""One cluster node: its NATS link, owned shard databases, appliers, membership and frontend.

:func:`run_cluster_node` is what ``rusts-server`` starts in its nursery when a ``cluster.toml`` is
configured; the HTTP app finds the node with :func:`frontend_of` and sends writes, JSON queries,
SQL and ``/cluster`` to it. The node starts without NATS (writes get 503 until it connects) and
keeps reconnecting; it never stops the server because NATS is away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import AsyncExitStack
from pathlib import Path

import attrs
import numpy as np
import orjson
import trio

from rusts.errors import QueryError, RustsError

log = logging.getLogger("rusts.cluster")

_NODES: dict[int, "ClusterNode"] = {}


class _Starting:
    """Stands for a configured node that is not running yet (its shard databases are opening):
    every request gets 503 rather than reaching the server's local, non-cluster database."""

    async def _refuse(self, *args, **kwargs):
        from rusts.errors import OverloadedError

        raise OverloadedError("the cluster node is starting; retry shortly", retry_after=1.0)

    write = query = sql = sql_output = catalog = pg_tables = delete = drop_measurement = status = _refuse
    retention_policies = _refuse


def frontend_of(db) -> "ClusterNode | _Starting | None":
    """The cluster node serving ``db``'s HTTP API, or None when the server is not clustered."""
    node = _NODES.get(id(db)) if _NODES else None
    if node is None and getattr(getattr(db, "config", None), "cluster", None):
        return _Starting()
    return node


def _default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o).__name__)


def dumps(obj) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY, default=_default)


class NoLiveOwner(RustsError):
    http_status = 503


class ClusterNode:
    def __init__(self, cfg, config, db) -> None:
        from rusts.cluster.membership import Membership
        from rusts.cluster.nats_bridge import NatsBridge, NatsLink
        from rusts.cluster.retention import ClusterRetention
        from rusts.cluster.schema import ClusterSchema
        from rusts.cluster.sharding import Sharder
        from rusts.cluster.writer import ClusterWriter

        self.cfg = cfg
        self.config = config
        self.main_db = db
        self.bridge = NatsBridge()
        self.link = NatsLink(cfg)
        self.sharder = Sharder(cfg.sharding_strategy, cfg.shard_count, cfg.time_bucket_ns)
        self.membership = Membership(self)
        self.writer = ClusterWriter(self)
        self.schema = ClusterSchema(self.bridge, self.link)
        self.rp = ClusterRetention(self)  # the cluster's retention policies (rusts.cluster.retention)
        from rusts.cluster.hedge import Suspects

        self.suspects = Suspects(cfg.dead_after_secs)  # owners that lost to a hedge (rusts.cluster.hedge)
        # shard requests hedged, answered by the hedge; requests sent to each other node
        self.hedge_stats = {"hedged": 0, "hedge_won": 0, "asked": {}}
        self.dbs: dict[int, object] = {}
        self.appliers: dict = {}
        self.outbox = None
        self.connected_once = False
        self.root = Path(config.storage.data_dir) / "cluster"
        self.connected = trio.Event()  # set once NATS is connected and the shard map known
        self.snapshots = None  # rusts.cluster.rebuild.SnapshotStore (given to peers)
        self.rebuilds: dict[int, dict] = {}  # shard -> the last rebuild of this node's copy
        self._rebuild_failed: dict[int, float] = {}  # shard -> when no peer could give a snapshot
        self.rebuilding: set[int] = set()  # shards whose copy is being fetched from a peer

    # ------------------------------------------------------------------ state
    @property
    def nats_connected(self) -> bool:
        return self.link.connected

    @property
    def max_payload(self) -> int:
        return self.link.max_payload

    def _shard_config(self, shard: int):
        st = self.config.storage
        # ``periodic``: the shard's applier fsyncs the WAL itself when it records its applied
        # sequence (rusts.cluster.applier.ShardApplier.make_durable), so the WAL writer's own
        # timer would only add fsyncs that record nothing
        durability = "os_default" if st.wal_durability == "periodic" else st.wal_durability
        # no retention policies of its own: a shard database enforces the cluster's
        # (rusts.cluster.retention), attached when it opens
        return attrs.evolve(self.config, retention_policies=(), storage=attrs.evolve(
            st, data_dir=str(self.root / f"shard-{shard}"), wal_dir=None, wal_durability=durability))

    # ------------------------------------------------------------------ running
    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        from rusts.cluster.rebuild import SnapshotStore

        self.bridge.start()
        req_send, req_recv = trio.open_memory_channel(float("inf"))
        self._trio_token = trio.lowlevel.current_trio_token()
        self._req_send = req_send
        try:
            async with AsyncExitStack() as stack:
                self.root.mkdir(parents=True, exist_ok=True)
                self.snapshots = await trio.to_thread.run_sync(SnapshotStore, self.root)
                if self.cfg.replication_mode == "Async":
                    from rusts.cluster.outbox import Outbox

                    self.outbox = await trio.to_thread.run_sync(Outbox, self.root / "outbox",
                                                                self.cfg.outbox_max_bytes)
                    stack.callback(self.outbox.close)
                try:
                    async with trio.open_nursery() as nursery:
                        for s in self.cfg.this_node.owned:  # each shard's database opened (or rebuilding)
                            await nursery.start(self._shard_main, s)
                        _NODES[id(self.main_db)] = self
                        nursery.start_soon(self._connect_loop, nursery)
                        nursery.start_soon(self._serve_requests, req_recv, nursery)
                        if self.outbox is not None:
                            nursery.start_soon(self.outbox.run, self.writer._publish)
                        task_status.started()
                finally:
                    _NODES.pop(id(self.main_db), None)
        finally:
            with trio.CancelScope(shield=True):
                try:
                    await self.bridge.call(self.link.close)
                except Exception:
                    pass
            self.bridge.stop()

    async def _connect_loop(self, nursery) -> None:
        while True:
            try:
                await self.bridge.call(self.link.connect)
                await self.membership.bootstrap_shard_map()
                await self.rp.bootstrap()
                await self.bridge.call(self.link.serve_requests, self._query_subject(), self._on_request)
                break
            except RustsError as e:
                log.info("cluster: waiting for NATS (%s)", e)
                await self.bridge.call(self.link.close)
                await trio.sleep(1.0)
        self.connected_once = True
        log.info("cluster: node %s connected to NATS", self.cfg.node_id)
        await self.membership.heartbeat_once()
        nursery.start_soon(self.membership.run)
        nursery.start_soon(self.rp.run)
        self.connected.set()  # the shard tasks start applying (or rebuilding)
        nursery.start_soon(self._publish_applied_loop)

    # ------------------------------------------------------------------ shard copies
    async def _shard_main(self, s: int, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Own shard ``s``'s copy: open its database and apply its stream; rebuild it from a
        live peer's snapshot first when it is empty while the stream has messages, or when it
        fell behind the stream's retained start (rusts.cluster.rebuild)."""
        import rusts.db
        from rusts.cluster.applier import ShardApplier
        from rusts.cluster.rebuild import clean_leftovers, is_fresh

        shard_dir = self.root / f"shard-{s}"
        await trio.to_thread.run_sync(clean_leftovers, shard_dir)
        started = False
        want = await trio.to_thread.run_sync(is_fresh, shard_dir)
        while True:
            if want:
                if not started:  # do not hold up the server's start: the rebuild needs NATS and peers
                    task_status.started()
                    started = True
                self.rebuilding.add(s)
                try:
                    await self.connected.wait()
                    await self._rebuild(s)  # on failure: replay the stream (or keep an incomplete copy)
                finally:
                    self.rebuilding.discard(s)
            sdb = rusts.db.Database(self._shard_config(s))
            async with rusts.db.running(sdb):
                self.rp.attach(sdb)
                a = ShardApplier(s, sdb, shard_dir, self.bridge, self.link, self.cfg.node_id, self.schema)
                a.eager = self.cfg.replication_mode == "Sync"
                a.can_rebuild = lambda s=s: bool(self._donors(s)) and \
                    trio.current_time() - self._rebuild_failed.get(s, -1e9) > 10.0
                self.appliers[s] = a
                self.dbs[s] = sdb
                if not started:
                    task_status.started()
                    started = True
                try:
                    await self.connected.wait()
                    await a.run()  # returns when the copy should be rebuilt
                finally:
                    self.dbs.pop(s, None)
            want = True

    def _donors(self, s: int) -> list[str]:
        """Live peers owning shard ``s`` (their copies may be asked for a snapshot)."""
        return [o for o in self.membership.owners(s) if o != self.cfg.node_id and self.membership.live(o)]

    def _peer(self, node_id: str):
        from rusts.cluster.rebuild import Peer

        address = next(n.address for n in self.cfg.nodes if n.id == node_id)
        token = None
        if self.config.auth.enabled:  # node-to-node calls carry a short-lived admin token
            from rusts.security.tokens import mint

            token = mint(self.config.auth, f"cluster-node:{self.cfg.node_id}", ("admin",), expires_secs=600)["token"]
        tls_ca = self.config.server.tls_cert  # peers serve HTTPS with the cluster's certificate
        return Peer(node_id, address, token, tls_ca)

    async def _rebuild(self, s: int) -> bool:
        """Replace this node's copy of shard ``s`` with a snapshot of a live peer's (verified,
        installed atomically); False when no peer could give one. Skipped (True) when the
        stream has nothing yet: replaying it is the rebuild."""
        from rusts.cluster.rebuild import RebuildError, download_snapshot, install

        shard_dir = self.root / f"shard-{s}"
        staging = shard_dir.with_name(shard_dir.name + ".rebuild")
        for attempt in range(3):
            try:
                first, last = await self.bridge.call(self.link.stream_bounds, s)
                await self.membership.refresh()  # who is live right now
            except RustsError as e:
                log.info("shard %d: rebuild: %s; retrying", s, e)
                await trio.sleep(1.0)
                continue
            if last == 0:
                return True
            for o in self._donors(s):
                try:
                    info = await trio.to_thread.run_sync(download_snapshot, self._peer(o), s, staging,
                                                         abandon_on_cancel=True)
                    await trio.to_thread.run_sync(install, shard_dir, staging)
                except (RebuildError, OSError, ValueError, KeyError) as e:
                    log.warning("shard %d: snapshot from node %s failed: %s", s, o, e)
                    continue
                info = {k: info[k] for k in ("node", "seq", "bytes", "secs")} | {"files": len(info["files"])}
                self.rebuilds[s] = info
                log.info("shard %d: rebuilt from node %s's snapshot at sequence %d (%d bytes in %.2fs); "
                         "applying the stream from there", s, o, info["seq"], info["bytes"], info["secs"])
                return True
            await trio.sleep(1.0 + attempt)
        self._rebuild_failed[s] = trio.current_time()
        log.warning("shard %d: no live peer gave a snapshot; %s", s,
                    "replaying the stream" if first <= 1 else "the copy stays incomplete (not served)")
        return False

    async def _publish_applied_loop(self) -> None:
        """The tail of the appliers' throttled applied-sequence publishing (rusts.cluster.applier)."""
        from rusts.cluster.applier import PUBLISH_EVERY

        while True:
            await trio.sleep(PUBLISH_EVERY)
            for a in list(self.appliers.values()):  # shard tasks add appliers meanwhile
                await a.publish_if_behind()

    def _query_subject(self) -> str:
        from rusts.cluster.nats_bridge import query_subject

        return query_subject(self.cfg.cluster_name, self.cfg.node_id)

    async def _on_request(self, payload: bytes) -> bytes:
        """(asyncio side) hand a partial-query request to trio and await the answer."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def deliver(data: bytes) -> None:
            def put():
                if not fut.done():
                    fut.set_result(data)
            loop.call_soon_threadsafe(put)

        self._trio_token.run_sync_soon(self._req_send.send_nowait, (payload, deliver))
        return await fut

    async def _serve_requests(self, recv, nursery) -> None:
        async for payload, deliver in recv:
            nursery.start_soon(self._answer, payload, deliver)

    async def _answer(self, payload: bytes, deliver) -> None:
        from rusts.cluster.fanout import pack_gkeys, partial_answer

        try:
            req = orjson.loads(payload)
            shards = [int(s) for s in req["shards"]]
            missing = [s for s in shards if not self.serves(s)]
            if missing:
                raise NoLiveOwner(f"node {self.cfg.node_id} does not hold shard {missing[0]} "
                                  f"(or its copy is incomplete)")
            if req.get("op") == "catalog":
                from rusts.cluster.fanout import catalog_answer

                out = dumps(catalog_answer(self.dbs, shards))
            elif req.get("op") == "tag_values":
                from rusts.cluster.fanout import tag_values_answer

                out = dumps(tag_values_answer(self.dbs, shards, req["measurement"]))
            else:
                out = dumps(pack_gkeys(await partial_answer(self.dbs, req["query"], shards)))
        except RustsError as e:
            out = dumps({"error": str(e), "status": e.http_status})
        except Exception as e:  # a bug: report it to the coordinator rather than time out
            log.exception("cluster: partial query failed")
            out = dumps({"error": f"internal error on node {self.cfg.node_id}: {type(e).__name__}: {e}",
                         "status": 500})
        deliver(out)

    def serves(self, shard: int) -> bool:
        """Whether this node answers queries for ``shard``: it holds it, its copy has no hole
        (the stream never dropped messages it had not applied) and caught up with the stream,
        and this node is not cut off from the NATS majority (its own heartbeat, a replicated
        KV write, succeeded within ``dead_after_secs``): on the minority side of a partition
        its copies may miss writes the majority acknowledged, so it answers none of them."""
        return shard in self.dbs and self.appliers[shard].serving and self.membership.in_majority()

    # ------------------------------------------------------------------ writes
    async def write(self, body: bytes, precision: str = "ns"):
        return await self.writer.write(body, precision)

    async def wait_applied(self, want: dict[int, int], timeout: float) -> None:
        """Sync mode: wait until every owner of each shard applied at least ``want[shard]``."""
        from rusts.cluster.writer import SyncTimeout

        deadline = trio.current_time() + timeout
        pending = {(s, o): q for s, q in want.items() for o in self.membership.owners(s)}
        while pending:
            for (s, o), q in list(pending.items()):
                if o == self.cfg.node_id and s in self.appliers:
                    got = self.appliers[s].applied
                else:
                    raw = await self.bridge.call(self.link.kv_get, "meta", f"applied.{s}.{o}")
                    got = int(raw) if raw else 0
                if got >= q:
                    del pending[(s, o)]
            if not pending:
                return
            if trio.current_time() > deadline:
                (s, o), q = next(iter(pending.items()))
                raise SyncTimeout(f"Sync write: the log holds it, but node {o} has not applied shard {s} "
                                  f"(sequence {q}) within {timeout:g}s")
            await trio.sleep(0.02)

    # ------------------------------------------------------------------ reads
    def _assign(self, shards: list[int], exclude: set[str],
                missing: dict[int, str] | None = None) -> dict[str, list[int]]:
        """One owner per shard: this node when it holds the shard, else a live owner (spread
        over the shards). Liveness is a hint: when no owner looks live (a stale view while this
        node's NATS connection fails over), the owners are tried anyway; unless ``missing`` is
        given (partial results allowed): then such a shard goes into it, with the reason."""
        me = self.cfg.node_id
        plan: dict[str, list[int]] = {}
        cands: dict[int, list[str]] = {s: [o for o in self.membership.owners(s) if o not in exclude] for s in shards}
        lives = {s: [o for o in cs if (o == me and self.serves(s)) or (o != me and self.membership.live(o))]
                 for s, cs in cands.items()}
        # the shards this node cannot answer go to as few other nodes as possible: a request to
        # another node (NATS both ways, JSON) costs more than the shards' own work (measured:
        # spreading 16 shards evenly over 3 nodes made every TSBS query 1.4-2x slower)
        reach: dict[str, int] = {}
        for s, live in lives.items():
            if me not in live:
                for o in self.suspects.prefer(live):
                    reach[o] = reach.get(o, 0) + 1
        for s in shards:
            live = lives[s]
            if me in live:
                pick = me
            elif live:
                pool = self.suspects.prefer(live)
                pick = max(pool, key=lambda o: (o in plan, reach.get(o, 0), -((pool.index(o) - s) % len(pool))))
            elif cands[s] and missing is None:
                pick = cands[s][s % len(cands[s])]
            else:
                why = f"shard {s} has no live owner (owners: {', '.join(self.membership.owners(s)) or 'none'})"
                if missing is None:
                    raise NoLiveOwner(why)
                missing[s] = why
                continue
            plan.setdefault(pick, []).append(s)
        return plan

    async def _partial(self, node_id: str, op: str, q, shards: list[int]) -> dict:
        from rusts.cluster.fanout import (
            catalog_answer, partial_answer, query_to_wire, tag_values_answer, unpack_gkeys,
        )
        from rusts.cluster.nats_bridge import query_subject

        if node_id == self.cfg.node_id:
            if not all(self.serves(s) for s in shards):
                raise NoLiveOwner(f"node {node_id}'s copy of a shard of {shards} is incomplete")
            if op == "catalog":
                return catalog_answer(self.dbs, shards)
            if op == "tag_values":
                return tag_values_answer(self.dbs, shards, q)
            return await partial_answer(self.dbs, q, shards)
        asked = self.hedge_stats["asked"]
        asked[node_id] = asked.get(node_id, 0) + 1
        payload = {"op": op, "shards": shards}
        if op == "tag_values":
            payload["measurement"] = q
        elif q is not None:
            payload["query"] = query_to_wire(q)
        raw = await self.bridge.call(self.link.request, query_subject(self.cfg.cluster_name, node_id),
                                     dumps(payload), float(self.config.query.timeout_secs),
                                     _timeout=float(self.config.query.timeout_secs) + 5.0)
        out = orjson.loads(raw)
        if isinstance(out, dict) and "error" in out and "status" in out:
            if out.get("status") == 400:
                raise QueryError(out["error"])
            if out.get("status") == 503:
                raise NoLiveOwner(out["error"])
            raise RustsError(out["error"])
        return unpack_gkeys(out) if op == "query" else out

    async def _check_majority(self) -> None:
        """A node cut off from the NATS majority (its heartbeat, a replicated KV write, has not
        been stored for ``dead_after_secs``) answers no query: it cannot tell which peers are
        live nor whether its own copies miss acknowledged writes (the minority side of a
        partition). After a recent success (a hiccup: a NATS server's failover, a KV leader's
        re-election) it waits for a heartbeat to get through as long as a query waits for a
        failover (up to 10 s); then, or at once when cut off for longer, 503."""
        m = self.membership
        if m.in_majority():
            return
        dead = self.cfg.dead_after_secs
        window = min(10.0, float(self.config.query.timeout_secs))
        deadline = trio.current_time() + (window if time.time() - m.beat_ok_at < 2 * dead else 0.0)
        while trio.current_time() < deadline:
            await trio.sleep(0.1)
            if m.in_majority():
                return
        age = time.time() - m.beat_ok_at
        raise NoLiveOwner(f"node {self.cfg.node_id} cannot reach the NATS majority (its heartbeat has not been "
                          f"stored for {'ever' if m.beat_ok_at == 0 else f'{age:.0f}s'}): it answers no query "
                          "until it can; ask another node")

    async def _fan_out(self, op: str, q, shards: list[int], missing: dict[int, str] | None = None) -> list[dict]:
        """Ask one owner per shard; a failing owner's shards go to another owner; when every
        owner of a shard failed, retry them all (a NATS failover) until the retry window ends.
        With ``missing`` (partial results allowed) there is no retry window: a shard whose
        owners are all dead or failed goes into ``missing`` and the others are answered. A
        request to another node unanswered after ``hedge_after_secs`` is hedged
        (rusts.cluster.hedge)."""
        from rusts.cluster.hedge import hedged

        await self._check_majority()
        parts: list[dict] = []
        failed: set[str] = set()
        todo = shards
        deadline = trio.current_time() + min(10.0, float(self.config.query.timeout_secs))
        while True:
            try:
                plan = self._assign(todo, failed, missing)
            except NoLiveOwner:
                if trio.current_time() > deadline:
                    raise
                failed = set()
                await trio.sleep(0.25)
                continue
            results: dict[str, list[dict]] = {}
            errors: dict[str, RustsError] = {}

            async def one(node_id: str, ss: list[int]) -> None:
                try:
                    results[node_id] = await hedged(self, node_id, op, q, ss, failed)
                except QueryError:
                    raise
                except RustsError as e:  # unreachable or failing owner: try another one
                    errors[node_id] = e

            async with trio.open_nursery() as n:
                for node_id, ss in plan.items():
                    n.start_soon(one, node_id, ss)
            parts.extend(p for got in results.values() for p in got)
            if not errors or not plan:
                return parts
            for node_id, e in errors.items():
                log.info("cluster: node %s failed a partial query: %s", node_id, e)
            failed |= set(errors)
            todo = [s for nid in errors for s in plan[nid]]

    async def query(self, qjson):
        """Answer a JSON query (or a :class:`Query`) over the whole cluster; a ResultSet."""
        from rusts.cluster.fanout import merge
        from rusts.query.model import Query, from_json

        partial = self.cfg.partial_results
        if isinstance(qjson, dict) and "partial" in qjson:  # per-request override of partial_results
            qjson = dict(qjson)
            partial = qjson.pop("partial")
            if not isinstance(partial, bool):
                raise QueryError(f'"partial" must be true or false, got {partial!r}')
        q = qjson if isinstance(qjson, Query) else from_json(qjson)
        shards = self.sharder.shards_for(q.measurement, q.start, q.end)
        missing: dict[int, str] | None = {} if partial else None
        parts = await self._fan_out("query", q, shards, missing)
        if missing:
            from rusts.storage.damage import report_missing

            for s, why in sorted(missing.items()):
                report_missing({"shard": s, "error": why})
        if len(parts) > 1 or any(len(p.get("raw", ())) > 4 for p in parts):
            return await trio.to_thread.run_sync(merge, q, parts)
        return merge(q, parts)

    async def sql(self, text: str, t0: float) -> dict:
        """``POST /sql`` in cluster mode (rusts.cluster.sqlfront)."""
        from rusts.cluster.sqlfront import sql_json

        return await sql_json(self, text, t0)

    async def sql_output(self, text: str, params=None):
        """A statement over the whole cluster, as an SqlOutput (pgwire)."""
        from rusts.cluster.sqlfront import sql_output

        out, _missing = await sql_output(self, text, params)
        return out

    async def catalog(self, partial: bool | None = None):
        """The SQL catalog of the whole cluster (merged from one owner per shard)."""
        from rusts.cluster.fanout import merge_catalog

        partial = self.cfg.partial_results if partial is None else partial
        return merge_catalog(await self._fan_out("catalog", None, list(range(self.cfg.shard_count)),
                                                 {} if partial else None))

    async def pg_tables(self, principal=None) -> dict[str, list[tuple[str, str]]]:
        """pgwire's catalog emulation input (``\\d`` etc.): the cluster's tables and columns."""
        cat = await self.catalog()
        names = cat.measurements()
        if principal is not None:
            names = principal.visible(names)
        return {m: [("time", "timestamp")] + [(k, "text") for k in cat.tag_keys(m)]
                + [(f, ft.sql_name) for f, ft in sorted(cat.fields(m).items())] for m in names}

    async def delete(self, measurement: str, start: int = -(2**63), end: int = 2**63 - 1,
                     tag_filters=(), field_predicates=()) -> dict:
        """Delete points cluster-wide (rusts.cluster.sqlfront.cluster_delete)."""
        from rusts.cluster.sqlfront import cluster_delete

        return await cluster_delete(self, measurement, start, end, tuple(tag_filters), tuple(field_predicates))

    async def drop_measurement(self, measurement: str) -> dict:
        from rusts.cluster.sqlfront import cluster_drop

        return await cluster_drop(self, measurement)

    async def retention_policies(self, op: str = "list", *args) -> list[dict]:
        """``/retention_policies`` in cluster mode: ``list``, ``add`` (a RetentionPolicy),
        ``update`` (name, changes) or ``remove`` (name) the cluster's policies."""
        if op == "list":
            return await self.rp.list_json()
        return await self.rp.change(op, *args)

    # ------------------------------------------------------------------ status
    async def status(self) -> dict:
        m = self.membership
        now = time.time()
        out = {"node_id": self.cfg.node_id, "cluster_name": self.cfg.cluster_name,
               "replication_mode": self.cfg.replication_mode,
               "replication_factor": self.cfg.replication_factor,
               "sharding_strategy": self.cfg.sharding_strategy, "shard_count": self.cfg.shard_count,
               "nats_connected": self.nats_connected, "shard_map_source": m.map_source,
               "outbox": None if self.outbox is None else {"messages": len(self.outbox.pending),
                                                           "bytes": self.outbox.bytes,
                                                           "published_seq": self.outbox.published},
               "writes": dict(self.writer.stats, schema_conflicts=self.schema.conflicts),
               "reads": {**self.hedge_stats, "asked": dict(self.hedge_stats["asked"])},
               "schema_fields": len(self.schema.known),
               "retention": {"revision": self.rp.policies.revision, "policies": len(self.rp.policies.list()),
                             "partitions_dropped": sum(db.lifecycle.retention_stats["partitions_dropped"]
                                                       for db in list(self.dbs.values()))},
               # this node's appliers: fetches that returned messages, messages, rows writes
               "apply": {k: sum(a.stats[k] for a in self.appliers.values())
                         for k in ("fetches", "messages", "writes")}}
        out["members"] = [{"id": n.id, "address": n.address, "live": n.id == self.cfg.node_id and
                           self.nats_connected or m.live(n.id),
                           "heartbeat_age_secs": (round(now - float(m.members[n.id]["ts"]), 3)
                                                  if n.id in m.members else None)}
                          for n in self.cfg.nodes]
        last = {}
        if self.nats_connected:
            try:
                last = await self.bridge.call(self.link.last_seqs)
                await m.refresh_meta()
            except Exception as e:  # report what is known rather than fail the status page
                log.warning("cluster: /cluster could not read NATS: %s", e, exc_info=not isinstance(e, RustsError))
                last = {}
        shards = []
        for s in range(self.cfg.shard_count):
            owners = []
            for o in m.owners(s):
                if o == self.cfg.node_id and s in self.rebuilding:
                    applied = None  # (the KV may still hold a wiped copy's old sequence)
                elif o == self.cfg.node_id and s in self.appliers:
                    applied = self.appliers[s].applied
                else:
                    applied = m.applied.get((s, o))
                lag = None if applied is None or s not in last else max(0, last[s] - applied)
                entry = {"node": o, "applied_seq": applied, "lag": lag}
                if o == self.cfg.node_id and s in self.appliers:
                    a = self.appliers[s]
                    if not a.complete:
                        entry["missed"] = a.missed  # incomplete copy: not served
                    if s in self.dbs and not a.caught_up:
                        entry["catching_up"] = True  # not served until it applied the stream's end
                if o == self.cfg.node_id and s in self.rebuilding:
                    entry["rebuilding"] = True
                if o == self.cfg.node_id and s in self.rebuilds:
                    entry["rebuilt_from"] = self.rebuilds[s]
                owners.append(entry)
            shards.append({"shard": s, "stream_seq": last.get(s), "owners": owners})
        out["shards"] = shards
        lags = [o["lag"] for sh in shards for o in sh["owners"]]
        out["max_lag"] = None if not lags or None in lags else max(lags)  # None: not known for all
        return out


async def run_cluster_node(db, config, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Start the cluster node of ``config.cluster`` for the server's database ``db``."""
    from rusts.cluster.config import load_cluster_config

    cfg = load_cluster_config(config.cluster)
    node = ClusterNode(cfg, config, db)
    await node.run(task_status=task_status)
