"""Before and after, in one run: the same benchmarks against two builds of rusts, taking turns.

    .venv/bin/python perf/before_after.py --before /path/to/older/checkout/.venv \
        [--rounds 2] [--only ingest,trips,tsbs,simulator,http]

``--before`` is the virtualenv of another build (e.g. a ``git worktree`` of an older commit with
its own ``.venv``); this checkout's ``.venv`` is "after". Every benchmark is this checkout's
script, run once with each build's Python (so the server it starts, ``rusts-server`` beside that
Python, is that build's), rounds alternating which build goes first, because this machine's speed
drifts by tens of percent within minutes. Benchmarks:

* ``ingest``: perf/ingest.py, TSBS cpu-only (100 hosts x 6 h), 1 and 4 connections: values/s;
* ``trips``: perf/query.py, the 44-query trips suite on 250,000 rows: average and max ms;
* ``tsbs``: perf/tsbs_queries.py (rusts only, 100 hosts x 24 h): SQL and JSON median ms per type;
* ``simulator``: each build's server under ``rusts-simulator benchmark`` (this build's client),
  1,000 devices for 60 s: write and query p50/p99, errors;
* ``http``: perf/http_cost.py --compare: /ping and one-row SQL p50/p99, and the 10 MiB write delay.

Prints one JSON object: each figure for both builds (the median over rounds) and after/before.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
AFTER = pathlib.Path(sys.executable).parent


def run_json(cmd: list[str], timeout: float = 1800) -> dict:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=HERE.parent)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr[-2000:]}")
    out = p.stdout
    return json.loads(out[out.index("{"):])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------- benchmarks: venv -> figures
def ingest(venv: pathlib.Path) -> dict:
    r = run_json([str(venv / "python"), str(HERE / "ingest.py"), "--targets", "rusts", "--connections", "1,4",
                  "--hours", "6"])
    out = {}
    for x in r["runs"]:
        c = x["connections"]
        out[f"ingest_values_per_sec_{c}conn"] = x["values_per_sec"]
        out[f"ingest_values_per_sec_with_flush_{c}conn"] = x["values_per_sec_with_flush"]
        out[f"ingest_server_cpu_s_per_million_{c}conn"] = x["server_cpu_s_per_million"]
    return out


def trips(venv: pathlib.Path) -> dict:
    r = run_json([str(venv / "python"), str(HERE / "query.py"), "--rows", "250000", "--n", "5"])
    return {"trips_avg_ms": r["avg_ms"], "trips_max_ms": r["max_ms"]}


def tsbs(venv: pathlib.Path) -> dict:
    r = run_json([str(venv / "python"), str(HERE / "tsbs_queries.py"), "--targets", "rusts", "--hours", "24",
                  "--n", "20"])
    return {f"tsbs_{k.replace(':', '_')}_ms": v["median_ms"] for k, v in r["results"]["rusts"].items()
            if isinstance(v, dict) and "median_ms" in v}


def simulator(venv: pathlib.Path) -> dict:
    work = pathlib.Path(tempfile.mkdtemp(prefix="ba-sim-"))
    port = free_port()
    (work / "rusts.yml").write_text(f"server:\n  host: 127.0.0.1\n  port: {port}\nstorage:\n"
                                    f"  data_dir: {work / 'data'}\nlogging:\n  level: warn\n")
    proc = subprocess.Popen([str(venv / "rusts-server"), "-c", str(work / "rusts.yml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import http.client
        for _ in range(400):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/ready")
                if c.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.05)
        r = run_json([str(AFTER / "rusts-simulator"), "benchmark", "--url", f"http://127.0.0.1:{port}",
                      "--devices", "1000", "--duration", "60", "--write-interval", "15", "--query-rate", "5",
                      "--json", "--no-progress"])
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    out = {"simulator_errors": r["errors"], "simulator_write_p50_ms": r["writes"]["latency_ms"]["p50"],
           "simulator_write_p99_ms": r["writes"]["latency_ms"]["p99"]}
    for klass, q in r["queries"].items():
        lat = q.get("latency_ms", q) if isinstance(q, dict) else {}
        for p in ("p50", "p99"):
            if isinstance(lat, dict) and lat.get(p) is not None:
                out[f"simulator_{klass}_{p}_ms"] = lat[p]
    return out


def http_cost(before: pathlib.Path) -> dict:
    return run_json([str(AFTER / "python"), str(HERE / "http_cost.py"), "--compare", str(before / "rusts-server")])


BENCHES = {"ingest": ingest, "trips": trips, "tsbs": tsbs, "simulator": simulator}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="the older build's virtualenv (its bin/ is used)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", default="ingest,trips,tsbs,simulator,http")
    a = ap.parse_args()
    before = pathlib.Path(a.before)
    before = before / "bin" if (before / "bin").is_dir() else before
    builds = {"before": before, "after": AFTER}
    names = a.only.split(",")
    figures: dict[str, dict[str, list]] = {"before": {}, "after": {}}
    out: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rounds": a.rounds,
                 "before": str(before), "after": str(AFTER)}
    for rnd in range(a.rounds):
        order = ["before", "after"] if rnd % 2 == 0 else ["after", "before"]
        for name in names:
            if name == "http":
                continue
            for b in order:
                t = time.time()
                res = BENCHES[name](builds[b])
                print(json.dumps({"round": rnd, "bench": name, "build": b, "secs": round(time.time() - t),
                                  **res}), file=sys.stderr, flush=True)
                for k, v in res.items():
                    if isinstance(v, (int, float)):
                        figures[b].setdefault(k, []).append(v)
    if "http" in names:
        out["http_cost"] = http_cost(before)
    table = {}
    for k in figures["after"]:
        if k in figures["before"]:
            bm, am = statistics.median(figures["before"][k]), statistics.median(figures["after"][k])
            table[k] = {"before": bm, "after": am, "after_over_before": round(am / bm, 3) if bm else None,
                        "runs": {"before": figures["before"][k], "after": figures["after"][k]}}
    out["figures"] = table
    with open("/proc/loadavg") as f:
        out["loadavg_at_end"] = f.read().split()[:3]
    out["ended"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
