"""HTTP per-request cost: GET /ping and a one-row SQL query, p50/p99, and how much a concurrent
10 MiB /write body delays a one-row query.

    .venv/bin/python perf/http_cost.py [--n 2000] [--compare /path/to/other/.venv/bin/rusts-server]

Starts this checkout's rusts-server (and, with --compare, another build of it, e.g. a checkout of
an older commit) on free loopback ports with the same configuration and data, then measures the
targets taking turns in blocks of 100 requests over one keep-alive ``http.client`` connection each.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import pathlib
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
BIN = pathlib.Path(sys.executable).parent / "rusts-server"
QUERY = b"SELECT v FROM m WHERE host = 'h3' ORDER BY time DESC LIMIT 1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(binary: str, root: pathlib.Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    root.mkdir(parents=True)
    (root / "rusts.yml").write_text(
        f"server:\n  host: 127.0.0.1\n  port: {port}\nstorage:\n  data_dir: {root / 'data'}\n"
        "logging:\n  level: warn\n")
    proc = subprocess.Popen([binary, "-c", str(root / "rusts.yml")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/ready")
            if c.getresponse().status == 200:
                return proc, port
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{binary} did not start")


def load(port: int) -> None:
    c = http.client.HTTPConnection("127.0.0.1", port)
    lines = "\n".join(f"m,host=h{i % 10} v={i}.5 {1_700_000_000_000_000_000 + i * 10**9}" for i in range(20_000))
    c.request("POST", "/write", body=lines.encode())
    r = c.getresponse()
    r.read()
    assert r.status == 204
    c.request("POST", "/flush")
    c.getresponse().read()


def timed(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None) -> float:
    t = time.perf_counter()
    conn.request(method, path, body=body)
    r = conn.getresponse()
    r.read()
    assert r.status in (200, 204), r.status
    return (time.perf_counter() - t) * 1000


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(p / 100 * len(xs)))], 3)


def write_delay(port: int, rounds: int = 3) -> dict:
    """One-row query latency while a 10 MiB /write body is sent and parsed, against without."""
    line = b"big,host=h%d,region=r%d usage=%d.5,idle=%di,busy=true %d\n"
    body = b"".join(line % (i % 50, i % 7, i, i, 1_600_000_000_000_000_000 + i) for i in range(140_000))
    body = body[: 10 * 1024 * 1024]
    body = body[: body.rfind(b"\n") + 1]
    q = http.client.HTTPConnection("127.0.0.1", port)
    base = [timed(q, "POST", "/sql", QUERY) for _ in range(200)]
    during: list[float] = []
    for _ in range(rounds):
        done = threading.Event()

        def send():
            w = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            w.request("POST", "/write", body=body)
            w.getresponse().read()
            done.set()

        t = threading.Thread(target=send)
        t.start()
        while not done.is_set():
            during.append(timed(q, "POST", "/sql", QUERY))
        t.join()
    return {"body_bytes": len(body), "query_p50_ms_idle": pct(base, 50), "query_p50_ms_during": pct(during, 50),
            "query_max_ms_during": round(max(during), 3), "queries_during": len(during),
            "max_delay_ms": round(max(during) - pct(base, 50), 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="requests per route and target")
    ap.add_argument("--compare", help="another rusts-server binary to measure in the same run")
    args = ap.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="rusts-perf-http-"))
    targets = {"this": str(BIN)}
    if args.compare:
        targets["compare"] = args.compare
    procs = {}
    try:
        for name, binary in targets.items():
            procs[name] = start(binary, tmp / name)
            load(procs[name][1])
        conns = {n: http.client.HTTPConnection("127.0.0.1", p) for n, (_, p) in procs.items()}
        samples = {n: {"ping": [], "query": []} for n in procs}
        for c in conns.values():  # warm up
            for _ in range(50):
                timed(c, "GET", "/ping", None)
                timed(c, "POST", "/sql", QUERY)
        order = list(procs)
        for i in range(0, args.n, 100):
            order.reverse()
            for n in order:
                for _ in range(100):
                    samples[n]["ping"].append(timed(conns[n], "GET", "/ping", None))
                for _ in range(100):
                    samples[n]["query"].append(timed(conns[n], "POST", "/sql", QUERY))
        out = {"n": args.n, "targets": {}}
        for n, s in samples.items():
            out["targets"][n] = {
                "binary": targets[n],
                "ping_p50_ms": pct(s["ping"], 50), "ping_p99_ms": pct(s["ping"], 99),
                "query_p50_ms": pct(s["query"], 50), "query_p99_ms": pct(s["query"], 99),
                "mean_ms": round(statistics.mean(s["query"]), 3),
                "write_10mib": write_delay(procs[n][1]),
            }
        print(json.dumps(out, indent=1))
    finally:
        for proc, _ in procs.values():
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
