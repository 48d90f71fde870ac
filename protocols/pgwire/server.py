"""The trio TCP server for the PostgreSQL wire protocol: I/O only.

Each accepted socket gets one task running :class:`_ConnectionHandler`: it feeds bytes into a
:class:`~.connection.PgServerConnection`, performs TLS negotiation, authentication and startup,
then hands events to a :class:`~._session.PgSession`. Everything protocol-shaped lives in those
sans-I/O objects; this module only reads, writes, times out and keeps the registry of sessions
that CancelRequests and ``max_connections`` need.

Robustness rules:

* a handler never lets an exception escape into the listener nursery (it would stop the server);
  protocol violations are answered with a FATAL ErrorResponse (08P01) and the socket is closed;
* the startup phase (up to ReadyForQuery) must finish within ``startup_timeout`` seconds, so a
  client that connects and says nothing holds its slot only that long; an idle authenticated
  session costs one parked task;
* writes are awaited, so a slow reader throttles its own result stream; a client that vanishes
  makes the next write fail, which ends the task and frees the result;
* ``max_connections`` counts sessions from their StartupMessage on; the next one receives FATAL
  53300. CancelRequests are always served.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import secrets
import ssl
from collections.abc import Callable

import attrs
import trio

from rusts.errors import AuthError, RustsError

from . import _messages as m
from ._reader import MAX_MESSAGE_SIZE, PgProtocolError
from ._scram import ScramServer
from ._session import PgSession
from .backend import PgAuth, SqlBackend
from .connection import NEED_DATA, PgServerConnection

log = logging.getLogger("rusts.protocols.pgwire")

SERVER_VERSION = "15.0 (rusts)"
IDENTITY_KEY = "rusts.identity"
RECEIVE_SIZE = 1 << 16


class _Closed(Exception):
    """Internal: the connection is over (EOF, Terminate, FATAL sent)."""


@attrs.frozen
class PgServerStatistics:
    """Counters of a :class:`PgServer`.

    Attributes:
        open_connections: sockets being served right now (any phase).
        sessions: sessions past their StartupMessage (what ``max_connections`` limits).
        connections_total: sockets accepted so far.
        rejected_total: sessions refused with 53300.
        cancel_requests_total: CancelRequests received (matching or not).
    """

    open_connections: int
    sessions: int
    connections_total: int
    rejected_total: int
    cancel_requests_total: int


class PgServer:
    """A pgwire server: settings, the session registry (cancel keys, limits) and counters.

    Args:
        backend_factory: called with the startup parameters (user, database, ...) of each
            authenticated connection; returns that session's :class:`SqlBackend`.
        max_connections: concurrent sessions; more are refused with 53300.
        auth: None = trust; else cleartext or SCRAM-SHA-256 (see :class:`PgAuth`).
        tls_context: server-side SSL context; when given, SSLRequest is answered 'S'.
        startup_timeout: seconds a client has to finish startup and authentication.
        max_message_size: largest frontend message accepted.
        chunk_rows: rows per DataRow batch when streaming results.
        require_tls: refuse (FATAL 28000) a session that did not negotiate TLS first.

    The backend factory's startup dict carries, under :data:`IDENTITY_KEY`, what the password
    check returned for a token login (see :meth:`PgAuth.check_password`); a client-sent parameter
    of that name is dropped.
    """

    def __init__(self, backend_factory: Callable[[dict], SqlBackend], *, max_connections: int = 100,
                 auth: PgAuth | None = None, tls_context: ssl.SSLContext | None = None,
                 startup_timeout: float = 60.0, max_message_size: int = MAX_MESSAGE_SIZE,
                 chunk_rows: int = 4096, require_tls: bool = False) -> None:
        self.backend_factory = backend_factory
        self.require_tls = require_tls
        self.max_connections = max_connections
        self.auth = auth
        self.tls_context = tls_context
        self.startup_timeout = startup_timeout
        self.max_message_size = max_message_size
        self.chunk_rows = chunk_rows
        self.sessions: dict[int, tuple[int, PgSession | None]] = {}
        self._pids = itertools.count(secrets.randbelow(1 << 20) + 1000)
        self._open = 0
        self._accepted = 0
        self._rejected = 0
        self._cancels = 0

    def statistics(self) -> PgServerStatistics:
        return PgServerStatistics(self._open, len(self.sessions), self._accepted, self._rejected,
                                  self._cancels)

    def new_key(self) -> tuple[int, int]:
        pid = next(self._pids)
        return pid, secrets.randbelow(1 << 31)

    def cancel(self, pid: int, secret: int) -> bool:
        """Cancel the running query of session ``pid`` if ``secret`` matches."""
        self._cancels += 1
        entry = self.sessions.get(pid)
        if entry is None or not hmac.compare_digest(entry[0].to_bytes(4, "big"),
                                                    (secret & 0xFFFFFFFF).to_bytes(4, "big")):
            return False
        return entry[1] is not None and entry[1].cancel()

    async def serve(self, host: str | None = "127.0.0.1", port: int = 5432, *,
                    task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled; ``task_status.started(port)`` gives the bound port."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()[1]
        log.info("pgwire: listening host=%s port=%s", host, bound)
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(self._accept_loop, listener, nursery)
            task_status.started(bound)

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:  # e.g. EMFILE: back off instead of spinning
                    log.warning("pgwire: accept failed: %s", exc)
                    await trio.sleep(0.1)
                    continue
                self._accepted += 1
                nursery.start_soon(self.handle, stream)

    async def handle(self, stream: trio.abc.Stream) -> None:
        """Serve one client socket; never raises (except trio.Cancelled)."""
        handler = _ConnectionHandler(self, stream)
        self._open += 1
        try:
            await handler.run()
        except (trio.BrokenResourceError, trio.ClosedResourceError, _Closed):
            pass
        except Exception as exc:  # noqa: BLE001 - one bad client must not stop the server
            log.error("pgwire: connection handler failed", exc_info=exc)
        finally:
            self._open -= 1
            handler.release()
            await trio.aclose_forcefully(handler.stream)


class _ConnectionHandler:
    def __init__(self, server: PgServer, stream: trio.abc.Stream) -> None:
        self.server = server
        self.stream = stream
        self.conn = PgServerConnection(server.max_message_size)
        self.pid: int | None = None
        self.tls = False
        self.identity: object = None

    def release(self) -> None:
        if self.pid is not None:
            self.server.sessions.pop(self.pid, None)
            self.pid = None

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send_event(self, event: m.BackendEvent) -> None:
        await self.stream.send_all(self.conn.send(event))

    async def fatal(self, code: str, message: str) -> None:
        try:
            await self.send_event(m.ErrorResponse(code, message, "FATAL"))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        raise _Closed

    async def next_event(self) -> object:
        while True:
            try:
                ev = self.conn.next_event()
            except RustsError as exc:
                await self.fatal(exc.sqlstate, str(exc))
            if ev is not NEED_DATA:
                if isinstance(ev, m.ConnectionClosed):
                    raise _Closed
                return ev
            self.conn.receive_data(await self.stream.receive_some(RECEIVE_SIZE))

    async def run(self) -> None:
        with trio.move_on_after(self.server.startup_timeout) as scope:
            params = await self._startup()
        if scope.cancelled_caught:
            await self.fatal("08006", "timeout expired during connection startup")
        backend = await self._open_backend(params)
        session = PgSession(self.conn, backend, self.send, chunk_rows=self.server.chunk_rows)
        self.server.sessions[self.pid] = (self.server.sessions[self.pid][0], session)
        try:
            while True:
                ev = await self.next_event()
                if isinstance(ev, m.Terminate):
                    return
                try:
                    await session.handle(ev)
                except PgProtocolError as exc:
                    await self.fatal(exc.sqlstate, str(exc))
        finally:
            close = getattr(backend, "aclose", None)
            if close is not None:
                with trio.CancelScope(shield=True):
                    try:
                        await close()
                    except Exception as exc:  # noqa: BLE001
                        log.warning("pgwire: backend close failed", exc_info=exc)

    async def _startup(self) -> dict[str, str]:
        while True:
            ev = await self.next_event()
            if isinstance(ev, m.SSLRequest):
                ctx = self.server.tls_context
                try:
                    await self.send_event(m.SSLResponse(ctx is not None))
                except PgProtocolError as exc:
                    await self.fatal(exc.sqlstate, str(exc))
                if ctx is not None:
                    self.stream = trio.SSLStream(self.stream, ctx, server_side=True)
                    await self.stream.do_handshake()
                    self.tls = True
            elif isinstance(ev, m.GSSENCRequest):
                await self.send_event(m.GSSENCResponse())
            elif isinstance(ev, m.CancelRequest):
                self.server.cancel(ev.process_id, ev.secret_key)
                raise _Closed
            elif isinstance(ev, m.StartupMessage):
                break
        server = self.server
        if server.require_tls and not self.tls:
            await self.fatal("28000", "TLS required: this server refuses unencrypted connections "
                                      "(connect with sslmode=require)")
        if len(server.sessions) >= server.max_connections:
            server._rejected += 1
            await self.fatal("53300", "sorry, too many clients already")
        pid, secret = server.new_key()
        self.pid = pid
        server.sessions[pid] = (secret, None)
        params = self.conn.startup_params
        unrecognized = tuple(k for k in params if k.startswith("_pq_."))
        out = b""
        if ev.protocol_minor > 0 or unrecognized:
            out += self.conn.send(m.NegotiateProtocolVersion(0, unrecognized))
        if out:
            await self.send(out)
        await self._authenticate(params["user"])
        out = self.conn.send(m.AuthenticationOk())
        for name, value in self._parameter_status(params):
            out += self.conn.send(m.ParameterStatus(name, value))
        out += self.conn.send(m.BackendKeyData(pid, secret))
        self._pending_startup = out
        return params

    async def _open_backend(self, params: dict[str, str]) -> SqlBackend:
        try:
            startup = {k: v for k, v in params.items() if k != IDENTITY_KEY}
            if self.identity is not None:
                startup[IDENTITY_KEY] = self.identity
            backend = self.server.backend_factory(startup)
        except RustsError as exc:
            await self.fatal(exc.sqlstate, str(exc))
        except Exception as exc:  # noqa: BLE001
            log.error("pgwire: backend factory failed", exc_info=exc)
            await self.fatal("XX000", f"cannot open session: {exc}")
        await self.send(self._pending_startup + self.conn.send(m.ReadyForQuery("I")))
        return backend

    @staticmethod
    def _parameter_status(params: dict[str, str]) -> list[tuple[str, str]]:
        return [
            ("application_name", params.get("application_name", "")),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("default_transaction_read_only", "off"),
            ("in_hot_standby", "off"),
            ("integer_datetimes", "on"),
            ("IntervalStyle", "postgres"),
            ("is_superuser", "on"),
            ("server_encoding", "UTF8"),
            ("server_version", SERVER_VERSION),
            ("session_authorization", params["user"]),
            ("standard_conforming_strings", "on"),
            ("TimeZone", "UTC"),
        ]

    async def _authenticate(self, user: str) -> None:
        auth = self.server.auth
        if auth is None:
            return
        failed = f'password authentication failed for user "{user}"'
        if auth.uses_scram(user):
            await self.send_event(m.AuthenticationSASL(("SCRAM-SHA-256",)))
            ev = await self.next_event()
            if not isinstance(ev, m.SASLInitialResponse) or ev.mechanism != "SCRAM-SHA-256":
                await self.fatal("28000", "client selected an invalid SASL authentication mechanism")
            scram = ScramServer(auth.scram_credentials(user))
            try:
                first = scram.process_client_first(ev.data or b"")
                await self.send_event(m.AuthenticationSASLContinue(first))
                ev = await self.next_event()
                if not isinstance(ev, m.SASLResponse):
                    raise PgProtocolError("expected SASL response")
                final = scram.process_client_final(ev.data)
            except AuthError:
                await self.fatal("28P01", failed)
            except PgProtocolError as exc:
                await self.fatal(exc.sqlstate, str(exc))
            await self.send_event(m.AuthenticationSASLFinal(final))
            return
        await self.send_event(m.AuthenticationCleartextPassword())
        ev = await self.next_event()
        ok = auth.check_password(user, ev.password) if isinstance(ev, m.PasswordMessage) else False
        if not ok:
            await self.fatal("28P01", failed)
        if ok is not True:
            self.identity = ok  # what the token verifier returned (the token's principal)


async def serve_pgwire(backend_factory: Callable[[dict], SqlBackend], *, host: str | None = "127.0.0.1",
                       port: int = 5432, max_connections: int = 100, auth: PgAuth | None = None,
                       tls_context: ssl.SSLContext | None = None, startup_timeout: float = 60.0,
                       max_message_size: int = MAX_MESSAGE_SIZE, chunk_rows: int = 4096,
                       require_tls: bool = False, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve the PostgreSQL wire protocol until cancelled (see :class:`PgServer` for arguments).

    ``task_status.started(port)`` reports the bound port (useful with ``port=0``).
    """
    server = PgServer(backend_factory, max_connections=max_connections, auth=auth,
                      tls_context=tls_context, startup_timeout=startup_timeout,
                      max_message_size=max_message_size, chunk_rows=chunk_rows, require_tls=require_tls)
    await server.serve(host, port, task_status=task_status)
