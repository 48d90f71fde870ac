"""On-disk bytes per value for the same TSBS cpu-only data in rusts, VictoriaMetrics and InfluxDB 1.6.

    python perf/storage_size.py --targets rusts,victoriametrics,influxdb [--hours 24] [--settle 90]

Loads the data into each freshly started server (perf/ingest.py's targets), lets it flush and
compact (rusts: POST /flush then its compactor; the peers: until the data directory size has not
changed for 15 s, at most --settle seconds), stops it gracefully, and prints JSON with the data
directory size and bytes per field value (8.64M values for 24 h; timestamps not counted as values).
The WAL is excluded for every target (rusts' WAL is empty after a graceful stop anyway).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import ingest  # noqa: E402
import tsbs  # noqa: E402


def data_bytes(path: str) -> int:
    total = 0
    for root, dirs, files in os.walk(path):
        if os.path.basename(root) in ("wal",) or "/wal" in root:
            continue
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def settle(path: str, limit: float, quiet: float = 15.0) -> None:
    last, since, t_end = -1, time.time(), time.time() + limit
    while time.time() < t_end:
        size = data_bytes(path)
        if size != last:
            last, since = size, time.time()
        elif time.time() - since >= quiet:
            return
        time.sleep(1)


def wait_cold(c: http.client.HTTPConnection, limit: float) -> float | None:
    """Seconds until every rusts segment is in the cold tier (the default configuration tiers
    historical partitions once they have been idle for ``storage.cold_idle_secs``), or None."""
    t0 = time.time()
    while time.time() - t0 < limit:
        c.request("GET", "/stats")
        tiers = json.loads(c.getresponse().read())["segments"]["bytes_per_tier"]
        if tiers and set(tiers) == {"cold"}:
            return round(time.time() - t0, 1)
        time.sleep(1)
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--targets", default="rusts,victoriametrics,influxdb")
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--hours", type=float, default=24)
    ap.add_argument("--settle", type=float, default=90)
    ap.add_argument("--wal-mode", default="periodic")
    a = ap.parse_args()
    lines = tsbs.cached(a.hosts, a.hours)
    bodies = tsbs.batches(lines, 5000)
    n_values = len(lines) * len(tsbs.FIELDS)
    out = {"values": n_values, "lines": len(lines), "results": {}}
    for name in a.targets.split(","):
        work = tempfile.mkdtemp(prefix=f"size-{name}-")
        t = ingest.TARGETS[name](work, a)
        try:
            t.start()
            ingest.load(t.port, t.write_path, bodies, 2, t.proc.pid)
            if name == "rusts":
                c = http.client.HTTPConnection("127.0.0.1", t.port, timeout=600)
                c.request("POST", "/flush")
                c.getresponse().read()
                out["results"]["rusts_cold_after_flush_secs"] = wait_cold(c, a.settle)
            settle(t.data_dir(), a.settle)
            t.stop()
            size = data_bytes(t.data_dir())
            out["results"][name] = {"bytes": size, "bytes_per_value": round(size / n_values, 3)}
            print(name, out["results"][name], file=sys.stderr, flush=True)
        finally:
            t.stop()
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
