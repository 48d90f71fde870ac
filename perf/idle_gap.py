"""Latency of one request as a function of the idle time before it: the machine's floor.

    python perf/idle_gap.py [--n 40] [--gaps 0,0.01,0.05,0.2]

Starts a fresh ``rusts-server`` on a free loopback port, writes one hour of one-second points
for 10 hosts, then sends N requests per gap on one keep-alive connection, sleeping ``gap``
seconds before each: ``GET /health`` and a one-host drill-down (``time_bucket('1 minute')``,
``AVG``, one hour: the simulator's historical class). Prints JSON: per gap, the client-measured
median and p90 and the server's own ``execution_time_ms`` median for the query.

Why: the simulator spaces its queries 200 ms apart. On this VM a request that follows an idle
gap of 50 ms or more costs about 2.5 times the same request sent back to back, in the server's
own execution time as much as in the transport (caches and TLBs refilled after the vCPU idled or
ran other work), so back-to-back microbenchmarks understate what a spaced workload sees.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

SQL = ("SELECT time_bucket('1 minute', time) AS minute, AVG(v) FROM cpu WHERE host = 'h3' "
       "AND time > now() - INTERVAL '1 hour' GROUP BY minute ORDER BY minute")


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--gaps", default="0,0.01,0.05,0.2")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="rusts-gap-")
    port = _free_port()
    server = os.path.join(os.path.dirname(sys.executable), "rusts-server")
    proc = subprocess.Popen([server, "-d", os.path.join(work, "data"), "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/ready")
                r = c.getresponse()
                r.read()
                if r.status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("server did not become ready")
            time.sleep(0.1)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        now = time.time_ns()
        body = "\n".join(f"cpu,host=h{i % 10} v={i} {now - i * 10**9}" for i in range(36_000)).encode()
        conn.request("POST", "/write", body)
        conn.getresponse().read()
        for _ in range(20):  # warm up: plan cache, code paths
            conn.request("POST", "/sql", SQL.encode())
            conn.getresponse().read()
        out: dict = {"n": a.n, "gaps": {}}
        for gap in [float(g) for g in a.gaps.split(",")]:
            health, query, server_ms = [], [], []
            for _ in range(a.n):
                time.sleep(gap)
                t = time.perf_counter()
                conn.request("GET", "/health")
                conn.getresponse().read()
                health.append((time.perf_counter() - t) * 1e3)
                time.sleep(gap)
                t = time.perf_counter()
                conn.request("POST", "/sql", SQL.encode())
                data = conn.getresponse().read()
                query.append((time.perf_counter() - t) * 1e3)
                server_ms.append(json.loads(data)["execution_time_ms"])
            health.sort()
            query.sort()
            out["gaps"][str(gap)] = {
                "health_p50_ms": round(statistics.median(health), 3),
                "health_p90_ms": round(health[int(len(health) * 0.9) - 1], 3),
                "query_p50_ms": round(statistics.median(query), 3),
                "query_p90_ms": round(query[int(len(query) * 0.9) - 1], 3),
                "query_server_exec_p50_ms": round(statistics.median(server_ms), 3),
            }
            print(gap, out["gaps"][str(gap)], file=sys.stderr, flush=True)
        print(json.dumps(out, indent=1))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
