"""30 simulated days of the TSBS cpu shape: cold vs hot size, and a 30-day query.

``python perf/lifecycle.py [--days 30] [--hosts 100] [--cold-after-days 7]`` writes one hot
segment per daily partition (what the flusher produces for TSBS cpu data: 10 float fields,
2 decimals, 10 s interval, a random walk carried over day boundaries) through the real Manifest.
It then compacts every partition older than ``--cold-after-days`` to the cold tier with
:func:`rusts.lifecycle.compaction.compact_and_commit`, opens the real Database on the directory and times
"mean usage_user per hour per host over the whole period" (JSON query). It prints JSON: per-tier
bytes, the cold/hot ratio of the re-encoded partitions, compaction throughput and query latency.

It also prints ``cold_over_hot_entropy_bound``: the information content of the values of the
cold partitions (the expected code length of an ideal coder that knows the generator: each
step of the clamped 2-decimal random walk is a rounded N(0, 1.5) step, truncated at the bounds;
steps from a clamped value counted as free), over their hot size. No lossless encoding of
these values, whatever the codec, can bring the ratio below it (timestamps and the index cost
extra).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import trio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tsbs import FIELDS, START, STEP, host_tags  # noqa: E402

import rusts.db  # noqa: E402
from rusts.lifecycle.compaction import compact_and_commit, plan  # noqa: E402
from rusts.storage.manifest import Manifest, SegmentMeta  # noqa: E402
from rusts.model import Column, FieldType  # noqa: E402
from rusts.storage.segment import SeriesData, write_segment  # noqa: E402
from rusts.lifecycle.tombstones import LifecycleState  # noqa: E402

DAY_NS = 86_400 * 10**9
SIGMA = 150.0  # the walk's step in hundredths (normal(0, 1.5) on 2-decimal values)
TOP = 10_000   # the upper bound (100.00) in hundredths


def step_entropy_table(far: int = 1500) -> np.ndarray:
    """Entropy (bits) of the next rounded value given the previous one at distance d (in
    hundredths, 1 <= d <= far) from the nearer bound: a rounded N(0, SIGMA) step, the mass
    beyond the bound landing on it. Beyond ``far`` (10 sigma) the bound does not matter."""
    k = np.arange(1, far + 2 * int(10 * SIGMA) + 2, dtype=np.float64)
    out = np.empty(far + 1)
    for d in range(far + 1):
        p = np.exp(-0.5 * ((k - d) / SIGMA) ** 2) / (SIGMA * np.sqrt(2 * np.pi))
        p = p[p > 1e-300]
        p0 = max(0.0, 1.0 - float(p.sum()))
        out[d] = -float((p * np.log2(p)).sum()) - (p0 * np.log2(p0) if p0 > 0 else 0.0)
    return out


def entropy_bits(prev: np.ndarray, table: np.ndarray) -> float:
    """Information in the values following ``prev`` (hundredths), steps from a clamped value
    counted as free (a lower bound)."""
    inside = (prev > 0) & (prev < TOP)
    d = np.minimum(np.minimum(prev, TOP - prev), len(table) - 1)[inside]
    return float(table[d].sum())


def build(data_dir: str, days: int, n_hosts: int) -> tuple[dict[int, int], dict[int, float]]:
    """One hot segment per day; returns (partition -> hot bytes, partition -> entropy bound in bytes)."""
    m, _ = Manifest.load(data_dir)
    tags = host_tags(n_hosts)
    rng = np.random.default_rng(7)
    state = rng.uniform(0, 100, size=(n_hosts, len(FIELDS)))
    steps = DAY_NS // STEP
    hot, bound = {}, {}
    table = step_entropy_table()
    last = None
    for day in range(days):
        walk = np.clip(state[None] + np.cumsum(rng.normal(0, 1.5, size=(steps, n_hosts, len(FIELDS))), axis=0), 0, 100)
        state = walk[-1]
        vals = np.round(walk, 2)
        ints = np.rint(vals * 100).astype(np.int64)
        prev = ints[:-1] if last is None else np.concatenate([last[None], ints[:-1]])
        bound[(START + day * DAY_NS) // DAY_NS] = entropy_bits(prev, table) / 8
        last = ints[-1]
        t0 = START + day * DAY_NS
        ts = t0 + np.arange(steps, dtype=np.int64) * STEP
        part = t0 // DAY_NS
        series = [SeriesData(h + 1, f"cpu,{tags[h]}", ts,
                             {f: Column(FieldType.FLOAT, np.ascontiguousarray(vals[:, h, i])) for i, f in enumerate(FIELDS)})
                  for h in range(n_hosts)]
        name, path = m.new_segment_path(part)
        # the layout flushes produce (storage defaults: 4,096-row blocks that never cross an hour)
        info = write_segment(path, series, compression="default", tier="hot", block_rows=4096,
                             block_time_ns=3600 * 10**9)
        ls = LifecycleState.from_extra(m.state.extra).with_flush([name])
        m.commit(add=[SegmentMeta(file=name, partition=part, min_time=info.min_time, max_time=info.max_time,
                                  size=info.size, series_count=info.series_count, point_count=info.point_count)],
                 extra=ls.to_extra(m.state.extra))
        hot[part] = info.size
    return hot, bound


def tier_old(data_dir: str, days: int, cold_after_days: int) -> dict:
    m, _ = Manifest.load(data_dir)
    now = START + days * DAY_NS
    ls = LifecycleState.from_extra(m.state.extra)
    tasks = plan(m.state.segments, now_ns=now, partition_ns=DAY_NS, cold_after_ns=cold_after_days * DAY_NS,
                 seq_of=ls.seq_of)
    cold, values, secs = {}, 0, 0.0
    for t in tasks:
        assert t.reason == "tier"
        out = compact_and_commit(m, t)
        for f in t.inputs:
            os.unlink(m.path_of(f))
        cold[t.partition] = sum(a.size for a in out.added)
        values += out.result.values_out
        secs += out.result.seconds
    return {"cold": cold, "values": values, "seconds": secs}


async def query(data_dir: str, days: int, n_hosts: int, repeat: int) -> dict:
    async with rusts.db.open(data_dir, wal_durability="none") as db:
        q = {"measurement": "cpu", "time_range": {"start": START, "end": START + days * DAY_NS},
             "group_by": ["hostname"], "aggregation": {"function": "Mean", "field": "usage_user",
                                                       "interval_nanos": 3600 * 10**9}}
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            rs = await db.query(q)
            times.append(time.perf_counter() - t0)
        assert len(rs) == days * 24 * n_hosts, len(rs)
        tiers = db.statistics()["segments"]["bytes_per_tier"]
    return {"query_rows": len(rs), "query_secs_best": round(min(times), 3),
            "query_secs_median": round(sorted(times)[len(times) // 2], 3),
            "query_secs_all": [round(t, 3) for t in times], "bytes_per_tier": tiers}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--cold-after-days", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None, help="data directory (default: a temporary one)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = args.dir or os.path.join(tmp, "data")
        t0 = time.perf_counter()
        hot, bound = build(d, args.days, args.hosts)
        built = time.perf_counter() - t0
        tiered = tier_old(d, args.days, args.cold_after_days)
        q = trio.run(query, d, args.days, args.hosts, args.repeat)
        parts = sorted(tiered["cold"])
        hot_of_cold = sum(hot[p] for p in parts)
        cold_total = sum(tiered["cold"].values())
        out = {
            "days": args.days, "hosts": args.hosts, "values": args.days * 8640 * args.hosts * len(FIELDS),
            "build_secs": round(built, 1), "cold_partitions": len(parts),
            "hot_bytes_of_those_partitions": hot_of_cold, "cold_bytes": cold_total,
            "cold_over_hot_ratio": round(cold_total / hot_of_cold, 4) if hot_of_cold else None,
            "cold_entropy_bound_bytes": round(sum(bound[p] for p in parts)),
            "cold_over_hot_entropy_bound": round(sum(bound[p] for p in parts) / hot_of_cold, 4) if hot_of_cold else None,
            "tiering_values_per_sec": round(tiered["values"] / tiered["seconds"]) if tiered["seconds"] else None,
            **q,
        }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
