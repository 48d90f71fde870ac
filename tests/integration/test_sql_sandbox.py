"""The SQL sandbox against a real server: no statement over /sql or pgwire reaches the host.

Every DuckDB table function and table macro that is not on the allow-list is called with a host
path, over /sql (400 with a JSON error) and over pgwire (SQLSTATE 42501), and the host-touching
statements (COPY, ATTACH, INSTALL, LOAD, SET, PRAGMA, EXPORT...) are refused too.
"""

import time

import duckdb
import psycopg
import pytest

from rusts.security.sandbox import ALLOWED_FUNCTIONS

SECRET_LINE = "root:"  # first bytes of /etc/passwd

HOST_STATEMENTS = [
    "COPY (SELECT 1) TO '/tmp/rusts-sandbox-out.csv'",
    "COPY cpu FROM '/etc/passwd'",
    "ATTACH '/tmp/rusts-sandbox.db' AS x",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "SET home_directory = '/tmp'",
    "PRAGMA database_size",
    "EXPORT DATABASE '/tmp/rusts-sandbox-export'",
    "IMPORT DATABASE '/tmp'",
    "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')",
    "CREATE TABLE t AS SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM query('SELECT * FROM read_text(''/etc/passwd'')')",
    "SELECT content FROM read_text('/etc/passwd')",
    "SELECT * FROM read_csv('http://127.0.0.1:9/x.csv')",
    "SELECT * FROM cpu, read_blob('/etc/passwd')",
    "SELECT * FROM cpu WHERE v IN (SELECT 1 FROM read_parquet('/etc/passwd'))",
    "WITH f AS (SELECT * FROM read_json('/etc/passwd')) SELECT * FROM f",
    "SELECT * FROM glob('/etc/*')",
]


def _server_class():
    import importlib.util
    import pathlib

    spec = importlib.util.spec_from_file_location("_integration_conftest",
                                                  pathlib.Path(__file__).with_name("conftest.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.Server


def _table_functions() -> list[str]:
    con = duckdb.connect(":memory:")
    rows = con.execute("SELECT DISTINCT function_name FROM duckdb_functions() "
                       "WHERE function_type IN ('table', 'table_macro') ORDER BY 1").fetchall()
    return [r[0] for r in rows if r[0].lower() not in ALLOWED_FUNCTIONS]


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = _server_class()(tmp_path_factory.mktemp("sandbox"), postgres={"enabled": True}).start()
    with s.client() as c:
        assert c.post("/write", content=f"cpu,host=a v=1 {time.time_ns()}").status_code == 204
    yield s
    s.stop()


def test_every_table_function_refused_over_http_and_pgwire(srv):
    names = _table_functions()
    assert "read_csv" in names and "read_text" in names and "glob" in names and len(names) > 50
    with srv.client() as c, psycopg.connect(f"postgresql://rusts@127.0.0.1:{srv.pg_port}/rusts",
                                            autocommit=True) as conn:
        for name in names:
            sql = f"SELECT * FROM {name}('/etc/passwd')"
            r = c.post("/sql", content=sql)
            assert r.status_code == 400, (name, r.text)
            assert "not allowed" in r.json()["error"] and SECRET_LINE not in r.text, (name, r.text)
            with pytest.raises(psycopg.Error) as e:
                conn.execute(sql).fetchall()
            assert e.value.sqlstate == "42501", (name, e.value)
            assert SECRET_LINE not in str(e.value)


@pytest.mark.parametrize("sql", HOST_STATEMENTS)
def test_host_statements_refused(srv, sql):
    with srv.client() as c:
        r = c.post("/sql", content=sql)
        assert r.status_code == 400 and "error" in r.json(), r.text
        assert SECRET_LINE not in r.text
    with psycopg.connect(f"postgresql://rusts@127.0.0.1:{srv.pg_port}/rusts", autocommit=True) as conn:
        try:
            rows = conn.execute(sql).fetchall() if conn.execute(sql).description else []
        except psycopg.Error as e:
            assert e.sqlstate in ("42501", "0A000", "42601", "42P01", "42883"), (sql, e.sqlstate, e)
            assert SECRET_LINE not in str(e)
        else:  # only SET is accepted by pgwire (a session setting of the emulated catalog: a no-op)
            assert sql.startswith("SET") and rows == []
        with pytest.raises(psycopg.Error) as after:  # and it changed nothing
            conn.execute("SELECT * FROM read_text('/etc/passwd')").fetchall()
        assert after.value.sqlstate == "42501"


def test_catalog_path_refuses_host_functions(srv):
    """pgwire's pg_catalog emulation runs on its own DuckDB: sandboxed as well."""
    with psycopg.connect(f"postgresql://rusts@127.0.0.1:{srv.pg_port}/rusts", autocommit=True) as conn:
        for sql in ("SELECT version(), * FROM read_text('/etc/passwd')",
                    "SELECT * FROM pg_catalog.pg_type, read_csv('/etc/passwd')"):
            with pytest.raises(psycopg.Error) as e:
                conn.execute(sql).fetchall()
            assert e.value.sqlstate == "42501", e.value
        assert conn.execute("SELECT v FROM cpu").fetchall() == [(1.0,)]  # ordinary SQL still works
        assert conn.execute("SELECT count(*) FROM generate_series(1, 3) g(x) CROSS JOIN cpu").fetchone()[0] == 3
