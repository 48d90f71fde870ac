"""Cluster ingest cost: CPU seconds per million values through a 3-node RF 2 cluster (3 NATS
JetStream servers, 16 shards, every process counted) against one rusts-server, same data, same run.

    python perf/cluster.py [--hours 2] [--hosts 100] [--mode Quorum] [--strategy BySeries]

Starts everything itself on free loopback ports (nats-server from PATH or /usr/sbin), posts the
TSBS cpu-only bodies (5,000 lines, 10 values each) from one connection, round robin over the
cluster's nodes, waits until every owner applied every shard (``/cluster`` max_lag 0), and prints
one JSON object: values, wall seconds to acknowledge and to converge, CPU seconds (user +
system of every process, NATS included) and CPU seconds per million values for each target, the
idle cluster's own CPU per second (heartbeats, consumers polling; measured for 5 s before the
ingest) and the per-million figure without it, and the ratio cluster / single node.
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

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import tsbs  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent / "rusts-server"
NATS = shutil.which("nats-server") or "/usr/sbin/nats-server"
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_secs(pid: int) -> float:
    """user + system CPU seconds of ``pid`` and its reaped children (flush worker processes)."""
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / TICK


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


def total_cpu(pids: list[int]) -> float:
    return sum(cpu_secs(p) + sum(cpu_secs(c) for c in children(p)) for p in pids)


def get(port: int, path: str) -> dict:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", path)
    r = c.getresponse()
    return json.loads(r.read() or b"null")


def wait_ready(port: int, path: str = "/ready", timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"port {port} not ready")


def start_rusts(root: pathlib.Path, port: int, cluster: pathlib.Path | None) -> subprocess.Popen:
    root.mkdir(parents=True, exist_ok=True)
    cfg = root / "rusts.yml"
    cfg.write_text(f"server: {{host: 127.0.0.1, port: {port}}}\nstorage: {{data_dir: {root / 'data'}}}\n"
                   "logging: {level: warn}\n" + (f"cluster: {cluster}\n" if cluster else ""))
    p = subprocess.Popen([str(BIN), "-c", str(cfg)], stdout=open(root / "log", "ab"), stderr=subprocess.STDOUT)
    wait_ready(port)
    return p


def ingest(ports: list[int], bodies: list[bytes]) -> float:
    conns = [http.client.HTTPConnection("127.0.0.1", p, timeout=120) for p in ports]
    t0 = time.perf_counter()
    for i, body in enumerate(bodies):
        c = conns[i % len(conns)]
        c.request("POST", "/write", body=body)
        r = c.getresponse()
        r.read()
        if r.status != 204:
            raise RuntimeError(f"write failed: {r.status}")
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=float, default=2)
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--mode", default="Quorum")
    ap.add_argument("--strategy", default="BySeries")
    ap.add_argument("--nats-replicas", type=int, default=3, help="[nats] replicas of the shard streams")
    ap.add_argument("--profile", metavar="DIR", help="py-spy (in PATH or next to python) records each "
                    "rusts node during the cluster ingest into DIR/node<i>.txt (collapsed stacks)")
    args = ap.parse_args()
    bodies = tsbs.batches(tsbs.generate(args.hosts, args.hours), 5000)
    n_values = sum(b.count(b"\n") + (not b.endswith(b"\n")) for b in bodies) * 10
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="rusts-cluster-perf-"))
    procs: list[subprocess.Popen] = []
    out: dict = {"values": n_values, "bodies": len(bodies), "mode": args.mode, "strategy": args.strategy,
                 "nats_replicas": args.nats_replicas,
                 "machine": f"{os.cpu_count()} cpus"}
    try:
        # single node
        port = free_port()
        p = start_rusts(tmp / "single", port, None)
        procs.append(p)
        c0 = total_cpu([p.pid])
        wall = ingest([port], bodies)
        single_cpu = total_cpu([p.pid]) - c0
        out["single"] = {"ack_secs": round(wall, 3), "cpu_secs": round(single_cpu, 3),
                         "cpu_secs_per_million_values": round(single_cpu / n_values * 1e6, 3)}
        p.terminate()
        p.wait()
        # NATS cluster
        nports, cports = [free_port() for _ in range(3)], [free_port() for _ in range(3)]
        nats = []
        for i in range(3):
            d = tmp / f"nats{i}"
            d.mkdir()
            routes = ", ".join(f"nats-route://127.0.0.1:{cp}" for j, cp in enumerate(cports) if j != i)
            (d / "nats.conf").write_text(
                f'port: {nports[i]}\nhost: 127.0.0.1\nserver_name: "n{i}"\nmax_payload: 8MB\n'
                f'jetstream {{ store_dir: "{d}" }}\n'
                f'cluster {{ name: "perf", listen: "127.0.0.1:{cports[i]}", routes: [{routes}] }}\n')
            nats.append(subprocess.Popen([NATS, "-c", str(d / "nats.conf")], stdout=open(d / "log", "ab"),
                                         stderr=subprocess.STDOUT))
        procs += nats
        ports = [free_port() for _ in range(3)]
        thirds = [[s for s in range(16) if s % 3 == i] for i in range(3)]
        nodes = "".join(f'[[nodes]]\nid = "node{i}"\naddress = "127.0.0.1:{ports[i]}"\nshards = {thirds[i]}\n'
                        f"replica_shards = {thirds[(i - 1) % 3]}\n\n" for i in range(3))
        rusts = []
        for i in range(3):
            root = tmp / f"node{i}"
            root.mkdir()
            ct = root / "cluster.toml"
            ct.write_text(f'node_id = "node{i}"\ncluster_name = "perf"\nreplication_mode = "{args.mode}"\n'
                          f'replication_factor = 2\nshard_count = 16\nsharding_strategy = "{args.strategy}"\n\n'
                          + nodes + "[nats]\nservers = ["
                          + ", ".join(f'"nats://127.0.0.1:{p}"' for p in nports) + "]\n"
                          + f"replicas = {args.nats_replicas}\n")
            rusts.append(start_rusts(root, ports[i], ct))
        procs += rusts
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            sts = [get(p, "/cluster") for p in ports]
            if all(s["nats_connected"] and all(m["live"] for m in s["members"]) for s in sts):
                break
            time.sleep(0.2)
        pids = [p.pid for p in procs if p.poll() is None]
        # the idle cluster's own cost (heartbeats, consumers polling), measured over 5 s
        i0 = total_cpu(pids)
        time.sleep(5.0)
        idle_per_sec = (total_cpu(pids) - i0) / 5.0
        spies = []
        if args.profile:
            pdir = pathlib.Path(args.profile)
            pdir.mkdir(parents=True, exist_ok=True)
            spy = shutil.which("py-spy") or str(pathlib.Path(sys.executable).parent / "py-spy")
            spies = [subprocess.Popen([spy, "record", "-p", str(p.pid), "-r", "100", "--gil", "--nonblocking", "-f", "raw",
                                       "-o", str(pdir / f"node{i}.txt")], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL) for i, p in enumerate(rusts)]
            time.sleep(1.0)
        by_proc0 = {p.pid: total_cpu([p.pid]) for p in procs if p.poll() is None}
        c0 = total_cpu(pids)
        t0 = time.perf_counter()
        wall = ingest(ports, bodies)
        while get(ports[0], "/cluster")["max_lag"] != 0:
            time.sleep(0.05)
        converge = time.perf_counter() - t0
        cl_cpu = total_cpu(pids) - c0
        out["cluster_cpu_secs_by_process"] = {
            ("nats" if p in nats else "rusts") + str(i % 3): round(total_cpu([p.pid]) - by_proc0[p.pid], 3)
            for i, p in enumerate(procs) if p.pid in by_proc0 and p in nats + rusts}
        for sp in spies:
            sp.send_signal(2)  # SIGINT: py-spy writes its output and exits
            sp.wait(timeout=30)
        busy = cl_cpu - idle_per_sec * converge
        out["cluster"] = {"ack_secs": round(wall, 3), "converged_secs": round(converge, 3),
                          "cpu_secs": round(cl_cpu, 3),
                          "cpu_secs_per_million_values": round(cl_cpu / n_values * 1e6, 3),
                          "idle_cpu_secs_per_sec": round(idle_per_sec, 3),
                          "cpu_secs_per_million_values_minus_idle": round(busy / n_values * 1e6, 3)}
        out["cpu_ratio_cluster_over_single"] = round(cl_cpu / single_cpu, 2) if single_cpu else None
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
