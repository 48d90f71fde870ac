"""Ingest benchmark: TSBS cpu-only line protocol over HTTP, same client against every target.

    python perf/ingest.py --targets rusts,influxdb --connections 1,4 [--hours 24] [--batch 5000]

Starts each server itself on a free loopback port with a fresh data directory (rusts-server,
Debian's influxd 1.6, victoria-metrics), posts pre-built 5,000-line bodies from N keep-alive
connections, and prints one JSON object: values/s per target and connection count, the ratio to
InfluxDB measured in the same run, and the server's peak RSS.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import pathlib
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import tsbs  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def dir_size(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def settle_compaction(port: int, quiet_secs: float = 3, timeout: float = 90, tiering: bool = True) -> None:
    """Wait until a rusts server's compactor has run and stays idle (no backlog, the same segment
    count for ``quiet_secs``), at most ``timeout`` seconds: queries are measured in the steady
    state, as the peers get time to compact. With ``tiering``, data older than a day also waits
    for the cold tier (:func:`_settle_tiering`)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    stable_since, last = time.time(), None
    deadline = time.time() + timeout
    while time.time() < deadline:
        c.request("GET", "/stats")
        st = json.loads(c.getresponse().read())
        comp = st.get("lifecycle", {}).get("compaction", {})
        state = (st["segments"]["count"], comp.get("passes", 0) > 0, comp.get("backlog", 0))
        if state != last:
            last, stable_since = state, time.time()
        elif state[1] and state[2] == 0 and time.time() - stable_since >= quiet_secs:
            break
        time.sleep(0.5)
    else:
        return
    if tiering:
        _settle_tiering(c, deadline)


def _settle_tiering(c: http.client.HTTPConnection, deadline: float, cold_wait: float = 40) -> None:
    """Partitions that ended over a day ago go to the cold tier once no flush landed in them for
    ``storage.cold_idle_secs`` (default 20 s): until then they wait, unmerged, and the compactor has
    no backlog. When every partition is that old, wait (at most ``cold_wait`` s) for the hot bytes
    to be gone, then for the compactor to be idle again: the settled state users query. A build
    or configuration without cold tiering ends the wait at ``cold_wait``."""
    c.request("GET", "/stats")
    st = json.loads(c.getresponse().read())
    day_ago = time.time_ns() - 86400 * 10**9
    if not st.get("partitions") or any(p["max_time"] >= day_ago for p in st["partitions"]):
        return
    until = min(deadline + cold_wait, time.time() + cold_wait)
    while time.time() < until:
        c.request("GET", "/stats")
        st = json.loads(c.getresponse().read())
        if not st["segments"].get("bytes_per_tier", {}).get("hot"):
            settle_compaction(c.port, tiering=False)
            return
        time.sleep(0.5)


def cpu_seconds(pid: int, reaped: bool = False) -> float:
    """User + system CPU time of a process and its live descendants (the servers' workers),
    whichever of its threads started them (``/proc/<pid>/task/<pid>/children`` lists only the
    main thread's: a flush worker started from a worker thread was missed); with ``reaped``,
    also the time of every child they reaped."""
    stats: dict[int, tuple[int, float]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    last = 15 if reaped else 13  # utime, stime (, cutime, cstime)
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(d)] = (int(fields[1]), sum(int(x) for x in fields[11:last]) / tick)
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        if p in stats:
            total += stats[p][1]
        todo.extend(q for q, (parent, _) in stats.items() if parent == p)
    return total


def wait_quiet(pid: int, quiet_secs: float = 3, timeout: float = 180, busy: float = 0.05) -> float:
    """Wait until the process (and its children) used under ``busy`` of a CPU for ``quiet_secs``
    in a row (a peer's background compaction has finished), at most ``timeout`` seconds; returns
    the seconds waited."""
    t0 = time.time()
    last_cpu, since = cpu_seconds(pid), time.time()
    while time.time() - t0 < timeout:
        time.sleep(0.5)
        now_cpu, now = cpu_seconds(pid), time.time()
        if now_cpu - last_cpu > busy * 0.5:
            since = now
        elif now - since >= quiet_secs:
            break
        last_cpu = now_cpu
    return time.time() - t0


def wait_http(port: int, path: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            if r.status < 500:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server on {port} not ready")


class Target:
    name = ""
    write_path = "/write"

    def __init__(self, workdir: str, args) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.args = args
        self.proc: subprocess.Popen | None = None

    def start(self) -> None: ...

    def after_load(self) -> None: ...

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Rusts(Target):
    name = "rusts"

    def start(self) -> None:
        import yaml
        cfg = {"server": {"host": "127.0.0.1", "port": self.port, "max_body_size": 64 << 20},
               "storage": {"data_dir": os.path.join(self.workdir, "data"),
                           "wal_durability": self.args.wal_mode},
               "logging": {"level": "warn"}}
        if getattr(self.args, "memtable_mb", 0):
            cfg["storage"]["memtable"] = {"max_size_mb": self.args.memtable_mb}
        path = os.path.join(self.workdir, "rusts.yml")
        with open(path, "w") as f:
            yaml.safe_dump(cfg, f)
        exe = pathlib.Path(sys.executable).parent / "rusts-server"
        self.proc = subprocess.Popen([str(exe), "-c", path], stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.workdir, "log"), "wb"))
        wait_http(self.port, "/ready")

    def data_dir(self) -> str:
        return os.path.join(self.workdir, "data")


class Influx(Target):
    name = "influxdb"
    write_path = "/write?db=bench&precision=ns"

    def start(self) -> None:
        d = self.workdir
        conf = f"""
reporting-disabled = true
bind-address = "127.0.0.1:{free_port()}"
[meta]
  dir = "{d}/meta"
[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false
  cache-snapshot-write-cold-duration = "10s"
  compact-full-write-cold-duration = "30s"
[coordinator]
  log-queries-after = "0s"
[http]
  bind-address = "127.0.0.1:{self.port}"
  log-enabled = false
  max-body-size = 0
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
"""
        with open(os.path.join(d, "influxdb.conf"), "w") as f:
            f.write(conf)
        self.proc = subprocess.Popen(["influxd", "-config", os.path.join(d, "influxdb.conf")],
                                     stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "log"), "wb"))
        wait_http(self.port, "/ping")
        c = http.client.HTTPConnection("127.0.0.1", self.port)
        c.request("POST", "/query?q=CREATE+DATABASE+bench")
        c.getresponse().read()

    def data_dir(self) -> str:
        return self.workdir


class Victoria(Target):
    name = "victoriametrics"

    def start(self) -> None:
        d = self.workdir
        self.proc = subprocess.Popen(["victoria-metrics", f"-storageDataPath={d}/vm",
                                      f"-httpListenAddr=127.0.0.1:{self.port}", "-loggerLevel=ERROR",
                                      "-retentionPeriod=100y"],  # TSBS data is from 2016
                                     stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "log"), "wb"))
        wait_http(self.port, "/health")

    def data_dir(self) -> str:
        return os.path.join(self.workdir, "vm")


TARGETS = {"rusts": Rusts, "influxdb": Influx, "victoriametrics": Victoria}


def load(port: int, path: str, bodies: list[bytes], connections: int, pid: int | None) -> dict:
    q: queue.Queue = queue.Queue()
    for b in bodies:
        q.put(b)
    errors = []
    latencies = []
    peak = [0.0]
    done = threading.Event()

    def sampler():
        while not done.is_set():
            if pid:
                peak[0] = max(peak[0], rss_mb(pid))
            time.sleep(0.2)

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            try:
                body = q.get_nowait()
            except queue.Empty:
                return
            t = time.perf_counter()
            for attempt in range(50):
                conn.request("POST", path, body=body, headers={"Content-Type": "text/plain"})
                r = conn.getresponse()
                data = r.read()
                if r.status == 503:
                    time.sleep(float(r.getheader("Retry-After", "0.2")) / 5)
                    continue
                break
            latencies.append(time.perf_counter() - t)
            if r.status not in (200, 204):
                errors.append((r.status, data[:200]))

    st = threading.Thread(target=sampler, daemon=True)
    st.start()
    threads = [threading.Thread(target=worker) for _ in range(connections)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t0
    done.set()
    st.join()
    lat = sorted(latencies)
    return {"seconds": round(elapsed, 3), "errors": len(errors), "first_error": str(errors[0]) if errors else None,
            "batch_p50_ms": round(lat[len(lat) // 2] * 1000, 2) if lat else None,
            "batch_p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 2) if lat else None,
            "peak_rss_mb": round(peak[0], 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--targets", default="rusts")
    ap.add_argument("--connections", default="1,4")
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--hours", type=float, default=24)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--wal-mode", default="periodic")
    ap.add_argument("--memtable-mb", type=int, default=0,
                    help="rusts: storage.memtable.max_size_mb (0: the default)")
    ap.add_argument("--keep", action="store_true", help="keep data directories")
    a = ap.parse_args()
    lines = tsbs.cached(a.hosts, a.hours)
    bodies = tsbs.batches(lines, a.batch)
    n_values = len(lines) * len(tsbs.FIELDS)
    out = {"lines": len(lines), "values": n_values, "batch": a.batch, "wal_mode": a.wal_mode, "runs": []}
    for conns in [int(x) for x in a.connections.split(",")]:
        for name in a.targets.split(","):
            work = tempfile.mkdtemp(prefix=f"ingest-{name}-")
            t = TARGETS[name](work, a)
            try:
                t.start()
                pid = t.proc.pid if t.proc else None
                cpu0 = cpu_seconds(pid) if pid else 0.0
                r = load(t.port, t.write_path, bodies, conns, pid)
                r.update({"target": name, "connections": conns,
                          "values_per_sec": round(n_values / r["seconds"]),
                          "lines_per_sec": round(len(lines) / r["seconds"])})
                if name == "rusts":
                    # the work a burst leaves behind: a build that flushes during the load and one
                    # that flushes after it compare fairly only with the final flush counted
                    t0 = time.perf_counter()
                    c = http.client.HTTPConnection("127.0.0.1", t.port, timeout=300)
                    c.request("POST", "/flush")
                    c.getresponse().read()
                    r["flush_seconds"] = round(time.perf_counter() - t0, 3)
                    r["values_per_sec_with_flush"] = round(n_values / (r["seconds"] + r["flush_seconds"]))
                    r["server_cpu_s_per_million"] = round((cpu_seconds(pid) - cpu0) / n_values * 1e6, 3)
                out["runs"].append(r)
                print(json.dumps(r), file=sys.stderr, flush=True)
            finally:
                t.stop()
                if not a.keep:
                    shutil.rmtree(work, ignore_errors=True)
    base = {(r["connections"]): r["values_per_sec"] for r in out["runs"] if r["target"] == "influxdb"}
    for r in out["runs"]:
        if r["connections"] in base:
            r["ratio_to_influxdb"] = round(r["values_per_sec"] / base[r["connections"]], 3)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
