"""Backend events -> bytes.

Every backend message is ``byte type`` + ``int32 length`` (including itself) + body, except the
one-byte answers to SSLRequest / GSSENCRequest. :class:`~._messages.DataRows` encodes a whole
chunk of rows at once through :func:`._types.encode_data_rows`.
"""

from __future__ import annotations

import struct

from . import _messages as m
from ._types import encode_data_rows


def _msg(type_char: bytes, body: bytes = b"") -> bytes:
    return type_char + struct.pack(">i", len(body) + 4) + body


def _cstr(s: str) -> bytes:
    return s.replace("\x00", "").encode("utf-8") + b"\x00"


def _auth(code: int, extra: bytes = b"") -> bytes:
    return _msg(b"R", struct.pack(">i", code) + extra)


def _error_body(ev: m.ErrorResponse | m.NoticeResponse) -> bytes:
    fields = [(b"S", ev.severity), (b"V", ev.severity), (b"C", ev.code), (b"M", ev.message)]
    if isinstance(ev, m.ErrorResponse):
        if ev.detail:
            fields.append((b"D", ev.detail))
        if ev.hint:
            fields.append((b"H", ev.hint))
        if ev.position is not None:
            fields.append((b"P", str(ev.position)))
    return b"".join(k + _cstr(v) for k, v in fields) + b"\x00"


def _row_description(ev: m.RowDescription) -> bytes:
    parts = [struct.pack(">h", len(ev.fields))]
    for f in ev.fields:
        parts.append(_cstr(f.name))
        parts.append(struct.pack(">ihihih", f.table_oid, f.column_number, f.type_oid,
                                 f.type_size, f.type_modifier, f.format))
    return _msg(b"T", b"".join(parts))


_SIMPLE = {
    m.AuthenticationOk: _auth(0),
    m.AuthenticationCleartextPassword: _auth(3),
    m.EmptyQueryResponse: _msg(b"I"),
    m.ParseComplete: _msg(b"1"),
    m.BindComplete: _msg(b"2"),
    m.CloseComplete: _msg(b"3"),
    m.NoData: _msg(b"n"),
    m.PortalSuspended: _msg(b"s"),
    m.GSSENCResponse: b"N",
}


def write_event(ev: m.BackendEvent) -> bytes:
    """Serialise one backend event."""
    simple = _SIMPLE.get(type(ev))
    if simple is not None:
        return simple
    if isinstance(ev, m.DataRows):
        return encode_data_rows(ev.arrays, ev.type_names, ev.formats)
    if isinstance(ev, m.ReadyForQuery):
        return _msg(b"Z", ev.status.encode("ascii"))
    if isinstance(ev, m.CommandComplete):
        return _msg(b"C", _cstr(ev.tag))
    if isinstance(ev, m.RowDescription):
        return _row_description(ev)
    if isinstance(ev, m.ErrorResponse):
        return _msg(b"E", _error_body(ev))
    if isinstance(ev, m.NoticeResponse):
        return _msg(b"N", _error_body(ev))
    if isinstance(ev, m.ParameterStatus):
        return _msg(b"S", _cstr(ev.name) + _cstr(ev.value))
    if isinstance(ev, m.BackendKeyData):
        return _msg(b"K", struct.pack(">ii", ev.process_id, ev.secret_key))
    if isinstance(ev, m.ParameterDescription):
        return _msg(b"t", struct.pack(f">h{len(ev.type_oids)}I", len(ev.type_oids), *ev.type_oids))
    if isinstance(ev, m.SSLResponse):
        return b"S" if ev.accept else b"N"
    if isinstance(ev, m.AuthenticationSASL):
        return _auth(10, b"".join(_cstr(x) for x in ev.mechanisms) + b"\x00")
    if isinstance(ev, m.AuthenticationSASLContinue):
        return _auth(11, ev.data)
    if isinstance(ev, m.AuthenticationSASLFinal):
        return _auth(12, ev.data)
    if isinstance(ev, m.NegotiateProtocolVersion):
        return _msg(b"v", struct.pack(">ii", ev.newest_minor, len(ev.unrecognized))
                    + b"".join(_cstr(x) for x in ev.unrecognized))
    raise TypeError(f"not a backend event: {ev!r}")
