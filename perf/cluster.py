"""Cluster ingest cost: CPU seconds per million values through a 3-node RF 2 cluster (3 NATS
JetStream servers, 16 shards, every process counted) against one rusts-server, same data, same run.

    python perf/cluster.py [--hours 2] [--hosts 100] [--mode Quorum] [--strategy BySeries]
                           [--queries N] [--catchup-secs S] [--rebuild]
    python perf/cluster.py --apply-bench [--hours 12]   # in process: the appliers' write path only

Starts everything itself on free loopback ports (nats-server from PATH or /usr/sbin), posts the
TSBS cpu-only bodies (5,000 lines, 10 values each) from one connection, round robin over the
cluster's nodes, waits until every owner applied every shard (``/cluster`` max_lag 0), and prints
one JSON object: values, wall seconds to acknowledge and to converge, CPU seconds (user +
system of every process, NATS included) and CPU seconds per million values for each target, the
idle cluster's own CPU per second (heartbeats, consumers polling; measured for 5 s before the
ingest) and the per-million figure without it, the appliers' work (``apply``: fetches that
returned messages, messages, rows writes, summed over the nodes), the load average at start and
end, and the ratio cluster / single node.

After the ingest, optionally (in this order):

* ``--queries N``: the TSBS query types (perf/tsbs_queries.py, JSON API) N times each against the
  single node and through cluster node0, alternating; medians, ratio and the 2x + 2 ms target;
* ``--catchup-secs S``: node1 is SIGKILLed, the data set's bodies are posted again (same points:
  the same apply work, the data does not grow) through node0 and node2 as fast as they are
  acknowledged for S seconds, node1 restarts; the time from its start until every owner is at
  lag 0, and the messages it had to apply;
* ``--rebuild [--rebuild-mb M]``: (after writing M MB of random-string points, so that there is
  more to copy than the well-compressed TSBS values) node2 is SIGKILLed, its data directory
  deleted, restarted; the time until its copies are rebuilt from peers' snapshots and caught up,
  the bytes copied, and seconds per GB (extrapolated linearly from this size).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import tsbs  # noqa: E402
from ingest import cpu_seconds as cpu_seconds_of_tree  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent / "rusts-server"
NATS = shutil.which("nats-server") or "/usr/sbin/nats-server"
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_secs(pid: int) -> float:
    """user + system CPU seconds of ``pid`` alone, with its reaped children's."""
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / TICK


def total_cpu(pids: list[int]) -> float:
    """CPU seconds of ``pids`` and all their descendants, live or reaped (perf/ingest.py)."""
    return sum(cpu_seconds_of_tree(p, reaped=True) for p in pids)


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


def converged(ports: list[int]) -> bool:
    for p in ports:
        try:
            st = get(p, "/cluster")
        except (OSError, ValueError):
            return False
        if not isinstance(st, dict) or st.get("max_lag") != 0 or any(
                o.get("catching_up") or o.get("rebuilding") or o.get("applied_seq") is None
                for sh in st["shards"] for o in sh["owners"]):
            return False
    return True


def wait_converged(ports: list[int], timeout: float = 600) -> float:
    t0 = time.perf_counter()
    while not converged(ports):
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError("the cluster did not converge")
        time.sleep(0.05)
    return time.perf_counter() - t0


def query_overhead(single: int, node: int, hosts: int, hours: float, n: int) -> dict:
    """Median latency of each TSBS query type, single node vs through the cluster."""
    import random
    import statistics

    import tsbs_queries

    out = {}
    conns = {"single": http.client.HTTPConnection("127.0.0.1", single, timeout=120),
             "cluster": http.client.HTTPConnection("127.0.0.1", node, timeout=120)}
    # the 12 h windows of the double-groupby types do not fit a shorter data set: those windows
    # then start in its first half hour and cover all of it
    wide = dict(tsbs_queries.query_types(hosts, max(hours, 12.5)))
    for name, build in tsbs_queries.query_types(hosts, hours):
        rng = random.Random(7)
        try:
            qs = [build(rng) for _ in range(n)]
        except ValueError:
            qs = [wide[name](rng) for _ in range(n)]
        ms: dict[str, list[float]] = {"single": [], "cluster": []}
        for q in qs[:2]:  # warm both (block caches, DuckDB, connections)
            for k, c in conns.items():
                tsbs_queries._send(c, "json", q)
        for i, q in enumerate(qs):
            order = ("single", "cluster") if i % 2 == 0 else ("cluster", "single")
            for k in order:
                ms[k].append(tsbs_queries._send(conns[k], "json", q))
        s_med, c_med = statistics.median(ms["single"]), statistics.median(ms["cluster"])
        out[name] = {"single_ms": round(s_med, 2), "cluster_ms": round(c_med, 2),
                     "ratio": round(c_med / s_med, 2), "within_2x_plus_2ms": c_med <= 2 * s_med + 2}
    return out


def catchup(rusts: list, roots: list, ports: list[int], bodies: list[bytes], secs: float) -> dict:
    """node1 down for ``secs`` of ingest through the others; time for it to catch up."""
    victim = rusts[1]
    victim.kill()
    victim.wait()
    before = {sh["shard"]: sh["stream_seq"] for sh in get(ports[0], "/cluster")["shards"]}
    t0 = time.perf_counter()
    sent = 0
    while time.perf_counter() - t0 < secs:
        ingest([ports[0], ports[2]], bodies[sent % len(bodies):sent % len(bodies) + 1])
        sent += 1
    down = time.perf_counter() - t0
    after = {sh["shard"]: sh["stream_seq"] for sh in get(ports[0], "/cluster")["shards"]}
    st = time.perf_counter()
    rusts[1] = start_rusts(roots[1], ports[1], roots[1] / "cluster.toml")
    secs_to_converge = wait_converged(ports)
    owned = [sh["shard"] for sh in get(ports[1], "/cluster")["shards"]
             if any(o["node"] == "node1" for o in sh["owners"])]
    return {"down_secs": round(down, 1), "bodies_sent_while_down": sent,
            "values_sent_while_down": sent * (bodies[0].count(b"\n") + 1) * 10,
            "messages_to_apply": sum(after[s] - before[s] for s in owned),
            "start_to_lag0_secs": round(time.perf_counter() - st, 2),
            "ready_to_lag0_secs": round(secs_to_converge, 2)}


def blob_bodies(mb: float) -> list[bytes]:
    """About ``mb`` MB of points whose string field is random hex (compresses to about half):
    a larger data set for the rebuild figure than the compressible TSBS values give."""
    import secrets

    lines, bodies, size, i = [], [], 0, 0
    while size < mb * 1e6:
        lines.append(f'blob,host=h{i % 50} s="{secrets.token_hex(500)}" {1_700_000_000_000_000_000 + i}')
        size += len(lines[-1])
        i += 1
        if len(lines) == 2000:
            bodies.append("\n".join(lines).encode())
            lines = []
    if lines:
        bodies.append("\n".join(lines).encode())
    return bodies


def rebuild(rusts: list, roots: list, ports: list[int], mb: float = 0) -> dict:
    """node2's data directory deleted; time until its copies are rebuilt and caught up."""
    if mb:
        ingest(ports, blob_bodies(mb))
        wait_converged(ports)
    victim = rusts[2]
    victim.kill()
    victim.wait()
    shutil.rmtree(roots[2] / "data")
    t0 = time.perf_counter()
    rusts[2] = start_rusts(roots[2], ports[2], roots[2] / "cluster.toml")
    wait_converged(ports)
    secs = time.perf_counter() - t0
    mine = [o["rebuilt_from"] for sh in get(ports[2], "/cluster")["shards"] for o in sh["owners"]
            if o["node"] == "node2" and "rebuilt_from" in o]
    nbytes = sum(r["bytes"] for r in mine)
    copy_secs = sum(r["secs"] for r in mine)
    return {"extra_blob_mb_written": mb, "shards_rebuilt": len(mine), "bytes_copied": nbytes, "start_to_lag0_secs": round(secs, 2),
            "sum_of_copy_secs": round(copy_secs, 2),
            "secs_per_gb_extrapolated": round(secs / nbytes * 1e9, 1) if nbytes else None,
            "copy_secs_per_gb_extrapolated": round(copy_secs / nbytes * 1e9, 1) if nbytes else None}


def apply_bench(hosts: int, hours: float, rounds: int = 3) -> dict:
    """In process, no NATS: the TSBS bodies split into 16 shards' messages, applied to one shard
    database 256 messages at a time (a catching-up applier's fetches), once with every message
    its own write and once with runs of messages as one write, alternating; CPU seconds each."""
    import trio

    import rusts
    from rusts.cluster import applier, wire
    from rusts.cluster.sharding import Sharder
    from rusts.protocols.line_protocol import parse

    sharder = Sharder("BySeries", 16, 86400 * 10**9)
    msgs = [wire.encode(p) for b in tsbs.batches(tsbs.generate(hosts, hours), 5000)
            for p in sharder.split(parse(b)).values()]
    out: dict = {"messages": len(msgs), "one_write_per_message_cpu_secs": [], "runs_as_one_write_cpu_secs": []}

    async def once(run_points: int, d: pathlib.Path) -> float:
        applier.RUN_POINTS = run_points
        shutil.rmtree(d, ignore_errors=True)
        async with rusts.open(d) as db:
            app = applier.ShardApplier(0, db, d, None, None, "bench")
            t = time.process_time()
            for i in range(0, len(msgs), 256):
                await app._apply([(i + k + 1, (wire.decode(m), m)) for k, m in enumerate(msgs[i:i + 256])])
                await app.make_durable()
            return round(time.process_time() - t, 3)

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="rusts-apply-bench-"))
    try:
        for _ in range(rounds):
            out["one_write_per_message_cpu_secs"].append(trio.run(once, 1, tmp / "db"))
            out["runs_as_one_write_cpu_secs"].append(trio.run(once, 65536, tmp / "db"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out["loadavg_end"] = os.getloadavg()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=float, default=2)
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--mode", default="Quorum")
    ap.add_argument("--strategy", default="BySeries")
    ap.add_argument("--nats-replicas", type=int, default=3, help="[nats] replicas of the shard streams")
    ap.add_argument("--queries", type=int, default=0, help="run each TSBS query type N times (0: skip)")
    ap.add_argument("--catchup-secs", type=float, default=0, help="node1 down while ingesting this long (0: skip)")
    ap.add_argument("--rebuild", action="store_true", help="wipe node2 and time its rebuild")
    ap.add_argument("--rebuild-mb", type=float, default=0,
                    help="first write this many MB of random-string points (a larger copy to time)")
    ap.add_argument("--apply-bench", action="store_true",
                    help="only the in-process apply benchmark (no servers): one write per message "
                         "against runs of messages as one write")
    ap.add_argument("--profile", metavar="DIR", help="py-spy (in PATH or next to python) records each "
                    "rusts node during the cluster ingest into DIR/node<i>.txt (collapsed stacks)")
    ap.add_argument("--hold", type=float, default=0, metavar="SECS",
                    help="after the ingest, print the ports to stderr and keep everything running SECS "
                         "seconds (to profile or query by hand)")
    args = ap.parse_args()
    # SIGTERM (and SIGINT, which a background job ignores) end the run through its cleanup
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.apply_bench:
        print(json.dumps(apply_bench(args.hosts, args.hours)))
        return 0
    bodies = tsbs.batches(tsbs.generate(args.hosts, args.hours), 5000)
    n_values = sum(b.count(b"\n") + (not b.endswith(b"\n")) for b in bodies) * 10
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="rusts-cluster-perf-"))
    procs: list[subprocess.Popen] = []
    out: dict = {"values": n_values, "bodies": len(bodies), "mode": args.mode, "strategy": args.strategy,
                 "nats_replicas": args.nats_replicas,
                 "machine": f"{os.cpu_count()} cpus", "loadavg_start": os.getloadavg()}
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
        single_port = port
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
        rusts, roots = [], []
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
            roots.append(root)
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
        apply0 = [get(p, "/cluster").get("apply") for p in ports]  # None: a server without these stats
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
        # the appliers' work (all nodes): fetches that returned messages, messages, rows writes
        apply1 = [get(p, "/cluster").get("apply") for p in ports]
        if None not in apply0 + apply1:
            out["cluster"]["apply"] = {k: sum(b[k] - a[k] for a, b in zip(apply0, apply1)) for k in apply1[0]}
        out["cpu_ratio_cluster_over_single"] = round(cl_cpu / single_cpu, 2) if single_cpu else None
        if args.hold:
            print(json.dumps({"single": single_port, "cluster": ports, "nats": nports}), file=sys.stderr, flush=True)
            time.sleep(args.hold)
        if args.queries:
            out["queries"] = query_overhead(single_port, ports[0], args.hosts, args.hours, args.queries)
        if args.catchup_secs:
            out["catchup"] = catchup(rusts, roots, ports, bodies, args.catchup_secs)
            procs += [r for r in rusts if r not in procs]
        if args.rebuild:
            out["rebuild"] = rebuild(rusts, roots, ports, args.rebuild_mb)
            procs += [r for r in rusts if r not in procs]
        out["loadavg_end"] = os.getloadavg()
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
