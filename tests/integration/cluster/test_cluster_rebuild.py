"""Rebuilding a copy from a live replica's snapshot (segment files copied over node-to-node HTTP,
verified, installed atomically, then the stream after the snapshot's sequence), with auth on.

The shard streams keep messages for 3 seconds only (``[nats] max_age_secs``), so a copy that
is wiped, or that was down while the stream dropped what it had not applied, can only converge
from a peer's snapshot: replaying the stream would leave a hole."""

from __future__ import annotations

import shutil
import time
import types

import httpx

from tests.integration.cluster.conftest import wait_until
from tests.integration.cluster.test_cluster import QUERIES, batch

SECRET = "cluster-test-secret-0123456789abcdef0123456789"
AUTH = {"enabled": True, "jwt_secret": SECRET}


def token() -> dict:
    from rusts.security.tokens import mint

    cfg = types.SimpleNamespace(jwt_secret=SECRET, token_expiration_secs=3600)
    return {"Authorization": "Bearer " + mint(cfg, "test", ("read", "write", "admin"))["token"]}


H = token()


def write(url: str, body: str, headers=None) -> None:
    r = httpx.post(url + "/write", content=body, timeout=30, headers=headers)
    assert r.status_code == 204, r.text


def answers(url: str, headers=None) -> list:
    out = []
    for extra in QUERIES:
        q = {"measurement": "cpu", "time_range": {"start": 0, "end": 2**62}, **extra}
        r = httpx.post(url + "/query", json=q, timeout=30, headers=headers)
        assert r.status_code == 200, (extra, r.text)
        out.append(r.json()["results"])
    return out


def status(node) -> dict | None:
    r = httpx.get(node.url + "/cluster", timeout=10, headers=H)
    return r.json() if r.status_code == 200 else None


def converged(nodes) -> bool:
    for n in nodes:
        st = status(n)
        if st is None or st["max_lag"] != 0:
            return False
        if any(o["applied_seq"] is None or o.get("missed") or o.get("catching_up") or o.get("rebuilding")
               for sh in st["shards"] for o in sh["owners"]):
            return False
    return True


def wait_converged(nodes, what: str) -> None:
    try:
        wait_until(lambda: converged(nodes), 60, what)
    except AssertionError:
        for n in nodes:
            print("NODE", n.url, status(n))
            print(n.output()[-3000:])
        raise


def rebuilt_shards(node, node_id: str) -> dict[int, dict]:
    return {sh["shard"]: o["rebuilt_from"] for sh in status(node)["shards"] for o in sh["owners"]
            if o["node"] == node_id and "rebuilt_from" in o}


def test_a_wiped_node_and_a_node_behind_the_stream_start_rebuild_from_a_peer_snapshot(rusts_cluster, server):
    nodes = rusts_cluster(nats_extra="max_age_secs = 3", headers=H, shards=6, auth=AUTH)
    r = httpx.post(nodes[0].url + "/cluster/snapshot/0", timeout=10)
    assert r.status_code == 401  # node-to-node routes need credentials when auth is on
    wait_converged(nodes, "every applier subscribed")  # (messages live 3 s only)
    k = 0
    for _ in range(3):
        write(nodes[k % 3].url, batch(k), H)
        write(server.url, batch(k))
        k += 1
    wait_converged(nodes, "every owner applied every shard")

    # node2's disk is lost while it is down, and the stream drops everything meanwhile
    victim = nodes[2]
    victim.kill()
    for _ in range(2):
        write(nodes[k % 2].url, batch(k), H)
        write(server.url, batch(k))
        k += 1
    shutil.rmtree(victim.data_dir)
    time.sleep(4)  # max_age_secs: the streams no longer hold any message node2 would need
    victim.start(timeout=60)
    wait_converged(nodes, "the wiped node to rebuild from snapshots and catch up")
    want = answers(server.url)
    # node2 answers its own shards from its rebuilt copies (a coordinator prefers itself)
    assert answers(victim.url, H) == want
    rebuilt = rebuilt_shards(victim, "node2")
    mine = [s for s in range(6) if s % 3 in (1, 2)]  # node2's shards in three_node_layout(6)
    assert sorted(rebuilt) == mine and all(r["bytes"] > 0 and r["node"] in ("node0", "node1")
                                           for r in rebuilt.values()), rebuilt

    # node1 is down while writes go on and the stream drops them: it fell behind the retained
    # start and rebuilds too (its old copy is replaced, not patched)
    late = nodes[1]
    late.kill()
    for _ in range(2):
        write(nodes[(k % 2) * 2].url, batch(k), H)
        write(server.url, batch(k))
        k += 1
    time.sleep(4)
    late.start(timeout=60)
    wait_converged(nodes, "the node behind the stream's start to rebuild and catch up")
    want = answers(server.url)
    assert answers(late.url, H) == want
    assert sorted(rebuilt_shards(late, "node1")) == [s for s in range(6) if s % 3 in (0, 1)]
    for n in nodes:
        assert answers(n.url, H) == want
