"""The sharded, replicated cluster on NATS JetStream (docs/cluster.md).

Modules by concern: :mod:`~rusts.cluster.config` (cluster.toml), :mod:`~rusts.cluster.sharding`
(columnar shard assignment), :mod:`~rusts.cluster.nats_bridge` (nats-py on an asyncio thread,
called from trio), :mod:`~rusts.cluster.writer` (split and publish), :mod:`~rusts.cluster.applier`
(shard streams into local shard databases), :mod:`~rusts.cluster.fanout` (partial answers and
their exact merge), :mod:`~rusts.cluster.schema` (field types agreed in the KV),
:mod:`~rusts.cluster.sqlfront` (SQL, SHOW, deletes), :mod:`~rusts.cluster.membership`
(heartbeats and the shard map in JetStream KV) and :mod:`~rusts.cluster.node` (one node: all of
the above, and the HTTP and pgwire frontend).
"""

from rusts.cluster.node import frontend_of, run_cluster_node

__all__ = ["frontend_of", "run_cluster_node"]
