"""Stricter HTTP/1.1 than hypercorn's defaults, found necessary by the HTTP fuzzer.

* **Methods are case-sensitive** (RFC 9110 section 9.1). hypercorn upper-cases the method for the
  ASGI scope while h11 keeps it as sent, so ``HeAD`` was answered as HEAD by the app (no body)
  while h11 waited for the declared body: ``LocalProtocolError`` and a traceback. A method not in
  upper case is now refused with 501 before any stream is created.
* **No h2c upgrade.** An ``Upgrade: h2c`` request switched the connection to HTTP/2 with the
  request as stream 1; bytes that were not HTTP/2 after it left that request waiting in the app's
  ``receive`` until the body deadline. InfluxDB clients speak HTTP/1.1 (or HTTP/2 over TLS with
  ALPN, still served): the header is ignored, as hypercorn already does for an upgrade request
  with a body. HTTP/2 by prior knowledge (``PRI * HTTP/2.0``) is still served.
* **No WebSocket upgrade.** No route speaks WebSocket; hypercorn's WebSocket stream refused a bad
  handshake with an empty 400. The request is answered as the plain HTTP request it also is.
* **Framing errors say what is wrong.** hypercorn answers a request h11 cannot parse with an
  empty 400 / 431 / 501 / 505; here the same status carries ``{"error": "bad HTTP request: ..."}``
  with h11's reason, as every other bad input does.

:func:`harden` applies this to a connection's protocol right after hypercorn creates it (a class
swap: hypercorn's ``ProtocolWrapper`` builds its ``H11Protocol`` itself).
"""

from __future__ import annotations

from itertools import chain

import h11
import orjson
from hypercorn.events import RawData
from hypercorn.protocol.h11 import H2ProtocolAssumedError, H11Protocol

_REASONS = {400: "malformed request", 413: "request too large", 431: "request head too large",
            501: "not implemented", 505: "HTTP version not supported"}


class _Connection(h11.Connection):
    """h11's server connection, refusing methods not in upper case; keeps the last error's text."""

    last_error = ""

    def next_event(self):
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as e:
            self.last_error = str(e)
            raise
        if type(event) is h11.Request and event.method != event.method.upper():
            self.last_error = (f"method {event.method.decode('ascii', 'replace')!r} is not known "
                               "(methods are case-sensitive)")
            raise h11.RemoteProtocolError(self.last_error, error_status_hint=501)
        return event


class _Protocol(H11Protocol):
    async def _check_protocol(self, event: h11.Request) -> None:
        if event.method == b"PRI" and event.target == b"*" and event.http_version == b"2.0":
            raise H2ProtocolAssumedError(b"PRI * HTTP/2.0\r\n\r\n" + self.connection.trailing_data[0])

    async def _create_stream(self, request: h11.Request) -> None:
        # no WebSocket route exists: an upgrade request is answered as the plain request it also
        # is (hypercorn would switch to its WebSocket stream, whose refusals are empty 400s)
        if any(n.lower() == b"upgrade" and b"websocket" in v.lower() for n, v in request.headers):
            request = h11.Request(method=request.method, target=request.target, http_version=request.http_version,
                                  headers=[(n, v) for n, v in request.headers if n.lower() != b"upgrade"])
        await super()._create_stream(request)

    async def _send_error_response(self, status_code: int) -> None:
        why = getattr(self.connection, "last_error", "") or _REASONS.get(status_code, "malformed request")
        if len(why) > 200:  # h11 quotes the whole bad line
            why = why[:200] + "..."
        body = orjson.dumps({"error": f"bad HTTP request: {why}"})
        headers = chain([(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
                         (b"connection", b"close")], self.config.response_headers("h11"))
        # head, body and end built at once: no task switch between them, so an app task answering
        # the same request meanwhile cannot slip its own response into the middle
        try:
            data = b"".join([self.connection.send(h11.Response(status_code=status_code, headers=list(headers))),
                             self.connection.send(h11.Data(data=body)),
                             self.connection.send(h11.EndOfMessage())])
        except h11.LocalProtocolError:
            if self.connection.their_state != h11.ERROR:
                raise
            return
        await self.send(RawData(data=data))


def harden(wrapper) -> None:
    """Make the HTTP/1.1 protocol of hypercorn's ``ProtocolWrapper`` the strict one above."""
    proto = wrapper.protocol
    if type(proto) is H11Protocol:
        proto.__class__ = _Protocol
        proto.connection.__class__ = _Connection
