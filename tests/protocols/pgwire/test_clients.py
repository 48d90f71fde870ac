"""Real PostgreSQL clients against the trio server and the stub backend.

psql, psycopg 3 (text and binary), psycopg2, asyncpg and pg8000 connect, run statements the stub
answers, see errors with their SQLSTATE, authenticate, get cancelled and refused.
Sync drivers run in worker threads; asyncpg runs its own asyncio loop in a thread.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import os
import socket
import ssl
import subprocess
import time
from decimal import Decimal

import asyncpg
import pg8000.native
import psycopg
import psycopg2
import pytest
import trio

from rusts.protocols.pgwire import PgAuth
from rusts.protocols.pgwire import _frontend as fe

T0 = dt.datetime(2023, 11, 14, 22, 13, 20)
CPU_ROWS = [
    (T0, "alpha", 0.5, 1, True, Decimal("1.50")),
    (T0 + dt.timedelta(seconds=1.5), None, math.nan, -2, False, Decimal("-20")),
    (T0 + dt.timedelta(seconds=60), "gamma é", 99.25, 3_000_000_000, True, Decimal("0.001")),
]


def same_rows(got, expected) -> bool:
    def norm(v):
        return "NaN" if isinstance(v, float) and math.isnan(v) else v
    return [tuple(map(norm, r)) for r in got] == [tuple(map(norm, r)) for r in expected]


def in_thread(fn, *args):
    return trio.to_thread.run_sync(fn, *args)


def dsn(port: int, **kw) -> str:
    parts = {"host": "127.0.0.1", "port": port, "user": "bob", "dbname": "metrics", **kw}
    return " ".join(f"{k}={v}" for k, v in parts.items())


async def test_psql(pg):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGCONNECT_TIMEOUT"] = "5"
    proc = await trio.run_process(
        ["psql", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "bob", "-d", "metrics", "-X", "-A",
         "-t", "-F", "|", "-c", "select * from cpu", "-c", "select 1; show x"],
        env=env, capture_stdout=True, capture_stderr=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().splitlines() == [
        "2023-11-14 22:13:20|alpha|0.5|1|t|1.50",
        "2023-11-14 22:13:21.5||NaN|-2|f|-20",
        "2023-11-14 22:14:20|gamma é|99.25|3000000000|t|0.001",
        "1", "on"]
    proc = await trio.run_process(
        ["psql", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "bob", "-X", "-v", "ON_ERROR_STOP=1",
         "-c", "select boom"], env=env, capture_stdout=True, capture_stderr=True, check=False)
    assert proc.returncode == 1
    assert "ERROR:  boom happened" in proc.stderr.decode()
    assert pg.backends[0].params["application_name"] == "psql"


@pytest.mark.parametrize("binary", [False, True])
async def test_psycopg3(pg, binary):
    def run():
        with psycopg.connect(dsn(pg.port)) as conn:
            cur = conn.cursor(binary=binary)
            cur.execute("select * from cpu")
            all_rows = cur.fetchall()
            for _ in range(7):  # psycopg switches to a named prepared statement after 5 runs
                cur.execute("select * from cpu where usage > %s", (1.0,))
                filtered = cur.fetchall()
                assert same_rows(filtered, CPU_ROWS[1:])
            with pytest.raises(psycopg.errors.SyntaxError) as info:
                cur.execute("select boom")
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
            with pytest.raises(psycopg.errors.InFailedSqlTransaction):
                cur.execute("select 1")
            conn.rollback()
            cur.execute("select 1")
            return all_rows, filtered, info.value.diag.statement_position, cur.fetchall()
    all_rows, filtered, position, one = await in_thread(run)
    assert same_rows(all_rows, CPU_ROWS)
    assert same_rows(filtered, CPU_ROWS[1:])
    assert position == "8"
    assert one == [(1,)]


async def test_psycopg3_server_side_cursor_fetches_in_batches(pg):
    def run():
        with psycopg.connect(dsn(pg.port)) as conn, conn.transaction():
            pass
        with psycopg.connect(dsn(pg.port), autocommit=True) as conn:
            cur = conn.cursor()
            cur.execute("select rows 2500")
            return len(cur.fetchall())
    assert await in_thread(run) == 2500


async def test_asyncpg_prepared_binary(pg):
    async def run():
        conn = await asyncpg.connect(host="127.0.0.1", port=pg.port, user="bob", database="m")
        try:
            stmt = await conn.prepare("select * from cpu where usage > $1")
            params = [p.name for p in stmt.get_parameters()]
            filtered = await stmt.fetch(1.0)
            again = await stmt.fetch(0.0)
            rows = await conn.fetch("select rows 3")
            try:
                await conn.fetch("select boom")
            except asyncpg.PostgresError as exc:
                err = exc.sqlstate
            async with conn.transaction():
                val = await conn.fetchval("select 1")
            return params, filtered, again, rows, err, val
        finally:
            await conn.close()
    params, filtered, again, rows, err, val = await in_thread(asyncio.run, run())
    assert params == ["float8"]
    assert same_rows([tuple(r) for r in filtered], CPU_ROWS[1:])
    assert len(again) == 3
    assert [tuple(r) for r in rows][2] == (
        dt.datetime(2023, 11, 14, 22, 13, 22, tzinfo=dt.timezone.utc), 1.0, 2)
    assert err == "42601" and val == 1


async def test_psycopg2(pg):
    def run():
        conn = psycopg2.connect(dsn(pg.port))
        try:
            cur = conn.cursor()
            cur.execute("select * from cpu where usage > %s", (1.0,))
            rows = cur.fetchall()
            conn.commit()
            try:
                cur.execute("select boom")
            except psycopg2.Error as exc:
                code = exc.pgcode
            conn.rollback()
            return rows, code, conn.server_version
        finally:
            conn.close()
    rows, code, version = await in_thread(run)
    assert same_rows(rows, CPU_ROWS[1:])
    assert code == "42601"
    assert version == 150000


async def test_pg8000(pg):
    def run():
        conn = pg8000.native.Connection("bob", host="127.0.0.1", port=pg.port, database="m")
        try:
            rows = conn.run("select * from cpu where usage > :u", u=1.0)
            try:
                conn.run("select boom")
            except pg8000.native.DatabaseError as exc:
                code = exc.args[0]["C"]
            return rows, code, conn.run("select 1")
        finally:
            conn.close()
    rows, code, one = await in_thread(run)
    assert same_rows(rows, CPU_ROWS[1:])
    assert code == "42601" and one == [[1]]


# ------------------------------------------------------------------------- auth, limits, TLS

@pytest.fixture
async def auth_pg(start):
    auth = PgAuth(users={"alice": "secret"}, method="scram-sha-256",
                  jwt_verifier=lambda token: token == "header.payload.sig")
    return await start(auth=auth)


async def test_scram_and_jwt_auth(auth_pg):
    port = auth_pg.port

    def run():
        with psycopg.connect(dsn(port, user="alice", password="secret")) as conn:
            ok = conn.execute("select 1").fetchall()
        with pytest.raises(psycopg.OperationalError) as wrong:
            psycopg.connect(dsn(port, user="alice", password="nope"))
        with pytest.raises(psycopg.OperationalError) as unknown:
            psycopg.connect(dsn(port, user="mallory", password="x"))
        with psycopg.connect(dsn(port, user="svc", password="header.payload.sig")) as conn:
            jwt = conn.execute("select 1").fetchall()
        c = pg8000.native.Connection("alice", host="127.0.0.1", port=port, password="secret")
        scram_pg8000 = c.run("select 1")
        c.close()
        with pytest.raises(pg8000.native.DatabaseError) as p8_wrong:
            pg8000.native.Connection("alice", host="127.0.0.1", port=port, password="nope")
        return ok, str(wrong.value), str(unknown.value), jwt, scram_pg8000, p8_wrong.value.args[0]
    ok, wrong, unknown, jwt, p8, p8_wrong = await in_thread(run)
    assert ok == jwt == [(1,)] and p8 == [[1]]
    assert 'password authentication failed for user "alice"' in wrong
    assert 'password authentication failed for user "mallory"' in unknown
    assert p8_wrong["C"] == "28P01" and p8_wrong["S"] == "FATAL"


async def test_asyncpg_scram(auth_pg):
    async def run():
        conn = await asyncpg.connect(host="127.0.0.1", port=auth_pg.port, user="alice",
                                     password="secret", database="m")
        v = await conn.fetchval("select 1")
        await conn.close()
        try:
            await asyncpg.connect(host="127.0.0.1", port=auth_pg.port, user="alice",
                                  password="bad", database="m")
        except asyncpg.InvalidPasswordError as exc:
            return v, exc.sqlstate
    assert await in_thread(asyncio.run, run()) == (1, "28P01")


async def test_cleartext_password_method(start):
    running = await start(auth=PgAuth(users={"u": "pw"}, method="password"))

    def run():
        with psycopg.connect(dsn(running.port, user="u", password="pw")) as conn:
            ok = conn.execute("select 1").fetchone()
        with pytest.raises(pg8000.native.DatabaseError) as info:
            pg8000.native.Connection("u", host="127.0.0.1", port=running.port, password="bad")
        return ok, info.value.args[0]["C"]
    assert await in_thread(run) == ((1,), "28P01")


async def test_max_connections(start):
    running = await start(max_connections=2)

    def run():
        a = psycopg.connect(dsn(running.port))
        b = psycopg.connect(dsn(running.port))
        with pytest.raises(pg8000.native.DatabaseError) as info:
            pg8000.native.Connection("bob", host="127.0.0.1", port=running.port)
        a.close()
        time.sleep(0.2)
        with psycopg.connect(dsn(running.port)) as c:
            c.execute("select 1")
        b.close()
        return info.value
    err = await in_thread(run)
    assert err.args[0]["C"] == "53300" and "too many clients" in err.args[0]["M"]
    assert running.server.statistics().rejected_total == 1


async def test_cancel_request_cancels_running_query(pg):
    def run():
        with psycopg.connect(dsn(pg.port), autocommit=True) as conn:
            import threading
            timer = threading.Timer(0.3, conn.cancel_safe)
            timer.start()
            t = time.monotonic()
            with pytest.raises(psycopg.errors.QueryCanceled) as info:
                conn.execute("select sleep")
            elapsed = time.monotonic() - t
            after = conn.execute("select 1").fetchone()
            return info.value.sqlstate, elapsed, after
    code, elapsed, after = await in_thread(run)
    assert code == "57014" and elapsed < 5 and after == (1,)


async def test_tls(start, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    running = await start(tls_context=ctx, auth=PgAuth(users={"alice": "secret"}))

    def run():
        with psycopg.connect(dsn(running.port, user="alice", password="secret",
                                 sslmode="require")) as conn:
            return conn.pgconn.ssl_in_use, conn.execute("select 1").fetchone()
    assert await in_thread(run) == (True, (1,))


# ------------------------------------------------------------------------- robustness

def raw_connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(fe.startup("bob"))
    data = b""
    while not data.endswith(b"Z\x00\x00\x00\x05I"):
        data += s.recv(65536)
    return s


async def test_idle_and_half_open_clients_do_not_block_others(pg):
    def run():
        idle = [socket.create_connection(("127.0.0.1", pg.port)) for _ in range(20)]
        for i, s in enumerate(idle):
            s.sendall(fe.startup("bob")[: i % 7])  # partial startup packets, then silence
        t = time.monotonic()
        with psycopg.connect(dsn(pg.port)) as conn:
            conn.execute("select 1")
        elapsed = time.monotonic() - t
        for s in idle:
            s.close()
        return elapsed
    assert await in_thread(run) < 2


async def test_startup_timeout_frees_the_slot(start):
    running = await start(startup_timeout=0.3)

    def run():
        s = socket.create_connection(("127.0.0.1", running.port), timeout=5)
        s.sendall(fe.startup("bob")[:3])
        data = s.recv(1000)
        s.close()
        return data
    data = await in_thread(run)
    msgs, _ = fe.parse_backend(data)
    assert msgs[0].type == "E" and msgs[0].fields["C"] == "08006"


async def test_client_vanishing_mid_result_frees_its_session(pg, caplog):
    def run():
        s = raw_connect(pg.port)
        s.sendall(fe.query("select rows 300000"))
        s.recv(10000)  # some rows arrived; now vanish
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    await in_thread(run)
    with trio.fail_after(10):
        while pg.server.statistics().open_connections:
            await trio.sleep(0.02)
    assert pg.server.statistics().sessions == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

    def again():
        with psycopg.connect(dsn(pg.port)) as conn:
            return conn.execute("select 1").fetchone()
    assert await in_thread(again) == (1,)


@pytest.mark.parametrize("payload,code", [
    (b"GET / HTTP/1.1\r\n\r\n", "08P01"),
    (fe.startup("bob") + b"Z\x00\x00\x00\x04", "08P01"),
    (fe.startup("bob") + b"Q" + (1 << 30).to_bytes(4, "big"), "08P01"),
    (fe.startup("bob") + b"Q\x00\x00\x00\x02", "08P01"),
    (fe.startup("bob", protocol=2 << 16), "0A000"),
])
async def test_malformed_input_gets_fatal_error_then_close(pg, payload, code):
    def run():
        s = socket.create_connection(("127.0.0.1", pg.port), timeout=5)
        s.sendall(payload)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        s.close()
        return data
    msgs, _ = fe.parse_backend(await in_thread(run))
    assert msgs[-1].type == "E"
    assert msgs[-1].fields["S"] == "FATAL" and msgs[-1].fields["C"] == code


async def test_gssenc_then_ssl_declined_then_startup_on_raw_socket(pg):
    def run():
        with socket.create_connection(("127.0.0.1", pg.port), timeout=5) as s:
            s.sendall(fe.gssenc_request())
            first = s.recv(1)
            s.sendall(fe.ssl_request())
            second = s.recv(1)
            s.sendall(fe.startup("bob", application_name="raw") + fe.query("select 1"))
            data = b""
            while not data.endswith(b"Z\x00\x00\x00\x05I") or data.count(b"Z\x00") < 2:
                data += s.recv(65536)
            return first, second, fe.parse_backend(data)[0]
    first, second, msgs = await in_thread(run)
    assert (first, second) == (b"N", b"N")
    params = dict(m.fields for m in msgs if m.type == "S")
    assert params["server_version"] == "15.0 (rusts)" and params["application_name"] == "raw"
    assert params["integer_datetimes"] == "on" and params["TimeZone"] == "UTC"
    assert [m.type for m in msgs if m.type != "S"] == ["R", "K", "Z", "T", "D", "C", "Z"]


async def test_cancel_request_needs_the_right_secret(pg):
    def run():
        s = socket.create_connection(("127.0.0.1", pg.port), timeout=5)
        s.sendall(fe.startup("bob"))
        data = b""
        while not data.endswith(b"Z\x00\x00\x00\x05I"):
            data += s.recv(65536)
        pid, secret = next(m.fields for m in fe.parse_backend(data)[0] if m.type == "K")
        s.sendall(fe.query("select sleep"))
        time.sleep(0.2)
        for key in (secret ^ 1, secret):
            with socket.create_connection(("127.0.0.1", pg.port), timeout=5) as c:
                c.sendall(fe.cancel_request(pid, key))
                assert c.recv(100) == b""  # the server just closes
            if key != secret:
                s.settimeout(0.4)
                with pytest.raises(socket.timeout):
                    s.recv(100)  # still running
                s.settimeout(5)
        data = b""
        while not data.endswith(b"Z\x00\x00\x00\x05I"):
            data += s.recv(65536)
        s.close()
        return fe.parse_backend(data)[0]
    msgs = await in_thread(run)
    assert msgs[0].type == "E" and msgs[0].fields["C"] == "57014"
    assert pg.server.statistics().cancel_requests_total == 2
