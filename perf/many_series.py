"""Many-series write micro-benchmark: the endpoint-monitoring simulator's write, in process.

    .venv/bin/python perf/many_series.py [--devices 1000] [--batch-devices 50] [--reports 20]

One request of ``--batch-devices`` devices (389 lines for 50 devices, seed 1: one row per
series) is written to an embedded database (``rusts.open``, ``wal_durability=periodic`` like
rusts.yml) with ``Database.write`` -- everything the HTTP route does after reading the body.
A fleet of ``--devices`` reports ``--reports`` times (every series exists after the first
report, as on a running fleet); the first report is not timed. Then the memtable (one point per
series per report) is flushed and the flush is timed, together with the longest stretch during
the flush in which the event loop could not run (a trio task that sleeps 1 ms and records how
late it wakes: the write stall a flush causes).

Also prints the phases of one write, measured alone: parse, schema check, index lookup, WAL
record encoding and memtable insert.

Prints one JSON object. Timings are medians over the repeated writes; repeat the run on a
shared machine and report ``uptime`` load with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np
import trio

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else 0.0


async def _run(args) -> dict:
    import rusts
    from rusts.protocols.line_protocol import parse
    from rusts.simulator.fleet import Fleet
    from rusts.storage.walrecord import encode_batch

    fleet = Fleet(args.devices, seed=1)
    n, b = args.devices, min(args.batch_devices, args.devices)
    interval_ns = 15 * 10**9
    t0 = 1_700_000_000 * 10**9
    bodies: list[list[bytes]] = []
    for rep in range(args.reports):
        per = []
        for first in range(0, n, b):
            last = min(first + b, n)
            ts = t0 + rep * interval_ns + np.arange(first, last, dtype=np.int64) * (interval_ns // n)
            body, _ = fleet.report(first, last, ts)
            per.append(body)
        bodies.append(per)
    lines_per_request = bodies[0][0].count(b"\n") + (0 if bodies[0][0].endswith(b"\n") else 1)

    out: dict = {"devices": n, "batch_devices": b, "series": fleet.series_count,
                 "lines_per_request": lines_per_request, "bytes_per_request": len(bodies[0][0]),
                 "reports": args.reports}
    with tempfile.TemporaryDirectory() as d:
        async with rusts.open(d, wal_durability="periodic", memtable_max_age_secs=3600,
                              memtable_max_points=10**9, memtable_max_size_mb=4096) as db:
            for body in bodies[0]:
                await db.write(body)
            write_ms: list[float] = []
            for per in bodies[1:]:
                for body in per:
                    t = time.perf_counter()
                    await db.write(body)
                    write_ms.append((time.perf_counter() - t) * 1000)

            # phases of one request, alone (the last report again: overwrites, same cost)
            body = bodies[-1][0]
            phases: dict[str, list[float]] = {k: [] for k in
                                              ("parse", "schema", "index", "wal_encode", "memtable")}
            for _ in range(args.phase_repeats):
                t = time.perf_counter()
                batch = parse(body)
                t1 = time.perf_counter()
                batch = db.schema.check(batch)
                t2 = time.perf_counter()
                sids = db.index.lookup_or_create(_keys(batch))
                t3 = time.perf_counter()
                encode_batch(batch)
                t4 = time.perf_counter()
                # a throw-away table: the real one must not see the same seq twice
                from rusts.memory.tables import Table
                Table(0).insert_frames(batch.frames, sids, 1)
                t5 = time.perf_counter()
                for k, a, z in (("parse", t, t1), ("schema", t1, t2), ("index", t2, t3),
                                ("wal_encode", t3, t4), ("memtable", t4, t5)):
                    phases[k].append((z - a) * 1000)

            # flush: duration and the longest event-loop stall while it runs
            stalls: list[float] = []
            done = trio.Event()

            async def probe():
                while not done.is_set():
                    t = time.perf_counter()
                    await trio.sleep(0.001)
                    stalls.append((time.perf_counter() - t) * 1000 - 1.0)

            points = db.state.active.points
            async with trio.open_nursery() as nursery:
                nursery.start_soon(probe)
                await trio.sleep(0.01)
                t = time.perf_counter()
                await db.flush()
                flush_ms = (time.perf_counter() - t) * 1000
                done.set()

    out["write_ms"] = {"count": len(write_ms), "p50": round(statistics.median(write_ms), 3),
                       "p95": round(_pct(write_ms, 95), 3), "p99": round(_pct(write_ms, 99), 3),
                       "max": round(max(write_ms), 3)}
    out["phases_ms_median"] = {k: round(statistics.median(v), 3) for k, v in phases.items()}
    out["flush"] = {"points": points, "ms": round(flush_ms, 1),
                    "loop_stall_max_ms": round(max(stalls), 1) if stalls else None,
                    "loop_stall_p99_ms": round(_pct(stalls, 99), 1) if stalls else None}
    out["load_avg"] = os.getloadavg()
    return out


def _keys(batch):
    if hasattr(batch, "frames"):
        return [k for f in batch.frames for k in f.keys]
    return [s.key for s in batch.series]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--batch-devices", type=int, default=50)
    ap.add_argument("--reports", type=int, default=20)
    ap.add_argument("--phase-repeats", type=int, default=30)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    print(json.dumps(trio.run(_run, args)))


if __name__ == "__main__":
    main()
