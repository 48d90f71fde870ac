"""Real processes for cluster tests: a NATS JetStream cluster (nats-server) and rusts nodes."""

from __future__ import annotations

import pathlib
import shutil
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

NATS_BIN = shutil.which("nats-server") or "/usr/sbin/nats-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NatsCluster:
    """``n`` nats-server processes with JetStream, routed into one cluster on loopback ports."""

    def __init__(self, root: pathlib.Path, n: int = 3, extra_conf: str = "") -> None:
        self.root = root
        self.n = n
        self.extra_conf = extra_conf  # e.g. an authorization block
        self.ports = [free_port() for _ in range(n)]
        self.cluster_ports = [free_port() for _ in range(n)]
        self.procs: list[subprocess.Popen | None] = [None] * n

    @property
    def urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{p}" for p in self.ports]

    def _conf(self, i: int) -> pathlib.Path:
        d = self.root / f"nats{i}"
        d.mkdir(exist_ok=True)
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for j, p in enumerate(self.cluster_ports) if j != i)
        text = (f'port: {self.ports[i]}\nhost: 127.0.0.1\nserver_name: "n{i}"\nmax_payload: 8MB\n'
                f'jetstream {{ store_dir: "{d}" }}\n' + self.extra_conf)
        if self.n > 1:
            text += (f'cluster {{ name: "rusts-test", listen: "127.0.0.1:{self.cluster_ports[i]}", '
                     f'routes: [{routes}] }}\n')
        conf = d / "nats.conf"
        conf.write_text(text)
        return conf

    def start(self, i: int | None = None) -> "NatsCluster":
        for k in ([i] if i is not None else range(self.n)):
            log = open(self.root / f"nats{k}.log", "ab")
            self.procs[k] = subprocess.Popen([NATS_BIN, "-c", str(self._conf(k))], stdout=log,
                                             stderr=subprocess.STDOUT)
        for k in ([i] if i is not None else range(self.n)):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", self.ports[k]), 0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
        return self

    def stop(self, i: int | None = None) -> None:
        for k in ([i] if i is not None else range(self.n)):
            p = self.procs[k]
            if p is not None:
                p.kill()
                p.wait()
                self.procs[k] = None


def nats_servers_of(pid: int, nats: NatsCluster) -> set[int]:
    """Which of ``nats``'s servers process ``pid`` holds an established client connection to
    (its sockets' inodes looked up in /proc/net/tcp)."""
    import os

    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    out = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if cols[3] == "01" and cols[9] in inodes:  # ESTABLISHED, this process's socket
                port = int(cols[2].split(":")[1], 16)
                if port in nats.ports:
                    out.add(nats.ports.index(port))
    return out


def cluster_toml(node_id: str, nodes: list[tuple[str, int, list[int], list[int]]], nats_urls: list[str], *,
                 mode: str = "Quorum", rf: int = 2, shards: int = 16, strategy: str = "BySeries",
                 replicas: int | None = None, extra: str = "", nats_extra: str = "") -> str:
    lines = [f'node_id = "{node_id}"', 'cluster_name = "test"', f'replication_mode = "{mode}"',
             f"replication_factor = {rf}", f"shard_count = {shards}", f'sharding_strategy = "{strategy}"',
             extra, ""]
    for nid, port, prim, reps in nodes:
        lines += ["[[nodes]]", f'id = "{nid}"', f'address = "127.0.0.1:{port}"', f"shards = {prim}",
                  f"replica_shards = {reps}", ""]
    lines += ["[nats]", "servers = [" + ", ".join(f'"{u}"' for u in nats_urls) + "]"]
    if replicas is not None:
        lines.append(f"replicas = {replicas}")
    if nats_extra:
        lines.append(nats_extra)
    return "\n".join(lines) + "\n"


def three_node_layout(shards: int = 16) -> list[tuple[list[int], list[int]]]:
    """RF 2 over three nodes: node i is primary of a third of the shards and replica of the
    previous node's third."""
    thirds = [[s for s in range(shards) if s % 3 == i] for i in range(3)]
    return [(thirds[i], thirds[(i - 1) % 3]) for i in range(3)]


class Unavailable(Exception):
    """A 503 (retry later): while NATS fails over a node may refuse for a few seconds; a wait
    retries it, a final comparison fails on it."""


def wait_until(pred, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except (httpx.HTTPError, Unavailable) as e:
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def cluster_node(server_factory, port: int, toml: str, **overrides):
    """A rusts Server (not started) configured as a cluster node with ``toml`` on ``port``
    (``overrides``: rusts.yml sections, e.g. ``auth``)."""
    import yaml

    s = server_factory(**overrides)
    s.port = port
    s.url = f"http://127.0.0.1:{port}"
    path = s.root / "cluster.toml"
    path.write_text(toml)
    cfg = yaml.safe_load(s.config_path.read_text())
    cfg["server"]["port"] = port
    cfg["cluster"] = str(path)
    cfg["logging"]["level"] = "info"  # the cluster's progress, for diagnosing a failure
    cfg["postgres"]["enabled"] = True  # pgwire answers over the cluster too
    s.config_path.write_text(yaml.safe_dump(cfg))
    return s


def running_nats(tmp_path, n: int):
    """A fixture body: ``n`` NATS servers clustered under ``tmp_path``, stopped afterwards."""
    nc = NatsCluster(tmp_path / "nats", n)
    nc.root.mkdir()
    nc.start()
    yield nc
    nc.stop()


@pytest.fixture
def nats_cluster(tmp_path):
    yield from running_nats(tmp_path, 3)


@pytest.fixture
def rusts_cluster(tmp_path, nats_cluster, server_factory):
    """Three rusts nodes (RF 2, 16 shards, BySeries, Quorum) on the 3-server NATS cluster."""

    def make(mode: str = "Quorum", strategy: str = "BySeries", extra: str = "", nats_extra: str = "",
             headers: dict | None = None, shards: int = 16, **overrides):
        layout = three_node_layout(shards)
        ports = [free_port() for _ in range(3)]
        servers = []
        for i in range(3):
            nodes = [(f"node{j}", ports[j], layout[j][0], layout[j][1]) for j in range(3)]
            servers.append(cluster_node(server_factory, ports[i], cluster_toml(
                f"node{i}", nodes, nats_cluster.urls, mode=mode, strategy=strategy, extra=extra,
                nats_extra=nats_extra, shards=shards), **overrides))
        with ThreadPoolExecutor(3) as ex:  # start the three nodes side by side
            list(ex.map(lambda s: s.start(timeout=60), servers))

        def all_connected():
            for s in servers:
                r = httpx.get(s.url + "/cluster", timeout=5, headers=headers)
                if r.status_code != 200:
                    return False
                st = r.json()
                if not st["nats_connected"] or not all(m["live"] for m in st["members"]):
                    return False
            return True

        try:
            wait_until(all_connected, 60, "every node connected and live")
        except AssertionError:
            for s in servers:
                try:
                    print("NODE", s.url, httpx.get(s.url + "/cluster", timeout=5, headers=headers).text[:1500])
                except httpx.HTTPError as e:
                    print("NODE", s.url, e)
                print(s.output()[-3000:])
            raise
        return servers

    return make
