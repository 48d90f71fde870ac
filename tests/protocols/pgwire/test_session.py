"""Simple and extended query flows of PgSession, driven with frontend bytes (no sockets)."""

from __future__ import annotations

import struct

import pytest
import trio

from rusts.protocols.pgwire import NEED_DATA, PgServerConnection, PgSession
from rusts.protocols.pgwire import _frontend as fe
from rusts.protocols.pgwire import events as ev


class Harness:
    def __init__(self, backend, **kw) -> None:
        self.conn = PgServerConnection()
        self.conn.receive_data(fe.startup("bob"))
        self.conn.next_event()
        self.conn.send(ev.AuthenticationOk())
        self.writes: list[bytes] = []
        self.backend = backend
        self.session = PgSession(self.conn, backend, self._sink, **kw)

    async def _sink(self, data: bytes) -> None:
        self.writes.append(data)
        await trio.lowlevel.checkpoint()

    async def run(self, data: bytes) -> list[tuple[str, object]]:
        self.writes.clear()
        self.conn.receive_data(data)
        while (e := self.conn.next_event()) is not NEED_DATA:
            await self.session.handle(e)
        msgs, rest = fe.parse_backend(b"".join(self.writes))
        assert rest == b""
        return [(mm.type, mm.fields) for mm in msgs]


@pytest.fixture
def h(stub_backend_cls):
    return Harness(stub_backend_cls({}))


def types(msgs):
    return "".join(t for t, _ in msgs)


async def test_simple_query_several_statements(h):
    msgs = await h.run(fe.query("select 1; show x;set a = 1"))
    assert types(msgs) == "TDCTDCCZ"
    assert msgs[0][1] == [("?column?", 23, 4, 0)]
    assert msgs[1][1] == [b"1"]
    assert [f for t, f in msgs if t == "C"] == ["SELECT 1", "SHOW", "SET"]
    assert msgs[-1] == ("Z", "I")


async def test_empty_query(h):
    assert await h.run(fe.query("  ;  ")) == [("I", b""), ("Z", "I")]


async def test_error_position_points_into_the_whole_string_and_stops(h):
    msgs = await h.run(fe.query("select 1; select boom; select 1"))
    assert types(msgs) == "TDCEZ"
    err = msgs[3][1]
    assert err["C"] == "42601" and err["M"] == "boom happened"
    assert int(err["P"]) == "select 1; select boom".index("boom") + 1


async def test_failed_transaction_block(h):
    assert (await h.run(fe.query("BEGIN")))[-1] == ("Z", "T")
    msgs = await h.run(fe.query("select boom"))
    assert msgs[-1] == ("Z", "E")
    msgs = await h.run(fe.query("select 1"))
    assert msgs[0][1]["C"] == "25P02" and msgs[-1] == ("Z", "E")
    msgs = await h.run(fe.query("ROLLBACK"))
    assert msgs == [("C", "ROLLBACK"), ("Z", "I")]
    assert len(h.backend.executed) == 1  # BEGIN/ROLLBACK never reach the backend


async def test_extended_query_binary_results_and_typed_params(h):
    msgs = await h.run(fe.parse("select * from cpu where usage > $1", "", (0,))
                       + fe.bind((struct.pack(">d", 1.0),), param_formats=(1,), result_formats=(1,))
                       + fe.describe("P") + fe.execute() + fe.sync())
    assert types(msgs) == "12TDDCZ"
    fields = msgs[2][1]
    assert [f[1] for f in fields] == [1114, 25, 701, 20, 16, 1700]
    assert all(f[3] == 1 for f in fields)
    assert h.backend.executed[-1][1] == [1.0]
    row = msgs[3][1]
    assert struct.unpack(">q", row[0])[0] == 1_700_000_001_500_000 - 946_684_800_000_000
    assert row[1] is None and row[4] == b"\x00"
    assert msgs[5] == ("C", "SELECT 2")


async def test_text_params_are_decoded_by_described_type(h):
    await h.run(fe.parse("select * from cpu where usage > $1") + fe.bind((b"50",)) + fe.execute()
                + fe.sync())
    assert h.backend.executed[-1][1] == [50.0]


async def test_per_column_result_formats(h):
    msgs = await h.run(fe.parse("select rows 1") + fe.bind(result_formats=(0, 1, 0))
                       + fe.describe("P") + fe.execute() + fe.sync())
    assert [f[3] for f in msgs[2][1]] == [0, 1, 0]
    assert msgs[3][1] == [b"2023-11-14 22:13:20+00", struct.pack(">d", 0.0), b"0"]


async def test_describe_statement(h):
    msgs = await h.run(fe.parse("select * from cpu where usage > $1", "s") + fe.describe("S", "s")
                       + fe.parse("set x = 1", "s2") + fe.describe("S", "s2") + fe.sync())
    assert types(msgs) == "1tT1tnZ"
    assert msgs[1][1] == (701,)
    assert msgs[4][1] == ()


async def test_portal_row_limit_suspends_and_resumes(h):
    msgs = await h.run(fe.parse("select rows 5") + fe.bind() + fe.execute("", 2)
                       + fe.execute("", 2) + fe.execute("", 2) + fe.sync())
    assert types(msgs) == "12DDsDDsDCZ"
    assert [f[2] for t, f in msgs if t == "D"] == [b"0", b"1", b"2", b"3", b"4"]
    assert msgs[-2] == ("C", "SELECT 1")
    assert len(h.backend.executed) == 1  # run once, then resumed from the kept result


async def test_named_portal_survives_inside_a_block_and_ends_at_sync_outside(h):
    await h.run(fe.query("BEGIN"))
    msgs = await h.run(fe.parse("select rows 3", "st") + fe.bind(portal="cur", statement="st")
                       + fe.execute("cur", 1) + fe.sync())
    assert types(msgs) == "12DsZ" and msgs[-1] == ("Z", "T")
    msgs = await h.run(fe.execute("cur", 0) + fe.sync())
    assert types(msgs) == "DDCZ"
    await h.run(fe.query("COMMIT"))
    msgs = await h.run(fe.execute("cur") + fe.sync())
    assert msgs[0][1]["C"] == "34000"  # COMMIT closed the portal
    msgs = await h.run(fe.bind(portal="cur", statement="st") + fe.execute("cur", 1) + fe.sync())
    assert types(msgs) == "2DsZ"
    msgs = await h.run(fe.execute("cur") + fe.sync())
    assert msgs[0][1]["C"] == "34000"  # Sync outside a block closed it


async def test_error_in_extended_skips_until_sync(h):
    msgs = await h.run(fe.parse("nonsense") + fe.bind() + fe.describe("P") + fe.execute()
                       + fe.sync() + fe.parse("select 1") + fe.bind() + fe.execute() + fe.sync())
    assert types(msgs) == "EZ12DCZ"
    assert msgs[0][1]["C"] == "42601"


async def test_execute_error_and_transaction_status(h):
    await h.run(fe.query("BEGIN"))
    msgs = await h.run(fe.parse("select boom") + fe.bind() + fe.execute() + fe.sync())
    assert types(msgs) == "12EZ" and msgs[-1] == ("Z", "E")
    msgs = await h.run(fe.parse("select 1") + fe.bind() + fe.execute() + fe.sync())
    assert msgs[0][1]["C"] == "25P02"
    msgs = await h.run(fe.parse("ROLLBACK") + fe.bind() + fe.execute() + fe.sync())
    assert msgs == [("1", b""), ("2", b""), ("C", "ROLLBACK"), ("Z", "I")]


async def test_statement_bookkeeping_errors(h):
    msgs = await h.run(fe.parse("select 1", "a") + fe.parse("select 1", "a") + fe.sync())
    assert msgs[1][1]["C"] == "42P05"
    msgs = await h.run(fe.bind(statement="nope") + fe.sync())
    assert msgs[0][1]["C"] == "26000"
    msgs = await h.run(fe.bind((b"1",), statement="a") + fe.sync())
    assert msgs[0][1]["C"] == "08P01" and "requires 0" in msgs[0][1]["M"]
    msgs = await h.run(fe.close("S", "a") + fe.close("S", "never") + fe.bind(statement="a")
                       + fe.sync())
    assert types(msgs) == "33EZ" and msgs[2][1]["C"] == "26000"
    msgs = await h.run(fe.parse("") + fe.bind() + fe.describe("P") + fe.execute() + fe.sync())
    assert types(msgs) == "12nIZ"


async def test_flush_sends_without_sync(h):
    msgs = await h.run(fe.parse("select 1") + fe.flush())
    assert msgs == [("1", b"")]
    assert await h.run(fe.bind()) == []  # buffered until Sync/Flush


async def test_cancel_running_query(h):
    async with trio.open_nursery() as nursery:
        result = {}

        async def run():
            result["msgs"] = await h.run(fe.query("select sleep"))
        nursery.start_soon(run)
        await trio.testing.wait_all_tasks_blocked()
        assert h.session.cancel()
    assert result["msgs"][0][1]["C"] == "57014"
    assert result["msgs"][-1] == ("Z", "I")
    assert not h.session.cancel()  # nothing running any more


async def test_large_result_streams_in_bounded_writes(stub_backend_cls):
    h = Harness(stub_backend_cls({}), chunk_rows=500, flush_bytes=16_384)
    msgs = await h.run(fe.query("select rows 20000"))
    assert types(msgs) == "T" + "D" * 20000 + "CZ"
    assert len(h.writes) > 20
    assert max(len(w) for w in h.writes) < 16_384 + 500 * 64


async def test_backend_bug_is_reported_not_raised(h):
    async def broken(sql, params=None):
        raise RuntimeError("kaboom")
    h.backend.execute = broken
    msgs = await h.run(fe.query("select 1"))
    assert msgs[0][1]["C"] == "XX000" and "kaboom" in msgs[0][1]["M"]
    assert msgs[-1] == ("Z", "I")


async def test_deallocate_and_discard_manage_prepared_statements(h):
    await h.run(fe.parse("select 1", "a") + fe.parse("select 1", "b") + fe.sync())
    assert await h.run(fe.query("DEALLOCATE a")) == [("C", "DEALLOCATE"), ("Z", "I")]
    msgs = await h.run(fe.bind(statement="a") + fe.sync())
    assert msgs[0][1]["C"] == "26000"
    msgs = await h.run(fe.query("DEALLOCATE a"))
    assert msgs[0][1]["C"] == "26000"
    assert (await h.run(fe.query("DEALLOCATE ALL")))[0] == ("C", "DEALLOCATE ALL")
    msgs = await h.run(fe.bind(statement="b") + fe.sync())
    assert msgs[0][1]["C"] == "26000"
    await h.run(fe.parse("select 1", "c") + fe.sync())
    assert (await h.run(fe.query("DISCARD ALL")))[0] == ("C", "DISCARD ALL")
    msgs = await h.run(fe.bind(statement="c") + fe.sync())
    assert msgs[0][1]["C"] == "26000"
    assert h.backend.executed == []
