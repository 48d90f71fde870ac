"""Time from a query's time limit to its CPU being released.

    .venv/bin/python perf/runaway.py [--n 20] [--timeout 1]

Starts rusts-server with ``query.timeout_secs`` = --timeout, loads a small table, then sends --n
statements that would run for minutes (a 4-way self cross join in DuckDB), one at a time.
For each: the 408 answer's delay after the limit, then how long until the server process's CPU use
falls below 10% of a core (sampled from /proc every 10 ms), then the latency of a small query.
Prints JSON with p50/p99/max.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time

BIN = pathlib.Path(sys.executable).parent / "rusts-server"
CROSS = ("SELECT SUM(a.v * b.v * c.v * d.v) FROM r a, r b, r c, r d "
         "WHERE a.v + b.v + c.v + d.v > -1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def released_after(pid: int, limit: float = 5.0) -> float:
    """Seconds until the process uses under 10% of a core over a 100 ms window."""
    t0 = time.monotonic()
    window: list[tuple[float, float]] = [(t0, cpu_seconds(pid))]
    while time.monotonic() - t0 < limit:
        time.sleep(0.01)
        now = time.monotonic()
        window.append((now, cpu_seconds(pid)))
        while len(window) > 2 and now - window[1][0] >= 0.1:
            window.pop(0)
        (ta, ca), (tb, cb) = window[0], window[-1]
        if tb - ta >= 0.1 and (cb - ca) / (tb - ta) < 0.1:
            return max(0.0, ta - t0)
    return limit


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1000, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=1.0)
    args = ap.parse_args()
    root = pathlib.Path(tempfile.mkdtemp(prefix="rusts-perf-runaway-"))
    port = free_port()
    (root / "rusts.yml").write_text(
        f"server:\n  host: 127.0.0.1\n  port: {port}\nstorage:\n  data_dir: {root / 'data'}\n"
        f"query:\n  timeout_secs: {args.timeout}\nlogging:\n  level: warn\n")
    proc = subprocess.Popen([str(BIN), "-c", str(root / "rusts.yml")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        c = None
        for _ in range(300):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                c.request("GET", "/ready")
                r = c.getresponse()
                r.read()
                if r.status == 200:
                    break
            except OSError:
                time.sleep(0.05)
        lines = "\n".join(f"r,k=x v={i}i {1_700_000_000_000_000_000 + i}" for i in range(400))
        c.request("POST", "/write", body=lines.encode())
        c.getresponse().read()
        answer_late, release, small = [], [], []
        for _ in range(args.n):
            t = time.monotonic()
            c.request("POST", "/sql", body=CROSS.encode())
            r = c.getresponse()
            r.read()
            assert r.status == 408, r.status
            answer_late.append(time.monotonic() - t - args.timeout)
            release.append(released_after(proc.pid))
            t = time.monotonic()  # a small query right after: answered at once
            c.request("POST", "/sql", body=b"SELECT COUNT(*) FROM r")
            r = c.getresponse()
            r.read()
            assert r.status == 200, r.status
            small.append(time.monotonic() - t)
            time.sleep(0.2)
        print(json.dumps({
            "n": args.n, "timeout_secs": args.timeout,
            "answer_after_limit_ms": {"p50": pct(answer_late, 50), "p99": pct(answer_late, 99),
                                      "max": pct(answer_late, 100)},
            "cpu_released_after_answer_ms": {"p50": pct(release, 50), "p99": pct(release, 99),
                                             "max": pct(release, 100)},
            "small_query_after_release_ms": {"p50": pct(small, 50), "p99": pct(small, 99),
                                             "max": pct(small, 100)},
        }, indent=1))
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
