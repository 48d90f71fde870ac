"""Bounded fuzzing (PR tier) of the client-facing decoders: the line protocol parser, the JSON
query decoder, the SQL front end (parse + plan) and the pgwire message reader. Inputs are
random bytes, random text over each grammar's special characters, and mutations of the seeded
corpus in tests/reliability/corpus/. Every input must return or raise a RustsError (which the
protocol edges turn into a 4xx / ErrorResponse naming the problem): no other exception, no hang.

And the HTTP request path (rel_http_fuzz.py, rel_http_gen.py): generated requests for every
route, framing attacks and mutations of corpus/http/, driven in-process through the server's own
serving loop (our hypercorn connection class, the hot routes, the Quart app) with a real Database,
and a smaller share over loopback sockets against a rusts-server process. Every response must be
well-formed, below 500 (or 503 with Retry-After), a 4xx must carry a JSON ``error``; nothing may
log a traceback, hang, or stop /ping from answering. The defects it found are kept as examples.

The long tier (1M cases per target) is perf/soak/fuzz.py."""

from __future__ import annotations

import json
import random
import tempfile
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import trio

from rel_fuzz import TARGETS, mutate, seeds
from rel_http_fuzz import Harness, check_response, fuzz_in_process, fuzz_wire, generate, http_corpus, parse_responses

SETTINGS = settings(max_examples=300, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


def _inputs(target: str):
    corpus = seeds(target)
    mutated = st.tuples(st.sampled_from(corpus), st.integers(0, 2**32 - 1)).map(
        lambda t: mutate(t[0], random.Random(t[1])))
    grammar = st.lists(st.sampled_from([b",", b"=", b" ", b'"', b"\\", b"\n", b"i", b"1", b"a",
                                        b"-", b".", b"e", b"'", b"(", b")", b"{", b"}", b":",
                                        b"SELECT ", b"FROM ", b"cpu", b"usage", b"\x00"]),
                       max_size=40).map(b"".join)
    return st.one_of(mutated, mutated, grammar, st.binary(max_size=200))


@pytest.mark.parametrize("target", list(TARGETS))
def test_corpus_entries_are_handled(target: str) -> None:
    fn, _ = TARGETS[target]
    for s in seeds(target):
        fn(s)


@pytest.mark.parametrize("target", list(TARGETS))
def test_fuzzed_inputs_get_a_clean_error(target: str) -> None:
    fn, _ = TARGETS[target]

    @SETTINGS
    @given(_inputs(target))
    def run(data: bytes) -> None:
        fn(data)

    run()


def test_deeply_nested_sql_is_a_clean_error() -> None:
    """Found by atheris: 100 nested parentheses made sqlglot exhaust the stack (a RecursionError,
    HTTP 500); now a QueryError. A WHERE of 3,000 ANDs recursed in the planner; now planned."""
    from rusts.errors import QueryError
    from rusts.sql.runner import parse_sql

    with pytest.raises(QueryError, match="nested too deeply"):
        parse_sql("SELECT " + "(" * 300 + "1" + ")" * 300)
    fn, _ = TARGETS["sql"]
    fn(("SELECT * FROM cpu WHERE " + " AND ".join(["usage > 1"] * 3000)).encode())


def test_calendar_interval_in_a_time_bound_is_answered() -> None:
    """Found by the mutation fuzzer: ``time > now() - interval '1 year'`` (months and years have
    no fixed length) escaped the WHERE analysis as a raw CalendarInterval exception (HTTP 500);
    now the time bound is left to DuckDB's calendar arithmetic and the right rows come back."""
    import tempfile
    import time

    import trio

    import rusts

    async def run() -> None:
        with tempfile.TemporaryDirectory() as d:
            async with rusts.open(d) as db:
                now = time.time_ns()
                day = 86400 * 10**9
                await db.write(f"cpu,host=a usage=1 {now - 10**9}\ncpu,host=a usage=2 {now - 400 * day}\n"
                               f"cpu,host=b usage=3 {now - 20 * 365 * day}")
                out = await db.sql("SELECT usage FROM cpu WHERE host = 'a' AND time > now() - interval '1 year'")
                assert out.values[0].tolist() == [1.0]
                out = await db.sql("SELECT count(*) FROM cpu WHERE time > now() - interval '10 years'")
                assert out.values[0].tolist() == [2]

    trio.run(run)


# ----------------------------------------------------------------------------- HTTP request path

def _clean(out: dict) -> None:
    assert out["failures"] == 0, json.dumps(out["examples"], indent=1)[:6000]


def test_fuzzed_http_requests_in_process() -> None:
    out = trio.run(lambda: fuzz_in_process(1200, seed=7))
    _clean(out)
    assert out["cases"] == 1200 and out["pings"] >= 10
    assert out["statuses"].get(204, 0) > 30 and out["statuses"].get(200, 0) > 30  # the app was reached


def test_fuzzed_http_requests_over_the_wire() -> None:
    out = fuzz_wire(150, seed=8, quiet=0.5, concurrency=24)
    _clean(out)
    assert out["cases"] == 150 and out["responses"] > 0 and out["pings"] == 1


def test_http_generator_is_seeded_and_has_a_corpus() -> None:
    a = [generate(random.Random("s")).data for _ in range(20)]
    b = [generate(random.Random("s")).data for _ in range(20)]
    assert a == b
    assert len(http_corpus()) >= 10


async def _exchange(raw: bytes, wait: float = 5.0, expect: int | None = None) -> tuple[list, bool]:
    """Send ``raw`` on a fresh in-memory connection; the responses (until ``expect`` of them came)
    and whether the server closed within ``wait`` seconds."""
    with tempfile.TemporaryDirectory() as d:
        async with trio.open_nursery() as n:
            h = await n.start(Harness().run, Harness.config(d))
            errors: list = []
            client, side, port = h.connect(n, errors)
            await client.send_all(raw)
            buf = bytearray()
            closed = False
            rs: list = []
            with trio.move_on_after(wait):
                while expect is None or len(rs) < expect:
                    data = await client.receive_some()
                    if not data:
                        closed = True
                        break
                    buf += data
                    got, _, _ = parse_responses(buf, h.requests.methods.get(port, []), len(rs), False)
                    rs += got
            rs += parse_responses(buf, h.requests.methods.get(port, []), len(rs), True)[0]
            await client.aclose()
            assert errors == [] and h.watch.seen == [], (errors, h.watch.seen)
            h.stop()
    return rs, closed


def test_a_head_pipelined_after_a_request_has_the_head_deadline() -> None:
    """Found by the fuzzer: the start of a next request head sent with a request (pipelined) had
    no deadline once that request was answered (the connection waited for hypercorn's 75 s
    keep-alive timer); now it is closed at server.request_timeout_secs (0.5 s here)."""
    rs, closed = trio.run(_exchange, b"POST /sql HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\nSELECT 1"
                                     b"GET /ping HTTP/1.1\r\nHo", 5.0)
    assert [r[0] for r in rs] == [200] and closed


def test_renaming_a_retention_policy_in_its_update_is_a_clean_error() -> None:
    """Found by the fuzzer: PUT /retention_policies/<name> with a "name" in the body answered 500
    (a TypeError); now 400 naming the problem, and the same name is accepted."""
    def req(method: str, path: str, body: bytes) -> bytes:
        return b"%s %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (
            method.encode(), path.encode(), len(body), body)

    add = req("POST", "/retention_policies", b'{"name": "p1", "duration": "30d"}')
    put = req("PUT", "/retention_policies/p1", b'{"name": "p2", "duration": "20d"}')
    same = req("PUT", "/retention_policies/p1", b'{"name": "p1", "duration": "10d"}')
    rs, _ = trio.run(_exchange, add + put + same, 5.0, 3)
    assert [r[0] for r in rs] == [201, 400, 200], rs
    assert "cannot be changed" in json.loads(rs[1][2])["error"]
    assert json.loads(rs[2][2])["retention_policies"][0]["duration"] in ("10d", 864000)
    for status, headers, body in rs:
        assert check_response(status, headers, body) is None


def test_a_delete_with_a_malformed_field_filter_is_a_clean_error() -> None:
    """Found by the fuzzer: POST /delete with a field_filters entry lacking "field" (or not an
    object) answered 500 (KeyError / AttributeError); now 400 naming the entry."""
    reqs = b""
    for ff in (b'[{"key": "t", "op": "Eq", "value": "a"}]', b"[5]"):
        body = b'{"measurement": "fz1", "time_range": {"start": 0, "end": 10}, "field_filters": %s}' % ff
        reqs += b"POST /delete HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    rs, _ = trio.run(_exchange, reqs, 5.0, 2)
    assert [r[0] for r in rs] == [400, 400], rs
    assert "field predicate [0]" in json.loads(rs[0][2])["error"]
    assert "field predicate [0]" in json.loads(rs[1][2])["error"]


def test_a_request_target_of_only_a_query_is_answered() -> None:
    """Found by the fuzzer: a request target like "?stats" (an empty path) made Quart index an
    empty string: a traceback and 500; now it is routed as "/" (404 with a JSON error)."""
    rs, _ = trio.run(_exchange, b"PATCH ?stats HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
                               b"GET ?x HTTP/1.1\r\nHost: x\r\n\r\n", 5.0, 2)
    assert [r[0] for r in rs] == [404, 404], rs
    assert all(check_response(*r) is None for r in rs)


def test_a_raw_query_with_limit_zero_over_flushed_data_answers_no_rows() -> None:
    """Found by the fuzzer: a JSON query with ``"limit": 0`` over a series with flushed segments
    raised a TypeError in the block choice (HTTP 500); now it answers no rows."""
    import rusts

    async def run() -> None:
        with tempfile.TemporaryDirectory() as d:
            async with rusts.open(d) as db:
                await db.write("fz1,t=a v=1 1700000000000000000\nfz1,t=b v=2 1700000001000000000")
                await db.flush()
                for extra in ({}, {"order": "Desc"}, {"group_by": ["t"]}, {"offset": 1}):
                    q = {"measurement": "fz1", "time_range": {"start": 0, "end": 2**63 - 1}, "limit": 0, **extra}
                    assert len(await db.query(q)) == 0
                q = {"measurement": "fz1", "time_range": {"start": 0, "end": 2**63 - 1}, "limit": 1, "offset": 1}
                assert len(await db.query(q)) == 1

    trio.run(run)


def test_a_host_header_that_is_not_a_valid_name_is_answered() -> None:
    """Found by the long fuzz run: a Host header such as ".x" on a route Quart serves made
    werkzeug raise BadHost outside Quart's error handlers: a traceback and an empty 500. Now the
    header is ignored there too, as the hot routes do."""
    reqs = b"".join(b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, host)
                    for path, host in ((b"/stats", b".x"), (b"/cluster", b"a..b"), (b"/ready", b"x" * 70), (b"/ping", b".x")))
    rs, _ = trio.run(_exchange, reqs, 5.0, 4)
    assert [r[0] for r in rs] == [200, 404, 200, 204], rs
    assert all(check_response(*r) is None for r in rs)


def test_an_aggregation_interval_beyond_int64_is_a_clean_error() -> None:
    """Found by the long fuzz run: ``"interval_nanos": 10**30`` passed validation and overflowed in
    the bucketing (OverflowError, HTTP 500); now a QueryError (400). The largest int64 works."""
    import pytest

    import rusts
    from rusts.errors import QueryError

    async def run() -> None:
        with tempfile.TemporaryDirectory() as d:
            async with rusts.open(d) as db:
                await db.write("cpu,host=a usage=1 1700000000000000000\ncpu,host=a usage=3 1700000001000000000")
                q = {"measurement": "cpu", "time_range": {"start": 1700000000000000000, "end": 1700000100000000000},
                     "aggregation": {"function": "Mean", "field": "usage", "interval_nanos": 10**30}}
                with pytest.raises(QueryError, match="interval_nanos"):
                    await db.query(q)
                q["aggregation"]["interval_nanos"] = 2**63 - 1
                rs = await db.query(q)
                assert len(rs) == 1

    trio.run(run)


def test_a_method_in_mixed_case_is_refused_not_answered_as_another() -> None:
    """Found by the long fuzz run: methods are case-sensitive (RFC 9110), but hypercorn
    upper-cased ``HeAD`` for the app, which answered as to HEAD (no body) while h11, which keeps
    the method as sent, waited for the declared body: a traceback, the connection cut. Now a
    method not in upper case is answered 501 and the connection closed."""
    rs, closed = trio.run(_exchange, b"HeAD /stats HTTP/1.1\r\nHost: x\r\n\r\nGET /ping HTTP/1.1\r\nHost: x\r\n\r\n",
                          5.0)
    assert [r[0] for r in rs] == [501] and closed, rs
    assert b"case-sensitive" in rs[0][2], rs
    rs, _ = trio.run(_exchange, b"HEAD /stats HTTP/1.1\r\nHost: x\r\n\r\nGET /ping HTTP/1.1\r\nHost: x\r\n\r\n",
                     5.0, 2)
    assert [r[0] for r in rs] == [200, 204], rs


def test_an_h2c_upgrade_followed_by_bytes_that_are_not_http2_ends_at_once() -> None:
    """Found by the long fuzz run: a request asking to upgrade to h2c, followed by bytes that are
    not HTTP/2, left the request waiting in the app's receive until the case's limit (30 s).
    The upgrade is not offered (HTTP/1.1 answers it, as for an upgrade with a body), so the
    following bytes are a bad next request: 400 and closed within the head deadline."""
    raw = (b"CONNECT /api/v2/write HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
           b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    start = time.monotonic()
    rs, closed = trio.run(_exchange, raw, 10.0)
    assert closed and time.monotonic() - start < 5.0, rs
    assert rs and all(r[0] < 500 for r in rs) and all(check_response(*r) in (None, "framing") for r in rs), rs
    assert b"bad HTTP request: illegal request line" in rs[-1][2], rs


def test_a_websocket_upgrade_is_answered_as_a_plain_request() -> None:
    """Found by the long fuzz run: no route speaks WebSocket, yet hypercorn switched a GET with
    ``Upgrade: websocket`` to its WebSocket stream, which refused the bad handshake with an empty
    400. The request is now answered as the plain HTTP request it also is."""
    raw = (b"GET /cluster HTTP/1.1\r\nConnection: upgrade\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"
           b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
    rs, _ = trio.run(_exchange, raw, 5.0, 2)
    assert [r[0] for r in rs] == [404, 204], rs
    assert b"not a cluster node" in rs[0][2] and check_response(*rs[0]) is None
