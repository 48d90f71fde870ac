"""The DuckDB sandbox itself: what a sandboxed connection refuses, and the pre-DuckDB check."""

import duckdb
import pyarrow as pa
import pytest
import sqlglot

from rusts.errors import SandboxError
from rusts.security.sandbox import check_statement, check_text, connect, map_permission_error

HOST_WORDS = ("dir", "path", "file", "external", "extension", "secret", "http", "s3", "home", "temp",
              "lock", "access", "log", "profil")


def _host_settings() -> list[str]:
    con = duckdb.connect(":memory:")
    names = [r[0] for r in con.execute("SELECT name FROM duckdb_settings()").fetchall()]
    return [n for n in names if any(w in n.lower() for w in HOST_WORDS) and n != "search_path"]


def test_sandboxed_connection_refuses_files_network_and_settings():
    con = connect()
    for sql in ("SELECT * FROM read_csv('/etc/passwd')", "SELECT * FROM read_text('/etc/hostname')",
                "SELECT * FROM glob('/etc/*')", "COPY (SELECT 1) TO '/tmp/rusts-x.csv'",
                "ATTACH '/tmp/rusts-x.db'", "LOAD httpfs", "INSTALL httpfs",
                "SELECT * FROM read_parquet('https://127.0.0.1:9/x.parquet')"):
        with pytest.raises(duckdb.Error) as e:
            con.execute(sql).fetchall()
        assert isinstance(e.value, duckdb.PermissionException), (sql, e.value)
        mapped = map_permission_error(e.value)
        assert mapped.sqlstate == "42501" and "server's files" in str(mapped)
    settings = _host_settings()
    assert "enable_external_access" in settings and "temp_directory" in settings
    for name in settings:  # every setting that points at files or the network is frozen
        with pytest.raises(duckdb.Error, match="locked"):
            con.execute(f"SET {name} = DEFAULT")


def test_sandboxed_connection_still_queries_registered_arrow():
    cur = connect().cursor()
    cur.register("t", pa.table({"a": [1, 2, 3]}))
    assert cur.sql("SELECT sum(a) FROM t").fetchall() == [(6,)]
    t2 = pa.table({"b": [1]})  # noqa: F841 - a Python variable is not a table (no replacement scans)
    with pytest.raises(duckdb.Error):
        cur.sql("SELECT * FROM t2").fetchall()


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM cpu JOIN read_text('/x') r ON true",
    "SELECT (SELECT count(*) FROM read_blob('/x'))",
    "WITH a AS (SELECT * FROM parquet_metadata('/x')) SELECT * FROM a",
    "SELECT * FROM query('SELECT 1')",
    "SELECT * FROM duckdb_settings()",
    "SELECT * FROM sniff_csv('/x')",
])
def test_check_statement_refuses(sql):
    with pytest.raises(SandboxError, match="is not allowed") as e:
        check_statement(sqlglot.parse_one(sql, read="postgres"))
    assert e.value.sqlstate == "42501" and e.value.http_status == 400


@pytest.mark.parametrize("sql", [
    "SELECT * FROM cpu", "SELECT * FROM generate_series(1, 3)", "SELECT * FROM unnest(ARRAY[1, 2])",
    "SELECT repeat('a', 3), range(3)", "SELECT histogram(v) FROM cpu",
])
def test_check_statement_allows(sql):
    check_statement(sqlglot.parse_one(sql, read="postgres"))


def test_unparseable_text_calling_a_refused_function_says_so():
    with pytest.raises(SandboxError, match="glob"):
        check_text("SELECT * FROM glob('/etc/*')")
    check_text("SELECT * FROM (")  # plain syntax errors are left to the parser
