"""REST mode: stream batches to a running server.

Against rusts-server the default body is an Arrow IPC stream of the normalised batch, posted to
``/api/v1/write/arrow`` (nothing is printed and parsed again); ``--format lp`` posts line protocol
to ``/write`` for InfluxDB-compatible targets. Line-protocol input files are posted as they are.

``--concurrency`` requests are in flight (one keep-alive connection per sender thread) while the
main thread reads and converts the next batches. A 503 (the server sheds load) or a lost
connection is retried with exponential backoff (0.1 s doubling to 5 s, ``--retries`` attempts).
Re-sending a batch the server may already have stored is safe: a point is identified by series,
timestamp and field, and the later write wins, so a repeated batch stores nothing twice. A
body over the server's ``max_body_size`` (413) is split in halves and sent again.
"""

from __future__ import annotations

import collections
import concurrent.futures
import http.client
import json
import signal
import threading
import time
import urllib.parse

import numpy as np
import pyarrow as pa

from rusts.importer.errors import TargetError
from rusts.importer.pipeline import Unit, account, units

ARROW_PATH = "/api/v1/write/arrow"


class Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: dict, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> dict:
        try:
            obj = json.loads(self.body or b"{}")
        except ValueError:
            return {"error": self.body[:500].decode("utf-8", "replace")}
        return obj if isinstance(obj, dict) else {"error": str(obj)[:500]}

    def error(self) -> str:
        return str(self.json().get("error") or f"HTTP {self.status}")


class RestTarget:
    """A server reached over HTTP(S), one keep-alive connection per thread."""

    def __init__(self, url: str, *, token: str | None = None, retries: int = 8, timeout: float = 120.0) -> None:
        parts = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TargetError(f"invalid server URL {url!r} (expected http://host:port)")
        self.url = url
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.retries = max(1, retries)
        self.timeout = timeout
        self._local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        c = getattr(self._local, "conn", None)
        if c is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            c = self._local.conn = cls(self.host, self.port, timeout=self.timeout)
        return c

    def _drop(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None,
                retries: int | None = None) -> Response:
        headers = dict(self.headers)
        if content_type:
            headers["Content-Type"] = content_type
        attempts = self.retries if retries is None else retries
        delay, last = 0.1, ""
        for attempt in range(attempts):
            try:
                c = self._conn()
                c.request(method, self.prefix + path, body=body, headers=headers)
                r = c.getresponse()
                resp = Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
                if r.will_close:
                    self._drop()
            except (OSError, http.client.HTTPException) as e:
                self._drop()
                last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            else:
                if resp.status != 503:
                    return resp
                last = f"HTTP 503: {resp.error()}"
                try:
                    delay = max(delay, float(resp.headers.get("retry-after", 0)))
                except ValueError:
                    pass
            if attempt + 1 < attempts:
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise TargetError(f"server {self.url} unavailable after {attempts} attempt(s): {last}")

    def check(self) -> None:
        """Fail early and clearly when nothing answers at the URL."""
        try:
            r = self.request("GET", "/health", retries=2)
        except TargetError as e:
            raise TargetError(f"cannot reach a server at {self.url} ({str(e).split(': ', 1)[-1]}); "
                              "is rusts-server running? (or import into a data directory with --direct)") from None
        if r.status == 401:
            raise TargetError(f"server {self.url} needs authentication: pass --token (or set RUSTS_TOKEN)")


def load_keys_rest(target: RestTarget, measurement: str, column: str):
    from rusts.importer.dedup import KeySet, distinct_sql

    body = json.dumps({"query": distinct_sql(measurement, column)}).encode()
    r = target.request("POST", "/sql", body, "application/json")
    if r.status == 400 and "does not exist" in r.error():  # nothing stored yet
        return KeySet(column, [])
    if r.status != 200:
        raise TargetError(f"dedup query failed: HTTP {r.status}: {r.error()}")
    rows = r.json().get("results", [])
    vals = [row["tags"][column] if column in row.get("tags", {}) else row.get("fields", {}).get(column)
            for row in rows]
    return KeySet(column, [v for v in vals if v is not None])


def _arrow_body(rb: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, rb.schema) as w:
        w.write_batch(rb)
    return sink.getvalue().to_pybytes()


class Sender:
    """Builds each unit's request and interprets the answer."""

    def __init__(self, target: RestTarget, wire: str) -> None:
        self.target = target
        self.wire = wire

    def prepare(self, u: Unit):
        """In the reading thread: (path, body, content type, points, values) or None."""
        if u.lp is not None:
            from rusts.protocols.line_protocol import parse

            b = parse(u.lp)  # to count points and values for the summary; the server parses again
            return ("/write?precision=ns", u.lp, "text/plain; charset=utf-8", b.point_count, b.value_count)
        nb = u.norm.batch
        if not nb.num_rows:
            return None
        from rusts.importer.mapping import value_count

        if self.wire == "lp":
            from rusts.importer.lpformat import encode

            body, values = encode(nb, u.plan)
            return ("/write?precision=ns", body, "text/plain; charset=utf-8", nb.num_rows, values)
        q = urllib.parse.urlencode({"measurement": u.plan.measurement, "tags": ",".join(u.plan.tags),
                                    "timestamp_column": u.plan.time_column})
        return (f"{ARROW_PATH}?{q}", _arrow_body(nb), "application/vnd.apache.arrow.stream",
                nb.num_rows, value_count(nb, u.plan))

    def send(self, u: Unit, req) -> tuple[int, int, list]:
        """Post one unit; (points written, values written, [(row, message)] rejected)."""
        path, body, ctype, points, values = req
        r = self.target.request("POST", path, body, ctype)
        if r.status in (200, 204):
            if r.status == 200 and path.startswith(ARROW_PATH):
                obj = r.json()
                return int(obj.get("points_written", points)), int(obj.get("values_written", values)), []
            return points, values, []
        if r.status == 413 and u.norm is not None and u.norm.batch.num_rows > 1:
            return self._split(u)
        obj = r.json()
        if r.status == 400 and "points_written" in obj:  # partial write: some rows refused
            written = int(obj["points_written"])
            errs = [(int(e.get("row", e.get("line_number", 0))), str(e.get("error_message", "")))
                    for e in obj.get("data", [])]
            from rusts.importer.direct import written_values

            return written, written_values(values, points, written), errs
        where = f"{u.path} rows {u.first_row}..{u.first_row + u.rows - 1}"
        if r.status == 404 and path.startswith(ARROW_PATH):
            raise TargetError(f"server {self.target.url} has no {ARROW_PATH} route (not rusts-server, or an "
                              "older one): use --format lp")
        if r.status == 401:
            raise TargetError(f"server {self.target.url} refused the credentials: {r.error()} (--token)")
        raise TargetError(f"server rejected the batch of {where}: HTTP {r.status}: {r.error()}")

    def _split(self, u: Unit):
        n = u.norm.batch.num_rows
        total_p = total_v = 0
        errs: list = []
        for a, b in ((0, n // 2), (n // 2, n)):
            from rusts.importer.mapping import Normalised

            part = Unit(u.file_index, u.path, u.position, b - a, u.first_row,
                        norm=Normalised(u.norm.batch.slice(a, b - a), u.norm.rows[a:b], {}), plan=u.plan)
            p, v, e = self.send(part, self.prepare(part))
            total_p, total_v = total_p + p, total_v + v
            errs.extend((row + a, msg) for row, msg in e)
        return total_p, total_v, errs


def _record_errors(stats, u: Unit, errs: list) -> None:
    if not errs:
        return
    by_msg: dict[str, list[int]] = {}
    for row, msg in errs:
        by_msg.setdefault(msg, []).append(row)
    for msg, rows in by_msg.items():
        if u.lp is not None:
            where = f"{u.path} line {u.first_row + rows[0] - 1}"
        else:
            idx = min(max(rows[0] - 1, 0), len(u.norm.rows) - 1)
            where = f"{u.path} row {int(np.asarray(u.norm.rows)[idx])}"
        stats.reject(msg, len(rows), where)


def run_rest(opts, target: RestTarget, stats, progress, *, wire: str = "arrow", concurrency: int = 2,
             dedup_column: str | None = None, state=None) -> bool:
    """Import over HTTP; returns False when interrupted (SIGINT/SIGTERM) after committing whole batches."""
    target.check()
    keys = load_keys_rest(target, opts.measurement, dedup_column) if dedup_column else None
    sender = Sender(target, wire)
    start_file, start_pos = (state.file_index, state.position) if state is not None else (0, 0)
    committed = state.committed_rows if state is not None else 0
    inflight: collections.deque = collections.deque()
    pool = concurrent.futures.ThreadPoolExecutor(concurrency, thread_name_prefix="rusts-import-send")
    old = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def on_term(signum, frame):
        raise KeyboardInterrupt

    def finish_oldest() -> None:
        nonlocal committed
        u, fut = inflight[0]
        res = fut.result() if fut is not None else None  # an interruption here leaves it queued
        inflight.popleft()
        account(stats, u)
        if res is not None:
            points, values, errs = res
            stats.points_written += points
            stats.values_written += values
            stats.batches += 1
            _record_errors(stats, u, errs)
        committed += u.rows
        if state is not None:
            state.save(u.file_index, u.position, committed)
        progress.update()

    interrupted = False
    for sig in old:  # also when started in the background, where SIGINT is inherited as ignored
        signal.signal(sig, on_term)
    try:
        try:
            for u in units(opts, start_file, start_pos, keys, sender.prepare):
                fut = pool.submit(sender.send, u, u.payload) if u.payload is not None else None
                inflight.append((u, fut))
                while len(inflight) > concurrency or (inflight and inflight[0][1] is not None
                                                      and inflight[0][1].done()):
                    finish_oldest()
            while inflight:
                finish_oldest()
        except KeyboardInterrupt:
            interrupted = True
            for sig, handler in old.items():  # a second Ctrl-C stops at once (the state stays valid)
                signal.signal(sig, handler if sig == signal.SIGTERM else signal.default_int_handler)
            with_errors = None
            while inflight:
                try:
                    finish_oldest()
                except TargetError as e:  # the batch in flight failed: its rows are not committed
                    with_errors = e
                    inflight.clear()
            if with_errors is not None:
                raise with_errors from None
    finally:
        for _, fut in inflight:
            if fut is not None:
                fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if state is not None and not interrupted:
        state.save(len(opts.files), 0, committed, complete=True)
    return not interrupted
