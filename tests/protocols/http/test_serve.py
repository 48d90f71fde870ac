"""The HTTP transport (hypercorn + quart-trio, hot routes as plain ASGI), byte by byte over a real
loopback socket: keep-alive, pipelining, chunked bodies, Expect: 100-continue, the body size bound,
malformed requests, HEAD, unknown routes and methods, timeouts, the connection cap and graceful
shutdown. Every test runs twice: routes answered by Quart views, and by the hot-route layer."""

from __future__ import annotations

import json

import trio

import pytest

from rusts.protocols.http.asgi import asgi_app_for
from rusts.protocols.http.routing import App, BodyTooLarge, MethodNotAllowed, NotFound, Response
from rusts.protocols.http.serve import serve_asgi

HOT = frozenset({"/echo", "/args", "/slow", "/slower", "/boom", "/nope", "/forever"})
CANCELLED: list[str] = []  # /forever handlers that were cancelled


@pytest.fixture(params=["quart", "hot"])
def layer(request):
    return request.param


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

    @app.route("/slower", ("GET",))
    async def slower(req):
        await trio.sleep(1.2)  # longer than the head/body deadline (0.5 s): still answered
        return Response(200, b"late")

    @app.route("/forever", ("GET",))
    async def forever(req):
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            CANCELLED.append(req.args.get("id", ""))
            raise

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


async def with_server(fn, layer="quart", max_connections=None, **kw):
    from types import SimpleNamespace

    from rusts.protocols.http.serve import hypercorn_config

    stop = trio.Event()
    app = asgi_app_for(make_app(**kw), hot=HOT if layer == "hot" else frozenset(), body_timeout=0.5)
    cfg = hypercorn_config(SimpleNamespace(request_timeout_secs=0.5), "127.0.0.1", 0)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(lambda task_status: serve_asgi(
            app, cfg, max_connections=max_connections, shutdown_trigger=stop.wait, task_status=task_status))
        await fn(port, stop)
        stop.set()


async def test_keep_alive_pipelining_and_query_args(layer):
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
    await with_server(run, layer)


async def test_chunked_body_and_expect_continue(layer):
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
    await with_server(run, layer)


async def test_body_over_the_bound_gets_413_and_close(layer):
    async def run(port, stop):
        # declared too large, client waits for 100-continue: 413 at once, no body read
        s = await trio.open_tcp_stream("127.0.0.1", port)
        await s.send_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
        buf = bytearray()
        st, h, body = await read_response(s, buf)
        if st == 100:  # hypercorn may invite the body first; the answer is still 413 unread
            st, h, body = await read_response(s, buf)
        assert st == 413 and json.loads(body) == {"error": "BodyTooLarge"}
        # chunked, grows past the bound while streaming: drained, then 413
        s = await trio.open_tcp_stream("127.0.0.1", port)
        chunk = b"100\r\n" + b"a" * 256 + b"\r\n"
        await s.send_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 8 + b"0\r\n\r\n")
        buf = bytearray()
        st, h, body = await read_response(s, buf)
        assert st == 413 and json.loads(body) == {"error": "BodyTooLarge"}
    await with_server(run, layer)


async def test_errors_head_and_path_parameters(layer):
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
        assert st == 400  # hypercorn's answer to a request h11 cannot parse
    await with_server(run, layer)


async def read_response_head(stream, buf):
    while b"\r\n\r\n" not in buf:
        buf += await stream.receive_some(65536)
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    buf[:] = rest
    lines = head.decode().split("\r\n")
    return int(lines[0].split()[1]), {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}, b""


async def test_a_stalled_body_gets_408_or_a_close(layer):
    async def run(port, stop):
        s = await trio.open_tcp_stream("127.0.0.1", port)
        await s.send_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        with trio.fail_after(5):  # the body deadline is 0.5 s
            got = await s.receive_some(1000)
        assert got == b"" or got.startswith(b"HTTP/1.1 408"), got
        # and the server goes on serving others
        s2 = await trio.open_tcp_stream("127.0.0.1", port)
        await s2.send_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nz")
        assert (await read_response(s2, bytearray()))[2] == b"z"
    await with_server(run, layer)


async def test_a_trickled_head_is_closed_at_its_deadline(layer):
    async def run(port, stop):
        s = await trio.open_tcp_stream("127.0.0.1", port)
        head = b"GET /args HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 40 + b"\r\n\r\n"
        closed_after = None
        t0 = trio.current_time()
        with trio.fail_after(5):
            for i in range(len(head)):  # one byte every 50 ms: 3 s for the head
                try:
                    await s.send_all(head[i:i + 1])
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    closed_after = trio.current_time() - t0
                    break
                with trio.move_on_after(0.05):
                    try:
                        got = await s.receive_some(100)
                    except (trio.BrokenResourceError, OSError):  # closed with our bytes unread: RST
                        got = b""
                    if got == b"":
                        closed_after = trio.current_time() - t0
                        break
        assert closed_after is not None and closed_after < 2.0
    await with_server(run, layer)


async def test_a_request_answered_slowly_is_not_cut_off(layer):
    async def run(port, stop):
        s = await trio.open_tcp_stream("127.0.0.1", port)
        await s.send_all(b"GET /slower HTTP/1.1\r\nHost: x\r\n\r\n")
        with trio.fail_after(5):
            st, _, body = await read_response(s, bytearray())
        assert (st, body) == (200, b"late")
        # the keep-alive connection then serves another request
        await s.send_all(b"GET /args?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(s, bytearray()))[0] == 200
    await with_server(run, layer)


async def test_graceful_shutdown_finishes_requests_in_flight(layer):
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
    await with_server(run, layer)




async def test_connections_beyond_the_cap_get_503(layer):
    async def run(port, stop):
        held = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
        for h in held:  # busy: a request head begun (an idle connection would make room)
            await h.send_all(b"POST /echo HTTP/1.1\r\n")
        await trio.sleep(0.1)
        extra = await trio.open_tcp_stream("127.0.0.1", port)
        st, h, body = await read_response(extra, bytearray())
        assert st == 503 and h["retry-after"] == "1" and "max_connections" in json.loads(body)["error"]
        await held[0].aclose()
        for _ in range(50):  # a closed connection frees its place once the server sees the EOF
            await trio.sleep(0.05)
            s = await trio.open_tcp_stream("127.0.0.1", port)
            await s.send_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nq")
            st, _, body = await read_response(s, bytearray())
            if st != 503:
                break
        assert (st, body) == (200, b"q")
    await with_server(run, layer, max_connections=2)


async def test_a_response_leaves_in_one_send_and_a_closing_one_before_the_eof(layer, monkeypatch):
    """hypercorn writes a head, a body and an end of message; the client gets one send (one
    packet with TCP_NODELAY). A response that closes the connection is sent whole before the EOF."""
    sent: list[bytes] = []
    real = trio.SocketStream.send_all

    async def counting(self, data):
        sent.append(bytes(data))
        await real(self, data)

    monkeypatch.setattr(trio.SocketStream, "send_all", counting)

    async def run(port, stop):
        s = await trio.open_tcp_stream("127.0.0.1", port)
        buf = bytearray()
        for body in (b"hello", b"world!"):
            sent.clear()
            await s.send_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            st, h, got = await read_response(s, buf)
            assert (st, got) == (200, body)
            answers = [d for d in sent if d.startswith(b"HTTP/1.1")]
            assert len(answers) == 1 and answers[0].endswith(body)  # head and body together
        await s.send_all(b"GET /args?a=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        st, h, got = await read_response(s, buf)
        assert st == 200 and json.loads(got) == {"a": "1"}
        assert await s.receive_some(100) == b""  # then the EOF
        await s.aclose()
    await with_server(run, layer)


async def test_a_request_whose_client_goes_away_is_cancelled():
    """Served by our loop, the connection cancels the hot route's handler when the client closes."""
    async def run(port, stop):
        s = await trio.open_tcp_stream("127.0.0.1", port)
        await s.send_all(b"GET /forever?id=served HTTP/1.1\r\nHost: x\r\n\r\n")
        await trio.sleep(0.2)
        await s.aclose()
        with trio.fail_after(5):
            while "served" not in CANCELLED:
                await trio.sleep(0.02)
    await with_server(run, "hot")


async def test_under_another_asgi_server_a_disconnect_still_cancels_the_handler():
    """Mounted in another ASGI server (no extension of ours), http.disconnect cancels it."""
    app = asgi_app_for(make_app(), hot=HOT)
    sent: list = []
    messages = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive():
        if messages:
            return messages.pop(0)
        await trio.sleep(0.2)
        return {"type": "http.disconnect"}

    async def send(msg):
        sent.append(msg)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": "/forever", "raw_path": b"/forever", "query_string": b"id=mounted",
             "root_path": "", "headers": [(b"host", b"x")], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}
    with trio.fail_after(5):
        await app(scope, receive, send)
    assert "mounted" in CANCELLED and sent == []


async def test_idle_connections_at_the_cap_make_room(layer):
    """Connections that never send a byte (or keep-alive ones between requests) must not lock
    clients out: at the cap the one idle the longest is closed and the newcomer is served."""
    async def run(port, stop):
        idle = []
        for _ in range(2):
            idle.append(await trio.open_tcp_stream("127.0.0.1", port))
            await trio.sleep(0.05)
        for _ in range(3):  # each newcomer evicts the connection idle the longest
            s = await trio.open_tcp_stream("127.0.0.1", port)
            await s.send_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nq")
            st, _, body = await read_response(s, bytearray())
            assert (st, body) == (200, b"q")
            idle.append(s)  # idle between requests now
        with trio.fail_after(5):
            assert await idle[0].receive_some(10) == b""  # the oldest idle one was closed
            assert await idle[1].receive_some(10) == b""
    await with_server(run, layer, max_connections=2)
