"""Schema agreement: a field's type is decided once for the whole cluster, in the metadata KV.

The type of ``measurement.field`` is the KV key ``schema.<b64 measurement>.<b64 field>`` of the
bucket ``rusts_<cluster>_meta`` (base64url of the UTF-8 names: any name fits NATS's key
alphabet), value the InfluxDB type name (``float``, ``integer``, ...). It is created with the
KV's ``create`` (an atomic "only if absent"), so when two nodes propose different types for a
new field at once exactly one wins, and every node learns the winner. A decision never changes
afterwards, so each node caches the decisions it has seen (:attr:`ClusterSchema.known`): a write
of known fields costs no NATS call.

Two places use it:

* the accepting node (:meth:`ClusterSchema.check`) before it publishes: lines whose type
  disagrees with the cluster's are rejected exactly as one node rejects them (the same partial
  write 400, naming the line, whichever node received the write), the others are published;
* every shard owner (:meth:`ClusterSchema.seed`) before it applies messages: a field new to the
  shard's database gets the cluster's type first, so every shard database rejects the same lines
  even for writes accepted while NATS was unreachable (``Async`` mode decides new fields locally
  then; a conflict found later drops those lines on every owner: docs/cluster.md).

The cost is per (measurement, field) of a request, never per point.
"""

from __future__ import annotations

import base64
import logging

from rusts.model import FieldType, WriteBatch
from rusts.storage.schema import SchemaRegistry, type_name

log = logging.getLogger("rusts.cluster.schema")

_BY_NAME = {type_name(t): t for t in FieldType}


def schema_key(measurement: str, field: str) -> str:
    def b64(s: str) -> str:
        return base64.urlsafe_b64encode(s.encode()).decode()

    return f"schema.{b64(measurement)}.{b64(field)}"


def batch_fields(batch: WriteBatch) -> dict[tuple[str, str], FieldType]:
    """``(measurement, field) -> type`` of the columns of ``batch`` that hold a value (per
    frame and column; when one field comes with two types, one of them)."""
    out: dict[tuple[str, str], FieldType] = {}
    for f in batch.frames:
        ms = set(f.measurements) if len(f.measurements) > 1 else f.measurements
        for name, col in f.columns.items():
            if col.mask is not None and not col.mask.any():
                continue
            for m in ms:
                out.setdefault((m, name), FieldType(col.type))
    return out


class ClusterSchema:
    """This node's view of the cluster-wide field types, backed by the metadata KV."""

    def __init__(self, bridge, link) -> None:
        self.bridge = bridge
        self.link = link
        self.known: dict[tuple[str, str], FieldType] = {}
        self.conflicts = 0  # lines rejected here for a type conflict (shown in /cluster)

    async def resolve(self, proposals: dict[tuple[str, str], FieldType]) -> dict[tuple[str, str], FieldType]:
        """The cluster's type of each pair of ``proposals``: the known or stored one, else the
        proposed one, stored now (first proposal wins cluster-wide). Raises NatsUnavailable."""
        out = {p: self.known[p] for p in proposals if p in self.known}
        missing = [p for p in proposals if p not in out]
        if missing:
            keys = {schema_key(*p): p for p in missing}
            stored = await self.bridge.call(self.link.kv_get_many, "meta", list(keys), _timeout=10.0)
            for k, v in stored.items():
                out[keys[k]] = _BY_NAME[v.decode()]
            new = {k: p for k, p in keys.items() if p not in out}
            if new:
                won = await self.bridge.call(self.link.kv_create_many, "meta",
                                             [(k, type_name(proposals[p]).encode()) for k, p in new.items()],
                                             _timeout=10.0)
                lost = [k for k, ok in won.items() if not ok]
                for k, ok in won.items():
                    if ok:
                        out[new[k]] = proposals[new[k]]
                if lost:  # another node created it meanwhile: read the winner
                    stored = await self.bridge.call(self.link.kv_get_many, "meta", lost, _timeout=10.0)
                    for k in lost:
                        if k not in stored:
                            raise _unavailable(f"schema key {k} is neither creatable nor readable")
                        out[new[k]] = _BY_NAME[stored[k].decode()]
        self.known.update(out)
        return out

    def _local_check(self, batch: WriteBatch, pairs, original_line):
        """Check ``batch`` against the known decisions; the checked batch and the types it
        would give the fields not decided yet."""
        scratch = SchemaRegistry()
        for (m, f) in pairs:
            t = self.known.get((m, f))
            if t is not None:
                scratch.ensure(m, f, t)
        out = scratch.check(batch, original_line)
        proposals = {p: scratch.field_type(*p) for p in pairs if p not in self.known}
        return out, {p: t for p, t in proposals.items() if t is not None}

    async def check(self, batch: WriteBatch, original_line=None, *, provisional: bool = False) -> WriteBatch:
        """``batch`` without the lines whose field types disagree with the cluster (their
        :class:`~rusts.model.LineError` added, as a single node reports them). New fields are
        decided here (stored in the KV). ``provisional``: when NATS is unreachable, decide new
        fields locally instead of raising (Async mode)."""
        from rusts.cluster.nats_bridge import NatsUnavailable

        pairs = batch_fields(batch)
        if not pairs:
            return batch
        for _ in range(3):
            out, proposals = self._local_check(batch, pairs, original_line)
            if not proposals:
                break
            try:
                decided = await self.resolve(proposals)
            except NatsUnavailable:
                if not provisional:
                    raise
                log.info("cluster schema: NATS unreachable; %d new field(s) decided locally", len(proposals))
                break
            if all(decided[p] == t for p, t in proposals.items()):
                break
            # another node decided a new field otherwise meanwhile: check again with its type
        self.conflicts += len(out.errors) - len(batch.errors)
        return out

    async def seed(self, db, batches: list[WriteBatch]) -> None:
        """Give ``db`` (a shard database) the cluster's type of every field of ``batches`` that
        it does not know yet, before they are applied. Raises NatsUnavailable."""
        proposals: dict[tuple[str, str], FieldType] = {}
        for b in batches:
            for p, t in batch_fields(b).items():
                if p not in proposals and db.schema.field_type(*p) is None:
                    proposals[p] = t
        if proposals:
            for (m, f), t in (await self.resolve(proposals)).items():
                db.schema.ensure(m, f, t)


def _unavailable(msg: str):
    from rusts.cluster.nats_bridge import NatsUnavailable, RETRY_AFTER

    return NatsUnavailable(msg, retry_after=RETRY_AFTER)
