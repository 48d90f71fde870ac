"""``cluster.toml``: the original's static cluster file, validated into frozen attrs classes.

The keys are the original's (``node_id``, ``cluster_name``, ``replication_mode``,
``replication_factor``, ``shard_count``, ``sharding_strategy``, ``[[nodes]]`` with ``id``,
``address``, ``shards``, ``replica_shards``) plus a ``[nats]`` table naming the NATS servers that
hold the replicated write log and the cluster metadata (docs/cluster.md).

``sharding_strategy`` is a name (``"BySeries"``, ``"ByMeasurement"``, ``"ByTime"``,
``"Composite"``) or, as the original's serde form, a table carrying the time bucket:
``sharding_strategy = { ByTime = { duration_nanos = 86400000000000 } }`` /
``{ Composite = { time_duration_nanos = ... } }``. The bucket defaults to one day.

Every error is a :class:`rusts.errors.ConfigError` whose message starts with the key it is about
(``nodes[1].shards: shard 17 is outside 0..15``), so an operator finds the line to fix.
"""

from __future__ import annotations

import os
import re
import tomllib
from typing import Any

import attrs

from rusts.errors import ConfigError

MODES = ("Sync", "Quorum", "Async")
STRATEGIES = ("BySeries", "ByMeasurement", "ByTime", "Composite")
DAY_NS = 86_400 * 10**9
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")


@attrs.frozen
class NodeConfig:
    id: str
    address: str
    shards: tuple[int, ...] = ()
    replica_shards: tuple[int, ...] = ()

    @property
    def owned(self) -> tuple[int, ...]:
        """Every shard this node holds (primary first, then replicas), without repeats."""
        return tuple(dict.fromkeys(self.shards + self.replica_shards))


@attrs.frozen
class NatsConfig:
    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    replicas: int | None = None
    """JetStream replicas of each shard stream and of the metadata buckets (None: 3 when there
    are three or more servers, else 1)."""
    connect_timeout_secs: float = 2.0
    publish_timeout_secs: float = 5.0
    user: str | None = None
    password: str | None = None
    token: str | None = None
    nkeys_seed: str | None = None
    """Path of an NKEY seed file (the server lists the public key under authorization users)."""
    credentials: str | None = None
    """Path of a .creds file (JWT + NKEY seed; decentralised auth)."""
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    max_age_secs: float = 0.0
    """Stream retention: messages older than this are dropped (0: kept)."""
    max_bytes: int = -1
    """Stream retention: the oldest messages of a shard stream are dropped beyond this (-1: no limit)."""

    @property
    def tls(self) -> bool:
        return bool(self.tls_ca or self.tls_cert)

    def connect_options(self) -> dict:
        """Keyword arguments of ``nats.connect`` for the credentials and TLS configured."""
        out: dict = {}
        if self.user is not None:
            out.update(user=self.user, password=self.password)
        if self.token is not None:
            out["token"] = self.token
        if self.nkeys_seed is not None:
            out["nkeys_seed"] = self.nkeys_seed
        if self.credentials is not None:
            out["user_credentials"] = self.credentials
        if self.tls:
            import ssl

            ctx = ssl.create_default_context(cafile=self.tls_ca)
            if self.tls_cert:
                ctx.load_cert_chain(self.tls_cert, self.tls_key)
            out["tls"] = ctx
        return out

    @property
    def stream_replicas(self) -> int:
        if self.replicas is not None:
            return self.replicas
        return 3 if len(self.servers) >= 3 else 1


@attrs.frozen
class ClusterConfig:
    node_id: str
    nodes: tuple[NodeConfig, ...]
    cluster_name: str = "rusts"
    replication_mode: str = "Quorum"
    replication_factor: int = 1
    shard_count: int = 16
    sharding_strategy: str = "BySeries"
    time_bucket_ns: int = DAY_NS
    nats: NatsConfig = attrs.field(factory=NatsConfig)
    outbox_max_bytes: int = 64 << 20
    """Async mode: bytes accepted but not yet published before writes get 503."""
    sync_timeout_secs: float = 10.0
    """Sync mode: how long a write waits for every owner to apply it."""
    heartbeat_secs: float = 1.0
    dead_after_secs: float = 3.0
    partial_results: bool = False
    """Queries answer without the shards that have no live owner (flagged) instead of 503."""
    hedge_after_secs: float = 0.5
    """A shard request to another node unanswered after this long is also sent to another live
    owner of its shards, and the first answer is taken (0: no hedging)."""

    @property
    def this_node(self) -> NodeConfig:
        return next(n for n in self.nodes if n.id == self.node_id)

    def node(self, node_id: str) -> NodeConfig | None:
        return next((n for n in self.nodes if n.id == node_id), None)

    def owners(self, shard: int) -> tuple[str, ...]:
        """Node ids holding ``shard``: its primary first, then its replicas (file order)."""
        prim = [n.id for n in self.nodes if shard in n.shards]
        reps = [n.id for n in self.nodes if shard in n.replica_shards and n.id not in prim]
        return tuple(prim + reps)

    def shard_map(self) -> dict[int, tuple[str, ...]]:
        return {s: self.owners(s) for s in range(self.shard_count)}


def _err(key: str, msg: str) -> ConfigError:
    return ConfigError(f"{key}: {msg}", key=key)


def _int(v: Any, key: str, *, minimum: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise _err(key, f"expected an integer >= {minimum}, got {v!r}")
    return v


def _str(v: Any, key: str) -> str:
    if not isinstance(v, str) or not v:
        raise _err(key, f"expected a non-empty string, got {v!r}")
    return v


def _number(v: Any, key: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
        raise _err(key, f"expected a positive number, got {v!r}")
    return float(v)


def _strategy(v: Any) -> tuple[str, int]:
    key = "sharding_strategy"
    if isinstance(v, str):
        if v not in STRATEGIES:
            raise _err(key, f"unknown strategy {v!r} (expected one of {', '.join(STRATEGIES)})")
        return v, DAY_NS
    if isinstance(v, dict) and len(v) == 1:
        (name, params), = v.items()
        if name not in STRATEGIES:
            raise _err(key, f"unknown strategy {name!r} (expected one of {', '.join(STRATEGIES)})")
        if params is None or params == {}:
            return name, DAY_NS
        if not isinstance(params, dict):
            raise _err(f"{key}.{name}", f"expected a table, got {params!r}")
        pkey = {"ByTime": "duration_nanos", "Composite": "time_duration_nanos"}.get(name)
        unknown = sorted(set(params) - {pkey})
        if unknown:
            raise _err(f"{key}.{name}.{unknown[0]}", "unknown key")
        return name, _int(params[pkey], f"{key}.{name}.{pkey}", minimum=1)
    raise _err(key, f"expected a strategy name or a table, got {v!r}")


def _shard_list(v: Any, key: str, shard_count: int) -> tuple[int, ...]:
    if v is None:
        return ()
    if not isinstance(v, list):
        raise _err(key, f"expected a list of shard numbers, got {v!r}")
    out = []
    for i, s in enumerate(v):
        s = _int(s, f"{key}[{i}]")
        if s >= shard_count:
            raise _err(key, f"shard {s} is outside 0..{shard_count - 1} (shard_count = {shard_count})")
        if s in out:
            raise _err(key, f"shard {s} is listed twice")
        out.append(s)
    return tuple(out)


_TOP = {"node_id", "cluster_name", "replication_mode", "replication_factor", "shard_count",
        "sharding_strategy", "nodes", "nats", "outbox_max_bytes", "sync_timeout_secs",
        "heartbeat_secs", "dead_after_secs", "partial_results", "hedge_after_secs"}
_NODE = {"id", "address", "shards", "replica_shards", "tags"}
_NATS = {"servers", "replicas", "connect_timeout_secs", "publish_timeout_secs", "user", "password", "token",
         "nkeys_seed", "credentials", "tls_ca", "tls_cert", "tls_key", "max_age_secs", "max_bytes"}


def cluster_from_dict(data: Any) -> ClusterConfig:
    """Validate a parsed ``cluster.toml`` (a dict) into a :class:`ClusterConfig`."""
    if not isinstance(data, dict):
        raise ConfigError("cluster configuration: expected a table of keys")
    unknown = sorted(set(data) - _TOP)
    if unknown:
        raise _err(unknown[0], "unknown key")
    if "node_id" not in data:
        raise _err("node_id", "missing (the id of this node in [[nodes]])")
    node_id = _str(data["node_id"], "node_id")
    cluster_name = _str(data.get("cluster_name", "rusts"), "cluster_name")
    if not _NAME_RE.match(cluster_name):
        raise _err("cluster_name", f"only letters, digits, '-' and '_' are allowed, got {cluster_name!r}")
    mode = data.get("replication_mode", "Quorum")
    if mode not in MODES:
        raise _err("replication_mode", f"unknown mode {mode!r} (expected one of {', '.join(MODES)})")
    rf = _int(data.get("replication_factor", 1), "replication_factor", minimum=1)
    shard_count = _int(data.get("shard_count", 16), "shard_count", minimum=1)
    strategy, bucket = _strategy(data.get("sharding_strategy", "BySeries"))

    raw_nodes = data.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise _err("nodes", "expected at least one [[nodes]] table")
    nodes: list[NodeConfig] = []
    for i, n in enumerate(raw_nodes):
        where = f"nodes[{i}]"
        if not isinstance(n, dict):
            raise _err(where, "expected a table")
        unknown = sorted(set(n) - _NODE)
        if unknown:
            raise _err(f"{where}.{unknown[0]}", "unknown key")
        nid = _str(n.get("id"), f"{where}.id")
        if not _NAME_RE.match(nid):
            raise _err(f"{where}.id", f"only letters, digits, '-' and '_' are allowed, got {nid!r}")
        if any(x.id == nid for x in nodes):
            raise _err(f"{where}.id", f"node id {nid!r} is used twice")
        addr = _str(n.get("address"), f"{where}.address")
        host, sep, port = addr.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise _err(f"{where}.address", f"expected host:port, got {addr!r}")
        shards = _shard_list(n.get("shards"), f"{where}.shards", shard_count)
        reps = _shard_list(n.get("replica_shards"), f"{where}.replica_shards", shard_count)
        both = sorted(set(shards) & set(reps))
        if both:
            raise _err(f"{where}.replica_shards", f"shard {both[0]} is also in shards")
        nodes.append(NodeConfig(nid, addr, shards, reps))

    if not any(n.id == node_id for n in nodes):
        raise _err("node_id", f"{node_id!r} is not the id of any [[nodes]] entry "
                              f"({', '.join(n.id for n in nodes)})")
    if rf > len(nodes):
        raise _err("replication_factor", f"{rf} exceeds the node count {len(nodes)}")
    for s in range(shard_count):
        prim = [n.id for n in nodes if s in n.shards]
        if not prim:
            owners = [n.id for n in nodes if s in n.replica_shards]
            raise _err("nodes", f"shard {s} has no owner (no node lists it in shards"
                                + (f"; replicas: {', '.join(owners)}" if owners else "") + ")")
        if len(prim) > 1:
            raise _err("nodes", f"shard {s} is a primary shard of several nodes ({', '.join(prim)})")
        n_owners = sum(1 for n in nodes if s in n.shards or s in n.replica_shards)
        if n_owners < rf:
            raise _err("replication_factor", f"shard {s} has {n_owners} owner(s), fewer than "
                                             f"replication_factor = {rf}")

    raw_nats = data.get("nats", {})
    if not isinstance(raw_nats, dict):
        raise _err("nats", "expected a table")
    unknown = sorted(set(raw_nats) - _NATS)
    if unknown:
        raise _err(f"nats.{unknown[0]}", "unknown key")
    servers = raw_nats.get("servers", ["nats://127.0.0.1:4222"])
    if not isinstance(servers, list) or not servers or not all(isinstance(s, str) and s for s in servers):
        raise _err("nats.servers", f"expected a non-empty list of nats://host:port URLs, got {servers!r}")
    replicas = raw_nats.get("replicas")
    if replicas is not None:
        replicas = _int(replicas, "nats.replicas", minimum=1)
        if replicas > 5:
            raise _err("nats.replicas", f"JetStream allows at most 5 replicas, got {replicas}")
        if replicas > len(servers):
            raise _err("nats.replicas", f"{replicas} exceeds the number of nats.servers ({len(servers)})")
    auth = {k: raw_nats.get(k) for k in ("user", "password", "token", "nkeys_seed", "credentials",
                                           "tls_ca", "tls_cert", "tls_key")}
    for k, v in auth.items():
        if v is not None and (not isinstance(v, str) or not v):
            raise _err(f"nats.{k}", f"expected a non-empty string, got {v!r}")
    if (auth["user"] is None) != (auth["password"] is None):
        raise _err("nats.password" if auth["user"] else "nats.user", "user and password go together")
    given = [k for k in ("user", "token", "nkeys_seed", "credentials") if auth[k] is not None]
    if len(given) > 1:
        raise _err(f"nats.{given[1]}", f"choose one way to authenticate (also given: nats.{given[0]})")
    if (auth["tls_cert"] is None) != (auth["tls_key"] is None):
        raise _err("nats.tls_key" if auth["tls_cert"] else "nats.tls_cert", "tls_cert and tls_key go together")
    for k in ("nkeys_seed", "credentials", "tls_ca", "tls_cert", "tls_key"):
        if auth[k] is not None and not os.path.isfile(auth[k]):
            raise _err(f"nats.{k}", f"no such file: {auth[k]}")
    max_age = raw_nats.get("max_age_secs", 0)
    if isinstance(max_age, bool) or not isinstance(max_age, (int, float)) or max_age < 0:
        raise _err("nats.max_age_secs", f"expected seconds >= 0 (0: no limit), got {max_age!r}")
    max_bytes = raw_nats.get("max_bytes", -1)
    if max_bytes != -1:
        max_bytes = _int(max_bytes, "nats.max_bytes", minimum=1 << 20)
    nats = NatsConfig(tuple(servers), replicas,
                      _number(raw_nats.get("connect_timeout_secs", 2.0), "nats.connect_timeout_secs"),
                      _number(raw_nats.get("publish_timeout_secs", 5.0), "nats.publish_timeout_secs"),
                      **auth, max_age_secs=float(max_age), max_bytes=int(max_bytes))
    hb = _number(data.get("heartbeat_secs", 1.0), "heartbeat_secs")
    dead = _number(data.get("dead_after_secs", 3.0), "dead_after_secs")
    if dead <= hb:
        raise _err("dead_after_secs", f"must exceed heartbeat_secs ({hb}), got {dead}")
    partial = data.get("partial_results", False)
    if not isinstance(partial, bool):
        raise _err("partial_results", f"expected true or false, got {partial!r}")
    hedge = data.get("hedge_after_secs", 0.5)
    if isinstance(hedge, bool) or not isinstance(hedge, (int, float)) or hedge < 0:
        raise _err("hedge_after_secs", f"expected seconds >= 0 (0: no hedging), got {hedge!r}")
    return ClusterConfig(
        node_id=node_id, nodes=tuple(nodes), cluster_name=cluster_name, replication_mode=mode,
        replication_factor=rf, shard_count=shard_count, sharding_strategy=strategy,
        time_bucket_ns=bucket, nats=nats,
        outbox_max_bytes=_int(data.get("outbox_max_bytes", 64 << 20), "outbox_max_bytes", minimum=1),
        sync_timeout_secs=_number(data.get("sync_timeout_secs", 10.0), "sync_timeout_secs"),
        heartbeat_secs=hb, dead_after_secs=dead, partial_results=partial, hedge_after_secs=float(hedge))


def load_cluster_config(path: str | os.PathLike) -> ClusterConfig:
    """Read and validate a ``cluster.toml`` file.

    Raises:
        ConfigError: unreadable file, TOML syntax error, or an invalid key (named in the message).
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: cluster file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read cluster file: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    try:
        return cluster_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}", key=getattr(exc, "key", None)) from None


def check_node_config(config) -> ClusterConfig:
    """Validate the cluster file named by ``config.cluster`` against the server's configuration
    (called by ``rusts-server`` before it starts)."""
    cfg = load_cluster_config(config.cluster)
    if config.storage.wal_durability == "none":
        raise ConfigError("storage.wal_durability: a cluster node needs a WAL (every_write, periodic or "
                          "os_default): the applied stream sequence is recorded only once its data is "
                          "durable", key="storage.wal_durability")
    return cfg
