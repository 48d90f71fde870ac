"""Fuzzing the running server with random and mutated frontend bytes.

Every input must end with the server closing the connection (after an ErrorResponse or not),
never with a hang, an internal error (XX000) or a logged handler failure, and the server must
keep serving a well-behaved client afterwards. The server runs in its own thread (its own trio
loop) so hypothesis can drive plain blocking sockets.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rusts.protocols.pgwire import PgServer
from rusts.protocols.pgwire import _frontend as fe


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def threaded_server(stub_backend_cls):
    recorder = Recorder()
    logger = logging.getLogger("rusts.protocols.pgwire")
    logger.addHandler(recorder)
    started: queue.Queue = queue.Queue()

    def runner() -> None:
        async def main() -> None:
            server = PgServer(stub_backend_cls, max_connections=50, startup_timeout=5)
            async with trio.open_nursery() as nursery:
                port = await nursery.start(server.serve, "127.0.0.1", 0)
                started.put((port, server, trio.lowlevel.current_trio_token(), nursery.cancel_scope))
        trio.run(main)

    thread = threading.Thread(target=runner, daemon=True)
    thread.start()
    port, server, token, scope = started.get(timeout=10)
    yield port, server, recorder
    trio.from_thread.run_sync(scope.cancel, trio_token=token)
    thread.join(10)
    logger.removeHandler(recorder)


def exchange(port: int, data: bytes) -> bytes:
    """Send ``data``, half-close, and read until the server closes (5 s at most)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may already have answered and closed
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
        return out


def check_answer(data: bytes) -> None:
    if data in (b"", b"N"):
        return
    if data[:1] == b"N":  # answer to an SSL/GSSENC request, then messages
        data = data[1:]
    msgs, _rest = fe.parse_backend(data)
    for mm in msgs:
        if mm.type == "E":
            assert mm.fields["S"] in ("ERROR", "FATAL"), mm
            assert len(mm.fields["C"]) == 5 and mm.fields["C"] != "XX000", mm


def healthy(port: int) -> None:
    data = exchange(port, fe.startup("bob") + fe.query("select 1") + fe.terminate())
    msgs, _ = fe.parse_backend(data)
    assert [m.type for m in msgs][-4:] == ["T", "D", "C", "Z"]


VALID = (fe.startup("bob", database="d") + fe.parse("select * from cpu where usage > $1", "s")
         + fe.bind((b"1.5",), "", "s", (0,), (1,)) + fe.describe("P") + fe.execute("", 1)
         + fe.execute("") + fe.sync() + fe.query("select 1; select rows 3") + fe.close("S", "s")
         + fe.sync() + fe.terminate())

mutations = st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1,
                     max_size=6)
typed_frames = st.lists(st.tuples(st.sampled_from(b"QPBDECSHXpFdcf"), st.binary(max_size=40)),
                        max_size=6)
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(st.binary(max_size=200))
def test_random_bytes(threaded_server, data):
    port, _, recorder = threaded_server
    check_answer(exchange(port, data))
    assert not recorder.records


@SETTINGS
@given(mutations, st.integers(0, len(VALID)))
def test_mutated_session(threaded_server, muts, cut):
    port, _, recorder = threaded_server
    data = bytearray(VALID)
    for i, b in muts:
        data[i] = b
    check_answer(exchange(port, bytes(data[:cut])))
    assert not recorder.records


@SETTINGS
@given(typed_frames)
def test_random_typed_frames_after_startup(threaded_server, frames):
    port, _, recorder = threaded_server
    data = fe.startup("bob")
    for t, body in frames:
        data += bytes([t]) + (len(body) + 4).to_bytes(4, "big") + body
    check_answer(exchange(port, data))
    assert not recorder.records


def test_server_still_serves_after_fuzzing(threaded_server):
    port, server, recorder = threaded_server
    for data in (b"\x00" * 50, VALID[:30], b"\xff" * 9):
        exchange(port, data)
    healthy(port)
    assert not recorder.records
