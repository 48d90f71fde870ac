"""JSON grouped and bucketed aggregates on the vector path answer exactly as the executor:
same groups in the same order (a missing tag as ""), same buckets, same values, with order,
offset and limit, over rows in memory, in segments and in both."""

from __future__ import annotations

import random

import pytest

import rusts
from rusts.query.executor import execute, select_series
from rusts.query.model import from_json

T0 = 1_700_000_000_000_000_000
S = 10**9
HOSTS = [("h0", "us"), ("h1", "eu"), ("h2", None), ("h10", "us"), ("h3", "ap")]


def lines(rng: random.Random, n: int) -> str:
    out = []
    for _ in range(n):
        host, region = rng.choice(HOSTS)
        tags = f"host={host}" + (f",region={region}" if region else "")
        fields = [f"f={rng.randint(-400, 400) / 4}"]  # multiples of 1/4: sums exact in any order
        if rng.random() < 0.6:
            fields.append(f"i={rng.randint(-10**6, 10**6)}i")
        if rng.random() < 0.3:
            fields.append(f"u={rng.randint(0, 2**40)}u")
        out.append(f"m,{tags} {','.join(fields)} {T0 + rng.randrange(0, 7200) * S}")
    return "\n".join(out)


def rows(rs) -> list:
    return rs.to_rows()


@pytest.mark.parametrize("seed", range(3))
async def test_grouped_json_aggregates_answer_as_the_executor(tmp_path, seed, monkeypatch):
    import rusts.sql.vector as sv

    taken = []
    real = sv.aggregate
    monkeypatch.setattr(sv, "aggregate", lambda *a, **k: taken.append(1) or real(*a, **k))
    rng = random.Random(seed)
    async with rusts.open(tmp_path / "d", wal_durability="none", block_rows=64) as db:
        for k in range(5):
            await db.write(lines(rng, 400))
            if k % 2 == 0:
                await db.flush()  # segments and memtable both hold rows
        ftypes = db.schema.fields("m")
        compared = 0
        for _ in range(60):
            a = rng.randrange(0, 7000)
            agg = {"function": rng.choice(["Count", "Sum", "Mean", "Min", "Max"])}
            body = {"measurement": "m", "time_range": {"start": T0 + a * S, "end": T0 + (a + rng.randrange(60, 7200)) * S},
                    "group_by": rng.choice([["host"], ["region"], ["region", "host"], []])}
            if rng.random() < 0.7 or not body["group_by"]:
                agg["interval_nanos"] = rng.choice([60, 600, 1800]) * S
            if rng.random() < 0.3:
                body["fields"] = rng.sample(["f", "i", "u"], 2)
            else:
                agg["field"] = rng.choice(["f", "i", "u"])
            body["aggregation"] = agg
            if rng.random() < 0.3:
                body["order"] = "Desc"
            if rng.random() < 0.3:
                body["limit"], body["offset"] = rng.randrange(1, 20), rng.randrange(0, 10)
            q = from_json(body)
            sids = select_series(db.index, q)
            snap = db.snapshot(sids, q.start, q.end)
            expect = rows(execute(snap, q, sids, db.tags_map(sids).__getitem__, ftypes))
            got = rows(await db.query(q))
            assert got == expect, body
            compared += len(got) > 0
        assert compared > 40 and len(taken) > 40  # answers with rows, through the vector path
