"""``rusts-simulator``: the endpoint monitoring (DEX) workload of the original, against a server.

    rusts-simulator benchmark --devices 1000 --duration 300 --write-interval 15 --query-rate 5
    rusts-simulator generate --devices 3 --reports 2        # print the line protocol it writes

A fleet of simulated endpoints (:mod:`rusts.simulator.fleet`) writes over HTTP line protocol
while dashboards, alert rules and drill-downs (:mod:`rusts.simulator.queries`) query ``/sql``.
See ``docs/simulator.md`` for the workload, the options and the measured figures.

Design:

* **Schedule.** Device ``i`` reports at ``(i / devices) * write_interval`` into every interval,
  so reports spread evenly. Devices are batched ``--batch-devices`` at a time, like agents
  behind a collector: a batch is posted when its last device has reported, and each line keeps
  its device's own report time. Queries are evenly spaced at ``--query-rate``. Everything is
  scheduled from the start time, not from the previous request, so a slow server does not slow
  the offered load down (no coordinated omission in the schedule). Before the clock starts, one
  untimed report of every device (the interval before the start) is written, so the first
  queries find every measurement (a running fleet has data when dashboards look at it).
* **Latency** is measured around the HTTP exchange (request written to response read) on
  keep-alive connections, as the original's client did. How late requests started compared to
  their schedule is reported separately (``start_lag_ms``): a saturated server shows there.
* **Client.** ``http.client`` on keep-alive connections in threads: ``--concurrency`` writer
  threads and as many query threads. It costs about half the CPU per request of
  ``httpx.AsyncClient`` on trio (measured: 0.9 vs 1.6 ms per ``/health`` round trip on the
  shared 2-core machine), which matters when the client shares the cores with the server. Bodies
  are built with Arrow kernels before their send time. The client's own CPU time is reported.
* **Errors.** Any status other than 204 for a write or 200 for a query, or a failed connection,
  counts as an error (a keep-alive connection the server closed is retried once first). The first
  few are kept with their messages. A request still queued ``--drain-timeout`` seconds after the
  end (the server did not keep up) is dropped and reported, which bounds the run time. The exit
  status is 1 when there were errors or drops, 2 when the options are bad or the server cannot
  be reached before the start.
"""

from __future__ import annotations

import argparse
import http.client
import json
import queue
import sys
import threading
import time
import urllib.parse

import attrs
import numpy as np

from rusts.errors import ConfigError, RustsError
from rusts.simulator.fleet import Fleet
from rusts.simulator.queries import CLASSES, QueryMix

__all__ = ["BenchmarkConfig", "format_report", "main", "run_benchmark"]

_MAX_ERROR_SAMPLES = 10


def _positive(inst, attr, value) -> None:
    if not value > 0:
        raise ConfigError(f"--{attr.name.replace('_', '-')} must be positive, got {value}",
                          key=attr.name)


def _not_negative(inst, attr, value) -> None:
    if not value >= 0:
        raise ConfigError(f"--{attr.name.replace('_', '-')} must not be negative, got {value}",
                          key=attr.name)


@attrs.frozen(kw_only=True)
class BenchmarkConfig:
    """Options of one benchmark run (the command line's, validated)."""

    url: str = "http://localhost:8086"
    devices: int = attrs.field(default=1000, validator=_positive)
    duration: float = attrs.field(default=300.0, validator=_positive)
    write_interval: float = attrs.field(default=15.0, validator=_positive)
    query_rate: float = attrs.field(default=5.0, validator=_not_negative)
    batch_devices: int = attrs.field(default=50, validator=_positive)
    concurrency: int = attrs.field(default=4, validator=_positive)
    seed: int = 1
    progress: bool = True
    drain_timeout: float = attrs.field(default=10.0, validator=_not_negative)
    trace: str | None = None  # CSV file: one row per request (start s, kind, ms, status, sql)


@attrs.define(eq=False)
class _Stats:
    """Shared by the worker threads (appends and += under one lock)."""

    lock: threading.Lock = attrs.field(factory=threading.Lock)
    write_ms: list = attrs.field(factory=list)
    write_lag_ms: list = attrs.field(factory=list)
    points: int = 0
    write_requests: int = 0
    bytes_sent: int = 0
    query_ms: dict = attrs.field(factory=lambda: {c: [] for c in CLASSES})
    query_rows: dict = attrs.field(factory=lambda: dict.fromkeys(CLASSES, 0))
    query_lag_ms: list = attrs.field(factory=list)
    preload_points: int = 0
    errors: int = 0
    dropped_writes: int = 0
    dropped_queries: int = 0
    error_samples: list = attrs.field(factory=list)
    trace: list = attrs.field(factory=list)

    def error(self, what: str) -> None:
        with self.lock:
            self.errors += 1
            if len(self.error_samples) < _MAX_ERROR_SAMPLES:
                self.error_samples.append(what)


class _Connection:
    """A keep-alive HTTP/1.1 connection; ``post`` retries once if the server closed it idle."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self._args = (host, port)
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: bytes, content_type: str) -> tuple[int, bytes, float]:
        """Returns status, body and the exchange's duration in ms."""
        headers = {"Content-Type": content_type}
        for attempt in (0, 1):
            fresh = self._conn is None
            if fresh:
                self._conn = http.client.HTTPConnection(*self._args, timeout=self._timeout)
            t0 = time.perf_counter()
            try:
                self._conn.request("POST", path, body=body, headers=headers)
                resp = self._conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if fresh or attempt:
                    raise
                continue
            except (OSError, http.client.HTTPException):
                self.close()
                raise
            ms = (time.perf_counter() - t0) * 1000.0
            if resp.will_close:
                self.close()
            return resp.status, data, ms
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _percentiles(ms: list) -> dict:
    if not ms:
        return {"count": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    a = np.asarray(ms, dtype=np.float64)
    p50, p95, p99 = np.percentile(a, (50, 95, 99))
    return {"count": len(a), "p50": round(float(p50), 3), "p95": round(float(p95), 3),
            "p99": round(float(p99), 3), "max": round(float(a.max()), 3),
            "mean": round(float(a.mean()), 3)}


def _split_url(url: str) -> tuple[str, int]:
    u = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
    if u.scheme != "http" or not u.hostname:
        raise ConfigError(f"--url must be http://host[:port], got {url!r}", key="url")
    return u.hostname, u.port or 80


def _check_server(host: str, port: int, url: str) -> None:
    conn = http.client.HTTPConnection(host, port, timeout=5.0)
    try:
        conn.request("GET", "/health")
        resp = conn.getresponse()
        resp.read()
    except (OSError, http.client.HTTPException) as e:
        raise ConfigError(f"cannot reach rusts at {url}: {e} (is rusts-server running?)",
                          key="url") from None
    finally:
        conn.close()
    if resp.status != 200:
        raise ConfigError(f"{url}/health answered {resp.status}: not a healthy rusts server",
                          key="url")


class _Runner:
    def __init__(self, cfg: BenchmarkConfig) -> None:
        self.cfg = cfg
        self.host, self.port = _split_url(cfg.url)
        self.fleet = Fleet(cfg.devices, seed=cfg.seed)
        self.mix = QueryMix(self.fleet, seed=cfg.seed)
        self.stats = _Stats()
        self.stop = threading.Event()
        self.write_q: queue.Queue = queue.Queue()
        self.query_q: queue.Queue = queue.Queue()
        self.t0 = 0.0
        self.wall0 = 0

    # ------------------------------------------------------------ schedulers (one thread each)

    def _sleep_until(self, t: float) -> bool:
        """Sleep until perf_counter() reaches ``t``; False if asked to stop."""
        while True:
            left = t - time.perf_counter()
            if left <= 0:
                return not self.stop.is_set()
            if self.stop.wait(min(left, 0.25)):
                return False

    def _phase(self) -> np.ndarray:
        """Seconds into each interval at which each device reports."""
        n = self.cfg.devices
        return np.arange(n, dtype=np.float64) * (self.cfg.write_interval / n)

    def _preload(self) -> None:
        """The fleet's previous report (the interval before the start), untimed.

        A running fleet already has data when dashboards look at it; without this the first
        queries would name measurements that do not exist yet (400).
        """
        cfg, st = self.cfg, self.stats
        n, b = cfg.devices, min(cfg.batch_devices, cfg.devices)
        ts_all = self.wall0 + ((self._phase() - cfg.write_interval) * 1e9).astype(np.int64)
        conn = _Connection(self.host, self.port, 60.0)
        try:
            for first in range(0, n, b):
                last = min(first + b, n)
                body, points = self.fleet.report(first, last, ts_all[first:last])
                try:
                    status, data, _ = conn.post("/write", body, "text/plain; charset=utf-8")
                except (OSError, http.client.HTTPException) as e:
                    st.error(f"preload write: {type(e).__name__}: {e}")
                    continue
                if status != 204:
                    st.error(f"preload write: HTTP {status}: {data[:300].decode(errors='replace')}")
                    continue
                st.preload_points += points
        finally:
            conn.close()

    def _schedule_writes(self) -> None:
        cfg, fleet = self.cfg, self.fleet
        n, b = cfg.devices, min(cfg.batch_devices, cfg.devices)
        phase = self._phase()
        wall0 = self.wall0
        try:
            cycle = 0
            while True:
                base = cycle * cfg.write_interval
                for first in range(0, n, b):
                    last = min(first + b, n)
                    send = base + phase[last - 1]
                    if send >= cfg.duration:
                        return
                    ts = wall0 + ((base + phase[first:last]) * 1e9).astype(np.int64)
                    body, points = fleet.report(first, last, ts)
                    if not self._sleep_until(self.t0 + send):
                        return
                    self.write_q.put((self.t0 + send, body, points))
                cycle += 1
        finally:
            for _ in range(self.cfg.concurrency):
                self.write_q.put(None)

    def _schedule_queries(self) -> None:
        cfg = self.cfg
        try:
            if cfg.query_rate <= 0:
                return
            k = 0
            while True:
                at = k / cfg.query_rate
                if at >= cfg.duration:
                    return
                klass, sql = self.mix.next()
                if not self._sleep_until(self.t0 + at):
                    return
                self.query_q.put((self.t0 + at, klass, sql.encode()))
                k += 1
        finally:
            for _ in range(self.cfg.concurrency):
                self.query_q.put(None)

    # ------------------------------------------------------------ workers

    def _trace(self, start: float, kind: str, ms: float | None, status: int, sql: bytes | str) -> None:
        if self.cfg.trace is not None:
            with self.stats.lock:
                self.stats.trace.append((start - self.t0, kind, ms, status, sql))

    def _write_trace(self) -> None:
        import csv

        with open(self.cfg.trace, "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["start_s", "kind", "latency_ms", "status", "sql"])
            for start, kind, ms, status, sql in sorted(self.stats.trace, key=lambda r: r[0]):
                sql = sql.decode() if isinstance(sql, bytes) else sql
                out.writerow([f"{start:.4f}", kind, "" if ms is None else f"{ms:.3f}", status, sql])

    def _too_late(self) -> bool:
        """A queued request that has not started by the end of the run plus the grace is dropped."""
        return time.perf_counter() > self.t0 + self.cfg.duration + self.cfg.drain_timeout

    def _writer(self) -> None:
        conn = _Connection(self.host, self.port, 60.0)
        st = self.stats
        try:
            while (item := self.write_q.get()) is not None:
                due, body, points = item
                if self._too_late():
                    with st.lock:
                        st.dropped_writes += 1
                    continue
                start = time.perf_counter()
                lag = (start - due) * 1000.0
                try:
                    status, data, ms = conn.post("/write", body, "text/plain; charset=utf-8")
                except (OSError, http.client.HTTPException) as e:
                    st.error(f"write: {type(e).__name__}: {e}")
                    self._trace(start, "write", None, 0, "")
                    continue
                self._trace(start, "write", ms, status, "")
                if status != 204:
                    st.error(f"write: HTTP {status}: {data[:300].decode(errors='replace')}")
                    continue
                with st.lock:
                    st.write_ms.append(ms)
                    st.write_lag_ms.append(lag)
                    st.points += points
                    st.write_requests += 1
                    st.bytes_sent += len(body)
        finally:
            conn.close()

    def _querier(self) -> None:
        conn = _Connection(self.host, self.port, 60.0)
        st = self.stats
        try:
            while (item := self.query_q.get()) is not None:
                due, klass, sql = item
                if self._too_late():
                    with st.lock:
                        st.dropped_queries += 1
                    continue
                start = time.perf_counter()
                lag = (start - due) * 1000.0
                try:
                    status, data, ms = conn.post("/sql", sql, "text/plain; charset=utf-8")
                except (OSError, http.client.HTTPException) as e:
                    st.error(f"{klass} query: {type(e).__name__}: {e}")
                    self._trace(start, klass, None, 0, sql)
                    continue
                self._trace(start, klass, ms, status, sql)
                if status != 200:
                    st.error(f"{klass} query: HTTP {status}: {data[:300].decode(errors='replace')}"
                             f" [{sql.decode()}]")
                    continue
                try:
                    rows = int(json.loads(data).get("total_rows", 0))
                except (ValueError, AttributeError):
                    st.error(f"{klass} query: answer is not a JSON object: {data[:100]!r}")
                    continue
                with st.lock:
                    st.query_ms[klass].append(ms)
                    st.query_rows[klass] += rows
                    st.query_lag_ms.append(lag)
        finally:
            conn.close()

    # ------------------------------------------------------------ run

    def run(self) -> dict:
        cfg = self.cfg
        _check_server(self.host, self.port, cfg.url)
        self.wall0 = time.time_ns()
        self._preload()
        cpu0 = time.process_time()
        self.t0 = time.perf_counter() + 0.05
        self.wall0 = time.time_ns() + 50_000_000
        threads = [threading.Thread(target=self._schedule_writes, name="sim-write-schedule"),
                   threading.Thread(target=self._schedule_queries, name="sim-query-schedule")]
        threads += [threading.Thread(target=self._writer, name=f"sim-writer-{i}")
                    for i in range(cfg.concurrency)]
        threads += [threading.Thread(target=self._querier, name=f"sim-query-{i}")
                    for i in range(cfg.concurrency)]
        for t in threads:
            t.daemon = True
            t.start()
        interrupted = False
        tty = cfg.progress and sys.stderr.isatty()
        last_print = 0.0
        try:
            while alive := [t for t in threads if t.is_alive()]:
                alive[0].join(0.5 if tty else 1.0)
                now = time.perf_counter()
                if cfg.progress and (tty or now - last_print >= 10.0):
                    last_print = now
                    self._progress(now - self.t0, tty)
        except KeyboardInterrupt:
            interrupted = True
            self.stop.set()
            for t in threads:
                t.join(5.0)
        elapsed = max(time.perf_counter() - self.t0, 1e-9)  # until the last answer
        if tty:
            sys.stderr.write("\n")
            sys.stderr.flush()
        cpu = time.process_time() - cpu0
        if cfg.trace is not None:
            try:
                self._write_trace()
            except OSError as e:
                raise ConfigError(f"cannot write --trace {cfg.trace}: {e}", key="trace") from None
        return self._report(elapsed, cpu, interrupted)

    def _progress(self, elapsed: float, tty: bool) -> None:
        st = self.stats
        with st.lock:
            points, errors = st.points, st.errors
            queries = sum(len(v) for v in st.query_ms.values())
            recent = st.write_ms[-200:]
        p99 = f"{np.percentile(recent, 99):.1f} ms" if recent else "-"
        line = (f"[{min(elapsed, self.cfg.duration):6.1f}/{self.cfg.duration:g}s] "
                f"points {points:,} ({points / max(elapsed, 1e-9):,.0f}/s)  write p99 {p99}  "
                f"queries {queries:,}  errors {errors}")
        sys.stderr.write(("\r" + line.ljust(100)) if tty else line + "\n")
        sys.stderr.flush()

    def _report(self, elapsed: float, cpu: float, interrupted: bool) -> dict:
        cfg, st, fleet = self.cfg, self.stats, self.fleet
        with st.lock:
            queries = {}
            for c in CLASSES:
                queries[c] = _percentiles(st.query_ms[c])
                queries[c]["rows"] = st.query_rows[c]
            return {
                "config": {"url": cfg.url, "devices": cfg.devices, "duration_s": cfg.duration,
                           "write_interval_s": cfg.write_interval, "query_rate": cfg.query_rate,
                           "batch_devices": cfg.batch_devices, "concurrency": cfg.concurrency,
                           "seed": cfg.seed, "drain_timeout_s": cfg.drain_timeout},
                "series": fleet.series_count,
                "series_per_device": round(fleet.series_count / fleet.devices, 3),
                "elapsed_s": round(elapsed, 3),
                "interrupted": interrupted,
                "writes": {
                    "points": st.points,
                    "preload_points": st.preload_points,
                    "requests": st.write_requests,
                    "throughput_points_per_s": round(st.points / elapsed, 1),
                    "bytes": st.bytes_sent,
                    "mb": round(st.bytes_sent / 2**20, 2),
                    "kb_per_s": round(st.bytes_sent / 1024 / elapsed, 2),
                    "latency_ms": _percentiles(st.write_ms),
                    "start_lag_ms": _percentiles(st.write_lag_ms),
                },
                "queries": queries,
                "query_start_lag_ms": _percentiles(st.query_lag_ms),
                "errors": st.errors,
                "dropped": {"writes": st.dropped_writes, "queries": st.dropped_queries},
                "error_samples": list(st.error_samples),
                "client": {"cpu_s": round(cpu, 3), "cpu_pct_of_one_core": round(100 * cpu / elapsed, 2)},
            }


def run_benchmark(cfg: BenchmarkConfig) -> dict:
    """Run the workload against ``cfg.url`` for ``cfg.duration`` seconds; return the report.

    Raises:
        ConfigError: bad URL, or the server cannot be reached before the start.
    """
    return _Runner(cfg).run()


def _ms(v) -> str:
    return "-" if v is None else f"{v:.1f} ms" if v >= 10 else f"{v:.2f} ms"


def format_report(r: dict) -> str:
    """The human-readable form of a :func:`run_benchmark` report."""
    c, w = r["config"], r["writes"]
    lat = w["latency_ms"]
    out = [
        "RusTs endpoint monitoring benchmark" + ("  (interrupted)" if r["interrupted"] else ""),
        f"  devices {c['devices']:,}, series {r['series']:,} ({r['series_per_device']:.2f} per device), "
        f"duration {c['duration_s']:g} s, write interval {c['write_interval_s']:g} s, "
        f"query rate {c['query_rate']:g}/s",
        "",
        "Writes",
        f"  points written   {w['points']:,} (+{w['preload_points']:,} preloaded before the start)",
        f"  throughput       {w['throughput_points_per_s']:,.1f} points/s",
        f"  requests         {w['requests']:,} ({c['batch_devices']} devices per request)",
        f"  data volume      {w['mb']:.2f} MB ({w['kb_per_s']:.2f} KB/s)",
        f"  latency          p50 {_ms(lat['p50'])}   p95 {_ms(lat['p95'])}   p99 {_ms(lat['p99'])}"
        f"   max {_ms(lat['max'])}",
        "",
        f"Queries          {'count':>7} {'p50':>10} {'p95':>10} {'p99':>10} {'max':>10}",
    ]
    for klass in CLASSES:
        q = r["queries"][klass]
        out.append(f"  {klass:<14} {q['count']:>7,} {_ms(q['p50']):>10} {_ms(q['p95']):>10} "
                   f"{_ms(q['p99']):>10} {_ms(q['max']):>10}")
    wl, ql = w["start_lag_ms"], r["query_start_lag_ms"]
    out += [
        "",
        f"Start lag p99    writes {_ms(wl['p99'])}, queries {_ms(ql['p99'])} (behind schedule)",
        f"Client CPU       {r['client']['cpu_s']:.2f} s ({r['client']['cpu_pct_of_one_core']:.1f}% of one core)",
        f"Errors           {r['errors']}",
    ]
    out += [f"  {e}" for e in r["error_samples"]]
    d = r["dropped"]
    if d["writes"] or d["queries"]:
        out.append(f"Dropped          {d['writes']} writes, {d['queries']} queries not started by the "
                   f"end + {c['drain_timeout_s']:g} s (the server did not keep up)")
    return "\n".join(out)


# ------------------------------------------------------------------ command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rusts-simulator",
                                description="Endpoint monitoring (DEX) workload simulator for RusTs.")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("benchmark", help="write and query a running server, print figures")
    b.add_argument("--url", default="http://localhost:8086", help="server (default %(default)s)")
    b.add_argument("--devices", type=int, default=1000, help="simulated endpoints (default %(default)s)")
    b.add_argument("--duration", type=float, default=300.0, help="seconds (default %(default)s)")
    b.add_argument("--write-interval", type=float, default=15.0,
                   help="seconds between two reports of a device (default %(default)s)")
    b.add_argument("--query-rate", type=float, default=5.0, help="queries per second, all classes "
                   "(default %(default)s)")
    b.add_argument("--batch-devices", type=int, default=50,
                   help="devices per write request, as a collector batches them (default %(default)s)")
    b.add_argument("--concurrency", type=int, default=4,
                   help="connections for writes, and as many for queries (default %(default)s)")
    b.add_argument("--seed", type=int, default=1, help="random seed (default %(default)s)")
    b.add_argument("--drain-timeout", type=float, default=10.0,
                   help="after the run, seconds to start what is still queued; the rest is dropped "
                   "and reported (default %(default)s)")
    b.add_argument("--trace", metavar="CSV", help="write one row per request (start s, kind, "
                   "latency ms, status, sql) to this file")
    b.add_argument("--json", action="store_true", help="print the report as one JSON object")
    b.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    g = sub.add_parser("generate", help="print the line protocol of some reports (no server)")
    g.add_argument("--devices", type=int, default=3)
    g.add_argument("--reports", type=int, default=1, help="reports per device")
    g.add_argument("--write-interval", type=float, default=15.0)
    g.add_argument("--seed", type=int, default=1)
    return p


def _generate(args) -> None:
    fleet = Fleet(args.devices, seed=args.seed)
    step = int(args.write_interval * 1e9)
    start = time.time_ns() - args.reports * step
    phase = (np.arange(args.devices) * (step // args.devices)).astype(np.int64)
    out = sys.stdout.buffer
    for k in range(args.reports):
        body, _ = fleet.report(0, args.devices, start + k * step + phase)
        out.write(body)
    out.flush()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rusts-simulator``; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "generate":
            if args.devices < 1 or args.reports < 0 or args.write_interval <= 0:
                raise ConfigError("--devices, --reports and --write-interval must be positive")
            _generate(args)
            return 0
        cfg = BenchmarkConfig(url=args.url, devices=args.devices, duration=args.duration,
                              write_interval=args.write_interval, query_rate=args.query_rate,
                              batch_devices=args.batch_devices, concurrency=args.concurrency,
                              seed=args.seed, progress=not args.no_progress,
                              drain_timeout=args.drain_timeout, trace=args.trace)
        report = run_benchmark(cfg)
    except RustsError as e:
        print(f"rusts-simulator: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 1
    if args.json:
        print(json.dumps(report))
    else:
        print(format_report(report))
    dropped = report["dropped"]
    return 1 if report["errors"] or dropped["writes"] or dropped["queries"] or report["interrupted"] else 0


if __name__ == "__main__":
    sys.exit(main())
