"""NATS credentials from cluster.toml, and stream retention: a copy that misses messages the
stream has dropped is detected and not served (one NATS server, one rusts node, one shard)."""

from __future__ import annotations

import asyncio
import shutil

import httpx
import pytest

from tests.integration.cluster.conftest import NatsCluster, cluster_node, cluster_toml, free_port, wait_until


def count(url: str, **extra) -> httpx.Response:
    q = {"measurement": "big", "time_range": {"start": 0, "end": 2**62}, "aggregation": {"function": "Count"}}
    return httpx.post(url + "/query", json={**q, **extra}, timeout=30)


def test_password_auth_and_a_copy_behind_the_stream_start_is_not_served(tmp_path, server_factory):
    import nats
    import nats.errors

    nc = NatsCluster(tmp_path / "nats", 1, extra_conf='authorization { user: rusts, password: "s3cret" }\n')
    nc.root.mkdir()
    nc.start()
    try:
        async def anonymous():
            await nats.connect(nc.urls[0], allow_reconnect=False, connect_timeout=2, max_reconnect_attempts=0)

        with pytest.raises((nats.errors.Error, OSError)):  # the server really demands credentials
            asyncio.run(anonymous())

        port = free_port()
        toml = cluster_toml("node0", [("node0", port, [0], [])], nc.urls, rf=1, shards=1)
        toml += 'user = "rusts"\npassword = "s3cret"\nmax_bytes = 1048576\n'  # [nats] keys
        node = cluster_node(server_factory, port, toml).start(timeout=60)

        def status():
            r = httpx.get(node.url + "/cluster", timeout=5)
            return r.json() if r.status_code == 200 else None

        wait_until(lambda: (status() or {}).get("nats_connected"), 30, "the node to log in to NATS")
        pad = "x" * 100
        for k in range(12):  # ~2.6 MB of messages into a stream limited to 1 MiB: the oldest go
            body = "\n".join(f'big,k=k{i % 5} v={i}i,s="{pad}" {k * 2000 + i + 1}' for i in range(2000))
            r = httpx.post(node.url + "/write", content=body, timeout=30)
            assert r.status_code == 204, r.text
        wait_until(lambda: (status() or {}).get("max_lag") == 0, 60, "the writes applied")
        assert count(node.url).json()["results"][0]["fields"]["count"] == 24000

        node.kill()
        shutil.rmtree(node.data_dir)  # a new copy must replay the stream, whose start is gone
        node.start(timeout=60)
        owner = wait_until(lambda: (status() or {"shards": [{"owners": [{}]}]})["shards"][0]["owners"][0]
                           .get("missed"), 30, "the node to notice the stream's dropped messages")
        assert owner > 0
        r = count(node.url, partial=True)  # never an incomplete answer passed off as complete
        assert r.status_code == 200 and r.json()["missing_shards"] == [0], r.text
    finally:
        nc.stop()
