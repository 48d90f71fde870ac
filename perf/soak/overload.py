"""Overload soak: measure the sustainable ingest rate C, then drive about 3x C plus heavy
queries, then stop and check the server recovers.

    python perf/soak/overload.py --secs 60 --hard-limit-mb 128

Phase 1 (``--calibrate-secs``): W closed-loop writers (5,000-line batches) measure C (points/s).
Phase 2 (``--secs``): 3*W writers plus Q clients running whole-range aggregates; answers are
counted by status, the server's RSS is sampled every 0.2 s. Phase 3: 10 s after the load stops,
20 writes and 5 queries must all succeed. Prints JSON: C, offered and accepted rates, statuses
(503/429 are shedding), peak RSS against ``storage.memtable.hard_limit_mb`` (the promise: RSS
stays under the hard limit plus the stated margin), error rate after the load, 5xx other than 503.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import threading
import time

import httpx

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tests" / "reliability"))
from rel_harness import ALL, T0, Server  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Load:
    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.statuses: dict[str, int] = {}
        self.points = 0
        self.seq = 0

    def _count(self, kind: str, status: int, points: int = 0) -> None:
        with self.lock:
            self.statuses[f"{kind} {status}"] = self.statuses.get(f"{kind} {status}", 0) + 1
            if status == 204:
                self.points += points

    def writer(self, w: int, batch: int = 5000) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as c:
            n = 0
            while not self.stop.is_set():
                base = (w * 10**9 + n) * 1000
                body = "\n".join(f"ov,w=w{w},s=s{i % 50} v={i}i {T0 + base + i}" for i in range(batch))
                n += batch
                try:
                    r = c.post("/write", content=body)
                    self._count("write", r.status_code, batch)
                    if r.status_code in (429, 503):
                        time.sleep(float(r.headers.get("retry-after", "1")) / 10)
                except httpx.HTTPError:
                    self._count("write", -1)

    def querier(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as c:
            while not self.stop.is_set():
                try:
                    r = c.post("/query", json={"measurement": "ov", "time_range": ALL,
                                               "aggregation": {"function": "Mean", "field": "v"},
                                               "group_by": ["s"]})
                    self._count("query", r.status_code)
                except httpx.HTTPError:
                    self._count("query", -1)


def slow_clients(host: str, port: int, url: str, idle: int, trickle: int, secs: float) -> dict:
    """``idle`` connections that never send a byte, ``trickle`` clients sending a request head one
    byte every 0.2 s and ``trickle`` sending a body that way, while a probe writes and queries on
    fresh connections every 0.1 s: the probe must be answered (never 503 for want of a slot)."""
    import socket

    stop = threading.Event()
    socks: list[socket.socket] = []
    refused = 0
    for _ in range(idle):
        try:
            socks.append(socket.create_connection((host, port), timeout=5))
        except OSError:
            refused += 1
    closed_by_server: dict[str, dict[str, int]] = {"head": {}, "body": {}}  # how each ended
    answers: dict[str, int] = {}

    def trickler(kind: str) -> None:
        head = b"POST /write HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n\r\n"
        body = b"ov,w=slow v=1i 1\n" * 235
        while not stop.is_set():
            try:
                with socket.create_connection((host, port), timeout=5) as c:
                    c.settimeout(0.2)
                    if kind == "body":
                        c.sendall(head)
                    for b in (head if kind == "head" else body):
                        if stop.is_set():
                            return
                        c.sendall(bytes([b]))
                        try:
                            got = c.recv(4096)
                        except TimeoutError:
                            continue
                        if not got or got.startswith(b"HTTP/1.1 "):
                            k = "closed" if not got else got[9:12].decode()
                            closed_by_server[kind][k] = closed_by_server[kind].get(k, 0) + 1
                            break
            except OSError as e:
                k = type(e).__name__
                closed_by_server[kind][k] = closed_by_server[kind].get(k, 0) + 1
                time.sleep(0.2)

    # the flood sits in the listen backlog until the server has accepted (and, past the cap,
    # evicted) it: the first answer after it waits for that, reported apart from the probes
    t = time.monotonic()
    with httpx.Client(base_url=url, timeout=300) as c:
        first = c.get("/ping").status_code
    first_secs = round(time.monotonic() - t, 3)
    threads = [threading.Thread(target=trickler, args=(k,)) for k in ("head", "body") for _ in range(trickle)]
    for t in threads:
        t.start()
    lat = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < secs:
        t = time.monotonic()
        try:
            with httpx.Client(base_url=url, timeout=30) as c:  # a fresh connection each time
                w = c.post("/write", content=f"ov,w=probe v=1i {T0 + int(t * 1e6)}").status_code
                q = c.post("/query", json={"measurement": "ov", "time_range": ALL,
                                           "aggregation": {"function": "Count", "field": "v"}}).status_code
        except httpx.HTTPError as e:
            w = q = type(e).__name__
        lat.append(time.monotonic() - t)
        for k in (f"write {w}", f"query {q}"):
            answers[k] = answers.get(k, 0) + 1
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join()
    still_open = 0
    for s in socks:
        try:
            s.setblocking(False)
            s.recv(65536)  # an answer (503) or EOF: the server dealt with it
        except BlockingIOError:
            still_open += 1
        except OSError:
            pass
        s.close()
    lat.sort()
    ok = sum(n for k, n in answers.items() if k in ("write 204", "query 200"))
    return {"idle_connections": idle - refused, "idle_refused_at_connect": refused,
            "first_answer_after_the_flood": {"status": first, "secs": first_secs},
            "idle_still_open_after": still_open, "trickle_clients": 2 * trickle,
            "trickled_connections_ended": closed_by_server, "probe_answers": answers,
            "probe_ok": ok, "probe_total": 2 * len(lat),
            "probe_secs_p50": round(lat[len(lat) // 2], 3) if lat else None,
            "probe_secs_max": round(lat[-1], 3) if lat else None}


def run(url: str, writers: int, queriers: int, secs: float, pid: int) -> dict:
    load = Load(url)
    threads = [threading.Thread(target=load.writer, args=(w,)) for w in range(writers)]
    threads += [threading.Thread(target=load.querier) for _ in range(queriers)]
    for t in threads:
        t.start()
    peak = 0.0
    series = []  # every 5 s: seconds, RSS MB, memtable MB (the hard limit's subject), statuses so far
    t0 = time.monotonic()
    next_sample = 0.0
    with httpx.Client(base_url=url, timeout=10) as c:
        while time.monotonic() - t0 < secs:
            peak = max(peak, rss_mb(pid))
            el = time.monotonic() - t0
            if el >= next_sample:
                next_sample += 5
                try:
                    mem = c.get("/stats").json()["memtable"]["total_size"] / 2**20
                except (httpx.HTTPError, KeyError, ValueError):
                    mem = None
                with load.lock:
                    shed = sum(n for k, n in load.statuses.items() if k.endswith((" 429", " 503")))
                series.append([round(el), round(rss_mb(pid)), mem if mem is None else round(mem), shed])
            time.sleep(0.2)
    load.stop.set()
    for t in threads:
        t.join()
    return {"points_per_sec": round(load.points / secs), "statuses": load.statuses, "peak_rss_mb": round(peak, 1),
            "samples_secs_rss_memtable_shed": series}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calibrate-secs", type=float, default=15)
    ap.add_argument("--secs", type=float, default=60)
    ap.add_argument("--writers", type=int, default=2)
    ap.add_argument("--queriers", type=int, default=2)
    ap.add_argument("--overload-writers", type=int, default=0,
                    help="writer connections in the overload phase (default 3 x --writers)")
    ap.add_argument("--hard-limit-mb", type=int, default=128)
    ap.add_argument("--max-size-mb", type=int, default=32, help="storage.memtable.max_size_mb (flush size)")
    ap.add_argument("--recent-cache-mb", type=int, default=64, help="query.recent_cache_mb")
    ap.add_argument("--query-memory-mb", type=int, default=128, help="query.memory_limit_mb")
    ap.add_argument("--baseline-mb", type=int, default=300,
                    help="the process's own share of the margin (interpreter, libraries, index, buffers)")
    ap.add_argument("--idle", type=int, default=2000, help="idle connections in the slow-client phase")
    ap.add_argument("--trickle", type=int, default=20, help="head and body tricklers each")
    ap.add_argument("--slow-secs", type=float, default=20)
    ap.add_argument("--only-slow", action="store_true", help="skip the ingest overload phases")
    a = ap.parse_args()
    root = pathlib.Path(tempfile.mkdtemp(prefix="overload-"))
    # the stated margin over the hard limit: the process's baseline, the recent-data cache and
    # the working memory of the queries running at once (each bounded by query.memory_limit_mb)
    margin = a.baseline_mb + a.recent_cache_mb + a.queriers * a.query_memory_mb
    srv = Server(root, storage={"wal_durability": "periodic",
                                "memtable": {"hard_limit_mb": a.hard_limit_mb, "max_size_mb": a.max_size_mb}},
                 query={"recent_cache_mb": a.recent_cache_mb, "memory_limit_mb": a.query_memory_mb})
    srv.start()
    try:
        pid = srv.proc.pid
        slow = slow_clients("127.0.0.1", srv.port, srv.url, a.idle, a.trickle, a.slow_secs)
        if a.only_slow:
            print(json.dumps({"slow_clients": slow}, indent=1))
            return 0 if slow["probe_ok"] == slow["probe_total"] else 1
        cal = run(srv.url, a.writers, 0, a.calibrate_secs, pid)
        over = run(srv.url, a.overload_writers or a.writers * 3, a.queriers, a.secs, pid)
        time.sleep(10)
        after = {"write": [], "query": []}
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            for i in range(20):
                after["write"].append(c.post("/write", content=f"ov,w=after v={i}i {T0 + i}").status_code)
            for _ in range(5):
                after["query"].append(c.post("/query", json={"measurement": "ov", "time_range": ALL,
                                                             "aggregation": {"function": "Count", "field": "v"}}).status_code)
        errors_after = sum(1 for s in after["write"] if s != 204) + sum(1 for s in after["query"] if s != 200)
        other_5xx = sum(n for k, n in over["statuses"].items() if k.split()[1].startswith("5") and not k.endswith("503"))
        shed_rate = round(sum(n for k, n in over["statuses"].items() if k.startswith("write") and k.split()[1] in ("429", "503"))
                          / max(1, sum(n for k, n in over["statuses"].items() if k.startswith("write"))), 3)
        shed = sum(n for k, n in over["statuses"].items() if k.split()[1] in ("429", "503"))
        out = {"sustainable_points_per_sec": cal["points_per_sec"], "calibration": cal, "overload": over,
               "shed_answers": shed, "write_shed_rate": shed_rate, "other_5xx": other_5xx,
               "hard_limit_mb": a.hard_limit_mb, "margin_mb": margin,
               "rss_within_limit": over["peak_rss_mb"] <= a.hard_limit_mb + margin,
               "errors_10s_after": errors_after, "slow_clients": slow}
    finally:
        srv.stop()
    out["all_ok"] = (out["rss_within_limit"] and out["errors_10s_after"] == 0 and out["other_5xx"] == 0
                     and slow["probe_ok"] == slow["probe_total"])
    print(json.dumps(out, indent=1))
    return 0 if out["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
