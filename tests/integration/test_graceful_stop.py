"""SIGTERM with requests in flight on HTTP and pgwire: every request sent before the signal is
answered, the server exits cleanly, and every acknowledged write is readable after a restart."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import psycopg

# three copies of 150 rows: ~3.4M combinations, a few hundred ms of DuckDB work
SLOW = "SELECT SUM(a.v * b.v * c.v) AS s FROM g a, g b, g c"


def test_sigterm_answers_requests_in_flight_and_keeps_acknowledged_writes(server_factory):
    srv = server_factory(postgres={"enabled": True}, storage={"wal_durability": "every_write"}).start()
    with srv.client() as c:
        body = "\n".join(f"g,k=x v={i}i {1_700_000_000_000_000_000 + i}" for i in range(150))
        assert c.post("/write", content=body).status_code == 204
        expected = c.post("/sql", content=SLOW).json()["results"][0]["fields"]["s"]

    acked: list[int] = []  # batch numbers acknowledged with 204
    http_answers: list[int] = []
    pg_answers: list = []
    stop_writing = threading.Event()

    def writer(w: int) -> None:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            n = 0
            while not stop_writing.is_set():
                batch = w * 100_000 + n
                lines = "\n".join(f"acks,w={w} b={batch}i {1_600_000_000_000_000_000 + batch * 10 + i}"
                                  for i in range(10))
                try:
                    r = c.post("/write", content=lines)
                except httpx.HTTPError:
                    return  # the server stopped accepting: nothing was acknowledged
                if r.status_code == 204:
                    acked.append(batch)
                n += 1
                time.sleep(0.005)

    clients = [httpx.Client(base_url=srv.url, timeout=30) for _ in range(2)]
    for c in clients:
        assert c.get("/health").status_code == 200  # connected before the statements go

    def slow_http(c) -> None:
        try:
            r = c.post("/sql", content=SLOW)
        finally:
            c.close()
        ok = r.status_code == 200
        http_answers.append((r.status_code, r.json()["results"][0]["fields"]["s"] if ok else r.text))

    conn = psycopg.connect(f"postgresql://rusts@127.0.0.1:{srv.pg_port}/rusts", autocommit=True)

    def slow_pg() -> None:
        try:
            pg_answers.append(conn.execute(SLOW).fetchone()[0])
        finally:
            conn.close()

    writers = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
    for t in writers:
        t.start()
    time.sleep(0.5)
    queries = [threading.Thread(target=slow_http, args=(c,)) for c in clients] + [threading.Thread(target=slow_pg)]
    for t in queries:
        t.start()
    time.sleep(0.1)  # the statements are in flight
    srv.proc.send_signal(signal.SIGTERM)
    for t in queries:
        t.join(30)
    stop_writing.set()
    for t in writers:
        t.join(30)
    assert srv.proc.wait(30) == 0  # the first SIGTERM stops it, cleanly
    srv.stop()
    assert http_answers == [(200, expected)] * 2
    assert [float(x) for x in pg_answers] == [float(expected)]
    assert len(acked) > 0

    srv.start()
    with srv.client() as c:
        rows = c.post("/sql", content="SELECT b FROM acks").json()["results"]
        stored = {r["fields"]["b"] for r in rows}
        assert set(acked) <= stored
        counts = c.post("/sql", content="SELECT COUNT(*) AS n FROM acks").json()["results"][0]["fields"]["n"]
        assert counts == 10 * len(stored)  # whole batches only
    srv.stop()
