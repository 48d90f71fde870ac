"""Shared helpers of the reliability suite (tests/reliability and perf/soak): the real server
harness of tests/integration, tmpfs filling, reading back what is stored."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

_IT = pathlib.Path(__file__).resolve().parents[1] / "integration" / "conftest.py"
_spec = importlib.util.spec_from_file_location("rusts_reliability_server", _IT)
_server_mod = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _server_mod
_spec.loader.exec_module(_server_mod)
Server = _server_mod.Server

T0 = 1_700_000_000_000_000_000
ALL = {"start": 0, "end": 2**63 - 1}


def fill(path: pathlib.Path) -> int:
    """Write ``path`` until the file system is full; returns the bytes written."""
    chunk = b"\0" * 65536
    n = 0
    with open(path, "wb", buffering=0) as f:
        for size in (65536, 4096, 512, 1):
            while True:
                try:
                    n += f.write(chunk[:size])
                except OSError:
                    break
    return n


def stored_seqs(url: str, measurement: str, field: str = "seq") -> list[int]:
    """Every value of ``field`` stored in ``measurement`` (duplicates kept)."""
    import httpx

    with httpx.Client(base_url=url, timeout=60) as c:
        r = c.post("/query", json={"measurement": measurement, "time_range": ALL, "fields": [field]})
        assert r.status_code == 200, r.text
        return [row["fields"][field] for row in r.json()["results"] if field in row["fields"]]


# ---------------------------------------------------------------------- crash-kill harness

class History:
    """Client-side record of a crash run: every batch of points written with its outcome
    (ok / refused / unknown) and every delete with its outcome (checked against final reads)."""

    def __init__(self) -> None:
        import threading

        self.lock = threading.Lock()
        self.ok: set[int] = set()        # seqs acknowledged (204)
        self.refused: set[int] = set()   # seqs answered with an error status: never stored
        self.unknown: set[int] = set()   # seqs whose request died with the server
        self.ok_at: dict[int, float] = {}  # seq -> monotonic time of the acknowledgement
        self.deleted: list[tuple[int, int]] = []  # [start, end) ranges of "dl" acknowledged deleted
        self.dl_written: list[tuple[int, int]] = []  # [start, end) ranges written before their delete
        self.errors: list[str] = []      # unexpected answers (5xx other than 503, bad query answers)
        self.kill_times: list[float] = []
        self.start_secs: list[float] = []  # seconds from each (re)start to /ready

    def record(self, seqs: range, outcome: str) -> None:
        import time as _t

        with self.lock:
            getattr(self, outcome).update(seqs)
            if outcome == "ok":
                now = _t.monotonic()
                for s in seqs:
                    self.ok_at[s] = now


def _ingest(url: str, hist: History, stop, w: int, start: int, batch: int) -> None:
    import httpx

    seq = start
    with httpx.Client(base_url=url, timeout=10) as c:
        while not stop.is_set():
            seqs = range(seq, seq + batch)
            body = "\n".join(f"ck,w=w{w} seq={s}i {T0 + s * 1000}" for s in seqs)
            seq += batch
            try:
                r = c.post("/write", content=body)
            except httpx.HTTPError:
                hist.record(seqs, "unknown")
                return
            if r.status_code == 204:
                hist.record(seqs, "ok")
            else:
                hist.record(seqs, "refused")
                if r.status_code != 503:
                    hist.errors.append(f"write {r.status_code}: {r.text[:200]}")


def _not_yet_written(r) -> bool:
    """A 400 naming an unknown measurement/field/table: the query ran before the first write."""
    return r.status_code == 400 and ("unknown" in r.text.lower() or "does not exist" in r.text)


def _chaos(url: str, hist: History, stop, rng, dl_base: int) -> None:
    """Flushes, deletes of a side measurement, queries: the background work a kill may hit."""
    import httpx

    k = 0
    with httpx.Client(base_url=url, timeout=10) as c:
        while not stop.is_set():
            op = rng.choice(["flush", "delete", "query", "sql"])
            try:
                if op == "flush":
                    c.post("/flush")
                elif op == "delete":
                    lo = T0 + (dl_base + k) * 10**9
                    hi = lo + 10**9
                    k += 1
                    body = "\n".join(f"dl,x=1 v={i}i {lo + i * 1000}" for i in range(50))
                    if c.post("/write", content=body).status_code != 204:
                        continue
                    with hist.lock:
                        hist.dl_written.append((lo, hi))
                    r = c.post("/delete", json={"measurement": "dl",
                                                "time_range": {"start": lo, "end": hi}})
                    if r.status_code == 200:
                        with hist.lock:
                            hist.deleted.append((lo, hi))
                elif op == "query":
                    r = c.post("/query", json={"measurement": "ck", "time_range": ALL,
                                               "aggregation": {"function": "Count", "field": "seq"}})
                    if r.status_code not in (200, 503) and not _not_yet_written(r):
                        hist.errors.append(f"query {r.status_code}: {r.text[:200]}")
                else:
                    r = c.post("/sql", json={"query": "SELECT count(*) FROM ck"})
                    if r.status_code not in (200, 503) and not _not_yet_written(r):
                        hist.errors.append(f"sql {r.status_code}: {r.text[:200]}")
            except httpx.HTTPError:
                return


def crash_cycle(srv, hist: History, rng, *, writers: int = 3, batch: int = 50,
                min_secs: float = 0.1, max_secs: float = 1.0) -> None:
    """Start the server (waits for /ready), run writers + chaos, SIGKILL at a random moment."""
    import threading
    import time as _t

    t0 = _t.monotonic()
    srv.start(timeout=getattr(srv, "start_timeout", 30.0))
    hist.start_secs.append(_t.monotonic() - t0)
    stop = threading.Event()
    base = (max(hist.ok | hist.refused | hist.unknown, default=0) // 1_000_000 + 1) * 1_000_000
    threads = [threading.Thread(target=_ingest, args=(srv.url, hist, stop, w, base + w * 100_000, batch))
               for w in range(writers)]
    threads.append(threading.Thread(target=_chaos, args=(srv.url, hist, stop, rng, base // 1000)))
    for t in threads:
        t.start()
    _t.sleep(rng.uniform(min_secs, max_secs))
    srv.kill()
    hist.kill_times.append(_t.monotonic())
    stop.set()
    for t in threads:
        t.join()


def verify(srv, hist: History) -> dict:
    """Restart, read everything back, compare with the history. Returns the figures."""
    import httpx

    srv.start(timeout=getattr(srv, "start_timeout", 30.0))
    with httpx.Client(base_url=srv.url, timeout=120) as c:
        r = c.post("/query", json={"measurement": "ck", "time_range": ALL, "fields": ["seq"]})
        assert r.status_code == 200 or _not_yet_written(r), r.text  # (mode none: maybe nothing)
        rows = r.json()["results"] if r.status_code == 200 else []
        d = c.post("/query", json={"measurement": "dl", "time_range": ALL})
        assert d.status_code == 200 or _not_yet_written(d), d.text
        dl_rows = d.json()["results"] if d.status_code == 200 else []
        problems = c.get("/stats").json()["problems"]
    stored = [row["fields"]["seq"] for row in rows]
    wrong = [row for row in rows if (row["timestamp"] - T0) // 1000 != row["fields"]["seq"]]
    have = set(stored)
    resurrected = [row["timestamp"] for row in dl_rows
                   if any(lo <= row["timestamp"] < hi for lo, hi in hist.deleted)]
    lost = hist.ok - have
    return {
        "acknowledged": len(hist.ok), "stored": len(have), "lost": len(lost),
        "lost_seqs": sorted(lost)[:10],
        "duplicates": len(stored) - len(have), "wrong_values": len(wrong),
        "invented": len(have - hist.ok - hist.unknown),
        "refused_present": len(have & hist.refused),
        "unknown_present": len(have & hist.unknown), "unknown": len(hist.unknown),
        "deletes_acknowledged": len(hist.deleted), "deleted_rows_back": len(resurrected),
        "unexpected_answers": hist.errors[:5], "problems": problems,
    }
