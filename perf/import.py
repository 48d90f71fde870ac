"""rusts-import throughput on the trips shape (perf/trips.py): REST and direct mode.

Writes the trips data (1.25M rows, 2 tags, 17 fields, rows in time order as in the original's
NYC file) to a Parquet file, then

- REST: starts rusts-server (WAL ``periodic``) and runs ``rusts-import parquet`` against it;
- direct: runs ``rusts-import parquet --direct`` into a fresh data directory, then starts a server
  on it to check the count.

Prints one JSON object: rows/s and values/s of each mode (the importer's own clock: REST until
the server acknowledged the last batch, direct until the last segment is written), the server's
CPU per row (REST: while acknowledging, and including the flush to segments forced afterwards),
the CPU per row of the importer (with its encoding worker processes) and the importer's peak
RSS, and the stored row counts.

    python perf/import.py [--rows 1250000] [--repeat 1] [--batch-size 10000] [--concurrency 2]
                          [--modes rest,direct] [--workers N] [--parquet FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import trips  # noqa: E402

BIN = pathlib.Path(sys.executable).parent


def write_parquet(path: pathlib.Path, rows: int, repeat: int = 1) -> None:
    """The trips table, ``repeat`` times (each copy 30 days later), streamed to one file."""
    data = trips.generate(rows)
    order = data["time"].argsort(kind="stable")  # the two series interleaved, in time order
    cols = {"timestamp": pa.array(data["time"][order], pa.timestamp("ns"))}
    for k, v in data.items():
        if k != "time":
            cols[k] = pa.array(v[order])
    table = pa.table(cols)
    shift = trips.DAYS * 86_400 * 10**9
    with pq.ParquetWriter(path, table.schema) as w:
        for i in range(repeat):
            ts = pa.array(data["time"][order] + i * shift, pa.timestamp("ns"))
            w.write_table(table.set_column(0, "timestamp", ts), row_group_size=131_072)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and of its live descendants (the server's flush worker process)."""
    total = 0.0
    try:
        with open(f"/proc/{pid}/stat") as fh:
            parts = fh.read().rsplit(")", 1)[1].split()
        total = (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                total += sum(cpu_seconds(int(c)) for c in fh.read().split())
    except OSError:  # the process ended meanwhile
        pass
    return total


class Server:
    def __init__(self, root: pathlib.Path, data: pathlib.Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = root / f"rusts-{self.port}.yml"
        cfg.write_text(f"server: {{host: 127.0.0.1, port: {self.port}}}\n"
                       f"storage: {{data_dir: {data}, wal_durability: periodic}}\n"
                       "postgres: {enabled: false}\nlogging: {level: warn}\n")
        self.log = open(root / f"server-{self.port}.log", "ab")
        self.proc = subprocess.Popen([str(BIN / "rusts-server"), "-c", str(cfg)], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        import urllib.request

        for _ in range(600):
            try:
                with urllib.request.urlopen(self.url + "/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("server did not start")

    def count(self, measurement: str) -> int | str:
        """The stored rows (or the last error, after retrying for a few minutes: a server still
        compacting a 10M-row import may answer 408/503 for a while)."""
        import urllib.request

        body = json.dumps({"query": f'SELECT count(*) FROM "{measurement}"'}).encode()
        last = ""
        for _ in range(30):
            req = urllib.request.Request(self.url + "/sql", body, {"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=300) as r:
                    return json.loads(r.read())["results"][0]["fields"]["count(*)"]
            except OSError as e:
                last = f"{type(e).__name__}: {e}"
                time.sleep(5)
        return last

    def flush(self) -> None:
        import urllib.request

        urllib.request.urlopen(urllib.request.Request(self.url + "/flush", b"", method="POST"), timeout=600).close()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(600)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def run_import(args: list[str]) -> tuple[dict, float, float]:
    """(the importer's JSON summary, its peak RSS in MiB: VmHWM, sampled until it exits (the
    rusage of a child would count this script's pages shared before exec), its CPU seconds with
    its worker processes')."""
    import resource

    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen([str(BIN / "rusts-import"), *args, "-q", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    peak = [0]

    def sample():
        while proc.poll() is None:
            try:
                with open(f"/proc/{proc.pid}/status") as fh:
                    for line in fh:
                        if line.startswith("VmHWM:"):
                            peak[0] = max(peak[0], int(line.split()[1]))
            except OSError:
                return
            time.sleep(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, err = proc.communicate()
    t.join()
    if proc.returncode != 0:
        raise RuntimeError(f"rusts-import failed: {err.decode()}")
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
    return json.loads(out.decode().strip().splitlines()[-1]), peak[0] / 1024, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_250_000)
    ap.add_argument("--batch-size", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--modes", default="rest,direct")
    ap.add_argument("--workers", type=int, default=0, help="direct: rusts-import --workers (default: its own)")
    ap.add_argument("--parquet", help="reuse this Parquet file (written first if missing)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="write the rows this many times (30 days apart): --repeat 8 makes 10M rows")
    a = ap.parse_args()
    total = a.rows * a.repeat
    out: dict = {"rows": total, "batch_size": a.batch_size, "concurrency": a.concurrency,
                 "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="rusts-import-perf-") as tmp:
        root = pathlib.Path(tmp)
        path = pathlib.Path(a.parquet) if a.parquet else root / "trips.parquet"
        t0 = time.perf_counter()
        if not path.exists():
            write_parquet(path, a.rows, a.repeat)
        out["parquet_mb"] = round(path.stat().st_size / 2**20, 1)
        out["generate_secs"] = round(time.perf_counter() - t0, 2)
        common = ["parquet", str(path), "-m", "trips", "--tags", ",".join(trips.TAGS), "-b", str(a.batch_size)]
        if "rest" in a.modes:
            srv = Server(root, root / "rest-data")
            try:
                cpu0 = cpu_seconds(srv.proc.pid)
                s, rss, icpu = run_import(common + ["-s", srv.url, "--concurrency", str(a.concurrency)])
                cpu = cpu_seconds(srv.proc.pid) - cpu0
                t0 = time.perf_counter()
                try:
                    srv.flush()
                    flush_secs = time.perf_counter() - t0
                except OSError as e:  # a server may end a request that runs for minutes
                    flush_secs = None
                    out["flush_error"] = f"{type(e).__name__}: {e}"
                cpu_all = cpu_seconds(srv.proc.pid) - cpu0
                out["rest"] = {"rows_per_sec": s["rows_per_sec"], "values_per_sec": s["values_per_sec"],
                               "seconds": s["seconds"], "server_cpu_secs": round(cpu, 2),
                               "server_cpu_us_per_row": round(cpu / total * 1e6, 3),
                               "then_flush_secs": None if flush_secs is None else round(flush_secs, 2),
                               "server_cpu_us_per_row_with_flush": round(cpu_all / total * 1e6, 3),
                               "importer_cpu_us_per_row": round(icpu / total * 1e6, 3),
                               "importer_peak_rss_mb": round(rss, 1), "stored_rows": srv.count("trips")}
            finally:
                srv.stop()
        if "direct" in a.modes:
            data = root / "direct-data"
            extra = ["--workers", str(a.workers)] if a.workers else []
            s, rss, icpu = run_import(common + ["--direct", "--data-dir", str(data), *extra])
            out["direct"] = {"rows_per_sec": s["rows_per_sec"], "values_per_sec": s["values_per_sec"],
                             "seconds": s["seconds"], "final_flush_secs": s.get("final_flush_secs"),
                             "cpu_us_per_row": round(icpu / total * 1e6, 3),
                             "importer_peak_rss_mb": round(rss, 1)}
            srv = Server(root, data)
            try:
                out["direct"]["stored_rows"] = srv.count("trips")
            finally:
                srv.stop()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
