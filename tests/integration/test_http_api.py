"""The HTTP API against the real server: routes, shapes, and every documented error."""

from __future__ import annotations

import gzip
import json
import os
import time

import httpx
import pytest

ALL = {"start": 0, "end": 2**63 - 1}
T = 1_609_459_200_000_000_000


def test_health_ready_ping_stats_metrics(server):
    with server.client() as c:
        assert c.get("/health").json() == {"status": "healthy"}
        assert c.get("/ready").json() == {"ready": True}
        r = c.get("/ping")
        assert r.status_code == 204 and r.headers["X-Influxdb-Version"]
        c.post("/write", content="cpu,host=a usage=1 1")
        st = c.get("/stats").json()
        for key in ("memtable", "wal", "segments", "partitions", "series", "queries"):
            assert key in st
        assert st["memtable"]["active_points"] == 1
        assert st["series"]["count"] == 1
        m = c.get("/metrics")
        assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
        assert "rusts_memtable_active_points 1" in m.text


def test_readme_examples_write_and_query(server):
    with server.client() as c:
        assert c.post("/write", content=f"cpu,host=server01,region=us-west usage=64.5 {T}").status_code == 204
        body = (f"cpu,host=server01 usage=62.3 {T + 10**9}\n"
                f"cpu,host=server02 usage=71.2 {T}")
        assert c.post("/write", content=body).status_code == 204
        r = c.post("/query", json={"measurement": "cpu", "time_range": {"start": T, "end": T + 100 * 10**9}})
        out = r.json()
        assert out["measurement"] == "cpu" and out["total_rows"] == 3
        assert "execution_time_ms" in out
        first = out["results"][0]
        assert first["timestamp"] == T and first["fields"] == {"usage": 64.5}
        assert first["tags"] == {"host": "server01", "region": "us-west"}
        r = c.post("/query", json={"measurement": "cpu", "time_range": ALL,
                                   "tag_filters": [{"key": "host", "value": "server01", "op": "Eq"}]})
        assert r.json()["total_rows"] == 2
        r = c.post("/query", json={"measurement": "cpu", "time_range": ALL,
                                   "aggregation": {"function": "Mean", "field": "usage",
                                                   "interval_nanos": 60 * 10**9}})
        rows = r.json()["results"]
        assert len(rows) == 1 and rows[0]["timestamp"] == T
        assert rows[0]["fields"]["mean_usage"] == pytest.approx((64.5 + 62.3 + 71.2) / 3)
        r = c.post("/query", json={"measurement": "cpu", "time_range": ALL, "group_by": ["host"],
                                   "aggregation": {"function": "Count", "field": "usage"}})
        assert {(x["tags"]["host"], x["fields"]["count_usage"]) for x in r.json()["results"]} == {
            ("server01", 2), ("server02", 1)}


def test_precision_gzip_and_v2_path(server):
    with server.client() as c:
        assert c.post("/write?precision=s", content="p,t=s v=1 1700000000").status_code == 204
        assert c.post("/write?precision=ms", content="p,t=ms v=1 1700000000000").status_code == 204
        gz = gzip.compress(b"p,t=gz v=2 1700000000000000000")
        r = c.post("/write", content=gz, headers={"Content-Encoding": "gzip"})
        assert r.status_code == 204
        r = c.post("/api/v2/write?bucket=b&org=o&precision=us", content="p,t=v2 v=3 1700000000000000")
        assert r.status_code == 204
        rows = c.post("/query", json={"measurement": "p", "time_range": ALL}).json()["results"]
        assert {r["tags"]["t"]: r["timestamp"] for r in rows} == {
            "s": 1700000000 * 10**9, "ms": 1700000000 * 10**9, "gz": 1700000000 * 10**9, "v2": 1700000000 * 10**9}


def test_partial_write_stores_good_lines_and_reports_bad_ones(server):
    with server.client() as c:
        body = "m,h=a v=1 1\nthis is not line protocol\nm,h=a v=2 2\nm,h=a v=\"str\" 3\n"
        r = c.post("/write", content=body)
        assert r.status_code == 400
        err = r.json()
        assert err["error"].startswith("partial write")
        lines = {d["line_number"]: d for d in err["data"]}
        assert set(lines) == {2, 4}
        assert lines[2]["original_line"] == "this is not line protocol"
        assert "type" in lines[4]["error_message"]  # field type conflict (float vs string)
        rows = c.post("/query", json={"measurement": "m", "time_range": ALL}).json()["results"]
        assert [r["fields"]["v"] for r in rows] == [1.0, 2.0]


@pytest.mark.parametrize("body, fragment", [
    (b"not json", "invalid JSON"),
    (b"[]", "JSON object"),
    (json.dumps({"time_range": ALL}).encode(), "measurement"),
    (json.dumps({"measurement": "cpu"}).encode(), "time_range"),
    (json.dumps({"measurement": "cpu", "time_range": {"start": 10, "end": 1}}).encode(), "before"),
    (json.dumps({"measurement": "cpu", "time_range": {"start": "a", "end": 1}}).encode(), "integer"),
    (json.dumps({"measurement": "cpu", "time_range": ALL,
                 "tag_filters": [{"key": "h", "value": "x", "op": "Like"}]}).encode(), "operator"),
    (json.dumps({"measurement": "cpu", "time_range": ALL,
                 "aggregation": {"function": "Average", "field": "x"}}).encode(), "function"),
    (json.dumps({"measurement": "cpu", "time_range": ALL,
                 "aggregation": {"function": "Mean"}}).encode(), "field"),
    (json.dumps({"measurement": "cpu", "time_range": ALL, "limit": -1}).encode(), "limit"),
    (json.dumps({"measurement": "cpu", "time_range": ALL,
                 "tag_filters": [{"key": "h", "value": "(", "op": "Regex"}]}).encode(), "regex"),
    (b"", "empty"),
])
def test_bad_queries_get_400_with_json_error(server, body, fragment):
    with server.client() as c:
        r = c.post("/query", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 400, r.text
        assert fragment.lower() in r.json()["error"].lower()


def test_unknown_measurement_is_empty_not_an_error(server):
    with server.client() as c:
        r = c.post("/query", json={"measurement": "nope", "time_range": ALL})
        assert r.status_code == 200 and r.json()["results"] == [] and r.json()["total_rows"] == 0


def test_write_errors(server_factory):
    srv = server_factory(server={"max_body_size": 1000}).start()
    with srv.client() as c:
        r = c.post("/write", content="x" * 2000)
        assert r.status_code == 413 and "max_body_size" in r.json()["error"]
        r = c.post("/write?precision=weeks", content="m v=1 1")
        assert r.status_code == 400 and "precision" in r.json()["error"]
        r = c.post("/write", content=b"\x1f\x8b garbage", headers={"Content-Encoding": "gzip"})
        assert r.status_code == 400 and "gzip" in r.json()["error"]
        r = c.get("/nope")
        assert r.status_code == 404 and "error" in r.json()
        r = c.get("/write")
        assert r.status_code == 405 and "error" in r.json()


def test_auth_enabled(server_factory):
    srv = server_factory(auth={"enabled": True, "jwt_secret": "s3cret-for-tests-0123456789abcdef-xyz",
                               "users": [{"username": "ann", "password": "pw1"}]}).start()
    with srv.client() as c:
        assert c.get("/health").status_code == 200
        r = c.post("/write", content="m v=1 1")
        assert r.status_code == 401 and "error" in r.json()
        assert c.post("/write", content="m v=1 1", headers={"Authorization": "Bearer nope"}).status_code == 401
        bad = c.post("/auth/token", json={"username": "ann", "password": "wrong"})
        assert bad.status_code == 401
        tok = c.post("/auth/token", json={"username": "ann", "password": "pw1"}).json()["token"]
        h = {"Authorization": f"Bearer {tok}"}
        assert c.post("/write", content="m v=1 1", headers=h).status_code == 204
        assert c.post("/query", json={"measurement": "m", "time_range": ALL}, headers=h).json()["total_rows"] == 1
        assert c.post("/write", content="m v=2 2", auth=httpx.BasicAuth("ann", "pw1")).status_code == 204


def test_idle_server_burns_no_cpu_after_busy_polling(server):
    """After answering, the server polls for server.busy_poll_us (2 ms) and then sleeps: an idle
    server uses no CPU."""
    with server.client() as c:
        for _ in range(20):
            assert c.get("/health").status_code == 200
    time.sleep(0.2)
    with open(f"/proc/{server.proc.pid}/stat") as f:
        before = sum(int(x) for x in f.read().rsplit(")", 1)[1].split()[11:13])
    time.sleep(1.0)
    with open(f"/proc/{server.proc.pid}/stat") as f:
        after = sum(int(x) for x in f.read().rsplit(")", 1)[1].split()[11:13])
    assert (after - before) / os.sysconf("SC_CLK_TCK") < 0.3
