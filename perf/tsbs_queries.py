"""TSBS cpu-only query latencies over HTTP, rusts (JSON and SQL) vs InfluxDB 1.6 (InfluxQL), same data.

    python perf/tsbs_queries.py --targets rusts,influxdb [--hours 24] [--n 50]

Loads the TSBS data into each freshly started server (perf/ingest.py's targets, one after the
other), waits for each to be flushed and settled, then for every server to stay idle (no CPU use
for 3 s: no background compaction while another one is measured). Then runs each query type N
times with seeded random hosts and windows (the same for SQL and InfluxQL; other ones for the
JSON API, whose reads would warm the blocks of the SQL queries). Targets take turns by blocks of
10 queries sent back to back (rotating which goes first), so the VM's speed drifting over the run
(it moves by 30% and more within minutes on this machine) weighs on every target alike, while
each target still sees a client sending one query after another. Prints JSON with the median and
p95 per query type and target, and rusts/InfluxDB ratios.
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

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import ingest  # noqa: E402
import tsbs  # noqa: E402

BLOCK = 10  # queries sent back to back to one target before the next target's turn
H = 3600 * 10**9
M = 60 * 10**9


def _rand_window(rng: random.Random, hours: float, span_ns: int) -> tuple[int, int]:
    total = int(hours * H)
    lo = tsbs.START + rng.randrange(0, max(1, total - span_ns) // M) * M
    return lo, lo + span_ns


def query_types(n_hosts: int, hours: float):
    """(name, json_builder, sql_builder, influxql_builder), each taking an rng."""
    F = tsbs.FIELDS

    def single_groupby_1_1_1(rng):
        h = f"host_{rng.randrange(n_hosts)}"
        a, b = _rand_window(rng, hours, H)
        j = {"measurement": "cpu", "time_range": {"start": a, "end": b},
             "tag_filters": [{"key": "hostname", "value": h, "op": "Eq"}],
             "aggregation": {"function": "Max", "field": "usage_user", "interval_nanos": M}}
        s = (f"SELECT time_bucket('1 minute', time) AS minute, MAX(usage_user) FROM cpu WHERE hostname = '{h}' "
             f"AND time >= {a} AND time < {b} GROUP BY minute ORDER BY minute")
        iq = (f"SELECT max(usage_user) FROM cpu WHERE hostname = '{h}' AND time >= {a} AND time < {b} "
              f"GROUP BY time(1m)")
        return j, s, iq

    def double_groupby_1(rng):
        a, b = _rand_window(rng, hours, 12 * H)
        j = {"measurement": "cpu", "time_range": {"start": a, "end": b}, "group_by": ["hostname"],
             "aggregation": {"function": "Mean", "field": "usage_user", "interval_nanos": H}}
        s = (f"SELECT time_bucket('1 hour', time) AS hour, hostname, AVG(usage_user) FROM cpu "
             f"WHERE time >= {a} AND time < {b} GROUP BY hour, hostname")
        iq = f"SELECT mean(usage_user) FROM cpu WHERE time >= {a} AND time < {b} GROUP BY time(1h), hostname"
        return j, s, iq

    def double_groupby_all(rng):
        a, b = _rand_window(rng, hours, 12 * H)
        j = {"measurement": "cpu", "time_range": {"start": a, "end": b}, "group_by": ["hostname"],
             "fields": F, "aggregation": {"function": "Mean", "interval_nanos": H}}
        s = ("SELECT time_bucket('1 hour', time) AS hour, hostname, "
             + ", ".join(f"AVG({f})" for f in F)
             + f" FROM cpu WHERE time >= {a} AND time < {b} GROUP BY hour, hostname")
        iq = ("SELECT " + ", ".join(f"mean({f})" for f in F)
              + f" FROM cpu WHERE time >= {a} AND time < {b} GROUP BY time(1h), hostname")
        return j, s, iq

    def lastpoint(rng):
        j = {"measurement": "cpu", "time_range": {"start": 0, "end": 2**63 - 1}, "group_by": ["hostname"],
             "fields": F, "aggregation": {"function": "Last"}}
        s = "SELECT DISTINCT ON (hostname) * FROM cpu ORDER BY hostname, time DESC"
        iq = "SELECT last(*) FROM cpu GROUP BY hostname"
        return j, s, iq

    def count_all(rng):
        j = {"measurement": "cpu", "time_range": {"start": 0, "end": 2**63 - 1},
             "aggregation": {"function": "Count", "field": "usage_user"}}
        s = "SELECT COUNT(*) FROM cpu"
        iq = "SELECT count(usage_user) FROM cpu"
        return j, s, iq

    return [("single-groupby-1-1-1", single_groupby_1_1_1), ("double-groupby-1", double_groupby_1),
            ("double-groupby-all", double_groupby_all), ("lastpoint", lastpoint), ("count-all", count_all)]


def timed(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None, headers: dict):
    t = time.perf_counter()
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    data = r.read()
    dt = (time.perf_counter() - t) * 1000
    if r.status != 200:
        raise RuntimeError(f"{path}: HTTP {r.status}: {data[:300]!r}")
    return dt, data


def _settle(t, name: str) -> None:
    if name == "rusts":
        c = http.client.HTTPConnection("127.0.0.1", t.port, timeout=300)
        # flush the memtable so queries read segments (the steady state of a 24 h dataset)
        c.request("POST", "/flush")
        c.getresponse().read()
        # then let the compactor settle (as the peers get time to compact)
        ingest.settle_compaction(t.port)
    else:
        time.sleep(5)


def _send(conn, mode: str, q: tuple) -> float:
    j, s, iq = q
    if mode == "json":
        dt, _ = timed(conn, "POST", "/query", json.dumps(j).encode(), {"Content-Type": "application/json"})
    elif mode == "sql":
        dt, _ = timed(conn, "POST", "/sql", s.encode(), {"Content-Type": "text/plain"})
    else:
        dt, _ = timed(conn, "GET", "/query?db=bench&epoch=ns&q=" + urllib.parse.quote(iq), None, {})
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--targets", default="rusts,influxdb")
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--hours", type=float, default=24)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--wal-mode", default="periodic")
    ap.add_argument("--no-sql", action="store_true")
    a = ap.parse_args()
    lines = tsbs.cached(a.hosts, a.hours)
    bodies = tsbs.batches(lines, 5000)
    qtypes = query_types(a.hosts, a.hours)
    out: dict = {"hosts": a.hosts, "hours": a.hours, "n": a.n, "turns": f"blocks of {BLOCK} queries", "results": {}}
    started = []
    try:
        # every server is loaded (one at a time) and settled, then the queries are interleaved:
        # query i of a type goes to every target before query i+1, so the machine's speed
        # changing over time (a VM's neighbours) weighs on all targets alike
        for name in a.targets.split(","):
            work = tempfile.mkdtemp(prefix=f"tsbsq-{name}-")
            t = ingest.TARGETS[name](work, a)
            started.append((name, t, work))
            t.start()
            load = ingest.load(t.port, t.write_path, bodies, 2, t.proc.pid)
            _settle(t, name)
            out["results"][name] = {"load_seconds": load["seconds"]}
        for name, t, _ in started:  # nobody compacts while the others are measured
            out["results"][name]["quiet_wait_seconds"] = round(ingest.wait_quiet(t.proc.pid), 1)
        lanes = []  # (target name, mode, connection)
        for name, t, _ in started:
            modes = ["influxql"] if name != "rusts" else (["json"] if a.no_sql else ["json", "sql"])
            for mode in modes:
                lanes.append((name, mode, http.client.HTTPConnection("127.0.0.1", t.port, timeout=300)))
        for qname, builder in qtypes:
            rng = random.Random(12345)
            queries = [builder(rng) for _ in range(a.n + 3)]  # SQL and InfluxQL: the same queries
            rng = random.Random(54321)  # JSON: others (its reads would warm the SQL lane's blocks)
            json_queries = [builder(rng) for _ in range(a.n + 3)]
            lat: dict = {(name, mode): [] for name, mode, _ in lanes}
            for c, lo in enumerate(range(0, len(queries), BLOCK)):
                for k in range(len(lanes)):  # rotate which target goes first
                    name, mode, conn = lanes[(c + k) % len(lanes)]
                    for i in range(lo, min(lo + BLOCK, len(queries))):
                        dt = _send(conn, mode, json_queries[i] if mode == "json" else queries[i])
                        if i >= 3:
                            lat[(name, mode)].append(dt)
            for (name, mode), xs in lat.items():
                xs.sort()
                r = {"median_ms": round(statistics.median(xs), 3), "p95_ms": round(xs[int(len(xs) * 0.95) - 1], 3)}
                out["results"][name][f"{qname}:{mode}"] = r
                print(name, qname, mode, r, file=sys.stderr, flush=True)
    finally:
        for _, t, work in started:
            t.stop()
            shutil.rmtree(work, ignore_errors=True)
    if "influxdb" in out["results"]:
        base = out["results"]["influxdb"]
        ratios = {}
        for k, v in out["results"].get("rusts", {}).items():
            if ":" not in k:
                continue
            q = k.split(":")[0]
            b = base.get(f"{q}:influxql")
            if b:
                ratios[k] = round(v["median_ms"] / b["median_ms"], 3)
        out["rusts_over_influxdb_median"] = ratios
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
