"""The client side of the wire format, minimal: build frontend bytes, parse backend bytes.

Used by tests, fuzzers and benchmarks to talk to the server byte by byte without a driver. It is
independent of ``_reader`` / ``_writer`` (written from the protocol description, not from them),
so round trips through both sides cross-check each other.
"""

from __future__ import annotations

import struct

import attrs


def _cstr(s: str) -> bytes:
    return s.encode() + b"\x00"


def _msg(t: bytes, body: bytes = b"") -> bytes:
    return t + struct.pack(">i", len(body) + 4) + body


def startup(user: str = "u", protocol: int = 196608, **params: str) -> bytes:
    """A StartupMessage (protocol 3.0 by default)."""
    body = struct.pack(">i", protocol) + _cstr("user") + _cstr(user)
    for k, v in params.items():
        body += _cstr(k) + _cstr(v)
    body += b"\x00"
    return struct.pack(">i", len(body) + 4) + body


def ssl_request() -> bytes:
    return struct.pack(">ii", 8, 80877103)


def gssenc_request() -> bytes:
    return struct.pack(">ii", 8, 80877104)


def cancel_request(pid: int, secret: int) -> bytes:
    return struct.pack(">iiii", 16, 80877102, pid, secret)


def query(sql: str) -> bytes:
    return _msg(b"Q", _cstr(sql))


def parse(sql: str, name: str = "", param_types: tuple[int, ...] = ()) -> bytes:
    return _msg(b"P", _cstr(name) + _cstr(sql) + struct.pack(f">h{len(param_types)}I",
                                                           len(param_types), *param_types))


def bind(params: tuple[bytes | None, ...] = (), portal: str = "", statement: str = "",
         param_formats: tuple[int, ...] = (), result_formats: tuple[int, ...] = ()) -> bytes:
    body = _cstr(portal) + _cstr(statement)
    body += struct.pack(f">h{len(param_formats)}h", len(param_formats), *param_formats)
    body += struct.pack(">h", len(params))
    for p in params:
        body += struct.pack(">i", -1) if p is None else struct.pack(">i", len(p)) + p
    body += struct.pack(f">h{len(result_formats)}h", len(result_formats), *result_formats)
    return _msg(b"B", body)


def describe(kind: str = "P", name: str = "") -> bytes:
    return _msg(b"D", kind.encode() + _cstr(name))


def execute(portal: str = "", max_rows: int = 0) -> bytes:
    return _msg(b"E", _cstr(portal) + struct.pack(">i", max_rows))


def close(kind: str = "S", name: str = "") -> bytes:
    return _msg(b"C", kind.encode() + _cstr(name))


def sync() -> bytes:
    return _msg(b"S")


def flush() -> bytes:
    return _msg(b"H")


def terminate() -> bytes:
    return _msg(b"X")


def password(pw: str) -> bytes:
    return _msg(b"p", _cstr(pw))


def sasl_initial(mechanism: str, data: bytes) -> bytes:
    return _msg(b"p", _cstr(mechanism) + struct.pack(">i", len(data)) + data)


def sasl_response(data: bytes) -> bytes:
    return _msg(b"p", data)


@attrs.frozen
class BackendMessage:
    """A parsed backend message: type character and decoded ``fields`` (shape per type)."""

    type: str
    fields: object = None


def _cstrings(body: bytes) -> list[str]:
    return [x.decode() for x in body.split(b"\x00")[:-1]]


def _decode(t: str, body: bytes) -> object:
    if t == "R":
        code = struct.unpack_from(">i", body)[0]
        return (code, body[4:])
    if t in "EN":
        return {chr(p[0]): p[1:].decode() for p in body.split(b"\x00") if p}
    if t == "S":
        return tuple(_cstrings(body))
    if t == "K":
        return struct.unpack(">ii", body)
    if t == "Z":
        return body.decode()
    if t == "C":
        return _cstrings(body)[0]
    if t == "T":
        n = struct.unpack_from(">h", body)[0]
        pos, out = 2, []
        for _ in range(n):
            end = body.index(b"\x00", pos)
            name = body[pos:end].decode()
            toid, col, typ, size, mod, fmt = struct.unpack_from(">ihihih", body, end + 1)
            out.append((name, typ, size, fmt))
            pos = end + 19
        return out
    if t == "D":
        n = struct.unpack_from(">h", body)[0]
        pos, vals = 2, []
        for _ in range(n):
            ln = struct.unpack_from(">i", body, pos)[0]
            pos += 4
            if ln < 0:
                vals.append(None)
            else:
                vals.append(body[pos:pos + ln])
                pos += ln
        if pos != len(body):
            raise ValueError("DataRow has trailing bytes")
        return vals
    if t == "t":
        n = struct.unpack_from(">h", body)[0]
        return struct.unpack_from(f">{n}I", body, 2)
    return body


def parse_backend(data: bytes) -> tuple[list[BackendMessage], bytes]:
    """Split backend bytes into messages; returns (messages, incomplete remainder)."""
    out, pos = [], 0
    while len(data) - pos >= 5:
        t = chr(data[pos])
        ln = struct.unpack_from(">i", data, pos + 1)[0]
        if len(data) - pos < 1 + ln:
            break
        body = data[pos + 5:pos + 1 + ln]
        out.append(BackendMessage(t, _decode(t, body)))
        pos += 1 + ln
    return out, data[pos:]
