"""Queries that stop: a query past its time limit, or whose client went away, stops using CPU, and
the server keeps answering, flushing and stopping on SIGTERM (issue 13, "queries that stop")."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx

# four copies of 400 rows: 2.56e10 combinations, minutes of DuckDB work if nothing stops it
CROSS = ("SELECT SUM(a.v * b.v * c.v * d.v) FROM r a, r b, r c, r d "
         "WHERE a.v + b.v + c.v + d.v > -1")


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def _load(c: httpx.Client) -> None:
    lines = "\n".join(f"r,k=x v={i}i {1_700_000_000_000_000_000 + i}" for i in range(400))
    assert c.post("/write", content=lines).status_code == 204


def _cpu_after(pid: int, seconds: float) -> float:
    a = _cpu_seconds(pid)
    time.sleep(seconds)
    return _cpu_seconds(pid) - a


def test_timed_out_queries_stop_and_the_server_keeps_serving(server_factory):
    srv = server_factory(query={"timeout_secs": 1, "max_concurrent": 4}).start()
    pid = srv.proc.pid
    with srv.client() as c:
        _load(c)
        answers = []

        def run():
            with srv.client() as c2:
                answers.append(c2.post("/sql", content=CROSS))

        threads = [threading.Thread(target=run) for _ in range(2)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        took = time.monotonic() - t0
        assert [r.status_code for r in answers] == [408, 408], [r.text for r in answers]
        assert "time limit" in answers[0].json()["error"]
        assert took < 10
        # the cancelled statements no longer burn CPU: an idle second costs well under a core
        time.sleep(0.5)
        assert _cpu_after(pid, 1.0) < 0.3
        t1 = time.monotonic()
        r = c.post("/sql", content="SELECT COUNT(*) FROM r")
        assert r.status_code == 200 and r.json()["results"][0]["fields"]["count(*)"] == 400
        assert time.monotonic() - t1 < 2
        assert c.get("/health").json() == {"status": "healthy"}
        assert c.post("/flush").status_code == 204
    t2 = time.monotonic()
    assert srv.stop(signal.SIGTERM, timeout=15) == 0
    assert time.monotonic() - t2 < 10


def test_a_client_that_goes_away_stops_its_query(server_factory):
    srv = server_factory(query={"timeout_secs": 60}).start()
    pid = srv.proc.pid
    with srv.client() as c:
        _load(c)
    try:
        httpx.post(srv.url + "/sql", content=CROSS, timeout=1.0)
    except httpx.TimeoutException:
        pass  # the client hung up after 1 s
    time.sleep(1.0)
    assert _cpu_after(pid, 1.0) < 0.3
    with srv.client() as c:
        assert c.get("/health").json() == {"status": "healthy"}
        r = c.post("/sql", content="SELECT COUNT(*) FROM r")
        assert r.status_code == 200


def test_health_is_degraded_while_queries_hold_every_worker(server_factory):
    srv = server_factory(query={"timeout_secs": 4, "max_concurrent": 1}).start()
    with srv.client() as c:
        _load(c)
        done = []

        def run():
            with srv.client() as c2:
                done.append(c2.post("/sql", content=CROSS).status_code)

        t = threading.Thread(target=run)
        t.start()
        deadline = time.monotonic() + 3
        health = None
        while time.monotonic() < deadline:
            health = c.get("/health").json()
            if health["status"] == "degraded":
                break
            time.sleep(0.05)
        assert health["status"] == "degraded", health
        assert any("query workers" in r for r in health["reasons"])
        t.join(30)
        assert done == [408]
        time.sleep(0.3)
        assert c.get("/health").json() == {"status": "healthy"}


def test_pgwire_cancel_request_stops_the_query(server_factory):
    import psycopg

    srv = server_factory(postgres={"enabled": True}, query={"timeout_secs": 60}).start()
    with srv.client() as c:
        _load(c)
    conn = psycopg.connect(f"postgresql://rusts@127.0.0.1:{srv.pg_port}/rusts", autocommit=True)
    errors = []

    def run():
        try:
            conn.execute(CROSS)
        except psycopg.Error as e:
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.5)
    conn.cancel()  # a CancelRequest on a new connection, with the session's key
    t.join(10)
    assert len(errors) == 1 and isinstance(errors[0], psycopg.errors.QueryCanceled), errors
    time.sleep(0.5)
    assert _cpu_after(srv.proc.pid, 1.0) < 0.3
    assert conn.execute("SELECT COUNT(*) FROM r").fetchone()[0] == 400  # the session goes on
    conn.close()


def test_row_and_memory_limits_give_clear_errors(server_factory):
    srv = server_factory(query={"max_rows": 100, "memory_limit_mb": 1}).start()
    with srv.client() as c:
        _load(c)
        r = c.post("/sql", content="SELECT * FROM r")
        assert r.status_code == 400 and "query.max_rows (100)" in r.json()["error"]
        r = c.post("/query", json={"measurement": "r", "time_range": {"start": 0, "end": 2**62}})
        assert r.status_code == 400 and "max_rows" in r.json()["error"]
        assert c.post("/sql", content="SELECT * FROM r LIMIT 50").status_code == 200
        # 60,000 rows scanned into the general path: over 1 MiB
        lines = "\n".join(f"big,k=k{i % 7} a={i}.5,b={i}i,c={i}.25 {1_700_000_000_000_000_000 + i}"
                          for i in range(60_000))
        assert c.post("/write", content=lines).status_code == 204
        r = c.post("/sql", content="SELECT SUM(x.a * y.b + x.c) FROM big x JOIN big y ON x.time = y.time")
        assert r.status_code == 400 and "memory limit" in r.json()["error"], r.text
        # a small scan whose DuckDB working set is large: DuckDB's own limit (1 MB here)
        r = c.post("/sql", content="SELECT COUNT(*) FROM (SELECT DISTINCT a.v * 1000 + b.v AS x, "
                                   "repeat('y', 64) AS pad FROM r a, r b) t")
        assert r.status_code == 400 and "memory" in r.json()["error"], r.text
        assert c.get("/health").json() == {"status": "healthy"}
