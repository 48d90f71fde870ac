"""The simulator's query templates timed in process (no HTTP): the engine's share of their latency.

    .venv/bin/python perf/simulator_queries.py [--devices 1000] [--n 50]

Opens a database in a temporary directory, writes four reports of the simulator's fleet (15 s
apart, ending now: the rows are fresh, in the memtable), then runs every template of
:mod:`rusts.simulator.queries` N times (sites and devices filled in turn) and prints JSON: the
median ms per template. Run it with another build's Python to compare builds (``Database.sql``, or
``rusts.sql.runner.execute_sql`` where a build has no query workers).

``--over-http``: the same over HTTP instead, against a ``rusts-server`` of the build that runs
this (beside its Python) on a free port, from one keep-alive ``http.client`` connection, so that
the difference to the in-process figure is what the HTTP layer adds per statement.
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


WARMUP = 10  # statements of each template run first and not counted


def plan(site: str, n: int):
    """``(template name, statements)`` for each simulator template: ``WARMUP + n`` statements,
    sites and devices filled in turn."""
    from rusts.simulator.queries import TEMPLATES

    for klass, templates in TEMPLATES.items():
        for i, t in enumerate(templates):
            yield f"{klass}_{i}", [t.replace("{site}", site).replace("{device}", "dev-%05d" % (k % 50))
                                   for k in range(WARMUP + n)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--over-http", action="store_true", help="time the statements over HTTP")
    a = ap.parse_args()
    if a.over_http:
        return over_http(a)
    import rusts.db
    from rusts.config import load_config
    from rusts.simulator.fleet import Fleet

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
            out = {}
            for name, statements in plan(fleet.sites()[0], a.n):
                xs = []
                for s in statements:
                    t0 = time.perf_counter()
                    await ask(s)
                    xs.append((time.perf_counter() - t0) * 1e3)
                out[name] = round(statistics.median(xs[WARMUP:]), 3)
            return out

    print(json.dumps({"python": sys.executable, "devices": a.devices, "n": a.n, "median_ms": trio.run(run)}, indent=1))
    return 0


def over_http(a) -> int:
    import http.client
    import pathlib
    import shutil
    import types

    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    import ingest  # the rusts-server beside this Python, on a free port, default storage settings

    from rusts.simulator.fleet import Fleet

    work = tempfile.mkdtemp(prefix="simq-http-")
    server = ingest.Rusts(work, types.SimpleNamespace(wal_mode="periodic"))
    try:
        server.start()  # returns once /ready answers
        c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        fleet = Fleet(a.devices)
        now = time.time_ns()
        for r in range(4):
            body, _ = fleet.report(0, a.devices, np.full(a.devices, now - (3 - r) * 15 * 10**9, np.int64))
            c.request("POST", "/write", body=body)
            c.getresponse().read()
        out = {}
        for name, statements in plan(fleet.sites()[0], a.n):
            xs = []
            for s in statements:
                t0 = time.perf_counter()
                c.request("POST", "/sql", body=s.encode())
                r = c.getresponse()
                r.read()
                if r.status != 200:
                    raise SystemExit(f"HTTP {r.status} for {s}")
                xs.append((time.perf_counter() - t0) * 1e3)
            out[name] = round(statistics.median(xs[WARMUP:]), 3)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"python": sys.executable, "devices": a.devices, "n": a.n, "over_http": True,
                      "median_ms": out}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
