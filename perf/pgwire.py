"""PostgreSQL wire protocol figures against the real server and real data.

    python perf/pgwire.py [--rows 1000000] [--conns 100] [--seconds 30]

1. latency of a one-row query with asyncpg (prepared, parameter bound), median and p99;
2. ``--conns`` concurrent asyncpg connections running small queries for ``--seconds``: queries,
   errors, server file descriptors before/after (leaks);
3. ``--rows`` rows streamed to psycopg (text and binary): seconds and server RSS growth.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

import httpx

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "integration"))
from conftest import Server  # noqa: E402

T0 = 1_700_000_000_000_000_000


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def load(srv: Server, rows: int) -> None:
    with httpx.Client(base_url=srv.url, timeout=120) as c:
        step = 50_000
        for a in range(0, rows, step):
            body = "\n".join(f"big,src=s a={i * 0.5},b={i}i {T0 + i * 1000}" for i in range(a, min(rows, a + step)))
            assert c.post("/write", content=body).status_code == 204
        small = "\n".join(f"cpu,host=h{i % 10} usage={i % 100}.5 {T0 + i * 10**9}" for i in range(10_000))
        assert c.post("/write", content=small).status_code == 204
        assert c.post("/flush").status_code == 204


async def latency(dsn: str, n: int = 2000) -> dict:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    stmt = await conn.prepare("SELECT usage FROM cpu WHERE host = $1 ORDER BY time DESC LIMIT 1")
    for _ in range(100):
        await stmt.fetchval("h3")
    lat = []
    for i in range(n):
        t = time.perf_counter()
        await stmt.fetchval(f"h{i % 10}")
        lat.append((time.perf_counter() - t) * 1000)
    await conn.close()
    lat.sort()
    return {"median_ms": round(statistics.median(lat), 3), "p99_ms": round(lat[int(n * 0.99)], 3)}


async def concurrent(dsn: str, conns: int, seconds: float) -> dict:
    import asyncpg

    done = 0
    errors = 0
    stop = time.monotonic() + seconds

    async def worker(k: int):
        nonlocal done, errors
        conn = await asyncpg.connect(dsn)
        try:
            while time.monotonic() < stop:
                try:
                    await conn.fetchval("SELECT MAX(usage) FROM cpu WHERE host = $1", f"h{k % 10}")
                    done += 1
                except Exception:
                    errors += 1
        finally:
            await conn.close()

    await asyncio.gather(*(worker(k) for k in range(conns)))
    return {"connections": conns, "seconds": seconds, "queries": done, "errors": errors,
            "queries_per_sec": round(done / seconds)}


def stream(dsn: str, pid: int, binary: bool) -> dict:
    import psycopg

    before = rss_mb(pid)
    peak = before
    t = time.perf_counter()
    n = 0
    with psycopg.connect(dsn) as conn:
        cur = conn.cursor(binary=binary)
        cur.execute("SELECT time, a, b FROM big")
        while True:
            chunk = cur.fetchmany(50_000)
            if not chunk:
                break
            n += len(chunk)
            peak = max(peak, rss_mb(pid))
    return {"rows": n, "seconds": round(time.perf_counter() - t, 3), "binary": binary,
            "server_rss_growth_mb": round(peak - before, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--conns", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=30)
    a = ap.parse_args()
    root = pathlib.Path(tempfile.mkdtemp(prefix="pgperf-"))
    srv = Server(root, postgres={"enabled": True, "max_connections": max(100, a.conns + 10)}).start()
    dsn = f"postgresql://rusts@127.0.0.1:{srv.pg_port}/rusts"
    try:
        load(srv, a.rows)
        pid = srv.proc.pid
        out = {"one_row_latency": asyncio.run(latency(dsn))}
        fd0 = fds(pid)
        out["concurrent"] = asyncio.run(concurrent(dsn, a.conns, a.seconds))
        time.sleep(1)
        out["concurrent"]["server_fds_before_after"] = [fd0, fds(pid)]
        out["stream_text"] = stream(dsn, pid, False)
        out["stream_binary"] = stream(dsn, pid, True)
    finally:
        srv.stop()
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
