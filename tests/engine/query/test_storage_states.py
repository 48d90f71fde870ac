"""One answer per question, whatever the storage state.

Seeded random data (float, int and uint fields with values beyond 2^53, bool and string fields;
four series, one without the ``region`` tag; out-of-order rows, duplicate timestamps and partial
overwrites across writes, over two time partitions) and seeded random statements (JSON queries
and SQL: aggregates with and without GROUP BY and time buckets, raw reads with ORDER BY/LIMIT,
value predicates) are answered with the rows

* all in the memtable,
* flushed (recent in-memory tables and hot segments),
* in hot segments only (after a restart),
* compacted into the cold tier (cold codecs, sub-block statistics), and after another restart,
* split across segments, the memtable and overlapping flushes, and after a restart (WAL replay).

Every answer must be the same. Floats are multiples of 1/4, so sums do not depend on the order
of addition and are compared exactly; integers are compared as Python ints (an int that took a
float detour, or came back as a float, differs).
"""

from __future__ import annotations

import json
import random

import numpy as np

import rusts
from rusts.errors import QueryError, StorageError
from rusts.query.executor import result_json
from rusts.sql.output import to_json
from rusts.sql.runner import execute_sql

T0 = 1_699_990_000_000_000_000  # 2023-11-14: the data crosses a 24 h partition boundary
S = 10**9
SPAN = 30 * 3600  # seconds
HOSTS = [("h0", "us"), ("h1", "us"), ("h2", "eu"), ("h3", None)]
WORDS = ["idle", "busy", "down", "a b"]


def _value(rng: random.Random, field: str):
    if field == "f":
        return rng.randint(-400, 400) / 4
    if field == "i":
        return rng.choice([1, -1]) * (2**54 + rng.randint(0, 999)) if rng.random() < 0.04 else rng.randint(-50, 200)
    if field == "u":
        return 2**55 + rng.randint(0, 999) if rng.random() < 0.04 else rng.randint(0, 300)
    if field == "b":
        return rng.random() < 0.5
    return rng.choice(WORDS)


def _fmt(field: str, v) -> str:
    if field == "f":
        return f"f={v!r}"
    if field == "i":
        return f"i={v}i"
    if field == "u":
        return f"u={v}u"
    if field == "b":
        return f"b={'true' if v else 'false'}"
    return f's="{v}"'


def generate(seed: int = 14, n: int = 1400) -> list[bytes]:
    """Four write batches of line protocol, each in random order; about a fifth of the lines
    rewrite an earlier (series, time) with some fields (last write wins per field)."""
    rng = random.Random(seed)
    lines, used = [], []
    for _ in range(n):
        if used and rng.random() < 0.2:
            hi, t = rng.choice(used)
        else:
            hi, t = rng.randrange(len(HOSTS)), rng.randrange(SPAN)
            used.append((hi, t))
        fields = [f for f in ("f", "i", "u", "b", "s") if rng.random() < 0.6] or ["f"]
        host, region = HOSTS[hi]
        tags = f"host={host}" + (f",region={region}" if region else "")
        lines.append(f"m,{tags} {','.join(_fmt(f, _value(rng, f)) for f in fields)} {T0 + t * S}")
    batches = [lines[k::4] for k in range(4)]  # write order = batch order; each batch shuffled
    for b in batches:
        rng.shuffle(b)
    return ["\n".join(b).encode() for b in batches]


# ----------------------------------------------------------------------------- statements

AGGS = ["COUNT(*)", "COUNT(f)", "COUNT(s)", "SUM(i)", "SUM(u)", "SUM(f)", "AVG(f)", "AVG(i)", "MIN(i)",
        "MAX(i)", "MIN(u)", "MAX(u)", "MIN(f)", "MAX(f)", "FIRST(i)", "LAST(u)", "FIRST(f)", "LAST(s)",
        "LAST(b)", "MEDIAN(f)", "PERCENTILE_90(i)", "STDDEV(f)"]
PREDICATES = ["f > {x}", "i >= {k}", "u IS NOT NULL", "f BETWEEN {x} AND {y}", "(f > {y} OR i < {k})",
              "b", "s = 'busy'", "u > 100 AND f <= {y}"]


def _iso(sec: int) -> str:
    return str(np.datetime64(T0 + sec * S, "ns")) + "Z"


def statements(seed: int = 7, n_sql: int = 44, n_json: int = 24) -> list[tuple[str, object, bool]]:
    """``(kind, statement, ordered)``: kind "sql" or "json"."""
    rng = random.Random(seed)
    out = []
    for k in range(n_sql):
        lo = rng.randrange(SPAN)
        hi = min(SPAN, lo + rng.choice([600, 3600, 5 * 3600, SPAN]))
        where = [] if rng.random() < 0.25 else [f"time >= '{_iso(lo)}' AND time < '{_iso(hi)}'"]
        if rng.random() < 0.4:
            where.append(rng.choice(["host = 'h1'", "host IN ('h0', 'h3')", "region = 'us'", "region IS NULL"]))
        if rng.random() < 0.4:
            x = rng.randint(-60, 20) / 4
            where.append(rng.choice(PREDICATES).format(x=x, y=x + rng.randint(1, 200) / 4, k=rng.randint(-20, 100)))
        w = (" WHERE " + " AND ".join(where)) if where else ""
        if k % 4 == 3:  # raw rows
            cols = ", ".join(rng.sample(["f", "i", "u", "s", "b"], rng.randint(1, 5)))
            if rng.random() < 0.5:
                host = rng.choice(HOSTS)[0]
                w2 = w + (" AND " if w else " WHERE ") + f"host = '{host}'"
                order = rng.choice(["ASC", "DESC"])
                out.append(("sql", f"SELECT time, {cols} FROM m{w2} ORDER BY time {order} LIMIT {rng.randint(1, 60)}",
                            True))
            else:
                out.append(("sql", f"SELECT time, host, {cols} FROM m{w}", False))
            continue
        aggs = ", ".join(rng.sample(AGGS, rng.randint(1, 4)))
        group = rng.choice([None, "host", "region"])
        bucket = rng.choice([None, None, "1 hour", "10 minutes"])
        keys = ([f"time_bucket('{bucket}', time) AS bk"] if bucket else []) + ([group] if group else [])
        sel = ", ".join(keys + [aggs])
        gb = (" GROUP BY " + ", ".join((["bk"] if bucket else []) + ([group] if group else []))) if keys else ""
        out.append(("sql", f"SELECT {sel} FROM m{w}{gb}", False))
    funcs = ["Count", "Sum", "Mean", "Min", "Max", "First", "Last"]
    for _ in range(n_json):
        lo = rng.randrange(SPAN)
        hi = min(SPAN, lo + rng.choice([900, 3600, 8 * 3600, SPAN]))
        q: dict = {"measurement": "m", "time_range": {"start": T0 + lo * S, "end": T0 + hi * S}}
        if rng.random() < 0.4:
            q["tag_filters"] = [{"key": "host", "op": "Eq", "value": rng.choice(HOSTS)[0]}]
        if rng.random() < 0.3:  # raw
            q["fields"] = rng.sample(["f", "i", "u", "s", "b"], rng.randint(1, 3))
            if rng.random() < 0.5:
                q["order"] = "Desc"
                q["limit"] = rng.randint(1, 40)
        else:
            agg = {"function": rng.choice(funcs), "field": rng.choice(["f", "i", "u"])}
            if rng.random() < 0.5:
                agg["interval_nanos"] = rng.choice([600, 3600]) * S
            q["aggregation"] = agg
            if rng.random() < 0.4:
                q["group_by"] = ["host"]
        out.append(("json", q, True))
    return out


# ----------------------------------------------------------------------------- answering

def _norm(x):
    if isinstance(x, float):
        return ("float", float(f"{x:.12g}"))  # STDDEV and percentiles: last-digit differences
    if isinstance(x, dict):
        return {k: _norm(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_norm(v) for v in x]
    return x


async def answer(db, stmt) -> object:
    kind, s, ordered = stmt
    try:
        if kind == "sql":
            body = to_json(await execute_sql(db, s), 0.0)
        else:
            body = result_json(await db.query(s), 0.0)
    except QueryError as e:
        return ("error", str(e))
    body.pop("execution_time_ms", None)
    rows = _norm(body["results"])
    if not ordered:
        rows = sorted(rows, key=lambda r: json.dumps(r, sort_keys=True))
    return {**body, "results": rows}


async def answers(db, stmts) -> list:
    return [await answer(db, s) for s in stmts]


async def compact_all(db, cold: bool) -> None:
    """Run every compaction task until none is left (``cold``: the cold tier for old partitions)."""
    now = T0 + (SPAN + 400 * 24 * 3600) * S
    for _ in range(20):
        metas = db.manifest.state.segments
        tasks = db.lifecycle.plan(metas, now_ns=now)
        if not tasks:
            break
        try:
            await db.lifecycle.execute(tasks[0])
        except StorageError as e:  # the database's own compactor got there first
            assert "no longer live" in str(e)
    tiers = {m.tier for m in db.manifest.state.segments}
    assert tiers == ({"cold"} if cold else {"hot"}), tiers


def _diff(name: str, want: list, got: list, stmts) -> str | None:
    for w, g, st in zip(want, got, stmts):
        if w != g:
            if isinstance(w, dict) and isinstance(g, dict) and w.keys() == g.keys():
                wr, gr = w["results"], g["results"]
                k = next((k for k, (a, b) in enumerate(zip(wr, gr)) if a != b), min(len(wr), len(gr)))
                w, g = f"{len(wr)} rows, row {k}: {wr[k:k + 1]}", f"{len(gr)} rows, row {k}: {gr[k:k + 1]}"
            return f"{name}: {st[1]}\n  want {str(w)[:600]}\n  got  {str(g)[:600]}"
    return None


async def test_same_answers_in_every_storage_state(tmp_path):
    batches = generate()
    stmts = statements()
    states: dict[str, list] = {}
    path = tmp_path / "a"
    async with rusts.open(path) as db:
        for b in batches:
            r = await db.write(b)
            assert not r.errors, r.errors[:2]
        states["memtable"] = await answers(db, stmts)
        await db.flush()
        states["flushed (recent tables, hot segments)"] = await answers(db, stmts)
    async with rusts.open(path, cold_after_hours=None) as db:
        states["hot segments after a restart"] = await answers(db, stmts)
        await compact_all(db, cold=False)
        states["hot, compacted"] = await answers(db, stmts)
    async with rusts.open(path, cold_after_hours=1, cold_idle_secs=0) as db:
        await compact_all(db, cold=True)
        states["cold tier"] = await answers(db, stmts)
    async with rusts.open(path) as db:
        states["cold tier after a restart"] = await answers(db, stmts)
    path = tmp_path / "b"
    async with rusts.open(path) as db:
        for k, b in enumerate(batches):
            r = await db.write(b)
            assert not r.errors
            if k < 2:
                await db.flush()
        states["split: segments + memtable"] = await answers(db, stmts)
    async with rusts.open(path) as db:
        states["split after a restart (WAL replay)"] = await answers(db, stmts)
    ref = states["memtable"]
    assert sum(isinstance(a, tuple) for a in ref) <= 2, [a for a in ref if isinstance(a, tuple)]
    assert sum(1 for a in ref if not isinstance(a, tuple) and a["results"]) >= len(stmts) * 3 // 4
    problems = [d for name, got in states.items() if (d := _diff(name, ref, got, stmts))]
    assert not problems, "\n".join(problems)
