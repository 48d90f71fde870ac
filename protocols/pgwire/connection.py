"""The sans-I/O server side of a PostgreSQL protocol 3.0 connection (h11 style).

:class:`PgServerConnection` never touches a socket. The caller feeds it bytes with
:meth:`~PgServerConnection.receive_data` (``b""`` = EOF), pulls frontend events with
:meth:`~PgServerConnection.next_event` (an event, or :data:`NEED_DATA`), and turns backend events
into bytes with :meth:`~PgServerConnection.send`. Both directions drive one state machine:

``startup``
    untyped packets: SSLRequest and GSSENCRequest (each at most once, answered with
    SSLResponse / GSSENCResponse), CancelRequest, StartupMessage. A StartupMessage moves to
``auth``
    nothing is read until the server picks an authentication request. Sending
    AuthenticationCleartextPassword / AuthenticationSASL / AuthenticationSASLContinue makes the
    next 'p' message a PasswordMessage / SASLInitialResponse / SASLResponse; any other message
    then is a protocol violation. AuthenticationOk moves to
``ready``
    typed messages of the simple and extended query protocols.
``closed``
    after Terminate, EOF, or a FATAL ErrorResponse: only :class:`ConnectionClosed` comes out.

Extended-query error rule: once an ErrorResponse is sent while an extended-query batch is open
(Parse/Bind/Describe/Execute/Close/Flush received since the last Sync), every message up to the
next Sync is discarded here, so the application never sees them.

Malformed input makes :meth:`next_event` raise :class:`rusts.errors.ProtocolError` (sqlstate
08P01, or as set); the connection is then broken and keeps raising. The caller answers with a
FATAL ErrorResponse (``send`` still works for that) and closes the socket.
"""

from __future__ import annotations

from . import _messages as m
from ._reader import (MAX_MESSAGE_SIZE, PgProtocolError, ReceiveBuffer, parse_message,
                      read_message_frame, read_startup_packet)
from ._writer import write_event

NEED_DATA = m.NEED_DATA

_EXTENDED = (m.Parse, m.Bind, m.Describe, m.Execute, m.Close, m.Flush)
_PASSWORD_KIND = {"password": "password", "sasl_initial": "sasl_initial", "sasl": "sasl"}


class PgServerConnection:
    """Server side of one PostgreSQL wire connection, without I/O.

    Args:
        max_message_size: largest typed message accepted (bytes, including the length field).
    """

    def __init__(self, max_message_size: int = MAX_MESSAGE_SIZE) -> None:
        self._buf = ReceiveBuffer()
        self._eof = False
        self._phase = "startup"
        self._error: PgProtocolError | None = None
        self._max = max_message_size
        self._negotiated: set[str] = set()
        self._pending_negotiation: str | None = None
        self._extended = False
        self._skip_until_sync = False
        self.startup_params: dict[str, str] = {}
        self.transaction_status = "I"

    # ----------------------------------------------------------------- introspection

    @property
    def phase(self) -> str:
        """'startup', 'auth', 'password', 'sasl_initial', 'sasl', 'ready' or 'closed'."""
        return self._phase

    @property
    def trailing_data(self) -> tuple[bytes, bool]:
        """Buffered unprocessed bytes and whether EOF was received."""
        return bytes(self._buf), self._eof

    @property
    def skipping_until_sync(self) -> bool:
        """True while messages are being discarded after an extended-query error."""
        return self._skip_until_sync

    # ----------------------------------------------------------------- receiving

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the client; ``b""`` means the client closed its side."""
        if data:
            if not self._eof:
                self._buf.feed(data)
        else:
            self._eof = True

    def next_event(self) -> m.FrontendEvent | object:
        """The next frontend event, or :data:`NEED_DATA`.

        Raises:
            ProtocolError: the client sent malformed data (``err.sqlstate`` says which kind).
        """
        if self._error is not None:
            raise self._error
        try:
            return self._next_event()
        except PgProtocolError as exc:
            self._error = exc
            raise

    def _next_event(self) -> m.FrontendEvent | object:
        while True:
            if self._phase == "closed":
                return m.ConnectionClosed()
            if self._phase == "startup":
                if self._pending_negotiation is not None:
                    return self._need_data()
                ev = read_startup_packet(self._buf)
                if ev is None:
                    return self._need_data()
                return self._on_startup_packet(ev)
            if self._phase == "auth":
                return self._need_data()
            frame = read_message_frame(self._buf, self._max)
            if frame is None:
                return self._need_data()
            type_byte, body = frame
            if self._phase != "ready" and type_byte not in (ord("p"), ord("X")):
                raise PgProtocolError(f"expected password response, got message type "
                                      f"{chr(type_byte)!r}")
            ev = parse_message(type_byte, body, _PASSWORD_KIND.get(self._phase))
            if ev is None:
                continue
            if self._skip_until_sync and not isinstance(ev, (m.Sync, m.Terminate)):
                continue
            if isinstance(ev, m.Sync):
                self._skip_until_sync = False
            elif isinstance(ev, _EXTENDED):
                self._extended = True
            elif isinstance(ev, m.Query):
                self._extended = False
            elif isinstance(ev, m.Terminate):
                self._phase = "closed"
            return ev

    def _need_data(self) -> object:
        if self._eof:
            self._phase = "closed"
            return m.ConnectionClosed()
        return NEED_DATA

    def _on_startup_packet(self, ev: m.FrontendEvent) -> m.FrontendEvent:
        if isinstance(ev, (m.SSLRequest, m.GSSENCRequest)):
            kind = "ssl" if isinstance(ev, m.SSLRequest) else "gss"
            if kind in self._negotiated:
                raise PgProtocolError(f"duplicate {'SSL' if kind == 'ssl' else 'GSSENC'} request")
            self._negotiated.add(kind)
            self._pending_negotiation = kind
        elif isinstance(ev, m.CancelRequest):
            self._phase = "closed"
        elif isinstance(ev, m.StartupMessage):
            if "user" not in ev.params or not ev.params["user"]:
                raise PgProtocolError("no PostgreSQL user name specified in startup packet",
                                      sqlstate="28000")
            self.startup_params = dict(ev.params)
            self.startup_params.setdefault("database", ev.params["user"])
            self._phase = "auth"
        return ev

    # ----------------------------------------------------------------- sending

    def send(self, event: m.BackendEvent) -> bytes:
        """Serialise a backend event and advance the state machine.

        Raises:
            ProtocolError: the event is not allowed now (e.g. TLS accepted while unencrypted
                bytes are already buffered, which would allow a man-in-the-middle injection).
        """
        if self._phase == "closed" and not isinstance(event, m.ErrorResponse):
            raise PgProtocolError("cannot send on a closed connection")
        if isinstance(event, (m.SSLResponse, m.GSSENCResponse)):
            expected = "ssl" if isinstance(event, m.SSLResponse) else "gss"
            if self._pending_negotiation != expected:
                raise PgProtocolError(f"unexpected {type(event).__name__}")
            self._pending_negotiation = None
            if isinstance(event, m.SSLResponse) and event.accept and len(self._buf):
                self._error = PgProtocolError("received unencrypted data after SSL request")
                raise self._error
        elif isinstance(event, m.AuthenticationCleartextPassword):
            self._phase = "password"
        elif isinstance(event, m.AuthenticationSASL):
            self._phase = "sasl_initial"
        elif isinstance(event, m.AuthenticationSASLContinue):
            self._phase = "sasl"
        elif isinstance(event, m.AuthenticationSASLFinal):
            self._phase = "auth"
        elif isinstance(event, m.AuthenticationOk):
            self._phase = "ready"
        elif isinstance(event, m.ReadyForQuery):
            self._extended = False
            self.transaction_status = event.status
        elif isinstance(event, m.ErrorResponse):
            if event.severity in ("FATAL", "PANIC"):
                self._phase = "closed"
            elif self._extended:
                self._skip_until_sync = True
        return write_event(event)
