"""TSBS cpu-only query types FRESH, SETTLED and RESTARTED, from an outside client, with DuckDB
in-process on the same rows in the same run.

    .venv/bin/python perf/fresh.py [--hosts 100] [--hours 4] [--n 15]

A rusts server is started (default configuration but its port and data directory) and loaded
over HTTP (/write, 5,000-line bodies). Then each query type is timed three times:

* FRESH: at once after the last write (rows in the memtable and recent tables);
* SETTLED: after POST /flush and the compactor going quiet (rows in segments);
* RESTARTED: after stopping and starting the server (nothing cached in memory).

The client is a plain keep-alive ``http.client`` connection sending one statement after another
(POST /sql), in the statement forms TSBS uses (``hostname IN ('host_16')``, ISO time literals,
``time_bucket('1 minute', time) AS minute ... GROUP BY minute ORDER BY minute``), with new random
hosts and windows for every instance (no plan or block is reused by accident). DuckDB runs the
same instances over a table of the same rows (in this process, no HTTP). Prints JSON: median and
p95 ms per type and phase, DuckDB's median, and FRESH/SETTLED ratios. Keep runs short on a
shared machine (the figures move by 30 % from run to run on this VM).
"""

from __future__ import annotations

import argparse
import http.client
import json
import pathlib
import random
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import ingest  # noqa: E402
import tsbs  # noqa: E402

H = 3600 * 10**9
M = 60 * 10**9
F = tsbs.FIELDS


def iso(ns: int) -> str:
    return str(np.datetime64(ns, "ns")).replace("T", " ")[:19]


def query_types(n_hosts: int, hours: float):
    """(name, builder(rng) -> (rusts SQL, DuckDB SQL))."""
    total = int(hours * H)

    def window(rng, span):
        lo = tsbs.START + rng.randrange(0, max(1, total - span) // M) * M
        return lo, lo + span

    def hosts(rng, k):
        return ", ".join(f"'host_{h}'" for h in rng.sample(range(n_hosts), k))

    def both(sql_body: str, a: int, b: int, tb: str = "") -> tuple[str, str]:
        ours = sql_body.format(a=f"'{iso(a)}'", b=f"'{iso(b)}'", tb=f"time_bucket('{tb}', time)" if tb else "")
        duck = sql_body.format(a=f"TIMESTAMP '{iso(a)}'", b=f"TIMESTAMP '{iso(b)}'",
                               tb=f"time_bucket(INTERVAL '{tb}', time, TIMESTAMP '1970-01-01')" if tb else "")
        return ours, duck

    def single_groupby(metrics: int, n_h: int, span_h: int):
        def build(rng):
            a, b = window(rng, span_h * H)
            sel = ", ".join(f"MAX({f})" for f in F[:metrics])
            return both(f"SELECT {{tb}} AS minute, {sel} FROM cpu WHERE hostname IN ({hosts(rng, n_h)}) "
                        f"AND time >= {{a}} AND time < {{b}} GROUP BY minute ORDER BY minute", a, b, "1 minute")
        return build

    def cpu_max_all(n_h: int):
        def build(rng):
            a, b = window(rng, min(8, int(hours)) * H)
            sel = ", ".join(f"MAX({f})" for f in F)
            return both(f"SELECT {{tb}} AS hour, {sel} FROM cpu WHERE hostname IN ({hosts(rng, n_h)}) "
                        f"AND time >= {{a}} AND time < {{b}} GROUP BY hour ORDER BY hour", a, b, "1 hour")
        return build

    def double_groupby(metrics: int):
        def build(rng):
            a, b = window(rng, min(12, int(hours)) * H)
            sel = ", ".join(f"AVG({f})" for f in F[:metrics])
            return both(f"SELECT {{tb}} AS hour, hostname, {sel} FROM cpu WHERE time >= {{a}} AND time < {{b}} "
                        f"GROUP BY hour, hostname ORDER BY hour, hostname", a, b, "1 hour")
        return build

    def high_cpu(n_h: int | None):
        def build(rng):
            a, b = window(rng, min(12, int(hours)) * H)
            host = f" AND hostname IN ({hosts(rng, n_h)})" if n_h else ""
            return both(f"SELECT * FROM cpu WHERE usage_user > 90.0 AND time >= {{a}} AND time < {{b}}{host}", a, b)
        return build

    def lastpoint(rng):
        s = "SELECT DISTINCT ON (hostname) * FROM cpu ORDER BY hostname, time DESC"
        return s, s

    def groupby_orderby_limit(rng):
        a, b = window(rng, total // 2)
        return both("SELECT {tb} AS minute, MAX(usage_user) FROM cpu WHERE time < {b} "
                    "GROUP BY minute ORDER BY minute DESC LIMIT 5", a, b, "1 minute")

    return [("single-groupby-1-1-1", single_groupby(1, 1, 1)), ("single-groupby-1-1-12", single_groupby(1, 1, 12)),
            ("single-groupby-5-1-1", single_groupby(5, 1, 1)), ("cpu-max-all-1", cpu_max_all(1)),
            ("double-groupby-1", double_groupby(1)), ("double-groupby-all", double_groupby(10)),
            ("high-cpu-1", high_cpu(1)), ("high-cpu-all", high_cpu(None)), ("lastpoint", lastpoint),
            ("groupby-orderby-limit", groupby_orderby_limit)]


def duck_table(n_hosts: int, hours: float):
    import duckdb
    import pyarrow as pa

    n_steps = int(hours * 3600 * 1e9 // tsbs.STEP)
    vals = tsbs.values(n_hosts, n_steps)  # (steps, hosts, fields), as perf/tsbs.py writes them
    ts = tsbs.START + np.repeat(np.arange(n_steps, dtype=np.int64), n_hosts) * tsbs.STEP
    host = np.tile(np.array([f"host_{h}" for h in range(n_hosts)], dtype=object), n_steps)
    cols = {"time": pa.array(ts.view("datetime64[ns]")), "hostname": pa.array(host, pa.string())}
    for k, f in enumerate(F):
        cols[f] = pa.array(vals[:, :, k].reshape(-1))
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    con.register("cpu_arrow", pa.table(cols))
    con.execute("CREATE TABLE cpu AS SELECT * FROM cpu_arrow")
    return con


def post_sql(conn: http.client.HTTPConnection, sql: str) -> float:
    t = time.perf_counter()
    conn.request("POST", "/sql", body=sql.encode(), headers={"Content-Type": "text/plain"})
    r = conn.getresponse()
    data = r.read()
    dt = (time.perf_counter() - t) * 1000
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {data[:300]!r} for {sql}")
    return dt


def phase(port: int, qtypes, n: int, seed: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    out = {}
    for name, build in qtypes:
        rng = random.Random(seed * 1000 + sum(map(ord, name)))
        xs = sorted(post_sql(conn, build(rng)[0]) for _ in range(n))
        out[name] = {"median_ms": round(statistics.median(xs), 2), "p95_ms": round(xs[int(len(xs) * 0.95) - 1], 2)}
        print(seed, name, out[name], file=sys.stderr, flush=True)
    conn.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--hours", type=float, default=4)
    ap.add_argument("--n", type=int, default=15)
    ap.add_argument("--wal-mode", default="periodic")
    a = ap.parse_args()
    lines = tsbs.generate(a.hosts, a.hours)
    bodies = tsbs.batches(lines, 5000)
    qtypes = query_types(a.hosts, a.hours)
    out: dict = {"hosts": a.hosts, "hours": a.hours, "n": a.n, "values": len(lines) * len(F)}
    work = tempfile.mkdtemp(prefix="fresh-")
    t = ingest.Rusts(work, a)
    try:
        t.start()
        out["load"] = ingest.load(t.port, t.write_path, bodies, 1, t.proc.pid)
        out["FRESH"] = phase(t.port, qtypes, a.n, 1)
        c = http.client.HTTPConnection("127.0.0.1", t.port, timeout=300)
        c.request("POST", "/flush")
        c.getresponse().read()
        ingest.settle_compaction(t.port)
        out["SETTLED"] = phase(t.port, qtypes, a.n, 2)
        t.stop()
        t.start()
        out["RESTARTED"] = phase(t.port, qtypes, a.n, 3)
    finally:
        t.stop()
        shutil.rmtree(work, ignore_errors=True)
    con = duck_table(a.hosts, a.hours)
    duck = {}
    for name, build in qtypes:
        rng = random.Random(4000 + sum(map(ord, name)))
        xs = []
        for _ in range(a.n):
            sql = build(rng)[1]
            t0 = time.perf_counter()
            con.execute(sql).fetch_arrow_table()
            xs.append((time.perf_counter() - t0) * 1000)
        duck[name] = round(statistics.median(xs), 2)
    out["DUCKDB_inprocess_median_ms"] = duck
    ratios = {k: round(out["FRESH"][k]["median_ms"] / out["SETTLED"][k]["median_ms"], 2) for k in out["FRESH"]}
    out["fresh_over_settled"] = ratios
    out["fresh_over_settled_mean"] = round(sum(ratios.values()) / len(ratios), 2)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
