"""TSBS cpu-only query types FRESH, SETTLED and RESTARTED, from an outside client, with DuckDB
in-process and InfluxDB 1.6 on the same rows in the same run.

    .venv/bin/python perf/fresh.py [--hosts 100] [--hours 4] [--n 15] [--warmup 3] [--influxdb auto]

A rusts server is started (default configuration but its port and data directory) and loaded
over HTTP (/write, 5,000-line bodies). Then each query type is timed three times:

* FRESH: at once after the last write (rows in the memtable and recent tables);
* SETTLED: after POST /flush and the compactor going quiet (rows in segments);
* RESTARTED: after stopping and starting the server (nothing cached in memory).

The client is a plain keep-alive ``http.client`` connection sending one statement after another
(POST /sql), in the statement forms TSBS uses (``hostname IN ('host_16')``, ISO time literals,
``time_bucket('1 minute', time) AS minute ... GROUP BY minute ORDER BY minute``), with new random
hosts and windows for every instance (no plan or block is reused by accident). DuckDB runs the
same instances over a table of the same rows (in this process, no HTTP). When ``influxd`` is on
the PATH (Debian's ``influxdb`` package, 1.6), InfluxDB is started on a free loopback port with a
temporary directory, loaded with the same bodies and asked the same instances in InfluxQL (the
TSBS forms: ``hostname = 'a' OR ...``, ``GROUP BY time(1m)``, ``last(*) ... GROUP BY hostname``).
Each type and phase first sends ``--warmup`` untimed instances: a new statement shape's plan is
learned once per server, whatever state the data is in. Prints JSON: median and p95 ms per type
and phase, the peers' medians, FRESH/SETTLED ratios (mean and max) and our FRESH and SETTLED
medians over each peer's. Keep runs short on a shared machine (the figures move by 30 % from run
to run on this VM, more when other jobs run).
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
import urllib.parse

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
    """(name, builder(rng) -> (rusts SQL, DuckDB SQL, InfluxQL)): one instance in three dialects."""
    total = int(hours * H)

    def window(rng, span):
        span = min(span, total)
        lo = tsbs.START + rng.randrange(0, max(1, (total - span) // M)) * M
        return lo, lo + span

    def pick(rng, k):
        return [f"host_{h}" for h in rng.sample(range(n_hosts), k)]

    def sql_in(hs):
        return ", ".join(f"'{h}'" for h in hs)

    def influx_or(hs):
        return "(" + " OR ".join(f"hostname = '{h}'" for h in hs) + ")"

    def both(sql_body: str, a: int, b: int, tb: str = "") -> tuple[str, str]:
        ours = sql_body.format(a=f"'{iso(a)}'", b=f"'{iso(b)}'", tb=f"time_bucket('{tb}', time)" if tb else "")
        duck = sql_body.format(a=f"TIMESTAMP '{iso(a)}'", b=f"TIMESTAMP '{iso(b)}'",
                               tb=f"time_bucket(INTERVAL '{tb}', time, TIMESTAMP '1970-01-01')" if tb else "")
        return ours, duck

    def single_groupby(metrics: int, n_h: int, span_h: int):
        def build(rng):
            a, b = window(rng, span_h * H)
            hs = pick(rng, n_h)
            sel = ", ".join(f"MAX({f})" for f in F[:metrics])
            iq = (f"SELECT {sel.lower()} FROM cpu WHERE {influx_or(hs)} AND time >= {a} AND time < {b} "
                  f"GROUP BY time(1m)")
            return (*both(f"SELECT {{tb}} AS minute, {sel} FROM cpu WHERE hostname IN ({sql_in(hs)}) "
                          f"AND time >= {{a}} AND time < {{b}} GROUP BY minute ORDER BY minute", a, b, "1 minute"), iq)
        return build

    def cpu_max_all(n_h: int):
        def build(rng):
            a, b = window(rng, min(8, int(hours)) * H)
            hs = pick(rng, n_h)
            sel = ", ".join(f"MAX({f})" for f in F)
            iq = (f"SELECT {sel.lower()} FROM cpu WHERE {influx_or(hs)} AND time >= {a} AND time < {b} "
                  f"GROUP BY time(1h)")
            return (*both(f"SELECT {{tb}} AS hour, {sel} FROM cpu WHERE hostname IN ({sql_in(hs)}) "
                          f"AND time >= {{a}} AND time < {{b}} GROUP BY hour ORDER BY hour", a, b, "1 hour"), iq)
        return build

    def double_groupby(metrics: int):
        def build(rng):
            a, b = window(rng, min(12, int(hours)) * H)
            sel = ", ".join(f"AVG({f})" for f in F[:metrics])
            iq = (", ".join(f"mean({f})" for f in F[:metrics]))
            iq = f"SELECT {iq} FROM cpu WHERE time >= {a} AND time < {b} GROUP BY time(1h), hostname"
            return (*both(f"SELECT {{tb}} AS hour, hostname, {sel} FROM cpu WHERE time >= {{a}} AND time < {{b}} "
                          f"GROUP BY hour, hostname ORDER BY hour, hostname", a, b, "1 hour"), iq)
        return build

    def high_cpu(n_h: int | None):
        def build(rng):
            a, b = window(rng, min(12, int(hours)) * H)
            hs = pick(rng, n_h) if n_h else []
            host = f" AND hostname IN ({sql_in(hs)})" if n_h else ""
            iq = f"SELECT * FROM cpu WHERE usage_user > 90.0 AND time >= {a} AND time < {b}" + \
                (f" AND {influx_or(hs)}" if n_h else "")
            return (*both(f"SELECT * FROM cpu WHERE usage_user > 90.0 AND time >= {{a}} AND time < {{b}}{host}", a, b),
                    iq)
        return build

    def lastpoint(rng):
        s = "SELECT DISTINCT ON (hostname) * FROM cpu ORDER BY hostname, time DESC"
        return s, s, "SELECT last(*) FROM cpu GROUP BY hostname"

    def groupby_orderby_limit(rng):
        a, b = window(rng, total // 2)
        return (*both("SELECT {tb} AS minute, MAX(usage_user) FROM cpu WHERE time < {b} "
                      "GROUP BY minute ORDER BY minute DESC LIMIT 5", a, b, "1 minute"),
                f"SELECT max(usage_user) FROM cpu WHERE time < {b} GROUP BY time(1m) ORDER BY time DESC LIMIT 5")

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


def get_influxql(conn: http.client.HTTPConnection, q: str) -> float:
    t = time.perf_counter()
    conn.request("GET", "/query?db=bench&epoch=ns&q=" + urllib.parse.quote(q))
    r = conn.getresponse()
    data = r.read()
    dt = (time.perf_counter() - t) * 1000
    if r.status != 200 or b'"error"' in data[:200]:
        raise RuntimeError(f"InfluxDB HTTP {r.status}: {data[:300]!r} for {q}")
    return dt


def phase(port: int, qtypes, n: int, seed: int, warmup: int = 0, dialect: int = 0) -> dict:
    """Median and p95 per query type of ``n`` new instances, after ``warmup`` untimed ones (the
    plan of a new statement shape is learned once per server, whatever the data's state)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    send = get_influxql if dialect == 2 else post_sql
    out = {}
    for name, build in qtypes:
        rng = random.Random(seed * 1000 + sum(map(ord, name)))
        for _ in range(warmup):
            send(conn, build(rng)[dialect])
        xs = sorted(send(conn, build(rng)[dialect]) for _ in range(n))
        out[name] = {"median_ms": round(statistics.median(xs), 2), "p95_ms": round(xs[int(len(xs) * 0.95) - 1], 2)}
        print(seed, name, out[name], file=sys.stderr, flush=True)
    conn.close()
    return out


def influx_phase(a, bodies, qtypes) -> dict:
    """InfluxDB 1.6 on the same rows: started on a free loopback port with a temporary directory,
    loaded over /write with the same bodies, given 5 s (its cache snapshot and compaction run in
    the background, as a peer would), then the same instances in InfluxQL."""
    work = tempfile.mkdtemp(prefix="fresh-influx-")
    t = ingest.Influx(work, a)
    try:
        t.start()
        ingest.load(t.port, t.write_path, bodies, 1, t.proc.pid)
        time.sleep(5)
        return phase(t.port, qtypes, a.n, 4, a.warmup, dialect=2)
    finally:
        t.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--hours", type=float, default=4)
    ap.add_argument("--n", type=int, default=15)
    ap.add_argument("--wal-mode", default="periodic")
    ap.add_argument("--warmup", type=int, default=3, help="untimed instances per type and phase")
    ap.add_argument("--influxdb", choices=["auto", "yes", "no"], default="auto",
                    help="time InfluxDB 1.6 (influxd on PATH) on the same rows in the same run")
    a = ap.parse_args()
    lines = tsbs.generate(a.hosts, a.hours)
    bodies = tsbs.batches(lines, 5000)
    qtypes = query_types(a.hosts, a.hours)
    out: dict = {"hosts": a.hosts, "hours": a.hours, "n": a.n, "values": len(lines) * len(F)}
    con = duck_table(a.hosts, a.hours)
    duck = {}
    for name, build in qtypes:
        rng = random.Random(4000 + sum(map(ord, name)))
        xs = []
        for _ in range(a.n):
            sql = build(rng)[1]
            t0 = time.perf_counter()
            con.execute(sql).to_arrow_table()
            xs.append((time.perf_counter() - t0) * 1000)
        duck[name] = round(statistics.median(xs), 2)
    out["DUCKDB_inprocess_median_ms"] = duck
    del con
    if a.influxdb == "yes" or (a.influxdb == "auto" and shutil.which("influxd")):
        out["INFLUXDB"] = influx_phase(a, bodies, qtypes)
    work = tempfile.mkdtemp(prefix="fresh-")
    t = ingest.Rusts(work, a)
    try:
        t.start()
        out["load"] = ingest.load(t.port, t.write_path, bodies, 1, t.proc.pid)
        out["FRESH"] = phase(t.port, qtypes, a.n, 1, a.warmup)
        c = http.client.HTTPConnection("127.0.0.1", t.port, timeout=300)
        c.request("POST", "/flush")
        c.getresponse().read()
        ingest.settle_compaction(t.port)
        out["SETTLED"] = phase(t.port, qtypes, a.n, 2, a.warmup)
        t.stop()
        t.start()
        out["RESTARTED"] = phase(t.port, qtypes, a.n, 3, a.warmup)
    finally:
        t.stop()
        shutil.rmtree(work, ignore_errors=True)
    ratios = {k: round(out["FRESH"][k]["median_ms"] / out["SETTLED"][k]["median_ms"], 2) for k in out["FRESH"]}
    out["fresh_over_settled"] = ratios
    out["fresh_over_settled_mean"] = round(sum(ratios.values()) / len(ratios), 2)
    out["fresh_over_settled_max"] = max(ratios.values())
    for peer, med in (("duckdb", duck), ("influxdb", {k: v["median_ms"] for k, v in out.get("INFLUXDB", {}).items()})):
        if med:
            for ph in ("FRESH", "SETTLED"):
                out[f"{ph.lower()}_over_{peer}"] = {k: round(out[ph][k]["median_ms"] / med[k], 2) for k in med}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
