"""SQL, SHOW, DELETE and DROP over the whole cluster (``POST /sql``, pgwire, ``/delete``).

* ``SELECT``: single-table statements that the query model expresses (the fast path of
  :mod:`rusts.sql.runner`) are planned against the cluster-wide catalog (merged from one owner
  per shard) and answered by :meth:`ClusterNode.query` (fan-out and exact merge). Anything else
  (joins, subqueries, DuckDB's general path) is refused with a 4xx.
* ``SHOW TABLES | MEASUREMENTS | COLUMNS | FIELD KEYS | TAG KEYS | TAG VALUES``: answered by
  :func:`rusts.sql.show.run_show` over the cluster catalog; tag values are the union of the owners'
  (one fan-out for the measurement).
* ``DELETE FROM`` / ``DROP TABLE`` (SQL), ``POST /delete``, ``DELETE /measurements/<m>``: the
  statement is checked here (names, predicates) by :func:`rusts.sql.dml.run_dml` itself, then put
  into the logs of the shards it can touch (:meth:`ClusterWriter.log_op`), so every owner applies
  it in log order with the writes: a delete removes exactly the points logged before it, on
  every replica, and a replica that was down applies it when it catches up. The count
  (``points_deleted``, ``DELETE n``) is counted through the cluster just before the delete is
  logged (None with field predicates, as on one node).
"""

from __future__ import annotations

import time
from types import SimpleNamespace

from rusts.errors import QueryError, UnknownTableError, UnsupportedError

_NOT_DISTRIBUTED = ("this SQL statement is not supported in cluster mode yet: cluster mode answers "
                    "single-table SELECTs with time and tag filters, GROUP BY tags and time_bucket, "
                    "aggregates, ORDER BY and LIMIT; SHOW; DELETE and DROP TABLE (docs/cluster.md)")


class _ClusterDb:
    """What :mod:`rusts.sql.dml` and :mod:`rusts.sql.show` need of a database, for the cluster:
    its catalog, tag values fetched beforehand, and delete/drop through the log."""

    def __init__(self, node, cat, tag_values: dict[str, list[str]] | None = None) -> None:
        self._node = node
        tv = tag_values or {}
        self.index = SimpleNamespace(generation=0, tag_values=lambda m, k: tv.get(k, []))
        self.schema = SimpleNamespace(generation=0)
        self._catalog_cache = ((0, 0), cat)  # Catalog.of_db(self) returns the cluster catalog
        self._cat = cat

    def measurements(self) -> list[str]:
        return self._cat.measurements()

    async def delete(self, *args) -> dict:
        return await self._node.delete(*args)

    async def drop_measurement(self, m: str) -> dict:
        return await self._node.drop_measurement(m)


async def sql_output(node, text: str, params=None):
    """``(SqlOutput, missing shard entries)`` of one statement over the cluster."""
    from rusts.security.authorize import authorize_sql
    from rusts.sql.dml import is_dml, run_dml
    from rusts.sql.runner import _prepare, fast_output
    from rusts.sql.show import _SHOW_TAG_VALUES, _ident, is_show, run_show
    from rusts.sql.translate import plan_fast
    from rusts.storage.damage import collect_missing

    authorize_sql(node.main_db, text)  # the SQL sandbox (and the caller's scopes, when set)
    stripped = text.strip().rstrip(";")
    with collect_missing() as found:
        if is_dml(text):
            if stripped.lower().split()[:2] == ["show", "retention"]:  # the cluster's (rusts.cluster.retention)
                await node.rp.refresh()
                pols = SimpleNamespace(lifecycle=SimpleNamespace(policies=node.rp.policies))
                return await run_dml(pols, text, params), []
            cat = await node.catalog(partial=False)  # a delete must know every shard's names
            return await run_dml(_ClusterDb(node, cat), text, params), list(found)
        cat = await _catalog(node)
        if is_show(text):
            values = None
            m = _SHOW_TAG_VALUES.match(stripped)
            if m:
                name = cat.resolve_table(*_ident(m.group(1), m.group(2)))
                if name is None:
                    raise UnknownTableError(f'relation "{m.group(2) or m.group(1)}" does not exist')
                values = await _tag_values(node, name)
            return run_show(stripped, cat, _ClusterDb(node, cat, values)), list(found)
        _, ext, ast, names = _prepare(text, params)
        plan = None if ext is not None else plan_fast(ast, cat, time.time_ns(), names, allow_residual=False)
        if plan is None:
            raise UnsupportedError(_NOT_DISTRIBUTED, sqlstate="0A000")
        rs = await node.query(plan.query)
        return fast_output(plan, rs), list(found)


async def _catalog(node):
    missing = {} if node.cfg.partial_results else None
    from rusts.cluster.fanout import merge_catalog

    cat = merge_catalog(await node._fan_out("catalog", None, list(range(node.cfg.shard_count)), missing))
    _report(missing)
    return cat


async def _tag_values(node, measurement: str) -> dict[str, list[str]]:
    from rusts.cluster.fanout import merge_tag_values

    missing = {} if node.cfg.partial_results else None
    shards = node.sharder.shards_for(measurement, -(2**63), 2**63 - 1)
    out = merge_tag_values(await node._fan_out("tag_values", measurement, shards, missing))
    _report(missing)
    return out


def _report(missing: dict | None) -> None:
    if missing:
        from rusts.storage.damage import report_missing

        for s, why in sorted(missing.items()):
            report_missing({"shard": s, "error": why})


async def sql_json(node, text: str, t0: float) -> dict:
    """The ``POST /sql`` body, with ``partial``/``missing_shards`` when shards were left out."""
    from rusts.sql.output import to_json
    from rusts.storage.damage import answer_extra

    out, missing = await sql_output(node, text)
    return {**to_json(out, (time.perf_counter() - t0) * 1000), **answer_extra(missing)}


def describe_params(types) -> list | None:
    """Stand-in parameter values for describing a statement in cluster mode (pgwire Describe):
    the statement is planned and run with them, since the cluster has no data-free describe.
    A neutral value per declared type (NULL would make a filter unplannable)."""
    if not types:
        return None
    by_oid = {16: False, 20: 0, 21: 0, 23: 0, 700: 0.0, 701: 0.0, 1700: 0.0, 1114: 0, 1184: 0}
    return [by_oid.get(int(t), "") for t in types]


async def cluster_delete(node, measurement: str, start: int, end: int, tag_filters: tuple,
                         field_predicates: tuple) -> dict:
    """Log a delete on every shard it can touch; the single node's answer shape."""
    from rusts.cluster.fanout import query_to_wire
    from rusts.lifecycle.tombstones import field_predicate_json
    from rusts.query.model import AggFunc, Aggregation, Query

    if end <= start:
        raise QueryError("delete: the time range is empty (end must be after start)")
    if field_predicates:
        field_predicate_json(field_predicates)  # validated here: the owners must not refuse it
    count = None
    if not field_predicates:
        rs = await node.query(Query(measurement, start, end, tag_filters, None, (Aggregation(AggFunc.Count),)))
        rows = rs.to_rows()
        count = int(rows[0]["fields"].get("count") or 0) if rows else 0
    body = {"query": query_to_wire(Query(measurement, start, end, tag_filters)),
            "field_predicates": [dict(p) if isinstance(p, dict) else {"field": p.field, "op": p.op, "value": p.value}
                                 for p in field_predicates]}
    await node.writer.log_op("delete", body, node.sharder.shards_for(measurement, start, end))
    return {"measurement": measurement, "points_deleted": count, "tombstone_id": None}


async def cluster_drop(node, measurement: str) -> dict:
    """DROP TABLE over the cluster: every point, series and field of ``measurement`` on every
    owner. The field types stay decided cluster-wide (docs/cluster.md)."""
    cat = await node.catalog(partial=False)
    if measurement not in cat.measurements():
        raise UnknownTableError(f'relation "{measurement}" does not exist')
    from rusts.query.model import AggFunc, Aggregation, Query

    rows = (await node.query(Query(measurement, aggregations=(Aggregation(AggFunc.Count),)))).to_rows()
    count = int(rows[0]["fields"].get("count") or 0) if rows else 0
    await node.writer.log_op("drop", {"measurement": measurement},
                             node.sharder.shards_for(measurement, -(2**63), 2**63 - 1))
    return {"measurement": measurement, "points_deleted": count, "tombstone_id": None}
