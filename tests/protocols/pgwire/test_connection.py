"""Byte-level tests of the sans-I/O connection: framing, state machine, malformed input."""

from __future__ import annotations

import struct

import pytest

from rusts.errors import ProtocolError
from rusts.protocols.pgwire import NEED_DATA, PgServerConnection
from rusts.protocols.pgwire import _frontend as fe
from rusts.protocols.pgwire import events as ev


def drain(conn: PgServerConnection) -> list:
    out = []
    while True:
        e = conn.next_event()
        if e is NEED_DATA:
            return out
        out.append(e)
        if isinstance(e, ev.ConnectionClosed):
            return out


def ready_conn() -> PgServerConnection:
    conn = PgServerConnection()
    conn.receive_data(fe.startup("bob"))
    assert isinstance(conn.next_event(), ev.StartupMessage)
    conn.send(ev.AuthenticationOk())
    assert conn.phase == "ready"
    return conn


def check_three_ways(make_conn, data: bytes, expected: list) -> None:
    """Feed ``data`` all at once, one byte at a time, and followed by a partial message."""
    conn = make_conn()
    conn.receive_data(data)
    assert drain(conn) == expected

    conn = make_conn()
    got = []
    for i in range(len(data)):
        conn.receive_data(data[i:i + 1])
        events = drain(conn)
        if i < len(data) - 1 and len(expected) == 1:
            assert events == [], f"event before the last byte (byte {i})"
        got += events
    assert got == expected

    conn = make_conn()
    trailing = b"Q\x00\x00"  # a typed header cut short
    conn.receive_data(data + trailing)
    assert drain(conn) == expected
    assert conn.trailing_data == (trailing, False)


TYPED_CASES = [
    (fe.query("select 1"), ev.Query("select 1")),
    (fe.query(""), ev.Query("")),
    (fe.parse("select $1", "s1", (23,)), ev.Parse("s1", "select $1", (23,))),
    (fe.bind((b"7", None), "p", "s1", (0,), (1,)),
     ev.Bind("p", "s1", (0,), (b"7", None), (1,))),
    (fe.describe("S", "s1"), ev.Describe("S", "s1")),
    (fe.describe("P", ""), ev.Describe("P", "")),
    (fe.execute("p", 10), ev.Execute("p", 10)),
    (fe.close("P", "p"), ev.Close("P", "p")),
    (fe.sync(), ev.Sync()),
    (fe.flush(), ev.Flush()),
    (fe.query("sélect 'ü'"), ev.Query("sélect 'ü'")),
]


@pytest.mark.parametrize("data,expected", TYPED_CASES)
def test_typed_messages_three_ways(data, expected):
    check_three_ways(ready_conn, data, [expected])


def test_terminate_closes():
    conn = ready_conn()
    conn.receive_data(fe.terminate() + fe.query("ignored"))
    assert drain(conn) == [ev.Terminate(), ev.ConnectionClosed()]


def test_startup_three_ways():
    data = fe.startup("bob", database="db", application_name="psql")
    check_three_ways(PgServerConnection, data,
                     [ev.StartupMessage(0, {"user": "bob", "database": "db",
                                            "application_name": "psql"})])


def test_database_defaults_to_user():
    conn = PgServerConnection()
    conn.receive_data(fe.startup("bob"))
    drain(conn)
    assert conn.startup_params == {"user": "bob", "database": "bob"}
    assert conn.phase == "auth"


def test_psql_negotiation_order_gssenc_then_ssl_then_startup():
    conn = PgServerConnection()
    conn.receive_data(fe.gssenc_request())
    assert drain(conn) == [ev.GSSENCRequest()]
    assert conn.send(ev.GSSENCResponse()) == b"N"
    conn.receive_data(fe.ssl_request())
    assert drain(conn) == [ev.SSLRequest()]
    assert conn.send(ev.SSLResponse(False)) == b"N"
    conn.receive_data(fe.startup("bob"))
    assert [type(e) for e in drain(conn)] == [ev.StartupMessage]


def test_nothing_is_read_before_the_negotiation_answer():
    conn = PgServerConnection()
    conn.receive_data(fe.ssl_request() + fe.startup("bob"))
    assert drain(conn) == [ev.SSLRequest()]
    assert drain(conn) == []  # waits for the SSLResponse
    conn.send(ev.SSLResponse(False))
    assert [type(e) for e in drain(conn)] == [ev.StartupMessage]


def test_tls_refused_when_plaintext_already_buffered():
    conn = PgServerConnection()
    conn.receive_data(fe.ssl_request() + fe.startup("bob"))
    drain(conn)
    with pytest.raises(ProtocolError):
        conn.send(ev.SSLResponse(True))
    with pytest.raises(ProtocolError):
        conn.next_event()


def test_duplicate_ssl_request_is_an_error():
    conn = PgServerConnection()
    conn.receive_data(fe.ssl_request())
    drain(conn)
    conn.send(ev.SSLResponse(False))
    conn.receive_data(fe.ssl_request())
    with pytest.raises(ProtocolError):
        conn.next_event()


def test_cancel_request():
    conn = PgServerConnection()
    conn.receive_data(fe.cancel_request(1234, 99))
    assert drain(conn) == [ev.CancelRequest(1234, 99), ev.ConnectionClosed()]


@pytest.mark.parametrize("data,sqlstate", [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "08P01"),          # garbage at startup
    (struct.pack(">i", 4) + b"\x00" * 4, "08P01"),           # startup length too small
    (struct.pack(">i", 10_001), "08P01"),                     # startup packet too large
    (struct.pack(">ii", 8, 131072), "0A000"),                 # protocol 2.0
    (struct.pack(">iii", 12, 80877103, 0), "08P01"),          # SSLRequest with a bad length
    (struct.pack(">ii", 9, 196608) + b"\x00", "28000"),       # no user
    (struct.pack(">ii", 13, 196608) + b"user\x00", "08P01"),  # dangling name
    (fe.startup("bob")[:-1] + b"x", "08P01"),                 # missing terminator
    (struct.pack(">ii", 18, 196608) + b"user\x00b\xffb\x00\x00", "22021"),  # invalid UTF-8
])
def test_malformed_startup(data, sqlstate):
    conn = PgServerConnection()
    conn.receive_data(data)
    with pytest.raises(ProtocolError) as info:
        drain(conn)
    assert info.value.sqlstate == sqlstate
    with pytest.raises(ProtocolError):  # sticky
        conn.next_event()


@pytest.mark.parametrize("data", [
    b"Z\x00\x00\x00\x04",                                   # unknown type byte
    b"\x00\x00\x00\x00\x08",                                # garbage
    b"Q\x00\x00\x00\x03",                                   # length < 4
    b"Q" + struct.pack(">i", 1 << 30),                      # > 1 GiB claimed
    b"S" + struct.pack(">i", 20_000),                       # Sync claiming 20 kB
    b"Q\x00\x00\x00\x08abcd",                               # no NUL terminator
    b"S\x00\x00\x00\x05x",                                  # trailing bytes in Sync
    b"D\x00\x00\x00\x06Xa\x00",                             # bad Describe kind
    b"B" + struct.pack(">i", 4 + 4) + b"\x00\x00\x00\x01",  # Bind body ends inside a count
    b"B" + struct.pack(">i", 4 + 2 + 2 + 2 + 4) + b"\x00\x00\x00\x00\x00\x01"
    + struct.pack(">i", 100) + b"\x00\x00",                 # parameter longer than the body
    fe.bind((), param_formats=(2,)),                        # bad format code
    b"p\x00\x00\x00\x08pw\x00\x00",                         # password while not authenticating
])
def test_malformed_typed_messages(data):
    conn = ready_conn()
    conn.receive_data(data)
    with pytest.raises(ProtocolError) as info:
        drain(conn)
    assert info.value.sqlstate == "08P01"


def test_huge_claim_rejected_from_the_header_alone():
    conn = ready_conn()
    conn.receive_data(b"P" + struct.pack(">i", (1 << 30) + 5))
    with pytest.raises(ProtocolError):
        conn.next_event()


def test_large_message_below_limit_is_buffered_until_complete():
    conn = PgServerConnection(max_message_size=1 << 20)
    conn.receive_data(fe.startup("bob"))
    drain(conn)
    conn.send(ev.AuthenticationOk())
    sql = "select '" + "x" * 500_000 + "'"
    data = fe.query(sql)
    conn.receive_data(data[:300_000])
    assert drain(conn) == []
    conn.receive_data(data[300_000:])
    assert drain(conn) == [ev.Query(sql)]


def test_password_messages_follow_the_auth_request_sent():
    conn = PgServerConnection()
    conn.receive_data(fe.startup("bob"))
    drain(conn)
    conn.receive_data(fe.password("pw"))
    assert drain(conn) == []  # nothing is parsed until the server asks
    conn.send(ev.AuthenticationCleartextPassword())
    assert drain(conn) == [ev.PasswordMessage("pw")]

    conn = PgServerConnection()
    conn.receive_data(fe.startup("bob"))
    drain(conn)
    assert conn.send(ev.AuthenticationSASL()) == b"R" + struct.pack(">ii", 23, 10) + b"SCRAM-SHA-256\x00\x00"
    conn.receive_data(fe.sasl_initial("SCRAM-SHA-256", b"n,,n=,r=abc"))
    assert drain(conn) == [ev.SASLInitialResponse("SCRAM-SHA-256", b"n,,n=,r=abc")]
    conn.send(ev.AuthenticationSASLContinue(b"r=abcdef,s=c2FsdA==,i=4096"))
    conn.receive_data(fe.sasl_response(b"c=biws,r=abcdef,p=xx"))
    assert drain(conn) == [ev.SASLResponse(b"c=biws,r=abcdef,p=xx")]


def test_query_during_authentication_is_a_violation():
    conn = PgServerConnection()
    conn.receive_data(fe.startup("bob"))
    drain(conn)
    conn.send(ev.AuthenticationCleartextPassword())
    conn.receive_data(fe.query("select 1"))
    with pytest.raises(ProtocolError):
        drain(conn)


def test_extended_error_discards_until_sync():
    conn = ready_conn()
    conn.receive_data(fe.parse("bad") + fe.bind() + fe.execute() + fe.query("x") + fe.sync()
                      + fe.query("after"))
    assert conn.next_event() == ev.Parse("", "bad", ())
    conn.send(ev.ErrorResponse("42601", "syntax error"))
    assert conn.skipping_until_sync
    assert drain(conn) == [ev.Sync(), ev.Query("after")]
    assert not conn.skipping_until_sync


def test_simple_query_error_does_not_skip():
    conn = ready_conn()
    conn.receive_data(fe.query("bad") + fe.query("next"))
    assert conn.next_event() == ev.Query("bad")
    conn.send(ev.ErrorResponse("42601", "syntax error"))
    conn.send(ev.ReadyForQuery("I"))
    assert drain(conn) == [ev.Query("next")]


def test_fatal_error_closes_and_eof_closes():
    conn = ready_conn()
    conn.send(ev.ErrorResponse("08P01", "bye", "FATAL"))
    conn.receive_data(fe.query("x"))
    assert drain(conn) == [ev.ConnectionClosed()]
    with pytest.raises(ProtocolError):
        conn.send(ev.ReadyForQuery())

    conn = ready_conn()
    conn.receive_data(fe.query("x")[:4])
    conn.receive_data(b"")
    assert drain(conn) == [ev.ConnectionClosed()]


def test_copy_messages_outside_copy_are_ignored():
    conn = ready_conn()
    conn.receive_data(b"d\x00\x00\x00\x06ab" + b"c\x00\x00\x00\x04" + fe.sync())
    assert drain(conn) == [ev.Sync()]


def test_connection_pair_full_exchange():
    """Drive the server object with frontend bytes and parse what it answers."""
    conn = PgServerConnection()
    out = b""
    conn.receive_data(fe.ssl_request())
    assert conn.next_event() == ev.SSLRequest()
    assert conn.send(ev.SSLResponse(False)) == b"N"
    conn.receive_data(fe.startup("bob", database="metrics"))
    start = conn.next_event()
    assert start.params["database"] == "metrics"
    out += conn.send(ev.AuthenticationOk())
    out += conn.send(ev.ParameterStatus("server_version", "15.0 (rusts)"))
    out += conn.send(ev.BackendKeyData(42, 7))
    out += conn.send(ev.ReadyForQuery("I"))
    conn.receive_data(fe.query("select 1"))
    assert conn.next_event() == ev.Query("select 1")
    out += conn.send(ev.RowDescription((ev.FieldDescription("a", 23, 4),)))
    import numpy as np
    out += conn.send(ev.DataRows((np.array([1, 2], dtype=np.int32),), ("int4",), (0,)))
    out += conn.send(ev.CommandComplete("SELECT 2"))
    out += conn.send(ev.ReadyForQuery("I"))
    msgs, rest = fe.parse_backend(out)
    assert rest == b""
    assert [(mm.type, mm.fields) for mm in msgs] == [
        ("R", (0, b"")), ("S", ("server_version", "15.0 (rusts)")), ("K", (42, 7)), ("Z", "I"),
        ("T", [("a", 23, 4, 0)]), ("D", [b"1"]), ("D", [b"2"]), ("C", "SELECT 2"), ("Z", "I")]


def test_error_response_fields():
    conn = ready_conn()
    data = conn.send(ev.ErrorResponse("42703", 'column "x" does not exist', position=8,
                                      hint="check", detail="d"))
    (msg,), _ = fe.parse_backend(data)
    assert msg.type == "E"
    assert msg.fields == {"S": "ERROR", "V": "ERROR", "C": "42703",
                          "M": 'column "x" does not exist', "D": "d", "H": "check", "P": "8"}
