"""SQL query benchmark on the trips workload: 44 queries over HTTP, each checked against DuckDB.

    python perf/query.py [--rows 1250000] [--n 5] [--inproc] [--fresh] [--keep DIR]

Generates the trips data (perf/trips.py, seeded), loads it into a fresh ``rusts-server`` (started
here on a free loopback port) with ``POST /write`` in 5,000-line bodies and ``POST /flush``, then
runs the suite: per query the median of N timed ``POST /sql`` round trips (after one warm-up),
and the same SQL (translated where the function names differ) in DuckDB in-process over a table
built from the generated arrays, timed the same way. Every answer is compared with DuckDB's.
Prints one JSON object: per query ms, DuckDB ms, ratio and check; average, max, and the ratio of
averages. ``--inproc`` calls :func:`rusts.sql.runner.execute_sql` in-process instead (no HTTP), to
separate transport from execution; with ``--route fast|vector|general`` it forces one executor
(the measurements behind docs/sql.md's choice). ``--fresh`` skips the flush and the wait for
compaction: the suite runs at once after the last write (FRESH). ``--keep DIR`` keeps (and reuses) the loaded data directory.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import trips  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
DAY = 86400 * 10**9
S = trips.START


def iso(ns: int) -> str:
    return str(np.datetime64(ns, "ns"))[:19] + "Z"


def tb(iv: str) -> str:
    return f"time_bucket(INTERVAL '{iv}', time, TIMESTAMP '1970-01-01')"


def ts(ns: int) -> str:
    return f"make_timestamp_ns({ns})"


D1, D2, D8 = S + DAY, S + 2 * DAY, S + 8 * DAY

# (category, ours, duckdb or None when identical, ordered?)
SUITE = [
    # simple aggregates
    ("simple", "SELECT COUNT(*) FROM trips", None, False),
    ("simple", "SELECT SUM(trip_miles) FROM trips", None, False),
    ("simple", "SELECT AVG(base_passenger_fare) FROM trips", None, False),
    ("simple", "SELECT MIN(driver_pay), MAX(driver_pay) FROM trips", None, False),
    ("simple", "SELECT MAX(tips) FROM trips", None, False),
    ("simple", "SELECT COUNT(trip_miles), SUM(tolls) FROM trips", None, False),
    ("simple", "SELECT AVG(trip_time), SUM(PULocationID) FROM trips", None, False),
    ("simple", "SELECT COUNT(*), AVG(trip_miles), MAX(driver_pay), MIN(bcf), SUM(sales_tax) FROM trips", None, False),
    # filtered aggregates (field predicates: the general path)
    ("filtered", "SELECT SUM(trip_miles) FROM trips WHERE trip_miles > 0", None, False),
    ("filtered", "SELECT AVG(driver_pay) FROM trips WHERE trip_miles > 10", None, False),
    ("filtered", "SELECT COUNT(*) FROM trips WHERE tips > 0", None, False),
    ("filtered", "SELECT AVG(tips) FROM trips WHERE base_passenger_fare > 50", None, False),
    ("filtered", "SELECT COUNT(*) FROM trips WHERE airport_fee > 0", None, False),
    ("filtered", "SELECT SUM(tolls) FROM trips WHERE PULocationID = 132", None, False),
    # tag filtered
    ("tag", "SELECT COUNT(*) FROM trips WHERE hvfhs_license_num = 'HV0003'", None, False),
    ("tag", "SELECT AVG(trip_miles) FROM trips WHERE hvfhs_license_num = 'HV0005'", None, False),
    ("tag", "SELECT SUM(driver_pay) FROM trips WHERE dispatching_base_num IN ('B03404')", None, False),
    ("tag", "SELECT MAX(tips) FROM trips WHERE hvfhs_license_num != 'HV0003'", None, False),
    ("tag", f"SELECT COUNT(*) FROM trips WHERE hvfhs_license_num = 'HV0003' AND time >= '{iso(D1)}' "
            f"AND time < '{iso(D2)}'",
     f"SELECT COUNT(*) FROM trips WHERE hvfhs_license_num = 'HV0003' AND time >= {ts(D1)} AND time < {ts(D2)}",
     False),
    ("tag", f"SELECT AVG(base_passenger_fare) FROM trips WHERE hvfhs_license_num = 'HV0005' AND time >= {D1} "
            f"AND time < {D8}",
     f"SELECT AVG(base_passenger_fare) FROM trips WHERE hvfhs_license_num = 'HV0005' AND time >= {ts(D1)} "
     f"AND time < {ts(D8)}", False),
    # GROUP BY
    ("groupby", "SELECT hvfhs_license_num, COUNT(*) FROM trips GROUP BY hvfhs_license_num", None, False),
    ("groupby", "SELECT dispatching_base_num, AVG(trip_miles) FROM trips GROUP BY dispatching_base_num", None, False),
    ("groupby", "SELECT hvfhs_license_num, SUM(driver_pay), AVG(tips) FROM trips GROUP BY hvfhs_license_num",
     None, False),
    ("groupby", "SELECT hvfhs_license_num, MIN(trip_time), MAX(trip_time) FROM trips GROUP BY 1", None, False),
    ("groupby", "SELECT hvfhs_license_num, dispatching_base_num, COUNT(*), SUM(tolls) FROM trips "
                "GROUP BY hvfhs_license_num, dispatching_base_num", None, False),
    ("groupby", "SELECT hvfhs_license_num, COUNT(*) AS n FROM trips GROUP BY hvfhs_license_num ORDER BY n DESC",
     None, True),
    # time buckets
    ("bucket", "SELECT time_bucket('1 day', time) AS day, COUNT(*) FROM trips GROUP BY day ORDER BY day",
     f"SELECT {tb('1 day')} AS day, COUNT(*) FROM trips GROUP BY day ORDER BY day", True),
    ("bucket", f"SELECT time_bucket('1 hour', time) AS h, AVG(trip_miles) FROM trips WHERE time >= '{iso(D1)}' "
               f"AND time < '{iso(D2)}' GROUP BY h ORDER BY h",
     f"SELECT {tb('1 hour')} AS h, AVG(trip_miles) FROM trips WHERE time >= {ts(D1)} AND time < {ts(D2)} "
     f"GROUP BY h ORDER BY h", True),
    ("bucket", "SELECT time_bucket('1 day', time) AS d, hvfhs_license_num, SUM(driver_pay) FROM trips "
               "GROUP BY d, hvfhs_license_num ORDER BY d, hvfhs_license_num",
     f"SELECT {tb('1 day')} AS d, hvfhs_license_num, SUM(driver_pay) FROM trips GROUP BY d, hvfhs_license_num "
     f"ORDER BY d, hvfhs_license_num", True),
    ("bucket", f"SELECT date_trunc('hour', time) AS h, COUNT(*) FROM trips WHERE time >= {D1} AND time < {D8} "
               f"GROUP BY h ORDER BY h",
     f"SELECT {tb('1 hour')} AS h, COUNT(*) FROM trips WHERE time >= {ts(D1)} AND time < {ts(D8)} "
     f"GROUP BY h ORDER BY h", True),
    ("bucket", "SELECT time_bucket('6 hours', time) AS b, MAX(tips) FROM trips GROUP BY b ORDER BY b",
     f"SELECT {tb('6 hours')} AS b, MAX(tips) FROM trips GROUP BY b ORDER BY b", True),
    ("bucket", "SELECT time_bucket('1 day', time) AS d, AVG(base_passenger_fare) FROM trips "
               "WHERE hvfhs_license_num = 'HV0005' GROUP BY d ORDER BY d",
     f"SELECT {tb('1 day')} AS d, AVG(base_passenger_fare) FROM trips WHERE hvfhs_license_num = 'HV0005' "
     f"GROUP BY d ORDER BY d", True),
    # percentiles
    ("percentile", "SELECT PERCENTILE_95(trip_miles) FROM trips", "SELECT quantile_cont(trip_miles, 0.95) FROM trips",
     False),
    ("percentile", "SELECT MEDIAN(driver_pay) FROM trips", "SELECT quantile_cont(driver_pay, 0.5) FROM trips", False),
    ("percentile", "SELECT PERCENTILE_99(tips) FROM trips WHERE hvfhs_license_num = 'HV0003'",
     "SELECT quantile_cont(tips, 0.99) FROM trips WHERE hvfhs_license_num = 'HV0003'", False),
    ("percentile", f"SELECT hvfhs_license_num, PERCENTILE_50(trip_time) FROM trips WHERE time >= {D1} "
                   f"AND time < {D8} GROUP BY hvfhs_license_num",
     f"SELECT hvfhs_license_num, quantile_cont(trip_time, 0.5) FROM trips WHERE time >= {ts(D1)} AND time < {ts(D8)} "
     f"GROUP BY hvfhs_license_num", False),
    # FIRST / LAST
    ("firstlast", "SELECT FIRST(trip_miles), LAST(driver_pay) FROM trips",
     "SELECT arg_min(trip_miles, time), arg_max(driver_pay, time) FROM trips", False),
    ("firstlast", "SELECT hvfhs_license_num, LAST(tips) FROM trips GROUP BY hvfhs_license_num",
     "SELECT hvfhs_license_num, arg_max(tips, time) FROM trips GROUP BY hvfhs_license_num", False),
    ("firstlast", f"SELECT FIRST(base_passenger_fare) FROM trips WHERE time >= '{iso(D1)}'",
     f"SELECT arg_min(base_passenger_fare, time) FROM trips WHERE time >= {ts(D1)}", False),
    ("firstlast", "SELECT LAST(originating_base_num), FIRST(shared_request_flag) FROM trips",
     "SELECT arg_max(originating_base_num, time), arg_min(shared_request_flag, time) FROM trips", False),
    # ORDER BY time DESC LIMIT
    ("limit", "SELECT * FROM trips ORDER BY time DESC LIMIT 10", None, True),
    ("limit", "SELECT time, trip_miles, driver_pay FROM trips WHERE hvfhs_license_num = 'HV0005' "
              "ORDER BY time DESC LIMIT 100", None, True),
    ("limit", "SELECT * FROM trips LIMIT 10", "SELECT * FROM trips ORDER BY time LIMIT 10", True),
    ("limit", f"SELECT * FROM trips WHERE time >= '{iso(D2)}' ORDER BY time LIMIT 50",
     f"SELECT * FROM trips WHERE time >= {ts(D2)} ORDER BY time LIMIT 50", True),
]
assert len(SUITE) == 44, len(SUITE)


# ----------------------------------------------------------------------------- reference

def reference(data: dict):
    import duckdb
    import pyarrow as pa

    cols = {"time": pa.array(data["time"].view("datetime64[ns]"))}
    for k in trips.TAGS:
        cols[k] = pa.array(data[k], pa.string())
    for f in sorted(trips.FLOAT_FIELDS + trips.INT_FIELDS + trips.STRING_FIELDS):
        v = data[f]
        cols[f] = pa.array(v, pa.string()) if v.dtype == object else pa.array(v)
    con = duckdb.connect()
    con.register("trips_arrow", pa.table(cols))
    con.execute("CREATE TABLE trips AS SELECT * FROM trips_arrow")
    return con


def ref_rows(con, sql: str) -> list[tuple]:
    from rusts.sql.duck import from_arrow

    out = from_arrow(con.sql(sql).to_arrow_table(), "")
    cols = out.to_pylists()
    return [tuple(r) for r in zip(*cols)] if cols else []


def body_rows(body: dict) -> list[tuple]:
    rows = []
    names = [c["name"] for c in body["columns"]]
    types = [c["type"] for c in body["columns"]]
    ts_col = types.index("timestamp") if "timestamp" in types else None
    for r in body["results"]:
        row = []
        for i, n in enumerate(names):
            if i == ts_col:
                row.append(r["timestamp"])
            elif n in r["tags"]:
                row.append(r["tags"][n])
            else:
                row.append(r["fields"].get(n))
        rows.append(tuple(row))
    return rows


def out_rows(out) -> list[tuple]:
    cols = out.to_pylists()
    return [tuple(r) for r in zip(*cols)] if cols else []


def same(a: list[tuple], b: list[tuple], ordered: bool) -> bool:
    def key(r):
        return tuple((x is None, round(x, 6) if isinstance(x, float) else (x if x is not None else 0)) for x in r)

    if len(a) != len(b):
        return False
    if not ordered:
        a, b = sorted(a, key=key), sorted(b, key=key)
    for ra, rb in zip(a, b):
        if len(ra) != len(rb):
            return False
        for x, y in zip(ra, rb):
            if x is None or y is None:
                if x is not y:
                    return False
            elif isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
                if not math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-6):
                    return False
            elif x != y:
                return False
    return True


# ----------------------------------------------------------------------------- server

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: str, port: int, log_path: str) -> subprocess.Popen:
    import httpx
    import yaml

    cfg = {"server": {"host": "127.0.0.1", "port": port},
           "storage": {"data_dir": data_dir, "wal_durability": "periodic"},
           "logging": {"level": "warn"}, "postgres": {"enabled": False}}
    cfg_path = os.path.join(os.path.dirname(data_dir.rstrip("/")) or ".", f"rusts-{port}.yml")
    with open(cfg_path, "w") as f:
        yaml.safe_dump(cfg, f)
    exe = pathlib.Path(sys.executable).parent / "rusts-server"
    proc = subprocess.Popen([str(exe), "-c", cfg_path], stdout=open(log_path, "ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"rusts-server exited with {proc.returncode}; see {log_path}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("rusts-server not ready after 120 s")


def load_http(client, lines: list[bytes], batch: int = 5000, flush: bool = True) -> float:
    t = time.perf_counter()
    for i in range(0, len(lines), batch):
        r = client.post("/write", content=b"\n".join(lines[i:i + batch]))
        if r.status_code != 204:
            raise RuntimeError(f"write failed: {r.status_code} {r.text[:300]}")
    if not flush:
        return time.perf_counter() - t
    r = client.post("/flush")
    if r.status_code >= 300:
        raise RuntimeError(f"flush failed: {r.status_code} {r.text[:300]}")
    return time.perf_counter() - t


def timed_median(fn, n: int, first: list | None = None) -> tuple[float, object]:
    """Median ms of ``n`` runs after a warm-up run (whose ms is appended to ``first``)."""
    t = time.perf_counter()
    res = fn()  # warm-up (and the answer checked)
    if first is not None:
        first.append((time.perf_counter() - t) * 1000)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), res


def run_http(args, data, con) -> dict:
    import httpx

    work = args.keep or tempfile.mkdtemp(prefix="rusts-trips-")
    data_dir = os.path.join(work, "data")
    marker = os.path.join(work, f"loaded-{args.rows}")
    port = free_port()
    proc = start_server(data_dir, port, os.path.join(work, "server.log"))
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300)
    out = {"mode": "http", "phase": "fresh" if args.fresh else "settled"}
    try:
        if args.fresh:  # queried at once after the load: the rows are in the memtable
            if os.path.exists(marker):
                raise SystemExit("--fresh loads a new data directory: not with a --keep that is loaded")
            out["load_seconds"] = round(load_http(client, trips.cached_lines(args.rows), flush=False), 2)
        else:
            if not os.path.exists(marker):
                lines = trips.cached_lines(args.rows)
                out["load_seconds"] = round(load_http(client, lines), 2)
                open(marker, "w").close()
            # measure the steady state: the flushed data compacted (as perf/tsbs_queries.py does)
            sys.path.insert(0, str(pathlib.Path(__file__).parent))
            import ingest

            ingest.settle_compaction(port)

        def q(sql):
            r = client.post("/sql", content=sql.encode())
            if r.status_code != 200:
                raise RuntimeError(f"{sql}: HTTP {r.status_code}: {r.text[:300]}")
            return r.json()

        out["queries"] = suite(args, con, lambda sql: body_rows(q(sql)), q)
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return out


def run_inproc(args, data, con) -> dict:
    import trio

    import rusts.db
    from rusts.sql.runner import execute_sql

    work = args.keep or tempfile.mkdtemp(prefix="rusts-trips-")
    marker = os.path.join(work, f"loaded-{args.rows}")
    out = {"mode": "inproc"}

    async def main():
        async def run_db(task_status=trio.TASK_STATUS_IGNORED):
            async with rusts.db.open(os.path.join(work, "data")) as db:
                task_status.started(db)
                await trio.sleep_forever()

        async with trio.open_nursery() as nursery:
            db = await nursery.start(run_db)
            if not os.path.exists(marker):
                lines = trips.cached_lines(args.rows)
                t = time.perf_counter()
                for i in range(0, len(lines), 5000):
                    await db.write(b"\n".join(lines[i:i + 5000]))
                await db.flush()
                out["load_seconds"] = round(time.perf_counter() - t, 2)
                open(marker, "w").close()
            results = []
            for cat, ours, ref, ordered in SUITE:
                times = []
                t0 = time.perf_counter()
                res = await execute_sql(db, ours, route=args.route)
                first = (time.perf_counter() - t0) * 1000
                for _ in range(args.n):
                    t = time.perf_counter()
                    await execute_sql(db, ours, route=args.route)
                    times.append((time.perf_counter() - t) * 1000)
                results.append((cat, ours, ref, ordered, statistics.median(times), out_rows(res), res.path, first))
            nursery.cancel_scope.cancel()
            return results

    try:
        raw = trio.run(main)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    queries = []
    for cat, ours, ref, ordered, ms, rows, path, first in raw:
        dms, exp = timed_median(lambda: ref_rows(con, ref or ours), args.n)
        queries.append({"category": cat, "sql": ours, "ms": round(ms, 2), "first_ms": round(first, 2),
                        "duckdb_ms": round(dms, 2),
                        "ratio": round(ms / dms, 2) if dms else None, "ok": same(rows, exp, ordered),
                        "path": path})
    out["queries"] = queries
    return out


def suite(args, con, rows_of, raw_query) -> list[dict]:
    res = []
    for cat, ours, ref, ordered in SUITE:
        first: list = []
        ms, body = timed_median(lambda: raw_query(ours), args.n, first)
        dms, exp = timed_median(lambda: ref_rows(con, ref or ours), args.n)
        got = body_rows(body)
        res.append({"category": cat, "sql": ours, "ms": round(ms, 2), "first_ms": round(first[0], 2),
                    "duckdb_ms": round(dms, 2), "ratio": round(ms / dms, 2) if dms else None,
                    "ok": same(got, exp, ordered)})
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_250_000)
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--inproc", action="store_true")
    ap.add_argument("--fresh", action="store_true",
                    help="over HTTP: query at once after the load, without POST /flush (FRESH)")
    ap.add_argument("--keep", default=None, help="data directory to keep and reuse")
    ap.add_argument("--route", default="auto", choices=["auto", "fast", "vector", "general"],
                    help="with --inproc: force one executor (see rusts.sql.runner.execute_sql)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    data = trips.generate(args.rows)
    con = reference(data)
    out = run_inproc(args, data, con) if args.inproc else run_http(args, data, con)
    qs = out["queries"]
    ms = [q["ms"] for q in qs]
    dms = [q["duckdb_ms"] for q in qs]
    fm = [q["first_ms"] for q in qs]
    out.update({"rows": args.rows, "n": args.n, "queries_count": len(qs),
                "avg_ms": round(sum(ms) / len(ms), 2), "max_ms": round(max(ms), 2),
                "first_run_avg_ms": round(sum(fm) / len(fm), 2), "first_run_max_ms": round(max(fm), 2),
                "duckdb_avg_ms": round(sum(dms) / len(dms), 2),
                "ratio_of_averages": round(sum(ms) / max(sum(dms), 1e-9), 2),
                "all_ok": all(q["ok"] for q in qs)})
    by_cat: dict[str, list[float]] = {}
    for q in qs:
        by_cat.setdefault(q["category"], []).append(q["ms"])
    out["avg_ms_by_category"] = {k: round(sum(v) / len(v), 2) for k, v in by_cat.items()}
    print(json.dumps(out, indent=1))
    return 0 if out["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
