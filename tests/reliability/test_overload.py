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


def test_writes_queued_behind_a_slow_parser_are_shed_not_left_to_time_out(tmp_path, monkeypatch) -> None:
    """Writes arrive faster than they can be parsed: once the queue makes a write wait longer
    than the budget, new arrivals are refused at once (OverloadedError: 503 + Retry-After)
    instead of queueing until clients time out; the queued ones are all stored; when the queue
    has drained, writes are taken again."""
    import pytest
    import trio

    import rusts
    from rusts.errors import OverloadedError
    from rusts.protocols import line_protocol

    real = line_protocol.parse

    def slow(*a, **k):
        time.sleep(0.5)
        return real(*a, **k)

    def body(k: int) -> str:  # large enough to be parsed in a thread
        return "\n".join(f"ov,k=k{k} v={i}i {T0 + i}" for i in range(6000))

    async def run() -> None:
        async with rusts.open(tmp_path, wal_durability="none") as db:
            monkeypatch.setattr(line_protocol, "parse", slow)
            done = []

            async def write(k: int) -> None:
                done.append((await db.write(body(k))).points)

            async with trio.open_nursery() as n:
                for k in range(12):  # about 6 s of parsing queued at once
                    n.start_soon(write, k)
                await trio.sleep(4)  # the parse starting now waited about 4 s
                with pytest.raises(OverloadedError) as e:
                    await db.write(body(99))
                assert e.value.http_status == 503 and e.value.retry_after > 0
            assert done == [6000] * 12  # every queued write was stored
            assert (await db.write(body(100))).points == 6000  # drained: taken again
            monkeypatch.setattr(line_protocol, "parse", real)
            rows = (await db.query({"measurement": "ov", "time_range": {"start": 0, "end": 2**63 - 1},
                                    "aggregation": {"function": "Count", "field": "v"}})).to_rows()
            assert rows[0]["fields"]["count_v"] == 13 * 6000

    trio.run(run)
