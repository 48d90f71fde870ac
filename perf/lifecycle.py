"""30 simulated days of the TSBS cpu shape: cold vs hot size, and a 30-day query.

``python perf/lifecycle.py [--days 30] [--hosts 100] [--cold-after-days 7]`` writes one hot
segment per daily partition (what the flusher produces for TSBS cpu data: 10 float fields,
2 decimals, 10 s interval, a random walk carried over day boundaries) through the real Manifest.
It then compacts every partition older than ``--cold-after-days`` to the cold tier with
:func:`rusts.compaction.compact_and_commit`, opens the real Database on the directory and times
"mean usage_user per hour per host over the whole period" (JSON query). It prints JSON: per-tier
bytes, the cold/hot ratio of the re-encoded partitions, compaction throughput and query latency.
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
from rusts.compaction import compact_and_commit, plan  # noqa: E402
from rusts.manifest import Manifest, SegmentMeta  # noqa: E402
from rusts.model import Column, FieldType  # noqa: E402
from rusts.segment import SeriesData, write_segment  # noqa: E402
from rusts.tombstones import LifecycleState  # noqa: E402

DAY_NS = 86_400 * 10**9


def build(data_dir: str, days: int, n_hosts: int) -> dict[int, int]:
    """One hot segment per day; returns partition -> hot bytes."""
    m, _ = Manifest.load(data_dir)
    tags = host_tags(n_hosts)
    rng = np.random.default_rng(7)
    state = rng.uniform(0, 100, size=(n_hosts, len(FIELDS)))
    steps = DAY_NS // STEP
    hot = {}
    for day in range(days):
        walk = np.clip(state[None] + np.cumsum(rng.normal(0, 1.5, size=(steps, n_hosts, len(FIELDS))), axis=0), 0, 100)
        state = walk[-1]
        vals = np.round(walk, 2)
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
    return hot


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
        hot = build(d, args.days, args.hosts)
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
            "tiering_values_per_sec": round(tiered["values"] / tiered["seconds"]) if tiered["seconds"] else None,
            **q,
        }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
