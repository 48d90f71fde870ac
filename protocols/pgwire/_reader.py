"""Frontend bytes -> events: the receive buffer, framing and payload decoding.

Two framings exist. Before the startup message (and for SSLRequest, GSSENCRequest and
CancelRequest) a packet is ``int32 length`` (including itself) + ``int32 code`` + body. After it,
every message is ``byte type`` + ``int32 length`` (including itself, not the type byte) + body.

The header is validated as soon as it is complete, before the body arrives, so garbage, unknown
type bytes and absurd lengths are rejected at once instead of being buffered. Limits follow the
PostgreSQL server: startup packets at most 10,000 bytes; Sync, Flush, Terminate, Describe, Close
and Execute at most 10,000 bytes; everything else below 1 GiB (``max_message_size``).

A payload that does not parse (missing NUL terminator, counts that overrun the body, bytes left
over) raises :class:`rusts.errors.ProtocolError` (SQLSTATE 08P01).
"""

from __future__ import annotations

import struct

from rusts.errors import ProtocolError

from . import _messages as m


class PgProtocolError(ProtocolError):
    """The client broke the wire protocol. ``sqlstate`` defaults to 08P01."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        if sqlstate is not None:
            self.sqlstate = sqlstate


SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102
MAX_STARTUP_PACKET = 10_000
SMALL_MESSAGE_LIMIT = 10_000
MAX_MESSAGE_SIZE = (1 << 30) - 1
SMALL_TYPES = frozenset(b"SHXDCE")
KNOWN_TYPES = frozenset(b"QPBDECSHXpFdcf")


class ReceiveBuffer:
    """A bytearray with a read offset; compacts itself lazily."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._start = 0

    def __len__(self) -> int:
        return len(self._data) - self._start

    def __bytes__(self) -> bytes:
        return bytes(self._data[self._start:])

    def feed(self, data: bytes) -> None:
        if self._start and self._start * 2 >= len(self._data):
            del self._data[:self._start]
            self._start = 0
        self._data += data

    def peek(self, n: int) -> bytes | None:
        """The next ``n`` bytes without consuming them, or None if fewer are buffered."""
        if len(self) < n:
            return None
        return bytes(self._data[self._start:self._start + n])

    def take(self, n: int) -> bytes:
        out = bytes(self._data[self._start:self._start + n])
        self._start += n
        if self._start == len(self._data):
            self._data.clear()
            self._start = 0
        return out


def read_startup_packet(buf: ReceiveBuffer) -> m.FrontendEvent | None:
    """Parse one untyped startup-phase packet, or return None if it is incomplete."""
    head = buf.peek(8)
    if head is None:
        if len(buf) >= 4:
            _check_startup_length(struct.unpack_from(">i", buf.peek(4))[0])
        return None
    length, code = struct.unpack(">ii", head)
    _check_startup_length(length)
    if code in (SSL_REQUEST_CODE, GSSENC_REQUEST_CODE) and length != 8:
        raise PgProtocolError("invalid length of SSL or GSSENC request")
    if code == CANCEL_REQUEST_CODE and length != 16:
        raise PgProtocolError("invalid length of cancel request")
    major = code >> 16
    if code not in (SSL_REQUEST_CODE, GSSENC_REQUEST_CODE, CANCEL_REQUEST_CODE) and major != 3:
        raise PgProtocolError(f"unsupported frontend protocol {major}.{code & 0xFFFF}: "
                            "server supports 3.0", sqlstate="0A000")
    if len(buf) < length:
        return None
    body = buf.take(length)[8:]
    if code == SSL_REQUEST_CODE:
        return m.SSLRequest()
    if code == GSSENC_REQUEST_CODE:
        return m.GSSENCRequest()
    if code == CANCEL_REQUEST_CODE:
        pid, key = struct.unpack(">ii", body)
        return m.CancelRequest(pid, key)
    return m.StartupMessage(code & 0xFFFF, _parse_startup_params(body))


def _check_startup_length(length: int) -> None:
    if length < 8 or length > MAX_STARTUP_PACKET:
        raise PgProtocolError(f"invalid length of startup packet ({length})")


def _parse_startup_params(body: bytes) -> dict[str, str]:
    if not body or body[-1] != 0:
        raise PgProtocolError("invalid startup packet layout: expected terminator as last byte")
    rest = body[:-1]
    if rest and rest[-1] != 0:
        raise PgProtocolError("invalid startup packet layout: expected terminator as last byte")
    parts = rest[:-1].split(b"\x00") if rest else []
    if len(parts) % 2:
        raise PgProtocolError("invalid startup packet layout: expected name/value pairs")
    params: dict[str, str] = {}
    for i in range(0, len(parts), 2):
        key, value = _utf8(parts[i]), _utf8(parts[i + 1])
        if not key:
            raise PgProtocolError("invalid startup packet layout: empty parameter name")
        params[key] = value
    return params


def read_message_frame(buf: ReceiveBuffer, max_size: int = MAX_MESSAGE_SIZE) -> tuple[int, bytes] | None:
    """Take one typed message ``(type byte, body)`` or return None if incomplete."""
    if len(buf) < 1:
        return None
    head = buf.peek(5)
    type_byte = head[0] if head is not None else buf.peek(1)[0]
    if type_byte not in KNOWN_TYPES:
        shown = chr(type_byte) if 32 <= type_byte < 127 else f"0x{type_byte:02x}"
        raise PgProtocolError(f"invalid frontend message type {shown!r}")
    if head is None:
        return None
    length = struct.unpack_from(">i", head, 1)[0]
    limit = SMALL_MESSAGE_LIMIT if type_byte in SMALL_TYPES else max_size
    if length < 4 or length > limit:
        raise PgProtocolError(f"invalid message length {length} for message type {chr(type_byte)!r}")
    if len(buf) < 1 + length:
        return None
    return type_byte, buf.take(1 + length)[5:]


class _Body:
    """Cursor over a message body; every read checks bounds."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def cstring(self) -> str:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise PgProtocolError("invalid string in message: missing NUL terminator")
        s = self.data[self.pos:end]
        self.pos = end + 1
        return _utf8(s)

    def int16(self) -> int:
        return self._unpack(">h", 2)

    def int32(self) -> int:
        return self._unpack(">i", 4)

    def byte(self) -> str:
        return chr(self._unpack("B", 1))

    def raw(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise PgProtocolError("insufficient data left in message")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def rest(self) -> bytes:
        out = self.data[self.pos:]
        self.pos = len(self.data)
        return out

    def _unpack(self, fmt: str, n: int) -> int:
        if self.pos + n > len(self.data):
            raise PgProtocolError("insufficient data left in message")
        v = struct.unpack_from(fmt, self.data, self.pos)[0]
        self.pos += n
        return v

    def end(self) -> None:
        if self.pos != len(self.data):
            raise PgProtocolError("invalid message format: unexpected bytes at the end")


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PgProtocolError("invalid byte sequence for encoding \"UTF8\"", sqlstate="22021") from None


def _count(body: _Body, what: str) -> int:
    n = body.int16()
    if n < 0:
        raise PgProtocolError(f"invalid number of {what}: {n}")
    return n


def parse_message(type_byte: int, data: bytes, password_kind: str | None) -> m.FrontendEvent | None:
    """Decode a typed frontend message body. Returns None for messages to ignore (CopyData...).

    ``password_kind`` says how to read a 'p' message: "password", "sasl_initial", "sasl" or None
    (no authentication exchange in progress: a 'p' message is then a protocol violation).
    """
    b = _Body(data)
    t = chr(type_byte)
    if t == "Q":
        ev = m.Query(b.cstring())
    elif t == "P":
        name, sql = b.cstring(), b.cstring()
        n = _count(b, "parameter types")
        ev = m.Parse(name, sql, tuple(b.int32() & 0xFFFFFFFF for _ in range(n)))
    elif t == "B":
        portal, stmt = b.cstring(), b.cstring()
        nf = _count(b, "parameter format codes")
        pfmts = tuple(b.int16() for _ in range(nf))
        n = _count(b, "parameters")
        params: list[bytes | None] = []
        for _ in range(n):
            ln = b.int32()
            if ln < -1:
                raise PgProtocolError(f"invalid parameter length {ln}")
            params.append(None if ln == -1 else b.raw(ln))
        nr = _count(b, "result format codes")
        rfmts = tuple(b.int16() for _ in range(nr))
        for f in pfmts + rfmts:
            if f not in (0, 1):
                raise PgProtocolError(f"unsupported format code: {f}")
        ev = m.Bind(portal, stmt, pfmts, tuple(params), rfmts)
    elif t in "DC":
        kind = b.byte()
        if kind not in "SP":
            what = "Describe" if t == "D" else "Close"
            raise PgProtocolError(f"invalid {what} message subtype {kind!r}")
        name = b.cstring()
        ev = m.Describe(kind, name) if t == "D" else m.Close(kind, name)
    elif t == "E":
        ev = m.Execute(b.cstring(), b.int32())
    elif t == "S":
        ev = m.Sync()
    elif t == "H":
        ev = m.Flush()
    elif t == "X":
        ev = m.Terminate()
    elif t == "F":
        ev = m.FunctionCall(b.int32() & 0xFFFFFFFF)
        b.rest()
    elif t in "dcf":
        return None  # COPY messages outside COPY are ignored, as PostgreSQL does
    elif t == "p":
        ev = _parse_password(b, password_kind)
    else:  # pragma: no cover - KNOWN_TYPES guards this
        raise PgProtocolError(f"invalid frontend message type {t!r}")
    b.end()
    return ev


def _parse_password(b: _Body, kind: str | None) -> m.FrontendEvent:
    if kind == "password":
        return m.PasswordMessage(b.cstring())
    if kind == "sasl_initial":
        mech = b.cstring()
        ln = b.int32()
        return m.SASLInitialResponse(mech, None if ln == -1 else b.raw(ln))
    if kind == "sasl":
        return m.SASLResponse(b.rest())
    raise PgProtocolError("unexpected password message")
