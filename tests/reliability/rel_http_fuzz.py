"""Fuzzing of the HTTP request path: generator, in-process driver and wire driver, shared by the
PR tier (tests/reliability/test_fuzz.py) and the long tier (perf/soak/fuzz.py --target http).

**Inputs** (:func:`generate`, seeded): structured requests for every route of API.md (methods,
paths, query strings, headers, bodies for /write, /api/v2/write, /query, /sql, /delete, ...)
with framing attacks mixed in: non-ASCII digits and junk in Content-Length, duplicated and folded
headers, bare LF / CR line ends, chunked bodies with bad sizes, gzip bodies that are truncated or
bombs, huge heads, HTTP/1.0, upgrades, pipelined requests, bodies sent in fragments; a share of
cases is a mutation (rel_fuzz.mutate) of a generated case or of the seed corpus in
``corpus/http/`` (raw request bytes, one file per entry).

**In-process driver** (:class:`Harness`): a real Database on a temporary data directory behind
the server's own serving loop (:func:`rusts.protocols.http.serve.serve_asgi` with the app of
:func:`rusts.protocols.http.asgi.create_asgi_app`: our hypercorn connection class, the hot routes
and the Quart app). Connections are in-memory trio streams handed to the loop's connection
handler (the listener accepts nothing): many cases run one after the other on a connection while
keep-alive holds. A case has *settled* when the server waits for input with nothing unread and
no request of the connection is working (each request in flight is waiting for its body), or the
server closed the connection; then every response received is checked.

**Oracle** per response: a well-formed HTTP/1.1 response; status below 500, or 503 with
Retry-After; every 4xx from the app has a JSON object body with an ``error`` string (hypercorn's
own answer to unparseable framing, an empty 400 / 431 that closes the connection, is counted
apart); a JSON answer parses. Per case: no traceback or ERROR line logged, no exception escaping
the connection, settled within the deadline (else a hang); every 100 cases and after each
failure a fresh connection must get ``204`` from ``/ping``.

**Wire driver** (:func:`run_wire`): the same inputs over loopback sockets against a rusts-server
process (read until the server closes or is quiet), its log checked for tracebacks.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import random
import re
import socket
import sys
import tempfile
import time

import trio

from rel_http_gen import Case, Problem, check_response, generate, http_corpus, parse_responses  # noqa: F401
_DEBUG = bool(os.environ.get("RUSTS_FUZZ_DEBUG"))

# ----------------------------------------------------------------------------- in-process driver

class _LogWatch(logging.Handler):
    """Every record with a traceback, or at ERROR and above."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            try:
                self.seen.append(self.format(record)[-3000:])
            except Exception:  # noqa: BLE001 - a record that does not format is still seen
                self.seen.append(repr(record.msg)[:3000])


class _Sock:
    """What hypercorn and our connection class ask of a socket."""

    family = socket.AF_INET

    def __init__(self, port: int) -> None:
        self._peer = ("127.0.0.1", port)

    def getpeername(self):
        return self._peer

    def getsockname(self):
        return ("127.0.0.1", 8086)


class _Pipe:
    """One direction of an in-memory connection: bytes, an EOF, a reader's parking lot."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.eof = False      # the writer closed (or half-closed)
        self.gone = False     # the reader closed: writes fail
        self.lot = trio.lowlevel.ParkingLot()

    def put(self, data) -> None:
        if self.gone or self.eof:
            raise trio.BrokenResourceError("the other end closed")
        self.buf += data
        self.lot.unpark_all()

    def close(self) -> None:
        self.eof = True
        self.lot.unpark_all()

    def take(self, max_bytes=None) -> bytes:
        n = len(self.buf) if max_bytes is None else min(max_bytes, len(self.buf))
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    async def get(self, max_bytes=None) -> bytes:
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self.buf and not self.eof:
            await self.lot.park()
        data = self.take(max_bytes)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return data


class Client:
    """The client's end of an in-memory connection."""

    def __init__(self) -> None:
        self.up = _Pipe()    # client -> server
        self.down = _Pipe()  # server -> client

    async def send_all(self, data: bytes) -> None:
        self.up.put(data)
        await trio.lowlevel.checkpoint()

    def read_nowait(self, buf: bytearray) -> bool:
        """Append what the server sent to ``buf``; True once the server closed its side."""
        buf += self.down.take()
        return self.down.eof

    async def receive_some(self, max_bytes=None) -> bytes:
        return await self.down.get(max_bytes)

    async def aclose(self) -> None:
        self.up.close()
        self.down.gone = True
        await trio.lowlevel.checkpoint()


class _ServerSide(trio.abc.HalfCloseableStream):
    """The server's end of an in-memory connection; knows when the server waits for input."""

    def __init__(self, client: Client, port: int) -> None:
        self._c = client
        self.socket = _Sock(port)
        self.waiting = False  # in receive_some with nothing to read
        self.closed = False

    async def send_all(self, data) -> None:
        if self.closed:
            raise trio.ClosedResourceError
        self._c.down.put(data)
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        if self.closed:
            raise trio.ClosedResourceError
        self._c.down.close()
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes=None):
        if self.closed:
            raise trio.ClosedResourceError
        self.waiting = True
        try:
            return await self._c.up.get(max_bytes)
        finally:
            self.waiting = False

    async def aclose(self) -> None:
        self.closed = True
        self._c.down.close()
        self._c.up.gone = True
        await trio.lowlevel.checkpoint()


class _Requests:
    """ASGI middleware: per client port, the methods of requests seen (in order) and the
    requests in flight, each marked while it waits in ``receive()`` for body that has not come."""

    def __init__(self, app) -> None:
        self.app = app
        self.methods: dict[int, list[str]] = {}
        self.flight: dict[int, list[list[bool]]] = {}  # port -> [[in receive, body complete], ...]
        self.total = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        port = (scope.get("client") or ("", 0))[1]
        self.total += 1
        self.methods.setdefault(port, []).append(scope["method"])
        st = [False, False]
        flight = self.flight.setdefault(port, [])
        flight.append(st)

        async def rec():
            st[0] = True
            try:
                msg = await receive()
            finally:
                st[0] = False
            if msg["type"] != "http.request" or not msg.get("more_body", False):
                st[1] = True
            return msg

        try:
            await self.app(scope, rec, send)
        finally:
            flight.remove(st)

    def working(self, port: int) -> bool:
        """Whether a request of this connection is doing something (not just waiting for body)."""
        return any(not (s[0] and not s[1]) for s in self.flight.get(port, ()))


class Stats:
    def __init__(self) -> None:
        self.cases = 0
        self.requests = 0
        self.responses = 0
        self.statuses: dict[int, int] = {}
        self.framing_4xx = 0
        self.closed_by_server = 0
        self.connections = 0
        self.upgraded = 0
        self.crashes = 0
        self.hangs = 0
        self.errors_5xx = 0
        self.bad_answers = 0
        self.tracebacks = 0
        self.pings = 0
        self.ping_failures = 0
        self.slowest = 0.0
        self.over_1s = 0
        self.examples: list[dict] = []

    def failures(self) -> int:
        return self.crashes + self.hangs + self.errors_5xx + self.bad_answers + self.tracebacks + self.ping_failures

    def fail(self, kind: str, case_no: int, history: bytes, detail: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.examples) < 20:
            ex = {"kind": kind, "case": case_no, "detail": detail[:3000], "input": history[-4000:].hex()}
            self.examples.append(ex)
            print(json.dumps(ex), file=sys.stderr, flush=True)

    def to_json(self, secs: float) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k not in ("examples", "statuses", "slowest")}
        d["statuses"] = dict(sorted(self.statuses.items()))
        d["slowest_ms"] = round(self.slowest * 1000, 1)
        d["seconds"] = round(secs, 1)
        d["failures"] = self.failures()
        d["cases_per_sec"] = round(self.cases / max(secs, 1e-9))
        d["examples"] = self.examples
        return d


class Harness:
    """A Database and the HTTP serving loop in this trio run; :meth:`connect` gives in-memory
    connections to it. Use ``async with Harness.open(data_dir) as h:``."""

    def __init__(self) -> None:
        self.handle = None
        self.requests: _Requests | None = None
        self.watch = _LogWatch()
        self._port = 10000
        self._stop = trio.Event()

    def stop(self) -> None:
        """End :meth:`run`: the serving loop is cancelled, the database closed in order."""
        self._stop.set()

    @classmethod
    def config(cls, data_dir: str, request_timeout_secs: float = 0.5):
        from rusts.config import config_from_dict

        return config_from_dict({
            "server": {"host": "127.0.0.1", "port": 0, "max_body_size": 1 << 20,
                       "request_timeout_secs": request_timeout_secs, "max_connections": 1000},
            "storage": {"data_dir": data_dir, "wal_durability": "periodic", "memtable": {"max_age_secs": 30}},
            "query": {"timeout_secs": 20},
        })

    async def run(self, cfg, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        import rusts.db
        from rusts.protocols.http.asgi import create_asgi_app
        from rusts.protocols.http.serve import hypercorn_config, serve_asgi

        root = logging.getLogger()
        root.addHandler(self.watch)
        old_level = root.level
        root.setLevel(logging.INFO)
        real_serve = trio.serve_listeners
        got = trio.Event()

        async def capture(handler, listeners, *, handler_nursery=None, task_status=trio.TASK_STATUS_IGNORED):
            self.handle = handler  # the loop's per-connection handler; nothing is accepted
            got.set()
            await trio.sleep_forever()

        try:
            async with rusts.db.open(config=cfg) as db:
                self.db = db
                app = create_asgi_app(db, body_timeout=float(cfg.server.request_timeout_secs))
                self.requests = _Requests(app)
                hcfg = hypercorn_config(cfg.server, "127.0.0.1", 0)
                trio.serve_listeners = capture
                try:
                    async with trio.open_nursery() as n:
                        await n.start(lambda task_status: serve_asgi(
                            self.requests, hcfg, max_connections=cfg.server.max_connections,
                            head_timeout=float(cfg.server.request_timeout_secs), task_status=task_status))
                        await got.wait()
                        trio.serve_listeners = real_serve
                        task_status.started(self)
                        await self._stop.wait()
                        n.cancel_scope.cancel()  # the HTTP side goes; the database shuts down in order
                finally:
                    trio.serve_listeners = real_serve
        finally:
            root.removeHandler(self.watch)
            root.setLevel(old_level)

    def connect(self, nursery, errors: list) -> tuple:
        """A new connection: ``(client stream, server side, client port)``."""
        self._port = self._port + 1 if self._port < 65000 else 10001
        client = Client()
        side = _ServerSide(client, self._port)
        self.requests.methods[self._port] = []  # a port number is reused after 55,000 connections
        self.requests.flight[self._port] = []

        async def serve_one():
            try:
                await self.handle(side)
            except BaseException as e:  # noqa: BLE001 - anything escaping a connection is a crash
                if isinstance(e, trio.Cancelled):
                    raise
                import traceback

                errors.append("".join(traceback.format_exception(e))[-3000:])

        nursery.start_soon(serve_one)
        return client, side, self._port


async def _settle(h: Harness, side: _ServerSide, port: int, deadline: float) -> bool:
    """Wait until the connection has settled (see the module doc); False at the deadline."""
    from trio.testing import wait_all_tasks_blocked

    while True:
        await wait_all_tasks_blocked()
        if side.closed or (side.waiting and not h.requests.working(port)):
            return True
        if trio.current_time() > deadline:
            return False
        await trio.sleep(0.0005)  # something works in a thread, a subprocess or a timer


async def ping(h: Harness, nursery, errors: list, timeout: float = 20.0) -> str | None:
    """A fresh connection's GET /ping must get 204: None, or what went wrong."""
    client, side, port = h.connect(nursery, errors)
    buf = bytearray()
    try:
        await client.send_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        with trio.move_on_after(timeout):
            while b"\r\n\r\n" not in buf:
                data = await client.receive_some(65536)
                if not data:
                    break
                buf += data
        if not buf.startswith(b"HTTP/1.1 204 "):
            return f"/ping answered {bytes(buf[:200])!r}"
        return None
    finally:
        await client.aclose()


async def run_cases(h: Harness, cases: int, seed: int, *, deadline_secs: float = 30.0, ping_every: int = 100,
                    skip: int = 0, stop=None, stats: Stats | None = None) -> Stats:
    """Run ``cases`` generated cases (seeded) against the harness; returns the statistics."""
    rng = random.Random(f"http-{seed}")
    conn_rng = random.Random(f"http-conn-{seed}")  # apart: a replay (skip) generates the same cases
    st = stats or Stats()
    errors: list[str] = []
    async with trio.open_nursery() as nursery:
        slow_lane = trio.CapacityLimiter(64)
        state = {"conn": None}

        async def close_conn():
            c = state["conn"]
            state["conn"] = None
            if c is not None:
                with trio.CancelScope(shield=True):
                    await c["client"].aclose()

        async def finish(c, case_no, eof) -> None:
            """Check the responses received so far on connection ``c``."""
            methods = h.requests.methods.get(c["port"], [])
            try:
                rs, c["finals"], upgraded = parse_responses(c["buf"], methods, c["finals"], eof)
            except Problem as e:
                st.fail("bad_answers", case_no, c["history"], str(e))
                c["dead"] = True
                return
            for status, headers, body in rs:
                st.responses += 1
                st.statuses[status] = st.statuses.get(status, 0) + 1
                why = check_response(status, headers, body)
                if why == "framing":
                    st.framing_4xx += 1
                elif why is not None:
                    st.fail("errors_5xx" if status >= 500 else "bad_answers", case_no, c["history"], why)
            if upgraded:
                st.upgraded += 1
                c["dead"] = True

        async def run_slow(case, case_no):
            """An incomplete request left for the server's deadlines: 408 or a close, in time."""
            async with slow_lane:
                client, side, port = h.connect(nursery, errors)
                c = {"client": client, "port": port, "buf": bytearray(), "finals": 0, "history": case.data}
                try:
                    for p in case.parts:
                        await client.send_all(p)
                    eof = False
                    with trio.move_on_after(deadline_secs) as cs:
                        while not eof:
                            data = await client.receive_some(1 << 20)
                            eof = not data
                            c["buf"] += data
                    if cs.cancelled_caught:
                        st.fail("hangs", case_no, case.data, "an incomplete request was not cut off in time")
                    await finish(c, case_no, True)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                finally:
                    await client.aclose()

        for i in range(cases):
            if stop is not None and stop:
                break
            case = generate(rng)
            if i < skip:
                continue
            st.cases += 1
            if st.cases % 50_000 == 0:
                print(json.dumps({"progress": st.cases, "failures": st.failures(), "responses": st.responses,
                                  "connections": st.connections, "time": time.strftime("%H:%M:%S")}),
                      file=sys.stderr, flush=True)
            if _DEBUG:
                print("case", i, case.slow, case.data[:80], file=sys.stderr, flush=True)
            n_errors = len(h.watch.seen) + len(errors)
            t = time.perf_counter()
            if case.slow:
                await slow_lane.acquire_on_behalf_of(("wait", i))  # backpressure: at most 64 waiting
                slow_lane.release_on_behalf_of(("wait", i))
                nursery.start_soon(run_slow, case, i)
                continue
            if state["conn"] is None:
                client, side, port = h.connect(nursery, errors)
                st.connections += 1
                state["conn"] = {"client": client, "side": side, "port": port, "buf": bytearray(), "finals": 0,
                                 "history": bytearray(), "dead": False, "left": conn_rng.randint(1, 40)}
            c = state["conn"]
            c["history"] += case.data
            eof = False
            try:
                for p in case.parts:
                    await c["client"].send_all(p)
                    if len(case.parts) > 1:
                        await _settle(h, c["side"], c["port"], trio.current_time() + deadline_secs)
                        eof = c["client"].read_nowait(c["buf"])
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                eof = True
            if not await _settle(h, c["side"], c["port"], trio.current_time() + deadline_secs):
                st.fail("hangs", i, c["history"], f"not settled within {deadline_secs}s: server reading "
                        f"{c['side'].waiting}, requests in flight [in receive, body complete] "
                        f"{h.requests.flight.get(c['port'])}, methods {h.requests.methods.get(c['port'])}")
                c["dead"] = True
            eof = c["client"].read_nowait(c["buf"]) or eof or c["side"].closed
            if eof:
                eof = c["client"].read_nowait(c["buf"]) or True
            await finish(c, i, eof)
            dt = time.perf_counter() - t
            st.slowest = max(st.slowest, dt)
            st.over_1s += dt > 1.0
            c["left"] -= 1
            if eof:
                st.closed_by_server += 1
            if eof or c["dead"] or c["left"] <= 0:
                await close_conn()
            new_errors = h.watch.seen[n_errors - len(errors):] if len(h.watch.seen) + len(errors) > n_errors else []
            if len(h.watch.seen) + len(errors) > n_errors:
                detail = "\n".join([*h.watch.seen[-3:], *errors[-3:]])
                st.fail("crashes" if len(errors) and errors[-1] in detail else "tracebacks", i,
                        bytes(c["history"]), detail)
                del new_errors
            if (i + 1) % ping_every == 0 or st.failures() and st.examples and st.examples[-1]["case"] == i:
                st.pings += 1
                why = await ping(h, nursery, errors)
                if why:
                    st.fail("ping_failures", i, bytes(c["history"]), why)
        await close_conn()
        with trio.move_on_after(deadline_secs + 5):
            async with slow_lane:  # the slow lane's cases finish
                while slow_lane.borrowed_tokens > 1:
                    await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    st.requests = h.requests.total
    return st


async def fuzz_in_process(cases: int, seed: int = 1, data_dir: str | None = None, **kw) -> dict:
    """Open a database on a temporary directory, serve it, run ``cases`` cases; the statistics."""
    with tempfile.TemporaryDirectory(prefix="rusts-http-fuzz-") as tmp:
        cfg = Harness.config(data_dir or tmp)
        async with trio.open_nursery() as n:
            h = await n.start(Harness().run, cfg)
            t0 = time.perf_counter()
            st = await run_cases(h, cases, seed, **kw)
            secs = time.perf_counter() - t0
            h.stop()
    out = st.to_json(secs)
    out["target"] = "http"
    out["engine"] = "in-process"
    return out


# ----------------------------------------------------------------------------- wire driver

async def run_wire(port: int, cases: int, seed: int, *, concurrency: int = 16, quiet: float = 0.3,
                   deadline_secs: float = 30.0, stop=None) -> Stats:
    """The same cases over loopback sockets to a server on ``port`` (one connection per case:
    read until the server closes, or nothing arrived for ``quiet`` seconds)."""
    rng = random.Random(f"http-{seed}")
    st = Stats()
    limit = trio.CapacityLimiter(concurrency)

    async def one(case: Case, i: int):
        try:
            s = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError as e:
            st.fail("crashes", i, case.data, f"connect failed: {e}")
            return
        buf = bytearray()
        eof = False
        t = time.perf_counter()
        try:
            for p in case.parts:
                await s.send_all(p)
            t_end = trio.current_time() + deadline_secs
            while not eof:
                with trio.move_on_after(quiet if not case.slow else deadline_secs) as cs:
                    data = await s.receive_some(1 << 20)
                if cs.cancelled_caught:
                    if case.slow:
                        st.fail("hangs", i, case.data, "an incomplete request was not cut off in time")
                    break
                eof = not data
                buf += data
                if trio.current_time() > t_end:
                    st.fail("hangs", i, case.data, "answers still coming at the deadline")
                    break
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            eof = True
        finally:
            await s.aclose()
        dt = time.perf_counter() - t
        st.slowest = max(st.slowest, dt)
        try:
            rs, _, upgraded = parse_responses(buf, [], 0, True, wire=True)
        except Problem as e:
            st.fail("bad_answers", i, case.data, str(e))
            return
        st.upgraded += upgraded
        st.closed_by_server += eof
        for status, headers, body in rs:
            st.responses += 1
            st.statuses[status] = st.statuses.get(status, 0) + 1
            why = check_response(status, headers, body)
            if why == "framing":
                st.framing_4xx += 1
            elif why is not None:
                st.fail("errors_5xx" if status >= 500 else "bad_answers", i, case.data, why)

    async with trio.open_nursery() as n:
        for i in range(cases):
            if stop:
                break
            case = generate(rng)
            st.cases += 1
            await limit.acquire_on_behalf_of(i)

            async def run(case=case, i=i):
                try:
                    await one(case, i)
                finally:
                    limit.release_on_behalf_of(i)

            n.start_soon(run)
    return st


def wire_ping(port: int) -> str | None:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = s.recv(1000)
    return None if got.startswith(b"HTTP/1.1 204 ") else f"/ping answered {got[:200]!r}"


def fuzz_wire(cases: int, seed: int = 1, root: str | None = None, **kw) -> dict:
    """Start a rusts-server process and run ``cases`` cases at it over loopback."""
    from rel_harness import Server

    with tempfile.TemporaryDirectory(prefix="rusts-http-wire-") as tmp:
        srv = Server(pathlib.Path(root or tmp), server={"request_timeout_secs": 0.5, "max_body_size": 1 << 20},
                     logging={"level": "info"}).start(timeout=120)
        try:
            t0 = time.perf_counter()
            st = trio.run(lambda: run_wire(srv.port, cases, seed, **kw))
            secs = time.perf_counter() - t0
            why = wire_ping(srv.port)
            st.pings += 1
            if why:
                st.fail("ping_failures", cases, b"", why)
        finally:
            srv.stop()
        log = srv.log_path.read_text(errors="replace")
        tbs = [m.start() for m in re.finditer(r"Traceback|\bERROR\b", log)]
        st.tracebacks += len(tbs)
        for p in tbs[:3]:
            st.examples.append({"kind": "tracebacks", "detail": log[max(0, p - 200):p + 2000]})
    out = st.to_json(secs)
    out["target"] = "http"
    out["engine"] = "wire"
    out["server_log_lines"] = log.count("\n")
    return out

