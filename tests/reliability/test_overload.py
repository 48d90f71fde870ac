"""Slow clients never starve others (the long version, with ingest overload and heavy queries, is
perf/soak/overload.py): against the real server with a small connection cap, three times as many
connections that never send a byte, plus clients trickling a request head and a body byte by
byte, and a client that opens a fresh connection to write and query must still be answered.
(Idle connections used to take every place: each new client got 503 for 75 s.)"""

from __future__ import annotations

import socket
import threading
import time

import httpx

T0 = 1_700_000_000_000_000_000
CAP = 40


def test_idle_and_trickling_connections_do_not_lock_clients_out(server_factory) -> None:
    srv = server_factory(server={"max_connections": CAP, "request_timeout_secs": 5}).start()
    idle = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(3 * CAP)]
    stop = threading.Event()

    def trickle(data: bytes) -> None:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as c:
            for b in data:
                if stop.is_set():
                    return
                c.sendall(bytes([b]))
                time.sleep(0.05)

    head = b"POST /write HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n"
    threads = [threading.Thread(target=trickle, args=(d,)) for d in (head, head, head + b"t,w=slow v=1i 1\n")]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        for i in range(5):
            with httpx.Client(base_url=srv.url, timeout=30) as c:  # a fresh connection each time
                w = c.post("/write", content=f"ov,w=probe v={i}i {T0 + i}")
                assert w.status_code == 204, w.text
                q = c.post("/query", json={"measurement": "ov", "time_range": {"start": 0, "end": 2**63 - 1}})
                assert q.status_code == 200, q.text
        assert len(q.json()["results"]) == 5
        # the connections closed to make room were the idle ones: they see the end of the stream
        ended = 0
        for s in idle:
            s.settimeout(0.01)
            try:
                ended += s.recv(1) == b""
            except TimeoutError:
                pass
        assert ended >= 10
    finally:
        stop.set()
        for t in threads:
            t.join()
        for s in idle:
            s.close()
