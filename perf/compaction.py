"""Compaction throughput and cold/hot size ratio on TSBS cpu-shaped data.

``python perf/compaction.py [--hosts 100] [--hours 24] [--segments 10]`` writes ``--segments``
small hot segments (consecutive time slices of the TSBS cpu shape: 10 float fields, 2 decimals,
10 s interval), then times (1) a hot->hot merge of all of them into one segment and (2) a
hot->cold re-encode, both with :func:`rusts.lifecycle.compaction.run_compaction` on one thread. Prints JSON:
values re-encoded per second for each and the cold/hot size ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tsbs import FIELDS, START, STEP, host_tags, values  # noqa: E402

from rusts.lifecycle.compaction import run_compaction  # noqa: E402
from rusts.model import Column, FieldType  # noqa: E402
from rusts.storage.segment import SegmentReader, SeriesData, write_segment  # noqa: E402


def build_segments(d: str, n_hosts: int, hours: float, n_segments: int) -> list[str]:
    steps = int(hours * 3600 * 1e9 // STEP)
    vals = values(n_hosts, steps)  # (steps, hosts, fields)
    tags = host_tags(n_hosts)
    ts_all = START + np.arange(steps, dtype=np.int64) * STEP
    bounds = np.linspace(0, steps, n_segments + 1).astype(int)
    paths = []
    for k in range(n_segments):
        a, b = bounds[k], bounds[k + 1]
        series = []
        for h in range(n_hosts):
            cols = {f: Column(FieldType.FLOAT, np.ascontiguousarray(vals[a:b, h, i])) for i, f in enumerate(FIELDS)}
            series.append(SeriesData(h + 1, f"cpu,{tags[h]}", ts_all[a:b], cols))
        p = os.path.join(d, f"in-{k:03d}.seg")
        write_segment(p, series, compression="default", tier="hot", block_rows=4096)
        paths.append(p)
    return paths


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--hours", type=float, default=24)
    ap.add_argument("--segments", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        paths = build_segments(d, args.hosts, args.hours, args.segments)
        readers = [SegmentReader.open(p) for p in paths]
        values_in = sum(r.value_count for r in readers)
        hot_in = sum(os.path.getsize(p) for p in paths)
        out = {"hosts": args.hosts, "hours": args.hours, "input_segments": args.segments,
               "values": values_in, "input_bytes": hot_in}
        counter = iter(range(10**6))

        def paths_fn() -> tuple[str, str]:
            name = f"out-{next(counter)}.seg"
            return name, os.path.join(d, name)

        for tier in ("hot", "cold"):
            best = None
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                res = run_compaction(readers, paths_fn, tier=tier, compression="default", block_rows=4096)
                dt = time.perf_counter() - t0
                best = dt if best is None else min(best, dt)
                size = res.outputs[0][1].size
                for _, info in res.outputs:
                    os.unlink(info.path)
            out[f"{tier}_seconds"] = round(best, 3)
            out[f"{tier}_values_per_sec"] = round(values_in / best)
            out[f"{tier}_bytes"] = size
            out[f"{tier}_bytes_per_value"] = round(size / values_in, 4)
        out["cold_over_hot_ratio"] = round(out["cold_bytes"] / out["hot_bytes"], 4)
        for r in readers:
            r.close()
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
