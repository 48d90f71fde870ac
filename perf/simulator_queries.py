"""The simulator's query templates timed in process (no HTTP): the engine's share of their latency.

    .venv/bin/python perf/simulator_queries.py [--devices 1000] [--n 50]

Opens a database in a temporary directory, writes four reports of the simulator's fleet (15 s
apart, ending now: the rows are fresh, in the memtable), then runs every template of
:mod:`rusts.simulator.queries` N times (sites and devices filled in turn) and prints JSON: the
median ms per template. Run it with another build's Python to compare builds (``Database.sql``, or
``rusts.sql.runner.execute_sql`` where a build has no query workers).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

import numpy as np
import trio


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--n", type=int, default=50)
    a = ap.parse_args()
    import rusts.db
    from rusts.config import load_config
    from rusts.simulator.fleet import Fleet
    from rusts.simulator.queries import TEMPLATES

    work = tempfile.mkdtemp(prefix="simq-")
    with open(work + "/rusts.yml", "w") as fh:  # the defaults of the build that runs this
        fh.write("{}\n")
    cfg = load_config(work + "/rusts.yml", overrides={"data_dir": work + "/data"})

    async def run() -> dict:
        db = rusts.db.Database(cfg)
        async with rusts.db.running(db):
            fleet = Fleet(a.devices)
            now = time.time_ns()
            for r in range(4):
                body, _ = fleet.report(0, a.devices, np.full(a.devices, now - (3 - r) * 15 * 10**9, np.int64))
                await db.write(body)
            if hasattr(db, "sql"):
                ask = db.sql
            else:
                from rusts.sql.runner import execute_sql

                def ask(s):
                    return execute_sql(db, s)
            site = fleet.sites()[0]
            out = {}
            for klass, templates in TEMPLATES.items():
                for i, t in enumerate(templates):
                    xs = []
                    for k in range(a.n + 10):
                        s = t.replace("{site}", site).replace("{device}", "dev-%05d" % (k % 50))
                        t0 = time.perf_counter()
                        await ask(s)
                        if k >= 10:
                            xs.append((time.perf_counter() - t0) * 1e3)
                    out[f"{klass}_{i}"] = round(statistics.median(xs), 3)
            return out

    print(json.dumps({"python": sys.executable, "devices": a.devices, "n": a.n, "median_ms": trio.run(run)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
