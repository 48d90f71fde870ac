"""The HTTP/1.1 transport (h11 on trio), byte by byte over a real loopback socket: keep-alive,
pipelining, chunked bodies, Expect: 100-continue, the body size bound, malformed requests,
HEAD, unknown routes and methods, timeouts and graceful shutdown."""

from __future__ import annotations

import json

import trio

from rusts.protocols.http.server import App, BodyTooLarge, MethodNotAllowed, NotFound, Response, serve


def make_app(max_body: int = 1000) -> App:
    def on_error(req, e):
        status = 413 if isinstance(e, BodyTooLarge) else 404 if isinstance(e, NotFound) else \
            405 if isinstance(e, MethodNotAllowed) else 500
        return Response(status, json.dumps({"error": type(e).__name__}).encode(), "application/json")

    app = App(max_body=max_body, on_error=on_error)

    @app.route("/echo", ("POST",))
    async def echo(req):
        return Response(200, req.body, "application/octet-stream", {"X-Len": len(req.body)})

    @app.route("/args", ("GET",))
    async def args(req):
        return Response(200, json.dumps(req.args).encode(), "application/json")

    @app.route("/slow", ("GET",))
    async def slow(req):
        await trio.sleep(0.3)
        return Response(200, b"done")

    @app.route("/items/<name>", ("DELETE",))
    async def item(req, name):
        return Response(200, name.encode())

    @app.route("/boom", ("GET",))
    async def boom(req):
        raise RuntimeError("x")

    return app


async def read_response(stream, buf: bytearray) -> tuple[int, dict, bytes]:
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError(bytes(buf))
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    n = int(headers.get("content-length", 0))
    while len(rest) < n:
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError
        rest += data
    buf[:] = rest[n:]
    return status, headers, rest[:n]


async def with_server(fn, **kw):
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(lambda task_status: serve(
            make_app(**kw), "127.0.0.1", 0, read_timeout=0.5, shutdown_trigger=stop.wait,
            task_status=task_status))
        await fn(port, stop)
        stop.set()


async def test_keep_alive_pipelining_and_query_args():
    async def run(port, stop):
        s = await trio.open_tcp_stream("127.0.0.1", port)
        await s.send_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                         b"GET /args?a=1&b=x%20y&a=2 HTTP/1.1\r\nHost: x\r\n\r\n")
        buf = bytearray()
        st, h, body = await read_response(s, buf)
        assert (st, body, h["x-len"]) == (200, b"hello", "5")
        st, h, body = await read_response(s, buf)
        assert st == 200 and json.loads(body) == {"a": "1", "b": "x y"}
        await s.aclose()
    await with_server(run)


async def test_chunked_body_and_expect_continue():
    async def run(port, stop):
        s = await trio.open_tcp_stream("127.0.0.1", port)
        await s.send_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        buf = bytearray()
        st, h, body = await read_response(s, buf)
        assert (st, body) == (200, b"abcde")
        await s.send_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        st, h, body = await read_response(s, buf)
        assert st == 100
        await s.send_all(b"xyz")
        st, h, body = await read_response(s, buf)
        assert (st, body) == (200, b"xyz")
        await s.aclose()
    await with_server(run)


async def test_body_over_the_bound_gets_413_and_close():
    async def run(port, stop):
        # declared too large, client waits for 100-continue: 413 at once, no body read
        s = await trio.open_tcp_stream("127.0.0.1", port)
        await s.send_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
        buf = bytearray()
        st, h, body = await read_response(s, buf)
        assert st == 413 and h["connection"] == "close"
        assert await s.receive_some(10) == b""
        # chunked, grows past the bound while streaming: drained, then 413
        s = await trio.open_tcp_stream("127.0.0.1", port)
        chunk = b"100\r\n" + b"a" * 256 + b"\r\n"
        await s.send_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 8 + b"0\r\n\r\n")
        buf = bytearray()
        st, h, body = await read_response(s, buf)
        assert st == 413 and json.loads(body) == {"error": "BodyTooLarge"}
    await with_server(run)


async def test_errors_head_and_path_parameters():
    async def run(port, stop):
        s = await trio.open_tcp_stream("127.0.0.1", port)
        buf = bytearray()
        await s.send_all(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(s, buf))[0] == 404
        await s.send_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(s, buf))[0] == 405
        await s.send_all(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(s, buf))[0] == 500
        await s.send_all(b"DELETE /items/a%20b HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(s, buf))[2] == b"a b"
        await s.send_all(b"HEAD /args HTTP/1.1\r\nHost: x\r\n\r\n")
        st, h, _ = await read_response_head(s, buf)
        assert st == 200 and int(h["content-length"]) > 0
        # the connection still serves after all of that
        await s.send_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nz")
        assert (await read_response(s, buf))[2] == b"z"
        # garbage: 400 and close
        s2 = await trio.open_tcp_stream("127.0.0.1", port)
        await s2.send_all(b"NOT HTTP AT ALL\r\n\r\n")
        st, h, body = await read_response(s2, bytearray())
        assert st == 400 and "bad HTTP request" in json.loads(body)["error"]
    await with_server(run)


async def read_response_head(stream, buf):
    while b"\r\n\r\n" not in buf:
        buf += await stream.receive_some(65536)
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    buf[:] = rest
    lines = head.decode().split("\r\n")
    return int(lines[0].split()[1]), {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}, b""


async def test_body_read_timeout_answers_408():
    async def run(port, stop):
        s = await trio.open_tcp_stream("127.0.0.1", port)
        await s.send_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        with trio.fail_after(5):
            st, h, body = await read_response(s, bytearray())
        assert st == 408
    await with_server(run)


async def test_graceful_shutdown_finishes_requests_in_flight():
    async def run(port, stop):
        s = await trio.open_tcp_stream("127.0.0.1", port)
        idle = await trio.open_tcp_stream("127.0.0.1", port)
        await s.send_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        await trio.sleep(0.05)
        stop.set()
        st, h, body = await read_response(s, bytearray())
        assert (st, body) == (200, b"done")
        with trio.fail_after(5):
            assert await idle.receive_some(10) == b""  # idle keep-alive connection closed
    await with_server(run)


# ----------------------------------------------------------------------------- the plain-request path

def test_parse_head_accepts_plain_requests_only():
    from rusts.protocols.http.server import FALLBACK, parse_head

    raw = b"POST /echo?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nX-A: 1\r\nx-a: 2\r\n\r\nabcNEXT"
    h = parse_head(raw, 10)
    assert (h.method, h.target, h.size, h.content_length, h.close) == ("POST", "/echo?x=1", raw.index(b"abc"), 3,
                                                                       False)
    assert h.headers == {"host": "a", "content-length": "3", "x-a": "1, 2"}
    assert parse_head(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close\r\n\r\n", 10).close
    assert parse_head(b"GET / HTTP/1.1\r\nHost: a\r\nEmpty:\r\n\r\n", 10).headers["empty"] == ""
    assert parse_head(b"", 10) is None and parse_head(b"GET / HTTP/1.1\r\nHost: a\r\n", 10) is None
    for raw in [
        b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",  # h11 frames chunks
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: 1\r\n\r\n",  # no Host: h11 answers 400
        b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET * HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n",  # over the bound: 413 from h11's path
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        b"GET / HTTP/1.1\nHost: a\n\n",  # bare LF
        b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"x" * 70_000,
    ]:
        assert parse_head(raw, 10) is FALLBACK, raw


def test_plain_response_bytes_are_h11s():
    import h11

    from rusts.protocols.http.server import _response_bytes, response_bytes

    for resp, head, close in [(Response(200, b"{}", "application/json"), False, False),
                              (Response(204), False, False),
                              (Response(404, b"nope", "text/plain", {"X-A": 1}), False, True),
                              (Response(200, b"abc", "text/plain"), True, False),
                              (Response(299, b"z"), False, False)]:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data((b"HEAD" if head else b"GET") + b" / HTTP/1.1\r\nHost: a\r\n\r\n")
        conn.next_event()
        conn.next_event()
        assert response_bytes(resp, head, close) == _response_bytes(conn, resp, head, close)


async def test_plain_requests_then_h11_on_one_connection_and_split_bodies():
    async def run(port, stop):
        s = await trio.open_tcp_stream("127.0.0.1", port)
        buf = bytearray()
        # a body arriving in three sends
        await s.send_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-")
        await trio.sleep(0.01)
        await s.send_all(b"Length: 6\r\n\r\nab")
        await trio.sleep(0.01)
        await s.send_all(b"cdef")
        st, h, body = await read_response(s, buf)
        assert (st, body) == (200, b"abcdef")
        # a chunked request after plain ones: h11 takes over the connection, which keeps working
        await s.send_all(b"GET /args?q=1 HTTP/1.1\r\nHost: x\r\n\r\n"
                         b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
                         b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
        st, h, body = await read_response(s, buf)
        assert st == 200 and json.loads(body) == {"q": "1"}
        st, h, body = await read_response(s, buf)
        assert (st, body) == (200, b"hi")
        st, h, body = await read_response(s, buf)
        assert (st, body) == (200, b"ok")
        # Connection: close is honoured on the plain path
        s2 = await trio.open_tcp_stream("127.0.0.1", port)
        await s2.send_all(b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        buf2 = bytearray()
        st, h, body = await read_response(s2, buf2)
        assert st == 404 and h["connection"] == "close" and json.loads(body) == {"error": "NotFound"}
        assert await s2.receive_some(10) == b""
        # a request h11 rejects still gets its 400 after plain ones
        await s.send_all(b"GET / HTTP/1.1\r\nNo-Host: x\r\n\r\n")
        st, h, body = await read_response(s, buf)
        assert st == 400
        await s.aclose()
    await with_server(run)
