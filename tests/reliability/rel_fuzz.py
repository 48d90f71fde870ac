"""Fuzz targets shared by the PR tier (tests/reliability/test_fuzz.py, hypothesis) and the long
tier (perf/soak/fuzz.py, atheris or hypothesis). Each target takes bytes and either returns or
raises :class:`rusts.errors.RustsError` (a clean, client-facing error); anything else is a bug.

Targets: the line protocol parser, the JSON query decoder (``rusts.query.model.from_json``
after ``json.loads``, as the HTTP route does), the SQL front end (parse, output names and the
fast planners against a fixed catalog; no execution) and the pgwire message reader (startup
packet, framing and payload parsing, sans-I/O)."""

from __future__ import annotations

import json
import pathlib
import random

from rusts.errors import RustsError
from rusts.model import FieldType

CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"
NOW = 1_700_000_000_000_000_000


def corpus(name: str) -> list[bytes]:
    return [line.encode() for line in (CORPUS / name).read_text().splitlines() if line.strip()]


def lp_target(data: bytes) -> None:
    from rusts.protocols.line_protocol import parse

    for precision in ("ns", "s"):
        try:
            batch = parse(data, precision=precision)
        except RustsError:
            continue
        for e in batch.errors:  # every rejected line says why
            assert e.error_message and e.line_number >= 1, e


def query_target(data: bytes) -> None:
    from rusts.query.model import from_json

    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return  # the route answers 400 "invalid JSON" before the decoder
    try:
        q = from_json(obj)
    except RustsError:
        return
    for f in q.tag_filters:
        if f.op.value == "Regex":
            f.compiled()  # a regex the decoder accepted must compile


_CATALOG = None


def _catalog():
    global _CATALOG
    if _CATALOG is None:
        from rusts.sql.translate import Catalog

        _CATALOG = Catalog(lambda: ["cpu", "mem"], lambda m: ["host", "region"],
                           lambda m: {"usage": FieldType.FLOAT, "n": FieldType.INTEGER,
                                      "s": FieldType.STRING, "ok": FieldType.BOOLEAN})
    return _CATALOG


def sql_target(data: bytes) -> None:
    from rusts.sql.runner import parse_sql
    from rusts.sql.translate import item_names, plan_fast, plan_latest

    text = data.decode("utf-8", "replace")
    try:
        ast = parse_sql(text)
        names = item_names(ast, text)
        plan_fast(ast, _catalog(), NOW, names, allow_residual=True)
        plan_latest(ast, _catalog(), NOW, names)
    except RustsError:
        return


def pgwire_target(data: bytes) -> None:
    from rusts.protocols.pgwire._reader import (ReceiveBuffer, parse_message, read_message_frame,
                                                read_startup_packet)

    buf = ReceiveBuffer()
    buf.feed(data)
    try:
        read_startup_packet(buf)
    except RustsError:
        pass
    buf = ReceiveBuffer()
    buf.feed(data)
    try:
        while True:
            frame = read_message_frame(buf)
            if frame is None:
                break
            parse_message(frame[0], frame[1], "cleartext")
    except RustsError:
        pass
    if data:  # the payload parser alone, for every type byte
        try:
            parse_message(data[0], data[1:], "md5")
        except RustsError:
            pass


TARGETS = {"line_protocol": (lp_target, "line_protocol.txt"),
           "json_query": (query_target, "query.json"),
           "sql": (sql_target, "sql.txt"),
           "pgwire": (pgwire_target, None)}

_SPECIAL = [b",", b"=", b" ", b'"', b"\\", b"\n", b"\r", b"\t", b"#", b"i", b"u", b"e", b"-", b".",
            b"0", b"9", b"'", b"(", b")", b"{", b"}", b"[", b"]", b":", b"\x00", b"\xff", b"\xc3",
            b"9223372036854775808", b"1e999", b"NaN", b"null", b"true", b"SELECT", b"WHERE",
            b"GROUP BY", b"interval '1 day'", b"now()", b"$1", b"::"]


def mutate(seed: bytes, rng: random.Random, n: int = 4) -> bytes:
    """A few random edits of a corpus entry: byte flips, inserts of syntax characters and
    keywords, deletions, duplications and splices."""
    b = bytearray(seed)
    for _ in range(rng.randint(1, n)):
        op = rng.randrange(5)
        at = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[min(at, len(b) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[at:at] = rng.choice(_SPECIAL)
        elif op == 2 and b:
            del b[at:at + rng.randint(1, 8)]
        elif op == 3 and b:
            lo = rng.randrange(len(b))
            b[at:at] = b[lo:lo + rng.randint(1, 16)]
        else:
            b[at:at] = rng.randbytes(rng.randint(1, 4))
    return bytes(b)


def pg_seeds() -> list[bytes]:
    """Well-formed frontend messages to mutate: startup, Query, Parse/Bind/Execute/Sync."""
    import struct

    def msg(t: bytes, body: bytes) -> bytes:
        return t + struct.pack("!i", len(body) + 4) + body

    params = b"user\x00u\x00database\x00d\x00\x00"
    startup = struct.pack("!ii", len(params) + 8, 196608) + params
    return [startup, struct.pack("!ii", 8, 80877103),
            msg(b"Q", b"SELECT 1\x00"),
            msg(b"P", b"s1\x00SELECT $1\x00" + struct.pack("!hi", 1, 23))
            + msg(b"B", b"\x00s1\x00" + struct.pack("!hhhih", 1, 0, 1, 1, 0)[:-2] + b"7" + struct.pack("!h", 0))
            + msg(b"E", b"\x00" + struct.pack("!i", 0)) + msg(b"S", b""),
            msg(b"p", b"secret\x00"), msg(b"X", b""), msg(b"D", b"Ss1\x00"), msg(b"C", b"Pp\x00")]


def seeds(target: str) -> list[bytes]:
    _, name = TARGETS[target]
    return pg_seeds() if name is None else corpus(name)
