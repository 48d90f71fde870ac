"""Serve the HTTP API with hypercorn inside a trio nursery.

``await nursery.start(serve_http, db, host, port)`` returns the bound port. Limits come from the
configuration and are hypercorn's:

* ``server.max_body_size``: larger bodies get 413 (checked on Content-Length before reading, and
  while reading chunked bodies);
* ``server.request_timeout_secs``: a request head must arrive whole within it (counted from its
  first byte: a client trickling a head is closed), and so must a body (408); a request being
  answered has no such deadline (``query.timeout_secs`` bounds queries);
* keep-alive connections idle for 75 s are closed; a request head over 64 KiB is refused;
* ``server.max_connections``: at the cap, the connection idle the longest (no request in flight,
  no request head begun: a fresh connection that sent nothing, or a keep-alive one between
  requests) is closed to make room, so idle connections never lock others out; only when every
  connection is busy is a new one answered 503 (with Retry-After) and closed at once;
* ``server.tls_cert`` / ``server.tls_key``: HTTPS (hypercorn's TLS).

The serving loop is hypercorn's :func:`hypercorn.trio.run.worker_serve` shape (lifespan, then a
server nursery with a graceful deadline), with the connection cap in front of its per-connection
``TCPServer``: hypercorn has no connection limit of its own, and its ``read_timeout`` also cuts
off requests that take long to answer.
"""

from __future__ import annotations

import contextlib
import logging
import math

import trio

log = logging.getLogger("rusts.http")

def _busy_answer() -> bytes:
    body = b'{"error": "too many open HTTP connections (server.max_connections); retry later"}'
    return (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
            b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def hypercorn_config(server_cfg, host: str, port: int):
    from hypercorn.config import Config

    cfg = Config()
    cfg.bind = [f"{host}:{port}"]
    cfg.keep_alive_timeout = 75.0
    cfg.graceful_timeout = 5.0
    cfg.read_timeout = float(server_cfg.request_timeout_secs)
    cfg.backlog = 1024
    cfg.h11_max_incomplete_size = 64 * 1024
    cfg.include_server_header = False
    cfg.accesslog = None
    cfg.errorlog = logging.getLogger("rusts.http.hypercorn")
    cert = getattr(server_cfg, "tls_cert", None)
    key = getattr(server_cfg, "tls_key", None)
    if cert and key:
        cfg.certfile, cfg.keyfile = str(cert), str(key)
    return cfg


async def serve_http(db, host: str, port: int, *, shutdown_trigger=None, busy_poll=None,
                     task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``db``'s HTTP API; ``task_status.started(port)`` with the bound port. Returns after
    ``shutdown_trigger()`` returns and requests in flight finish (at most 5 s), or when cancelled."""
    from rusts.protocols.http.asgi import create_asgi_app

    app = create_asgi_app(db, poller=busy_poll, body_timeout=float(db.config.server.request_timeout_secs))
    cfg = hypercorn_config(db.config.server, host, port)
    max_conn = getattr(db.config.server, "max_connections", None)
    await serve_asgi(app, cfg, max_connections=max_conn, head_timeout=float(db.config.server.request_timeout_secs),
                     shutdown_trigger=shutdown_trigger, task_status=task_status)


async def serve_asgi(app, config, *, max_connections: int | None = None, head_timeout: float | None = None,
                     shutdown_trigger=None, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """hypercorn's trio worker loop for ``app`` with a connection cap and a whole-head deadline
    (``head_timeout``, default ``config.read_timeout``); ``task_status.started(port)``."""
    from hypercorn.trio.lifespan import Lifespan
    from hypercorn.trio.statsd import StatsdLogger
    from hypercorn.trio.worker_context import WorkerContext
    from hypercorn.typing import ConnectionState
    from hypercorn.utils import wrap_app

    head_timeout = head_timeout if head_timeout is not None else (config.read_timeout or math.inf)
    # hypercorn's read_timeout also runs while a request is answered (a long query or flush
    # would be cut off): the connections below apply the deadline to request heads only
    config.read_timeout = None
    config.set_statsd_logger_class(StatsdLogger)
    tracker = _Tracker()
    asgi = wrap_app(tracker.wrap(app), config.wsgi_max_body_size, None)
    state: dict = {}
    lifespan = Lifespan(asgi, config, state)
    context = WorkerContext(None)
    limit = max_connections if max_connections else math.inf

    async def handle(stream) -> None:
        if tracker.open >= limit and not tracker.evict_idle():
            try:
                with trio.move_on_after(1.0):
                    await stream.send_all(_busy_answer())
                await stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            return
        conn = _Connection(stream, tracker, head_timeout)
        try:
            conn._tcp = _lean_server_class()(asgi, config, context, ConnectionState(state.copy()), conn)
            await conn._tcp
        finally:
            conn.release()

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as server_nursery:
            sockets = config.create_sockets()
            listeners = []
            ssl = config.create_ssl_context()
            for sock in sockets.secure_sockets:
                sock.listen(config.backlog)
                listeners.append(trio.SSLListener(trio.SocketListener(trio.socket.from_stdlib_socket(sock)),
                                                  ssl, https_compatible=True))
            for sock in sockets.insecure_sockets:
                sock.listen(config.backlog)
                listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
            bound = [s.getsockname()[1] for s in [*sockets.secure_sockets, *sockets.insecure_sockets]]
            accepting = trio.CancelScope()

            async def accept():
                with accepting:
                    await trio.serve_listeners(handle, listeners, handler_nursery=server_nursery)

            server_nursery.start_soon(accept)
            task_status.started(bound[0])
            try:
                if shutdown_trigger is None:
                    await trio.sleep_forever()
                await shutdown_trigger()
            finally:
                # stop accepting; requests in flight get the graceful timeout, idle keep-alive
                # connections are closed by hypercorn when it sees the terminate flag
                accepting.cancel()
                await context.terminated.set()
                server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()


def _lean_server_class():
    """hypercorn's trio ``TCPServer`` with less work per request (the HTTP protocol, streams and
    app tasks stay hypercorn's). Measured with cProfile on /ping: hypercorn restarts the
    connection's keep-alive task twice per request (a lock and ``nursery.start`` each time), takes
    a lock and a shielded cancel scope for each of a response's three writes, and enters a
    ``fail_after(inf)`` scope around each read. Here one keep-alive task per connection sleeps
    under a cancel scope whose deadline requests move (no task switch), a response gathered by
    :class:`_Connection` is appended to its buffer directly, and reads without a read timeout have
    no scope. The task also ends as soon as the connection closes (hypercorn's waited for its
    keep-alive timer)."""
    global _LeanTCPServer
    if _LeanTCPServer is not None:
        return _LeanTCPServer
    from hypercorn.events import Closed, RawData, Updated
    from hypercorn.protocol import ProtocolWrapper
    from hypercorn.trio.task_group import TaskGroup
    from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
    from hypercorn.typing import ConnectionState
    from hypercorn.utils import parse_socket_addr

    from rusts.protocols.http.strict_h11 import harden

    class LeanTCPServer(TCPServer):
        def __init__(self, *args) -> None:
            super().__init__(*args)
            self._idle = True
            self._done = False
            self._idle_cs = trio.CancelScope(deadline=trio.current_time() + self.config.keep_alive_timeout)

        async def run(self) -> None:
            stream = self.stream
            inner = getattr(stream, "_inner", stream)
            if isinstance(inner, trio.SSLStream):
                try:
                    with trio.fail_after(self.config.ssl_handshake_timeout):
                        await inner.do_handshake()
                except (trio.BrokenResourceError, trio.TooSlowError):
                    await self._close()
                    return
                alpn_protocol = inner.selected_alpn_protocol()
                socket, ssl = inner.transport_stream.socket, True
            else:
                alpn_protocol, socket, ssl = "http/1.1", inner.socket, False
            try:
                client = parse_socket_addr(socket.family, socket.getpeername())
                server = parse_socket_addr(socket.family, socket.getsockname())
                async with TaskGroup() as task_group:
                    self._task_group = task_group
                    self.protocol = ProtocolWrapper(
                        self.app, self.config, self.context, task_group, ConnectionState(self.state), ssl,
                        client, server, self.protocol_send, alpn_protocol)
                    harden(self.protocol)
                    await self.protocol.initiate()
                    task_group._nursery.start_soon(self._keep_alive)
                    await self._read_data()
            except OSError:
                pass
            finally:
                self._end()
                await self._close()

        def _end(self) -> None:
            self._done = True
            self._idle_cs.cancel()

        async def protocol_send(self, event) -> None:
            if type(event) is RawData:
                if getattr(self.stream, "_corked", False):
                    self.stream._pending += event.data  # leaves with the response's last part
                    return
                await super().protocol_send(event)
            elif type(event) is Updated:
                self._idle = event.idle
                if event.idle:
                    self._idle_cs.deadline = trio.current_time() + self.config.keep_alive_timeout
                else:
                    self._idle_cs.deadline = math.inf
            else:
                if type(event) is Closed:
                    self._end()
                await super().protocol_send(event)

        async def _read_data(self) -> None:
            receive, handle = self.stream.receive_some, self.protocol.handle
            timeout = self.config.read_timeout
            while True:
                try:
                    if timeout:
                        with trio.fail_after(timeout):
                            data = await receive(MAX_RECV)
                    else:
                        data = await receive(MAX_RECV)
                except (trio.ClosedResourceError, trio.BrokenResourceError, trio.TooSlowError):
                    break
                await handle(RawData(bytes(data)))
                if not data:
                    break
            self._end()
            await handle(Closed())

        async def _keep_alive(self) -> None:
            """Closes the connection when it stays idle for the keep-alive time, or when the
            server stops while it is idle (a busy one closes after its answer: hypercorn does
            not recycle a connection once the server is terminated)."""
            with self._idle_cs:
                await self.context.terminated.wait()
                if not self._idle:
                    await trio.sleep_forever()
            if not self._done:
                with trio.CancelScope(shield=True):
                    await self._initiate_server_close()

    _LeanTCPServer = LeanTCPServer
    return LeanTCPServer


_LeanTCPServer = None


class _Tracker:
    """Open connections, and the HTTP requests started and in flight per client address (as the
    ASGI scope names it), so a connection knows when its client's head became a request."""

    def __init__(self) -> None:
        self.open = 0
        self.busy: dict[tuple, int] = {}
        self.started: dict[tuple, int] = {}
        self.conns: dict[tuple, _Connection] = {}
        self.idle: dict["_Connection", float] = {}  # waiting for a request head's first byte, since

    def evict_idle(self) -> bool:
        """Close the connection idle the longest to make room for a new one (HTTP lets a server
        close an idle connection at any time); False when none is idle."""
        idle = [c for c in self.idle if not self.busy.get(c._peer)]  # no request in flight
        if not idle:
            return False
        conn = min(idle, key=self.idle.__getitem__)
        del self.idle[conn]
        conn.release()  # its slot is the new connection's now; its receive ends as an EOF
        conn._evicted = True
        conn._idle_scope.cancel()
        return True

    def wrap(self, app):
        async def tracked(scope, receive, send):
            if scope["type"] != "http":
                return await app(scope, receive, send)
            peer = tuple((scope.get("client") or ())[:2])
            self.started[peer] = self.started.get(peer, 0) + 1
            self.busy[peer] = self.busy.get(peer, 0) + 1
            conn = self.conns.get(peer)
            if conn is not None:
                from rusts.protocols.http.asgi import DISCONNECT_EXTENSION

                scope = {**scope, "extensions": {**(scope.get("extensions") or {}),
                                                 DISCONNECT_EXTENSION: conn.cancel_on_disconnect}}
            try:
                await app(scope, receive, send if conn is None else conn.coalescing(send))
            finally:
                if conn is not None:
                    await conn.uncork()
                n = self.busy[peer] - 1
                if n:
                    self.busy[peer] = n
                else:
                    del self.busy[peer]
                    if conn is not None and _h11_buffered(conn):  # the next head came with this request
                        conn._seen, conn._head_since = self.started.get(peer, 0), trio.current_time()
                        conn._idle_scope.cancel()
        return tracked


def _h11_buffered(conn) -> bool:
    """Whether hypercorn's parser holds part of a next request head (bytes that came with the last)."""
    try:
        return bool(conn._tcp.protocol.protocol.connection.trailing_data[0])
    except AttributeError:
        return False


class _Connection:
    """A client's stream as hypercorn's ``TCPServer`` sees it, plus what hypercorn lacks:

    * it counts as open (``server.max_connections``) until the client's EOF or the close;
    * a request head must arrive whole within ``head_timeout`` of its first byte (a client that
      trickles a head byte by byte is closed), while an idle keep-alive connection waits for
      hypercorn's keep-alive timer and a request being answered has no deadline here;
    * the socket closes as soon as the connection ends (hypercorn kept it until its keep-alive
      timer ended);
    * a response's head and body leave in one ``send`` (hypercorn writes the status line and
      headers, the body and the end of the message separately: three system calls and, with
      TCP_NODELAY, three packets per response, the largest part of a small answer's cost)."""

    def __init__(self, inner, tracker: _Tracker, head_timeout: float) -> None:
        self._inner = inner
        self._tracker = tracker
        self._head_timeout = head_timeout
        self._head_since: float | None = None
        self._counted = True
        self._corked = False
        self._pending = bytearray()
        self._send_lock = trio.Lock()
        self._on_disconnect: set = set()
        self._idle_scope = trio.CancelScope()
        self._evicted = False
        tracker.open += 1
        try:
            sock = inner.socket if hasattr(inner, "socket") else inner.transport_stream.socket
            self._peer = tuple(sock.getpeername()[:2])
        except (AttributeError, OSError):
            self._peer = ()
        self._seen = tracker.started.get(self._peer, 0)
        if self._peer:
            tracker.conns[self._peer] = self

    def release(self) -> None:
        if self._counted:
            self._counted = False
            self._tracker.open -= 1
            if self._tracker.conns.get(self._peer) is self:
                del self._tracker.conns[self._peer]
            if not self._tracker.busy.get(self._peer):
                self._tracker.started.pop(self._peer, None)

    @contextlib.contextmanager
    def cancel_on_disconnect(self, scope: trio.CancelScope):
        """``with conn.cancel_on_disconnect(cs):`` cancels ``cs`` if the client goes away meanwhile."""
        if not self._counted:  # gone already
            scope.cancel()
        self._on_disconnect.add(scope)
        try:
            yield scope
        finally:
            self._on_disconnect.discard(scope)

    def _disconnected(self) -> None:
        for scope in list(self._on_disconnect):
            scope.cancel()

    # ------------------------------------------------------------------ one send per response
    def coalescing(self, send):
        """The ASGI ``send`` of a request on this connection: from the response's start to each
        of its body messages, what hypercorn writes is gathered and sent at once."""
        async def send_coalesced(message):
            kind = message["type"]
            if kind == "http.response.start":
                self._corked = True
            await send(message)
            if kind == "http.response.body":
                await self.uncork()
        return send_coalesced

    async def send_all(self, data) -> None:
        if self._corked:
            self._pending += data
        else:
            async with self._send_lock:
                await self._flush()
                await self._inner.send_all(data)

    async def _flush(self) -> None:
        if self._pending:
            data = bytes(self._pending)
            self._pending.clear()
            await self._inner.send_all(data)

    async def uncork(self) -> None:
        """Send what was gathered (shielded, as hypercorn's own sends are); a client that has gone
        is noticed by the connection's reader."""
        self._corked = False
        if not self._pending:
            return
        with trio.CancelScope(shield=True):
            try:
                async with self._send_lock:
                    await self._flush()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass

    async def send_eof(self) -> None:
        """Shielded: hypercorn half-closes after a "connection: close" answer from the request's
        task, whose scope the framework may already have cancelled (the client then waited for
        the EOF until the server stopped)."""
        await self.uncork()  # a response ending with "connection: close" leaves before the EOF
        with trio.CancelScope(shield=True):
            async with self._send_lock:  # hypercorn's reader may be sending an error meanwhile
                await self._inner.send_eof()

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def _answering(self) -> bool:
        """Whether the head received so far became a request (which resets the head clock)."""
        started = self._tracker.started.get(self._peer, 0)
        if started != self._seen:
            self._seen = started
            self._head_since = None
        return bool(self._tracker.busy.get(self._peer))

    async def receive_some(self, max_bytes=None):
        try:
            while True:
                if self._answering() or self._head_since is None:
                    with trio.CancelScope() as self._idle_scope:
                        # no head begun: evictable whenever no request is in flight either
                        self._tracker.idle[self] = trio.current_time()
                        try:
                            data = await self._inner.receive_some(max_bytes)
                        finally:
                            self._tracker.idle.pop(self, None)
                    if self._evicted:
                        data = b""  # evicted: the connection ends
                    elif self._idle_scope.cancelled_caught:
                        continue  # a request ended with part of the next head buffered: its clock runs
                    break
                with trio.move_on_at(self._head_since + self._head_timeout) as cs:
                    data = await self._inner.receive_some(max_bytes)
                if not cs.cancelled_caught:
                    break
                if self._answering():
                    continue  # the head completed meanwhile: no deadline while it is answered
                log.info("closing a connection whose request head took over %gs", self._head_timeout)
                data = b""
                break
        except BaseException:
            await self._close_now()  # the connection's end: the socket closes now
            raise
        if not data:
            await self._close_now()
        elif self._head_since is None and not self._answering():
            self._head_since = trio.current_time()
        return data

    async def _close_now(self) -> None:
        self.release()
        self._disconnected()
        await self.uncork()
        with trio.CancelScope(shield=True):
            try:
                await self._inner.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass

    async def aclose(self) -> None:
        self.release()
        await self.uncork()
        await self._inner.aclose()
