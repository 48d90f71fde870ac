"""``rusts-simulator benchmark`` against a real ``rusts-server`` process."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

from rusts.simulator.fleet import Fleet

SIM = pathlib.Path(sys.executable).parent / "rusts-simulator"


def test_benchmark_writes_and_queries_without_errors(server):
    proc = subprocess.run(
        [str(SIM), "benchmark", "--url", server.url, "--devices", "20", "--duration", "5",
         "--write-interval", "1", "--query-rate", "5", "--json"],
        capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode() + proc.stdout.decode()
    r = json.loads(proc.stdout)
    series = Fleet(20, seed=1).series_count
    assert r["series"] == series
    assert r["errors"] == 0 and r["error_samples"] == []
    assert r["dropped"] == {"writes": 0, "queries": 0}
    w = r["writes"]
    assert w["points"] == 5 * series  # 5 reports of every series, 1 request each
    assert w["preload_points"] == series  # one untimed report before the start
    assert w["requests"] == 5
    assert w["bytes"] > 100 * w["points"]
    assert 0 < w["latency_ms"]["p50"] <= w["latency_ms"]["p99"] <= w["latency_ms"]["max"]
    counts = {k: q["count"] for k, q in r["queries"].items()}
    assert sum(counts.values()) == 25
    assert counts["dashboard"] >= 12 and counts["alerting"] >= 6 and counts["historical"] >= 2
    assert all(q["p99"] > 0 for q in r["queries"].values())
    assert r["queries"]["dashboard"]["rows"] > 0
    # the points are really stored: ask the server
    with server.client() as c:
        resp = c.post("/sql", content="SELECT COUNT(*) AS n FROM device_health")
        assert resp.status_code == 200
        assert resp.json()["results"][0]["fields"]["n"] == 6 * 20  # preload + 5 reports


def test_human_output_and_unreachable_server(server):
    proc = subprocess.run(
        [sys.executable, "-m", "rusts.simulator.runner", "benchmark", "--url", server.url, "--devices", "5",
         "--duration", "1", "--write-interval", "0.5", "--query-rate", "2"],
        capture_output=True, timeout=60)
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode() + out
    for text in ("points written", "points/s", "MB (", "KB/s", "p50", "p95", "p99",
                 "dashboard", "alerting", "historical", "Errors           0"):
        assert text in out
    server.stop()
    proc = subprocess.run([str(SIM), "benchmark", "--url", server.url, "--duration", "1"],
                          capture_output=True, timeout=60)
    err = proc.stderr.decode()
    assert proc.returncode == 2
    assert "cannot reach rusts" in err and "Traceback" not in err
