"""TSBS query latencies of two builds over the SAME data directory (code against code).

    .venv/bin/python perf/tsbs_same_data.py --before /path/to/older/checkout/.venv [--n 30] [--rounds 2]

perf/before_after.py loads each build with its own defaults, so the data each one queries can be
in a different state (e.g. one build's default tiers a day-old partition into one cold segment of
day-long blocks, the other keeps hot segments). Here one data directory is built once by this
build (TSBS cpu-only, 100 hosts x 24 h, flushed, compacted, tiered), copied, and served by each
build in turn (the on-disk format is the same); every query type runs N times over JSON and SQL
with the same seeded windows for both builds, builds alternating by round. Prints JSON: median ms
per type, mode and build, and after/before.
"""

from __future__ import annotations

import argparse
import http.client
import json
import pathlib
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import types

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import ingest  # noqa: E402
import tsbs  # noqa: E402
import tsbs_queries  # noqa: E402


def build(work: str) -> None:
    t = ingest.Rusts(work, types.SimpleNamespace(wal_mode="periodic"))
    t.start()
    try:
        c = http.client.HTTPConnection("127.0.0.1", t.port, timeout=300)
        for body in tsbs.batches(tsbs.cached(100, 24)):
            c.request("POST", "/write", body=body)
            r = c.getresponse()
            r.read()
            assert r.status == 204, r.status
        c.request("POST", "/flush")
        c.getresponse().read()
        ingest.settle_compaction(t.port)
    finally:
        t.stop()


def measure(venv: pathlib.Path, base: str, queries: list, modes: list[str]) -> dict:
    """Serve a copy of ``base`` with ``venv``'s rusts-server; median ms per (type, mode)."""
    import yaml

    work = tempfile.mkdtemp(prefix="tsbs-same-")
    try:
        shutil.copytree(base, work, dirs_exist_ok=True)
        port = ingest.free_port()
        cfg = yaml.safe_load(open(work + "/rusts.yml"))
        cfg["server"]["port"] = port
        cfg["storage"]["data_dir"] = work + "/data"
        yaml.safe_dump(cfg, open(work + "/rusts.yml", "w"))
        proc = subprocess.Popen([str(venv / "rusts-server"), "-c", work + "/rusts.yml"],
                                stdout=subprocess.DEVNULL, stderr=open(work + "/log", "wb"))
        try:
            ingest.wait_http(port, "/ready")
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            out = {}
            for name, qs in queries:
                for mode in modes:
                    for q in qs[:3]:  # warm-up
                        tsbs_queries._send(conn, mode, q)
                    out[f"{name} {mode}"] = round(statistics.median(tsbs_queries._send(conn, mode, q) for q in qs), 3)
            return out
        finally:
            proc.terminate()
            proc.wait(60)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--before", required=True, help="the other build's virtualenv (its bin/ or the .venv)")
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    before = pathlib.Path(a.before)
    before = before if before.name == "bin" else before / "bin"
    after = pathlib.Path(sys.executable).parent
    base = tempfile.mkdtemp(prefix="tsbs-same-base-")
    try:
        build(base)
        rng = random.Random(5)
        queries = [(name, [fn(rng) for _ in range(a.n)]) for name, fn in tsbs_queries.query_types(100, 24)]
        runs: dict = {"before": [], "after": []}
        for rnd in range(a.rounds):
            order = [("before", before), ("after", after)]
            for label, venv in (order if rnd % 2 == 0 else order[::-1]):
                got = measure(venv, base, queries, ["json", "sql"])
                runs[label].append(got)
                print(json.dumps({"round": rnd, "build": label, **got}), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    out = {}
    for k in runs["after"][0]:
        b = statistics.median(r[k] for r in runs["before"])
        f = statistics.median(r[k] for r in runs["after"])
        out[k] = {"before_ms": b, "after_ms": f, "after_over_before": round(f / b, 2)}
    print(json.dumps({"n": a.n, "rounds": a.rounds, "figures": out}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
