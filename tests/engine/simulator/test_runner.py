"""The simulator's generators: fleet, line protocol, query mix; options and reports."""

from __future__ import annotations

import collections
import time

import numpy as np
import pytest

import rusts
from rusts.errors import ConfigError
from rusts.model import FieldType
from rusts.protocols.line_protocol import parse
from rusts.simulator.runner import BenchmarkConfig, _percentiles, format_report, main
from rusts.simulator.fleet import MEASUREMENTS, Fleet
from rusts.simulator.queries import ALERTING, CLASSES, DASHBOARD, HISTORICAL, TEMPLATES, QueryMix
from rusts.sql.runner import execute_sql, parse_sql

T0 = 1_700_000_000_000_000_000
STEP = 15 * 10**9


def report_all(fleet: Fleet, t: int) -> tuple[bytes, int]:
    ts = t + np.arange(fleet.devices, dtype=np.int64) * 1000
    return fleet.report(0, fleet.devices, ts)


def test_about_seven_and_a_half_series_per_device():
    fleet = Fleet(2000, seed=3)
    per = fleet.series_per_measurement()
    assert set(per) == set(MEASUREMENTS)
    assert per["device_health"] == per["network_health"] == per["experience_score"] == 2000
    assert 7.3 < fleet.series_count / 2000 < 7.7
    assert fleet.app_count.min() >= 2 and fleet.app_count.max() <= 7


def test_report_is_valid_line_protocol_one_point_per_series():
    fleet = Fleet(300, seed=1)
    body, n = report_all(fleet, T0)
    batch = parse(body)
    assert batch.errors == ()
    assert n == batch.point_count == fleet.series_count == fleet.points_of(0, 300)
    assert len(batch.series) == fleet.series_count  # every series once, all distinct
    assert body.endswith(b"\n") and body.count(b"\n") == n
    by_m = collections.defaultdict(list)
    for s in batch.series:
        by_m[s.measurement].append(s)
    assert set(by_m) == set(MEASUREMENTS)
    for s in by_m["app_performance"]:
        assert [k for k, _ in s.tags] == ["app", "department", "device_id", "os", "site"]
        assert s.columns["crash_count"].type == FieldType.INTEGER
        assert s.columns["response_time_ms"].type == FieldType.FLOAT
    for s in by_m["network_health"]:
        assert dict(s.tags)["connection"] in ("wifi", "ethernet", "vpn")
    apps = collections.Counter(dict(s.tags)["device_id"] for s in by_m["app_performance"])
    assert sorted(apps.values()) == sorted(fleet.app_count.tolist())


def test_each_line_carries_its_devices_report_time():
    fleet = Fleet(40, seed=2)
    ts = T0 + np.arange(10, 30, dtype=np.int64) * 123_456_789
    batch = parse(fleet.report(10, 30, ts)[0])
    for s in batch.series:
        dev = int(dict(s.tags)["device_id"].split("-")[1])
        assert 10 <= dev < 30
        assert s.timestamps.tolist() == [ts[dev - 10]]


def test_values_stay_in_range_and_walk():
    fleet = Fleet(500, seed=5)
    cpu, scores = [], []
    for k in range(12):
        batch = parse(report_all(fleet, T0 + k * STEP)[0])
        dh = sorted((s for s in batch.series if s.measurement == "device_health"), key=lambda s: s.tags)
        cpu.append(np.array([s.columns["cpu_usage"].values[0] for s in dh]))
        for s in batch.series:
            if s.measurement == "network_health":
                assert 0 <= s.columns["packet_loss_pct"].values[0] <= 100
                assert -95 <= s.columns["wifi_signal_dbm"].values[0] <= -20
            if s.measurement == "experience_score":
                c = s.columns
                subs = [c[f"{n}_score"].values[0] for n in ("performance", "stability", "network", "app")]
                assert abs(c["score"].values[0] - np.dot(subs, [0.3, 0.25, 0.25, 0.2])) < 0.02
                scores.append(c["score"].values[0])
    cpu = np.array(cpu)
    assert cpu.min() >= 0 and cpu.max() <= 100
    # a walk: consecutive reports of a device are close, devices differ a lot from each other
    assert np.abs(np.diff(cpu, axis=0)).mean() < 8
    assert cpu[0].std() > 10
    # some devices run hot so that the alerting rule AVG(cpu_usage) > 90 fires
    assert 0 < (cpu.mean(axis=0) > 90).sum() < 0.1 * 500
    assert 0 <= min(scores) and max(scores) <= 100


def test_same_seed_same_bytes():
    a, b, c = Fleet(50, seed=9), Fleet(50, seed=9), Fleet(50, seed=10)
    for k in range(3):
        ba, bb, bc = (report_all(f, T0 + k * STEP)[0] for f in (a, b, c))
        assert ba == bb
        assert ba != bc


def test_fleet_rejects_bad_ranges():
    with pytest.raises(ConfigError):
        Fleet(0)
    fleet = Fleet(10)
    with pytest.raises(ConfigError):
        fleet.report(5, 11, np.zeros(6, dtype=np.int64))
    with pytest.raises(ConfigError):
        fleet.report(0, 5, np.zeros(4, dtype=np.int64))


def test_query_mix_is_six_three_one_in_every_block_of_ten():
    mix = QueryMix(Fleet(100, seed=1), seed=4)
    drawn = [mix.next() for _ in range(1000)]
    for i in range(0, 1000, 10):
        block = collections.Counter(k for k, _ in drawn[i:i + 10])
        assert block == {DASHBOARD: 6, ALERTING: 3, HISTORICAL: 1}
    texts = {k: {sql for kk, sql in drawn if kk == k} for k in CLASSES}
    assert all(t.count("HAVING") == 1 for t in texts[ALERTING])
    assert all("time_bucket('1 minute', time)" in t and "device_id = 'dev-" in t
               for t in texts[HISTORICAL])
    assert all("GROUP BY" in t for t in texts[DASHBOARD])
    # every template gets used and its placeholders filled
    assert len(set(drawn)) > 100
    assert not any("{" in sql for _, sql in drawn)
    for _, sql in drawn[:50]:
        parse_sql(sql)


async def test_every_query_runs_on_the_engine_and_alerts_fire(tmp_path):
    fleet = Fleet(100, seed=1)
    mix = QueryMix(fleet, seed=1)
    now = time.time_ns()
    async with rusts.open(tmp_path / "data", wal_durability="none") as db:
        for k in range(20):  # 20 reports 15 s apart, the last one just now
            res = await db.write(report_all(fleet, now - (20 - k) * STEP)[0])
            assert res.errors == ()
        rows = {}
        for klass, templates in TEMPLATES.items():
            for template in templates:
                out = await execute_sql(db, mix.fill(template), now_ns=now)
                rows[(klass, template)] = len(out)
    for (klass, template), n in rows.items():
        if klass != ALERTING:
            assert n > 0, template  # dashboards and trends always show something
    hot = next(t for t in TEMPLATES[ALERTING] if "AVG(cpu_usage) > 90" in t)
    assert rows[(ALERTING, hot)] > 0
    # one device's hour in 1-minute buckets: the 5 minutes of data fall in 5 or 6 buckets
    trend = next(t for t in TEMPLATES[HISTORICAL] if "FROM device_health" in t)
    assert 5 <= rows[(HISTORICAL, trend)] <= 6


def test_config_validation():
    with pytest.raises(ConfigError) as e:
        BenchmarkConfig(devices=0)
    assert e.value.key == "devices"
    with pytest.raises(ConfigError):
        BenchmarkConfig(write_interval=0)
    with pytest.raises(ConfigError):
        BenchmarkConfig(query_rate=-1)


def test_unreachable_server_exits_2_with_a_message(capsys):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc = main(["benchmark", "--url", f"http://127.0.0.1:{port}", "--duration", "1"])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"cannot reach rusts at http://127.0.0.1:{port}" in err
    assert "Traceback" not in err
    assert main(["benchmark", "--url", "ftp://x", "--duration", "1"]) == 2
    assert "--url must be http://" in capsys.readouterr().err


def test_generate_prints_parseable_reports(capsysbinary):
    assert main(["generate", "--devices", "4", "--reports", "3", "--seed", "2"]) == 0
    out = capsysbinary.readouterr().out
    batch = parse(out)
    assert batch.errors == ()
    assert batch.point_count == 3 * Fleet(4, seed=2).series_count


def test_percentiles_and_human_report():
    p = _percentiles(list(range(1, 101)))
    assert p["count"] == 100 and p["p50"] == 50.5 and p["max"] == 100
    assert abs(p["p99"] - 99.01) < 1e-9
    assert _percentiles([])["p99"] is None
    empty = {"count": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    report = {
        "config": {"devices": 1000, "duration_s": 300, "write_interval_s": 15, "query_rate": 5,
                   "batch_devices": 50, "drain_timeout_s": 10},
        "series": 7535, "series_per_device": 7.535, "interrupted": False,
        "writes": {"points": 150700, "preload_points": 7535, "requests": 400, "throughput_points_per_s": 502.3,
                   "mb": 29.4, "kb_per_s": 100.3, "latency_ms": p, "start_lag_ms": p},
        "queries": {DASHBOARD: p, ALERTING: p, HISTORICAL: empty},
        "query_start_lag_ms": p, "errors": 2, "dropped": {"writes": 0, "queries": 7}, "error_samples": ["write: HTTP 503: busy"],
        "client": {"cpu_s": 3.0, "cpu_pct_of_one_core": 1.0},
    }
    text = format_report(report)
    assert "points written   150,700 (+7,535 preloaded" in text
    assert "502.3 points/s" in text
    assert "29.40 MB (100.30 KB/s)" in text
    assert "p99 99.0 ms" in text
    assert "historical" in text and "Errors           2" in text
    assert "write: HTTP 503: busy" in text
    assert "Dropped          0 writes, 7 queries not started by the end + 10 s" in text


def _stub_server(delay: float, status: int):
    """A fake server: /health 200, /write 204, /sql answers after ``delay`` with ``status``."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def _answer(self, code: int, body: bytes = b"") -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self._answer(200, b'{"status":"healthy"}')

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/write":
                self._answer(204)
            else:
                time.sleep(delay)
                self._answer(status, b'{"total_rows": 3}' if status == 200 else b'{"error": "boom"}')

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def test_failed_queries_are_errors_and_a_slow_server_gets_drops():
    from rusts.simulator.runner import run_benchmark

    srv = _stub_server(0.0, 500)
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        r = run_benchmark(BenchmarkConfig(url=url, devices=10, duration=1.0, write_interval=0.5,
                                          query_rate=10, progress=False))
    finally:
        srv.shutdown()
    assert r["writes"]["points"] == 2 * Fleet(10).series_count
    assert r["errors"] == 10 and sum(q["count"] for q in r["queries"].values()) == 0
    assert "HTTP 500" in r["error_samples"][0]
    srv = _stub_server(0.4, 200)
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        r = run_benchmark(BenchmarkConfig(url=url, devices=10, duration=1.0, write_interval=0.5,
                                          query_rate=20, concurrency=1, drain_timeout=0.0,
                                          progress=False))
    finally:
        srv.shutdown()
    done = sum(q["count"] for q in r["queries"].values())
    assert r["errors"] == 0
    assert 2 <= done <= 4 and r["dropped"]["queries"] == 20 - done  # one at a time, 0.4 s each
    assert r["elapsed_s"] < 2.5
    assert sum(q["rows"] for q in r["queries"].values()) == 3 * done


def test_trace_has_one_row_per_request(tmp_path):
    import csv

    from rusts.simulator.runner import run_benchmark

    srv = _stub_server(0.0, 200)
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        r = run_benchmark(BenchmarkConfig(url=url, devices=4, duration=1.0, write_interval=0.5,
                                          batch_devices=2, query_rate=10, progress=False,
                                          trace=str(tmp_path / "t.csv")))
    finally:
        srv.shutdown()
    rows = list(csv.DictReader(open(tmp_path / "t.csv")))
    kinds = collections.Counter(row["kind"] for row in rows)
    assert kinds["write"] == r["writes"]["requests"] == 4
    assert sum(kinds[c] for c in CLASSES) == 10
    starts = [float(row["start_s"]) for row in rows]
    assert starts == sorted(starts) and 0 <= starts[0] and starts[-1] < 1.5
    assert all(row["status"] in ("200", "204") and float(row["latency_ms"]) > 0 for row in rows)
    assert all(row["sql"].startswith("SELECT") for row in rows if row["kind"] != "write")
