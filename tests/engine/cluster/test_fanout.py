"""Partial answers of shard databases merge into exactly the single-node answer (in process)."""

from __future__ import annotations

import math

import orjson
import pytest

import rusts
from rusts.cluster.fanout import merge, pack_gkeys, partial_answer, unpack_gkeys
from rusts.cluster.node import dumps
from rusts.cluster.sharding import Sharder
from rusts.protocols.line_protocol import parse
from rusts.query.executor import result_json
from rusts.query.model import from_json

HOUR = 3_600_000_000_000
N_SHARDS = 4


def _body() -> bytes:
    lines = []
    for i in range(2000):
        host, dc = f"h{i % 7}", f"d{i % 3}"
        # values on a 0.25 grid: every partial sum is exact, so merged float sums are too
        lines.append(f"cpu,host={host},dc={dc} usage={(i * 37) % 400 / 4},n={i % 50}i,"
                     f'state="s{i % 4}" {i * 60_000_000_000 + 1}')
    lines += [f"mem,host=h{i % 3} free={i}i {i * HOUR}" for i in range(30)]
    return "\n".join(lines).encode()


QUERIES = [
    {},
    {"limit": 25, "offset": 10},
    {"order": "Desc", "limit": 30},
    {"fields": ["usage"], "tag_filters": [{"key": "dc", "op": "Eq", "value": "d1"}]},
    {"aggregation": {"function": "Count"}},
    {"aggregation": {"function": "Count", "field": "usage"}, "group_by": ["host"]},
    {"aggregation": {"function": "Sum", "field": "n"}, "group_by": ["dc"]},
    {"aggregation": {"function": "Sum", "field": "usage", "interval_nanos": 3 * HOUR}},
    {"aggregation": {"function": "Mean", "field": "usage", "interval_nanos": HOUR}, "group_by": ["dc"]},
    {"aggregation": {"function": "Mean", "interval_nanos": HOUR}, "fields": ["usage", "n"], "order": "Desc",
     "limit": 7, "offset": 2},
    {"aggregation": {"function": "Min", "field": "n"}, "group_by": ["host", "dc"]},
    {"aggregation": {"function": "Max", "field": "usage", "interval_nanos": 5 * HOUR}},
    {"aggregation": {"function": "First", "field": "usage"}, "group_by": ["host"]},
    {"aggregation": {"function": "Last", "field": "state", "interval_nanos": 4 * HOUR}},
    # owners ship only each (group, bucket)'s first / last rows; groups span shards here
    {"aggregation": {"function": "Last"}, "fields": ["usage", "n", "state"], "group_by": ["dc"]},
    {"aggregation": {"function": "First", "field": "n", "interval_nanos": 2 * HOUR}, "group_by": ["dc"]},
    {"aggregation": {"function": "Median", "field": "usage"}, "group_by": ["dc"]},
    {"aggregation": {"function": "Percentile", "field": "n", "percentile": 90, "interval_nanos": 6 * HOUR}},
    {"aggregation": {"function": "StdDev", "field": "usage"}, "group_by": ["host"]},
    {"aggregation": {"function": "Variance", "field": "n", "interval_nanos": 8 * HOUR}},
    {"aggregation": {"function": "Mean", "field": "usage"}, "tag_filters": [{"key": "host", "op": "Eq",
                                                                            "value": "nobody"}]},
]


def _q(extra: dict, measurement="cpu") -> dict:
    return {"measurement": measurement, "time_range": {"start": 0, "end": 2**62}, **extra}


def _close(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("strategy", ["BySeries", "ByMeasurement", "ByTime", "Composite"])
async def test_merged_answers_equal_the_single_node_answer(tmp_path, strategy):
    body = _body()
    sharder = Sharder(strategy, N_SHARDS, 6 * HOUR)
    parts = sharder.split(parse(body))
    async with rusts.open(tmp_path / "ref") as ref:
        await ref.write(body)
        dbs = {}
        ctxs = []
        try:
            for s in range(N_SHARDS):
                ctx = rusts.open(tmp_path / f"shard{s}")
                dbs[s] = await ctx.__aenter__()
                ctxs.append(ctx)
                if s in parts:
                    await dbs[s].write_batch(parts[s])
            await dbs[0].flush()  # one shard from segments, the others from memtables
            for extra in QUERIES:
                qj = _q(extra)
                want = result_json(await ref.query(qj), 0)["results"]
                # two "owners": shards 0-1 answered locally, 2-3 through the wire encoding
                local = await partial_answer(dbs, qj, [0, 1])
                remote = unpack_gkeys(orjson.loads(dumps(pack_gkeys(await partial_answer(dbs, qj, [2, 3])))))
                got = result_json(merge(from_json(qj), [local, remote]), 0)["results"]
                exact = extra.get("aggregation", {}).get("function") not in ("StdDev", "Variance")
                assert (got == want) if exact else _close(got, want), (extra, got[:3], want[:3])
        finally:
            for ctx in reversed(ctxs):
                await ctx.__aexit__(None, None, None)
