"""Crash safety against the real server: SIGKILL during ingest loses no acknowledged point;
a damaged WAL tail or a corrupt segment is reported and isolated while the rest stays readable."""

from __future__ import annotations

import os
import pathlib
import random
import threading
import time

import httpx

ALL = {"start": 0, "end": 2**63 - 1}
T0 = 1_700_000_000_000_000_000


def _writer(url: str, acked: list, stop: threading.Event, start_seq: int, batch: int = 50) -> None:
    seq = start_seq
    with httpx.Client(base_url=url, timeout=10) as c:
        while not stop.is_set():
            lines = "\n".join(f"crash,w=a seq={seq + i}i {T0 + (seq + i) * 1000}" for i in range(batch))
            try:
                r = c.post("/write", content=lines)
            except httpx.HTTPError:
                return
            if r.status_code == 204:
                acked.extend(range(seq, seq + batch))
            seq += batch


def _stored_seqs(srv) -> set[int]:
    with srv.client() as c:
        r = c.post("/query", json={"measurement": "crash", "time_range": ALL, "fields": ["seq"]})
        assert r.status_code == 200, r.text
        return {row["fields"]["seq"] for row in r.json()["results"]}


def test_sigkill_during_ingest_loses_no_acknowledged_point(server_factory):
    srv = server_factory(storage={"wal_durability": "every_write",
                                  "memtable": {"max_points": 3000, "max_age_secs": 1}})
    rng = random.Random(42)
    acked: list[int] = []
    next_seq = 0
    kills = 20
    for _ in range(kills):
        srv.start()
        stop = threading.Event()
        t = threading.Thread(target=_writer, args=(srv.url, acked, stop, next_seq))
        t.start()
        time.sleep(rng.uniform(0.15, 0.6))
        srv.kill()  # SIGKILL mid-ingest
        stop.set()
        t.join()
        next_seq = (max(acked) + 1000) if acked else next_seq + 1000
    srv.start()
    stored = _stored_seqs(srv)
    missing = set(acked) - stored
    assert acked, "the writer never got an acknowledgement"
    assert not missing, f"{len(missing)} acknowledged points lost, e.g. {sorted(missing)[:5]}"
    # a graceful stop flushes everything: after restart the data is in segments, the WAL replay is empty
    assert srv.stop() == 0
    srv.start()
    assert _stored_seqs(srv) == stored
    with srv.client() as c:
        stats = c.get("/stats").json()
    assert stats["segments"]["count"] >= 1
    assert stats["memtable"]["active_points"] == 0


def _wal_files(data_dir: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in (data_dir / "wal").iterdir() if p.is_file())


def test_torn_and_bitflipped_wal_tail_is_repaired_and_reported(server_factory):
    srv = server_factory(storage={"wal_durability": "every_write"}).start()
    with srv.client() as c:
        for i in range(10):
            body = "\n".join(f"crash,w=b seq={i * 10 + j}i {T0 + i * 10 + j}" for j in range(10))
            assert c.post("/write", content=body).status_code == 204
    srv.kill()
    wal = [p for p in _wal_files(srv.data_dir) if p.stat().st_size > 0][-1]
    data = bytearray(wal.read_bytes())
    data[-3] ^= 0xFF  # flip bits in the last record
    wal.write_bytes(bytes(data[:-1]))  # and tear it
    srv.start()
    stored = _stored_seqs(srv)
    assert set(range(90)) <= stored  # every record before the damaged one survives
    assert 99 not in stored or len(stored) == 100
    with srv.client() as c:
        problems = c.get("/stats").json()["problems"]
    assert any("WAL" in p for p in problems), problems
    # the server keeps accepting writes after the repair
    with srv.client() as c:
        assert c.post("/write", content=f"crash,w=c seq=1000i {T0 + 5000}").status_code == 204


def test_corrupt_segment_is_quarantined_and_the_rest_stays_readable(server_factory):
    srv = server_factory().start()
    with srv.client() as c:
        # two partitions (one day apart) -> two segment files
        c.post("/write", content="\n".join(f"seg,p=a v={i}i {T0 + i}" for i in range(100)))
        c.post("/write", content="\n".join(f"seg,p=b v={i}i {T0 + 86_400 * 10**9 * 3 + i}" for i in range(100)))
    assert srv.stop() == 0  # graceful: flushes to segments
    segs = sorted((srv.data_dir / "segments").rglob("*"), key=lambda p: str(p))
    segs = [p for p in segs if p.is_file()]
    assert len(segs) == 2
    victim = segs[0]
    raw = bytearray(victim.read_bytes())
    for k in range(len(raw) // 2 - 8, len(raw) // 2 + 8):
        raw[k] ^= 0x5A
    raw[-5] ^= 0x5A  # the footer too, so open() notices
    victim.write_bytes(bytes(raw))
    srv.start()
    with srv.client() as c:
        stats = c.get("/stats").json()
        rows = c.post("/query", json={"measurement": "seg", "time_range": ALL}).json()["results"]
    assert any("quarantine" in p for p in stats["problems"]), stats["problems"]
    assert (srv.data_dir / "quarantine").exists() and any((srv.data_dir / "quarantine").iterdir())
    # the other partition is intact
    tags = {r["tags"]["p"] for r in rows}
    assert len(rows) == 100 and len(tags) == 1
    assert os.path.exists(srv.data_dir)
