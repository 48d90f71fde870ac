"""pgwire benchmarks (not collected by pytest). Prints one JSON line per figure.

    python perf/pgwire_protocol.py latency      # asyncpg one-row query latency
    python perf/pgwire_protocol.py big          # 1M rows to psycopg + server RSS
    python perf/pgwire_protocol.py concurrent --seconds 30 --clients 100

The server runs in a child process (``serve``) with a backend that answers ``select 1`` and
``select rows N`` (time timestamptz, value float8, id int8) from precomputed numpy arrays.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

import numpy as np

T0 = 1_700_000_000_000_000_000


class BenchBackend:
    _cache: dict[int, tuple] = {}

    def __init__(self, params: dict) -> None:
        pass

    def split_statements(self, sql: str) -> list[str]:
        return [s for s in sql.split(";") if s.strip()]

    def _shape(self, sql: str):
        q = sql.strip().lower()
        if q == "select 1" or q.startswith("select $1"):
            return (("x", "int4"),)
        return (("time", "timestamptz"), ("value", "float8"), ("id", "int8"))

    async def describe(self, sql, param_types):
        return [23] * sql.count("$"), self._shape(sql)

    async def execute(self, sql, params=None):
        from rusts.protocols.pgwire import SqlResult
        q = sql.strip().lower()
        cols = self._shape(sql)
        if len(cols) == 1:
            v = int(params[0]) if params else 1
            return SqlResult(cols, (np.array([v], dtype=np.int32),), "SELECT 1")
        n = int(q.split()[-1])
        if n not in self._cache:
            ids = np.arange(n, dtype=np.int64)
            self._cache.clear()
            self._cache[n] = (T0 + ids * 1_000_000_000, ids * 0.25, ids)
        return SqlResult(cols, self._cache[n], f"SELECT {n}")


def serve(port: int) -> None:
    import trio
    from rusts.protocols.pgwire import serve_pgwire
    trio.run(lambda: serve_pgwire(BenchBackend, host="127.0.0.1", port=port, max_connections=200))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server() -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "serve", "--port", str(port)])
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def latency(port: int, n: int) -> dict:
    import asyncpg

    async def run():
        conn = await asyncpg.connect(host="127.0.0.1", port=port, user="bench", database="b")
        stmt = await conn.prepare("select $1")
        for i in range(200):
            await stmt.fetchval(i)
        samples = []
        for i in range(n):
            t = time.perf_counter()
            await stmt.fetchval(i)
            samples.append(time.perf_counter() - t)
        simple = []
        for i in range(n // 2):
            t = time.perf_counter()
            await conn.fetchval("select 1")
            simple.append(time.perf_counter() - t)
        await conn.close()
        return samples, simple
    samples, simple = asyncio.run(run())
    return {"figure": "asyncpg_one_row_latency_ms", "n": n,
            "prepared_median": round(statistics.median(samples) * 1e3, 3),
            "prepared_p99": round(float(np.percentile(samples, 99)) * 1e3, 3),
            "fetch_median": round(statistics.median(simple) * 1e3, 3)}


def big(proc: subprocess.Popen, port: int, rows: int, binary: bool) -> dict:
    import psycopg
    base = rss_mb(proc.pid)
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mb(proc.pid))
            time.sleep(0.02)
    threading.Thread(target=sample, daemon=True).start()
    with psycopg.connect(host="127.0.0.1", port=port, user="bench", dbname="b") as conn:
        t = time.perf_counter()
        cur = conn.cursor(binary=binary)
        cur.execute(f"select rows {rows}")
        got = len(cur.fetchall())
        elapsed = time.perf_counter() - t
    stop.set()
    return {"figure": "psycopg_large_result", "rows": got, "binary": binary,
            "seconds": round(elapsed, 3), "server_rss_base_mb": round(base, 1),
            "server_rss_growth_mb": round(peak[0] - base, 1)}


def concurrent(port: int, clients: int, seconds: float) -> dict:
    import asyncpg

    async def worker(deadline, counts, errors):
        try:
            conn = await asyncpg.connect(host="127.0.0.1", port=port, user="bench", database="b")
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))
            return
        try:
            while time.monotonic() < deadline:
                try:
                    await conn.fetchval("select $1", 7)
                    await conn.fetch("select rows 10")
                    counts[0] += 2
                except Exception as exc:  # noqa: BLE001
                    errors.append(repr(exc))
        finally:
            await conn.close()

    async def run():
        counts, errors = [0], []
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(worker(deadline, counts, errors) for _ in range(clients)))
        return counts[0], errors
    t = time.perf_counter()
    queries, errors = asyncio.run(run())
    elapsed = time.perf_counter() - t
    return {"figure": "concurrent_small_queries", "clients": clients, "seconds": round(elapsed, 1),
            "queries": queries, "qps": round(queries / elapsed), "errors": len(errors),
            "first_errors": errors[:3]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["serve", "latency", "big", "concurrent", "all"])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--seconds", type=float, default=30)
    a = p.parse_args()
    if a.what == "serve":
        serve(a.port)
        return
    proc, port = start_server()
    try:
        if a.what in ("latency", "all"):
            print(json.dumps(latency(port, a.n)), flush=True)
        if a.what in ("big", "all"):
            print(json.dumps(big(proc, port, a.rows, False)), flush=True)
            print(json.dumps(big(proc, port, a.rows, True)), flush=True)
        if a.what in ("concurrent", "all"):
            print(json.dumps(concurrent(port, a.clients, a.seconds)), flush=True)
            fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
            print(json.dumps({"figure": "server_fds_after_concurrent", "open_fds": fds}), flush=True)
    finally:
        proc.terminate()
        proc.wait(5)


if __name__ == "__main__":
    main()
