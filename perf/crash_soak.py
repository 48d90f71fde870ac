"""Crash soak: SIGKILL the real server at random moments during ingest, restart, check every
acknowledged point is still there. Repeats per WAL durability mode.

    python perf/crash_soak.py --kills 200 --modes every_write,periodic,os_default

A process crash (not a power cut) keeps what reached the OS, so every mode except ``none`` must
lose nothing that was acknowledged. Prints JSON: kills, acknowledged points, lost points, per mode.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import random
import sys
import tempfile
import threading
import time

import httpx

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "integration"))
from conftest import Server  # noqa: E402  (the test suite's server harness)

T0 = 1_700_000_000_000_000_000


def writer(url: str, acked: list, stop: threading.Event, seq: int, batch: int) -> None:
    with httpx.Client(base_url=url, timeout=10) as c:
        while not stop.is_set():
            body = "\n".join(f"soak,w=a seq={seq + i}i {T0 + (seq + i) * 1000}" for i in range(batch))
            try:
                r = c.post("/write", content=body)
            except httpx.HTTPError:
                return
            if r.status_code == 204:
                acked.extend(range(seq, seq + batch))
            seq += batch


def stored(srv: Server) -> set[int]:
    with httpx.Client(base_url=srv.url, timeout=120) as c:
        r = c.post("/query", json={"measurement": "soak", "time_range": {"start": 0, "end": 2**63 - 1},
                                   "fields": ["seq"]})
        r.raise_for_status()
        return {row["fields"]["seq"] for row in r.json()["results"]}


def soak(mode: str, kills: int, seed: int, batch: int) -> dict:
    rng = random.Random(seed)
    root = pathlib.Path(tempfile.mkdtemp(prefix=f"soak-{mode}-"))
    srv = Server(root, storage={"wal_durability": mode, "memtable": {"max_points": 5000, "max_age_secs": 1}})
    acked: list[int] = []
    seq = 0
    t0 = time.time()
    for _ in range(kills):
        srv.start()
        stop = threading.Event()
        t = threading.Thread(target=writer, args=(srv.url, acked, stop, seq, batch))
        t.start()
        time.sleep(rng.uniform(0.05, 0.5))
        srv.kill()
        stop.set()
        t.join()
        seq = (max(acked) if acked else seq) + 10 * batch
    srv.start()
    have = stored(srv)
    srv.stop()
    lost = set(acked) - have
    return {"mode": mode, "kills": kills, "acknowledged": len(acked), "lost": len(lost),
            "seconds": round(time.time() - t0, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--modes", default="every_write,periodic,os_default")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    out = [soak(m, a.kills, a.seed, a.batch) for m in a.modes.split(",")]
    print(json.dumps({"runs": out, "all_ok": all(r["lost"] == 0 for r in out)}, indent=1))
    return 0 if all(r["lost"] == 0 for r in out) else 1


if __name__ == "__main__":
    sys.exit(main())
