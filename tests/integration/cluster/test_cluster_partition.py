"""A network partition: Linux network namespaces joined by a veth pair, created by the test.

Namespace A holds two NATS servers and two rusts nodes (the majority), namespace B one NATS
server and one rusts node. They talk over the A-B veth pair; the test reaches each namespace over
a veth pair of its own (never cut). The partition sets both ends of the A-B pair down.

One cluster checks both acknowledging modes: a write's acknowledgement is decided by the node
that accepts it, so node0 runs Quorum and node1 and node2 Sync (the rest of their cluster.toml is
the same). The reference is a single rusts-server given exactly the writes the cluster
acknowledged (a write refused with 503 is retried after healing, as a client would)."""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import time

import httpx
import pytest
import yaml

from tests.integration.cluster.conftest import NATS_BIN, cluster_node, cluster_toml, three_node_layout, wait_until
from tests.integration.cluster.test_cluster import answers, batch
from tests.integration.conftest import BIN, Server

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class Net:
    """Namespaces A and B, the A-B link (10.N.1.1 - 10.N.1.2) and the test's links to A (10.N.2.2)
    and B (10.N.3.2). Everything is removed by :meth:`close`, whatever happened."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 1000:03d}{random.randrange(100):02d}"
        n = random.randrange(100, 250)
        self.ns = {"A": f"rtA{tag}", "B": f"rtB{tag}"}
        self.link = (f"rta{tag}", f"rtb{tag}")
        self.peer_ip = {"A": f"10.{n}.1.1", "B": f"10.{n}.1.2"}
        self.ctl_ip = {"A": f"10.{n}.2.2", "B": f"10.{n}.3.2"}
        self._made: list[str] = []
        try:
            for side in "AB":
                ip("netns", "add", self.ns[side])
                self._made.append(self.ns[side])
                ip("-n", self.ns[side], "link", "set", "lo", "up")
            a, b = self.link
            ip("link", "add", a, "type", "veth", "peer", "name", b)
            for dev, side in ((a, "A"), (b, "B")):
                ip("link", "set", dev, "netns", self.ns[side])
                ip("-n", self.ns[side], "addr", "add", self.peer_ip[side] + "/24", "dev", dev)
                ip("-n", self.ns[side], "link", "set", dev, "up")
            for side, sub in (("A", 2), ("B", 3)):
                host, inner = f"rc{side.lower()}{tag}", f"rc{side.lower()}{tag}p"
                ip("link", "add", host, "type", "veth", "peer", "name", inner)
                ip("link", "set", inner, "netns", self.ns[side])
                ip("addr", "add", f"10.{n}.{sub}.1/24", "dev", host)
                ip("link", "set", host, "up")
                ip("-n", self.ns[side], "addr", "add", self.ctl_ip[side] + "/24", "dev", inner)
                ip("-n", self.ns[side], "link", "set", inner, "up")
        except BaseException:
            self.close()
            raise

    def cut(self, down: bool) -> None:
        for dev, side in zip(self.link, "AB"):
            ip("-n", self.ns[side], "link", "set", dev, "down" if down else "up")

    def close(self) -> None:
        for ns in self._made:  # the veth pairs go with their namespaces
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        self._made = []


class NsServer(Server):
    """A rusts-server inside a namespace (listening on all of its addresses)."""

    netns = ""

    def start(self, timeout: float = 60.0) -> "NsServer":
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.netns, str(BIN), "-c", str(self.config_path)],
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=self.root)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.output()}")
            try:
                if httpx.get(self.url + "/ready", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready after {timeout}s: {self.output()}")


@contextlib.contextmanager
def reporting(nats: list, nodes: list):
    """On failure, print what each rusts node logged; always stop the NATS servers."""
    try:
        yield
    except BaseException:
        for n in nodes:
            print("NODE", n.url, n.output()[-4000:])
        raise
    finally:
        for p in nats:
            p.kill()
            p.wait()


def write(url: str, k: int) -> httpx.Response:
    return httpx.post(url + "/write", content=batch(k), timeout=30)


def write_ref(server, k: int) -> None:
    """Batch ``k`` into the single-node reference: the cluster acknowledged it."""
    assert write(server.url, k).status_code == 204


def write_acknowledged(url: str, server, k: int, secs: float = 30) -> None:
    """Batch ``k`` through ``url``, retried while refused with 503 (a stream leader's election,
    a partition just healed), as a client would; then into the reference ``server``."""
    deadline = time.monotonic() + secs
    while (r := write(url, k)).status_code != 204:
        assert r.status_code == 503 and time.monotonic() < deadline, r.text
        time.sleep(0.5)
    write_ref(server, k)


def converged(nodes) -> bool:
    for n in nodes:
        r = httpx.get(n.url + "/cluster", timeout=5)
        if r.status_code != 200:
            return False
        st = r.json()
        if st["max_lag"] != 0 or any(o["applied_seq"] is None or o.get("catching_up")
                                     for sh in st["shards"] for o in sh["owners"]):
            return False
    return True


@pytest.fixture
def net():
    n = Net()
    try:
        yield n
    finally:
        n.close()


def start_cluster(net: Net, tmp_path, server_factory, nats_side: list[str], rusts_side: list[str],
                  modes: list[str], nats: list, nodes: list) -> None:
    """NATS server i in namespace ``nats_side[i]``, rusts node i in ``rusts_side[i]`` with
    ``replication_mode = modes[i]``; 6 shards, RF 2 (``three_node_layout``). Processes are
    appended to ``nats`` and ``nodes`` as they start (the caller stops them, whatever happens).
    NATS pings every second, so a cut route is noticed quickly."""
    ports, cports = [4222, 4223, 4224], [6222, 6223, 6224]
    for i in range(3):
        d = tmp_path / f"nats{i}"
        d.mkdir()
        routes = [f"nats-route://{'127.0.0.1' if nats_side[j] == nats_side[i] else net.peer_ip[nats_side[j]]}"
                  f":{cports[j]}" for j in range(3) if j != i]
        (d / "nats.conf").write_text(
            f'port: {ports[i]}\nhost: 0.0.0.0\nserver_name: "n{i}"\nmax_payload: 8MB\n'
            f'ping_interval: "1s"\nping_max: 2\njetstream {{ store_dir: "{d}" }}\n'
            f'cluster {{ name: "rusts-part", listen: "0.0.0.0:{cports[i]}", '
            f'advertise: "{net.peer_ip[nats_side[i]]}:{cports[i]}", routes: [{", ".join(routes)}] }}\n')
        log = open(tmp_path / f"nats{i}.log", "ab")
        nats.append(subprocess.Popen(["ip", "netns", "exec", net.ns[nats_side[i]], NATS_BIN, "-c",
                                      str(d / "nats.conf")], stdout=log, stderr=subprocess.STDOUT))
    layout = three_node_layout(6)
    http_port = 8086
    for i in range(3):
        urls = [f"nats://{'127.0.0.1' if nats_side[j] == rusts_side[i] else net.peer_ip[nats_side[j]]}:{ports[j]}"
                for j in range(3)]
        members = [(f"node{j}", http_port + j, layout[j][0], layout[j][1]) for j in range(3)]
        toml = cluster_toml(f"node{i}", members, urls, mode=modes[i], rf=2, shards=6,
                            extra="sync_timeout_secs = 3", nats_extra="publish_timeout_secs = 2")
        for j in range(3):  # [[nodes]] addresses (node-to-node HTTP): over the A-B link
            toml = toml.replace(f'address = "127.0.0.1:{http_port + j}"',
                                f'address = "{net.peer_ip[rusts_side[j]]}:{http_port + j}"')
        s = cluster_node(server_factory, http_port + i, toml)
        s.__class__ = NsServer
        s.netns = net.ns[rusts_side[i]]
        s.url = f"http://{net.ctl_ip[rusts_side[i]]}:{http_port + i}"
        cfg = yaml.safe_load(s.config_path.read_text())
        cfg["server"]["host"] = "0.0.0.0"
        cfg["postgres"]["enabled"] = False
        s.config_path.write_text(yaml.safe_dump(cfg))
        nodes.append(s)
    for s in nodes:
        s.start()
    wait_until(lambda: converged(nodes) and all(
        all(m["live"] for m in httpx.get(n.url + "/cluster", timeout=5).json()["members"]) for n in nodes),
        60, "the cluster up")


def test_partition_minority_never_answers_wrong_and_the_cluster_heals(net, tmp_path, server_factory, server):
    # NATS n0, n1 in A, n2 in B; rusts node0 (Quorum) and node1 (Sync) in A, node2 (Sync) in B:
    # every shard has an owner in A, shards 1, 2, 4, 5 also one in B
    nats, nodes = [], []
    with reporting(nats, nodes):
        start_cluster(net, tmp_path, server_factory, ["A", "A", "B"], ["A", "A", "B"],
                      ["Quorum", "Sync", "Sync"], nats, nodes)
        q_node, s_node, minority = nodes

        for k in (0, 1):
            write_acknowledged(q_node.url, server, k)

        net.cut(True)
        # the majority keeps acknowledging Quorum writes (a publish caught in the stream leaders'
        # re-election gets 503 and is retried)
        for k in (2, 3):
            write_acknowledged(q_node.url, server, k)
        # a Sync write through the majority cannot reach node2, an owner of most shards: refused
        # (the log holds it: the majority's owners apply it, node2 after healing; the client
        # retries it after healing, which changes nothing: applying is idempotent)
        r = write(s_node.url, 4)
        assert r.status_code == 503, r.text
        write_ref(server, 4)
        # the minority cannot acknowledge anything (no NATS majority); the body is batch 2, which
        # the majority has, so whether its log ever keeps it changes no answer
        r = write(minority.url, 2)
        assert r.status_code == 503, r.text
        # the majority answers completely and exactly
        want = answers(server.url)
        try:
            wait_until(lambda: answers(q_node.url) == want, 30, "complete answers on the majority side")
        except AssertionError:
            got = answers(q_node.url)
            for a, b in zip(got, want):
                if a != b:
                    print("GOT", str(a)[:600], "\nWANT", str(b)[:600])
            for n in nodes:
                print("NODE", n.url, httpx.get(n.url + "/cluster", timeout=5).text[:3000])
            raise
        # the minority: never a complete answer (its copies lack the majority's writes). Once its
        # heartbeat cannot reach the NATS majority it answers 503 even when partial results are
        # allowed: it cannot tell which of its copies are current
        q = {"measurement": "cpu", "time_range": {"start": 0, "end": 2**62}, "aggregation": {"function": "Count"}}
        for body in ({**q, "partial": True}, q, {**q, "tag_filters": [{"key": "host", "op": "Eq", "value": "h1"}]}):
            r = httpx.post(minority.url + "/query", json=body, timeout=60)
            assert r.status_code == 503 and "NATS majority" in r.json()["error"], r.text
        r = httpx.post(minority.url + "/sql", content="SELECT count(*) FROM cpu", timeout=60)
        assert r.status_code == 503, r.text

        net.cut(False)
        wait_until(lambda: converged(nodes), 60, "lag 0 everywhere after healing")
        # the Sync write refused above, retried by the client now that the cluster is whole
        write_acknowledged(s_node.url, server, 4)
        want = answers(server.url)
        for n in nodes:  # a node whose heartbeat is not stored yet (the members bucket's Raft group
            # catching up after the heal) still refuses queries with 503 for a few seconds
            wait_until(lambda: answers(n.url) == want, 60, f"answers of {n.url} after healing")


def test_partition_splitting_rusts_and_nats_differently_and_async_writes_through_it(
        net, tmp_path, server_factory, server):
    """The rusts majority on the NATS minority side: NATS n0, n1 in A with rusts node2 alone
    (Quorum); NATS n2 in B with rusts node0 (Async) and node1 (Quorum). Node2 owns shards 1, 2,
    4, 5; shards 0 and 3 are owned by node0 and node1 only. Being two rusts nodes does not make
    B the majority: JetStream's Raft decides, so B refuses Quorum writes and every query, while
    node0 (Async) keeps accepting writes into its durable outbox and publishes them after the
    heal. Node2 accepts writes, and answers queries only partially, when allowed to, naming
    the shards it cannot reach."""
    nats, nodes = [], []
    with reporting(nats, nodes):
        start_cluster(net, tmp_path, server_factory, ["A", "A", "B"], ["B", "B", "A"],
                      ["Async", "Quorum", "Quorum"], nats, nodes)
        async_node, b_node, a_node = nodes

        def count(url: str, **extra) -> httpx.Response:
            q = {"measurement": "cpu", "time_range": {"start": 0, "end": 2**62},
                 "aggregation": {"function": "Count"}, **extra}
            return httpx.post(url + "/query", json=q, timeout=60)

        for k in (0, 1):
            write_acknowledged(b_node.url, server, k)
        wait_until(lambda: converged(nodes), 60, "the first writes applied")
        net.cut(True)
        # A has the NATS majority: node2's Quorum writes are acknowledged (retried through the
        # stream leaders' re-election)
        for k in (2, 3):
            write_acknowledged(a_node.url, server, k)
        # What B publishes during the partition carries only data A acknowledged too, plus the
        # Async node's own batch 5: NATS 2.9.10 can keep such a publish on B's replica at a
        # sequence A gives to another message, and a copy reading that replica then misses A's
        # message (docs/cluster.md, "Catching up from the leader"; with distinct data a copy
        # still missed A's writes in 1 of 3 runs)
        # B: no NATS majority, so no Quorum acknowledgement, however many rusts nodes it has
        r = write(b_node.url, 2)
        assert r.status_code == 503, r.text
        # ... but an Async write is accepted: it is in node0's outbox (fsynced) until NATS is back
        r = httpx.post(async_node.url + "/write", content="\n".join(batch(k) for k in (2, 3, 5)), timeout=30)
        assert r.status_code == 204, r.text
        write_ref(server, 5)
        assert httpx.get(async_node.url + "/cluster", timeout=10).json()["outbox"]["messages"] >= 1
        # B answers no query: its heartbeats cannot reach the NATS majority
        wait_until(lambda: count(b_node.url).status_code == 503, 30, "B refusing queries")
        for n in (async_node, b_node):
            r = count(n.url, partial=True)
            assert r.status_code == 503 and "NATS majority" in r.json()["error"], r.text
        # A: node2 cannot reach an owner of shards 0 and 3. Once node0 and node1 look dead, a
        # query is refused naming such a shard, or answered partially when allowed, saying so
        wait_until(lambda: not any(m["live"] for m in httpx.get(a_node.url + "/cluster", timeout=5).json()["members"]
                                   if m["id"] in ("node0", "node1")), 30, "node0 and node1 dead for node2")
        r = count(a_node.url)
        assert r.status_code == 503 and "has no live owner" in r.json()["error"], r.text
        r = count(a_node.url, partial=True)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["partial"] is True and body["missing_shards"] == [0, 3], body
        full = httpx.post(server.url + "/query", json={"measurement": "cpu", "time_range": {"start": 0, "end": 2**62},
                                                         "aggregation": {"function": "Count"}}).json()
        assert 0 < body["results"][0]["fields"]["count"] < full["results"][0]["fields"]["count"]

        net.cut(False)

        def healed() -> bool:
            st = httpx.get(async_node.url + "/cluster", timeout=5)
            return st.status_code == 200 and st.json()["outbox"]["messages"] == 0 and converged(nodes)

        wait_until(healed, 90, "the outbox published and lag 0 everywhere after healing")
        write_acknowledged(b_node.url, server, 4)  # a Quorum write through B, now that it can
        want = answers(server.url)
        for n in nodes:  # every acknowledged write, the Async one included, on every node
            try:
                wait_until(lambda: answers(n.url) == want, 60, f"answers of {n.url} after healing")
            except AssertionError:
                for a, b in zip(answers(n.url), want):
                    if a != b:
                        print("GOT", str(a)[:800], "\nWANT", str(b)[:800])
                for m in nodes:
                    print("CLUSTER", m.url, httpx.get(m.url + "/cluster", timeout=5).text[:4000])
                raise
