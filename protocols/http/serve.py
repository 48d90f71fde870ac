"""Serve the HTTP API with hypercorn inside a trio nursery.

``await nursery.start(serve_http, db, host, port)`` returns the bound port. Limits come from the
configuration and are hypercorn's:

* ``server.max_body_size``: larger bodies get 413 (checked on Content-Length before reading, and
  while reading chunked bodies);
* ``server.request_timeout_secs``: hypercorn's ``read_timeout``, the longest silence while a
  request (head or body) is being read; a connection silent that long is closed;
* keep-alive connections idle for 75 s are closed; a request head over 64 KiB is refused;
* ``server.max_connections``: connections beyond it are answered 503 (with Retry-After) and
  closed at once instead of being served;
* ``server.tls_cert`` / ``server.tls_key``: HTTPS (hypercorn's TLS).

The serving loop is hypercorn's :func:`hypercorn.trio.run.worker_serve` shape (lifespan, then a
server nursery with a graceful deadline), with the connection cap in front of its per-connection
``TCPServer``: hypercorn has no connection limit of its own.
"""

from __future__ import annotations

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

    app = create_asgi_app(db, poller=busy_poll)
    cfg = hypercorn_config(db.config.server, host, port)
    max_conn = getattr(db.config.server, "max_connections", None)
    await serve_asgi(app, cfg, max_connections=max_conn, shutdown_trigger=shutdown_trigger,
                     task_status=task_status)


async def serve_asgi(app, config, *, max_connections: int | None = None, shutdown_trigger=None,
                     task_status=trio.TASK_STATUS_IGNORED) -> None:
    """hypercorn's trio worker loop for ``app`` with a connection cap; started with the port."""
    from hypercorn.trio.lifespan import Lifespan
    from hypercorn.trio.statsd import StatsdLogger
    from hypercorn.trio.tcp_server import TCPServer
    from hypercorn.trio.worker_context import WorkerContext
    from hypercorn.typing import ConnectionState
    from hypercorn.utils import wrap_app

    config.set_statsd_logger_class(StatsdLogger)
    asgi = wrap_app(app, config.wsgi_max_body_size, None)
    state: dict = {}
    lifespan = Lifespan(asgi, config, state)
    context = WorkerContext(None)
    open_conns = 0
    limit = max_connections if max_connections else math.inf

    async def handle(stream) -> None:
        nonlocal open_conns
        if open_conns >= limit:
            try:
                with trio.move_on_after(1.0):
                    await stream.send_all(_busy_answer())
                await stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            return
        open_conns += 1
        counted = _Counted(stream)
        try:
            await TCPServer(asgi, config, context, ConnectionState(state.copy()), counted)
        finally:
            counted.release()

    def released() -> None:
        nonlocal open_conns
        open_conns -= 1

    class _Counted:
        """The stream, counted as open until the client's EOF or the close (hypercorn keeps the
        connection task alive until its keep-alive timer ends, after the socket is gone)."""

        def __init__(self, inner) -> None:
            self._inner = inner
            self._counted = True

        def release(self) -> None:
            if self._counted:
                self._counted = False
                released()

        def __getattr__(self, name):
            return getattr(self._inner, name)

        async def receive_some(self, max_bytes=None):
            try:
                data = await self._inner.receive_some(max_bytes)
            except BaseException:
                # read_timeout (a Cancelled here, TooSlowError outside) or the connection's end:
                # close the socket now, as hypercorn would only when its keep-alive timer ends,
                # so a stalled client sees the close at once
                await self._close_now()
                raise
            if not data:
                await self._close_now()
            return data

        async def _close_now(self) -> None:
            self.release()
            with trio.CancelScope(shield=True):
                try:
                    await self._inner.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass

        async def aclose(self) -> None:
            self.release()
            await self._inner.aclose()

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
