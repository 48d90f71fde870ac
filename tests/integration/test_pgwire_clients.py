"""Real PostgreSQL clients against the real server: psql, psycopg 3, psycopg2, asyncpg, pg8000,
SQLAlchemy and pandas connect, introspect and query data written over HTTP."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess

import pytest

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000


@pytest.fixture(scope="module")
def pgserver(module_server_factory):
    srv = module_server_factory(postgres={"enabled": True}).start()
    lines = [f"cpu,host=h{i % 3},region=eu usage={i * 1.5},n={i}i,ok={'true' if i % 2 else 'false'} {T0 + i * S}"
             for i in range(30)]
    with srv.client() as c:
        assert c.post("/write", content="\n".join(lines)).status_code == 204
        assert c.post("/write", content=f"mem,host=h0 free=1.0 {T0}").status_code == 204
    return srv


def _dsn(srv) -> str:
    return f"postgresql://rusts@127.0.0.1:{srv.pg_port}/rusts"


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql (postgresql-client) is not installed")
def test_psql_lists_describes_and_queries(pgserver):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}

    def psql(cmd: str) -> str:
        r = subprocess.run(["psql", "-X", "-h", "127.0.0.1", "-p", str(pgserver.pg_port), "-U", "rusts", "rusts",
                            "-c", cmd], capture_output=True, text=True, env=env, timeout=30)
        assert r.returncode == 0, r.stderr
        return r.stdout

    out = psql(r"\dt")
    assert "cpu" in out and "mem" in out
    out = psql(r"\d cpu")
    for col in ("time", "host", "region", "usage", "double precision", "bigint"):
        assert col in out, out
    out = psql("SELECT COUNT(*) FROM cpu WHERE host = 'h1'")
    assert " 10" in out
    out = psql("SHOW TABLES")
    assert "cpu" in out


def test_psycopg3_text_and_binary(pgserver):
    import psycopg

    with psycopg.connect(_dsn(pgserver)) as conn:
        rows = conn.execute("SELECT host, MAX(usage) FROM cpu GROUP BY host ORDER BY host").fetchall()
        assert rows == [("h0", 40.5), ("h1", 42.0), ("h2", 43.5)]
        cur = conn.cursor(binary=True)
        cur.execute("SELECT time, usage, n, ok FROM cpu WHERE host = %s ORDER BY time LIMIT 2", ("h1",))
        r = cur.fetchall()
        assert r[0][1] == 1.5 and r[0][2] == 1 and r[0][3] is True
        assert r[0][0].replace(tzinfo=dt.timezone.utc).timestamp() == pytest.approx((T0 + S) / 1e9)
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT * FROM nope")


def test_psycopg2(pgserver):
    import psycopg2

    conn = psycopg2.connect(_dsn(pgserver))
    try:
        cur = conn.cursor()
        cur.execute("SELECT COUNT(*), SUM(n) FROM cpu")
        assert cur.fetchone() == (30, sum(range(30)))
    finally:
        conn.close()


def test_asyncpg_prepared_statements_with_parameters(pgserver):
    import asyncio

    import asyncpg

    async def main():
        conn = await asyncpg.connect(_dsn(pgserver))
        try:
            stmt = await conn.prepare("SELECT usage FROM cpu WHERE host = $1 AND usage > $2 ORDER BY time")
            got = [r["usage"] for r in await stmt.fetch("h0", 10.0)]
            assert got == [13.5, 18.0, 22.5, 27.0, 31.5, 36.0, 40.5]
            n = await conn.fetchval("SELECT COUNT(*) FROM cpu WHERE time >= $1",
                                    dt.datetime.fromtimestamp((T0 + 20 * S) / 1e9, dt.timezone.utc))
            assert n == 10
            return True
        finally:
            await conn.close()

    assert asyncio.run(main())


def test_pg8000(pgserver):
    import pg8000.native

    conn = pg8000.native.Connection("rusts", host="127.0.0.1", port=pgserver.pg_port, database="rusts")
    try:
        rows = conn.run("SELECT host, COUNT(*) FROM cpu GROUP BY host ORDER BY host")
        assert rows == [["h0", 10], ["h1", 10], ["h2", 10]]
    finally:
        conn.close()


def test_sqlalchemy_and_pandas(pgserver):
    import pandas as pd
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(f"postgresql+psycopg://rusts@127.0.0.1:{pgserver.pg_port}/rusts")
    try:
        assert set(inspect(engine).get_table_names()) >= {"cpu", "mem"}
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT host, AVG(usage) AS a FROM cpu GROUP BY host ORDER BY host")).all()
            assert [r.host for r in rows] == ["h0", "h1", "h2"]
            df = pd.read_sql("SELECT time, usage FROM cpu ORDER BY time DESC LIMIT 5", conn)
            assert list(df.columns) == ["time", "usage"] and len(df) == 5
            assert df["usage"].iloc[0] == 43.5
    finally:
        engine.dispose()
