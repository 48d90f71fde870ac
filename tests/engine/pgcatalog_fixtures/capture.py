"""Regenerate the pgcatalog fixtures from a real PostgreSQL 15 (not run by the test suite).

Usage (a throwaway cluster with ``log_statement = all``, database ``rusts`` owned by the bootstrap
superuser ``rusts`` (oid 10), no other databases, and the tables of ``SCHEMA_SQL``)::

    python tests/engine/pgcatalog_fixtures/capture.py --port 55433 --log /tmp/pgcat/server.log

Each scenario drives one real client against the server, reads the statements it sent from the
server log, re-runs each one (with its logged parameters) on a fresh connection in text format and
writes ``<scenario>.sql``: the statement, its parameters, the result's column names and type names
and its rows in PostgreSQL's text format. Table OIDs are replaced by ``{{oid:TABLE}}`` /
``{{rowtype:TABLE}}`` placeholders because rusts assigns its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
from pathlib import Path

HERE = Path(__file__).parent
SCHEMA_SQL = [
    "create table cpu(time timestamp, host text, region text, usage_user float8, usage_idle float8,"
    " requests int8, status text, up bool, bytes numeric)",
    "create table mem(time timestamp, host text, used float8)",
]
JDBC_JAR = "/root/.m2/repository/org/postgresql/postgresql/42.7.13/postgresql-42.7.13.jar"

GRAFANA_SEARCH_PATH = """
          quote_ident(table_schema) IN (
          SELECT
            CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
          FROM
            generate_series(
              array_lower(string_to_array(current_setting('search_path'),','),1),
              array_upper(string_to_array(current_setting('search_path'),','),1)
            ) as i,
            string_to_array(current_setting('search_path'),',') s
          )"""

GRAFANA = [
    "SELECT current_setting('server_version_num')::int/100 as version",
    "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'",
    """SELECT schema_name AS "name"
    FROM information_schema.schemata
    WHERE schema_name NOT IN ('information_schema', 'pg_catalog', 'pg_toast', '_timescaledb_cache',
                              '_timescaledb_catalog', '_timescaledb_internal', '_timescaledb_config',
                              'timescaledb_information', 'timescaledb_experimental')
    ORDER BY schema_name""",
    """SELECT quote_ident(table_name) AS "table"
      FROM information_schema.tables
      WHERE quote_ident(table_schema) = 'public'
      ORDER BY 1""",
    f"""SELECT
    CASE WHEN {GRAFANA_SEARCH_PATH}
      THEN quote_ident(table_name)
      ELSE quote_ident(table_schema) || '.' || quote_ident(table_name)
    END AS "table"
    FROM information_schema.tables
    WHERE quote_ident(table_schema) NOT IN ('information_schema', 'pg_catalog', '_timescaledb_cache',
                             '_timescaledb_catalog', '_timescaledb_internal', '_timescaledb_config',
                             'timescaledb_information', 'timescaledb_experimental')
    ORDER BY CASE WHEN {GRAFANA_SEARCH_PATH} THEN 0 ELSE 1 END, 1""",
    f"""SELECT quote_ident(column_name) AS "column", data_type AS "type"
    FROM information_schema.columns
    WHERE
      CASE WHEN array_length(parse_ident('cpu'),1) = 2
        THEN quote_ident(table_schema) = (parse_ident('cpu'))[1]
          AND quote_ident(table_name) = (parse_ident('cpu'))[2]
        ELSE quote_ident(table_name) = 'cpu'
          AND {GRAFANA_SEARCH_PATH}
      END""",
    """SELECT quote_ident(column_name) AS "column", data_type AS "type"
    FROM information_schema.columns
    WHERE
      CASE WHEN array_length(parse_ident('public.mem'),1) = 2
        THEN quote_ident(table_schema) = (parse_ident('public.mem'))[1]
          AND quote_ident(table_name) = (parse_ident('public.mem'))[2]
        ELSE quote_ident(table_name) = 'public.mem'
      END""",
    # the older (angular) editor's metadata queries
    """SELECT
	quote_ident(table_name) as table_name,
	( SELECT quote_ident(column_name) as column_name FROM information_schema.columns c
    WHERE c.table_schema = t.table_schema AND c.table_name = t.table_name AND udt_name IN ('timestamptz','timestamp')
    ORDER BY ordinal_position LIMIT 1 ) AS time_column,
  ( SELECT quote_ident(column_name) AS column_name FROM information_schema.columns c
    WHERE c.table_schema = t.table_schema AND c.table_name = t.table_name AND udt_name='float8'
    ORDER BY ordinal_position LIMIT 1 ) AS value_column
FROM information_schema.tables t
WHERE table_schema IN (
  SELECT CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
  FROM generate_series(
      array_lower(string_to_array(current_setting('search_path'),','),1),
      array_upper(string_to_array(current_setting('search_path'),','),1)
    ) as i,
    string_to_array(current_setting('search_path'),',') s
) AND EXISTS ( SELECT 1 FROM information_schema.columns c
    WHERE c.table_schema = t.table_schema AND c.table_name = t.table_name AND udt_name IN ('timestamptz','timestamp'))
  AND EXISTS ( SELECT 1 FROM information_schema.columns c
    WHERE c.table_schema = t.table_schema AND c.table_name = t.table_name AND udt_name='float8')
LIMIT 1""",
    """SELECT quote_ident(column_name) FROM information_schema.columns WHERE table_schema IN (
  SELECT CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
  FROM generate_series(
      array_lower(string_to_array(current_setting('search_path'),','),1),
      array_upper(string_to_array(current_setting('search_path'),','),1)
    ) as i,
    string_to_array(current_setting('search_path'),',') s
) AND table_name = 'cpu' AND data_type IN ('bigint','integer','double precision','real','numeric') AND column_name <> 'time' ORDER BY column_name""",
    "SELECT udt_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'cpu' AND column_name = 'host'",
]


def _psql(port: int, command: str) -> None:
    subprocess.run(
        ["psql", "-X", "-h", "127.0.0.1", "-p", str(port), "-U", "rusts", "-d", "rusts", "-c", command],
        check=True, capture_output=True,
    )


def scenario_psql(port: int) -> dict[str, None]:
    out = {}
    for name, cmd in [("dt", r"\dt"), ("d", r"\d"), ("d_cpu", r"\d cpu"), ("dplus_cpu", r"\d+ cpu"),
                      ("l", r"\l"), ("dn", r"\dn"), ("du", r"\du"), ("dtplus", r"\dt+"),
                      ("di", r"\di"), ("dv", r"\dv"), ("dx", r"\dx"), ("dp", r"\dp"), ("d_mem", r"\d mem"),
                      ("dT", r"\dT"), ("df", r"\df")]:
        out[f"psql_{name}"] = lambda cmd=cmd: _psql(port, cmd)
    return out


def _sqlalchemy(url: str) -> None:
    import pandas
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    with engine.connect():
        pass
    insp = sqlalchemy.inspect(engine)
    insp.get_schema_names()
    insp.get_table_names()
    insp.get_view_names()
    insp.has_table("cpu")
    insp.get_columns("cpu")
    insp.get_pk_constraint("cpu")
    insp.get_foreign_keys("cpu")
    insp.get_indexes("cpu")
    insp.get_unique_constraints("cpu")
    insp.get_check_constraints("cpu")
    insp.get_table_comment("cpu")
    pandas.read_sql("select time, host, usage_user from cpu", engine)
    engine.dispose()


async def _asyncpg(port: int) -> None:
    import asyncpg

    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="rusts", database="rusts")
    await conn.fetch("select host, usage_user from cpu where host = $1", "a")
    # the introspection asyncpg runs when it meets a type oid it has no codec for
    await conn._introspect_types([16, 20, 23, 25, 701, 1114, 1184, 1700, 1043, 19, 26, 18, 1009, 1022], None)
    await conn._introspect_type("cpu", "public")
    await conn.close()


def _psycopg(port: int) -> None:
    import psycopg
    from psycopg.types import TypeInfo

    with psycopg.connect(f"host=127.0.0.1 port={port} user=rusts dbname=rusts") as conn:
        TypeInfo.fetch(conn, "hstore")
        TypeInfo.fetch(conn, "text")
        conn.execute("select host from cpu where host = %s", ["a"]).fetchall()


def _psycopg2(port: int) -> None:
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=port, user="rusts", dbname="rusts")
    cur = conn.cursor()
    cur.execute("select host from cpu where host = %s", ("a",))
    cur.fetchall()
    conn.close()


def _pg8000(port: int) -> None:
    import pg8000.native

    conn = pg8000.native.Connection("rusts", host="127.0.0.1", port=port, database="rusts")
    conn.run("select host from cpu where host = :h", h="a")
    conn.close()


def _grafana(port: int) -> None:
    import psycopg

    with psycopg.connect(f"host=127.0.0.1 port={port} user=rusts dbname=rusts", autocommit=True) as conn:
        for sql in GRAFANA:
            conn.execute(sql).fetchall()


def _jdbc(port: int) -> None:
    subprocess.run(["java", "-cp", JDBC_JAR, str(HERE / "Capture.java"), str(port)], check=True,
                   capture_output=True)


def scenarios(port: int) -> dict:
    sc = scenario_psql(port)
    sc["sqlalchemy_psycopg"] = lambda: _sqlalchemy(f"postgresql+psycopg://rusts@127.0.0.1:{port}/rusts")
    sc["sqlalchemy_psycopg2"] = lambda: _sqlalchemy(f"postgresql+psycopg2://rusts@127.0.0.1:{port}/rusts")
    sc["sqlalchemy_pg8000"] = lambda: _sqlalchemy(f"postgresql+pg8000://rusts@127.0.0.1:{port}/rusts")
    sc["asyncpg"] = lambda: asyncio.run(_asyncpg(port))
    sc["psycopg"] = lambda: _psycopg(port)
    sc["psycopg2"] = lambda: _psycopg2(port)
    sc["pg8000"] = lambda: _pg8000(port)
    sc["grafana"] = lambda: _grafana(port)
    sc["jdbc"] = lambda: _jdbc(port)
    return sc


_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \w+ \[\d+\] [^:]*: (LOG|DETAIL|ERROR|STATEMENT|HINT|WARNING|FATAL):  (.*)$")
_STMT = re.compile(r"^(?:statement|execute [^:]+): (.*)$", re.S)
_PARAM = re.compile(r"\$(\d+) = (NULL|'((?:[^']|'')*)')")


def read_statements(log: str) -> list[tuple[str, list]]:
    """Statements (with parameters) from a PostgreSQL stderr log excerpt."""
    entries: list[list] = []
    for line in log.splitlines():
        m = _LINE.match(line)
        if m:
            entries.append([m.group(1), m.group(2)])
        elif entries:
            entries[-1][1] += "\n" + line
    out: list[tuple[str, list]] = []
    for kind, text in entries:
        if kind == "LOG":
            m = _STMT.match(text)
            if m:
                out.append((m.group(1), []))
        elif kind == "DETAIL" and text.startswith("parameters: ") and out:
            params = [None if p[1] == "NULL" else p[2].replace("''", "'") for p in _PARAM.findall(text)]
            out[-1] = (out[-1][0], params)
    return out


def is_user_statement(sql: str) -> bool:
    """Statements that are the client's own work (not catalog/session plumbing)."""
    s = sql.strip().lower()
    if re.match(r"(begin|commit|rollback|savepoint|release|start transaction)\b", s):
        return True
    s = re.sub(r"'(?:[^']|'')*'", "''", s)
    return bool(re.search(r"\bfrom\s+(cpu|mem)\b", s))


def run_real(conninfo: str, sql: str, params: list) -> tuple[list, list]:
    import psycopg

    with psycopg.connect(conninfo, autocommit=True) as conn:
        pg = conn.pgconn
        res = pg.exec_params(sql.encode(), [None if p is None else p.encode() for p in params])
        if res.error_message:
            raise RuntimeError(res.error_message.decode())
        cols = []
        for i in range(res.nfields):
            oid = res.ftype(i)
            tname = conn.execute("select typname from pg_type where oid = %s", [oid]).fetchone()[0]
            cols.append([res.fname(i).decode(), tname])
        rows = []
        for r in range(res.ntuples):
            rows.append([None if res.get_value(r, c) is None else res.get_value(r, c).decode()
                         for c in range(res.nfields)])
        return cols, rows


def oid_map(conninfo: str) -> dict[str, str]:
    import psycopg

    out = {}
    with psycopg.connect(conninfo) as conn:
        for oid, reltype, name in conn.execute(
                "select c.oid, c.reltype, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
                " where n.nspname = 'public'"):
            out[str(oid)] = "{{oid:%s}}" % name
            out[str(reltype)] = "{{rowtype:%s}}" % name
    return out


def normalise(text: str, oids: dict[str, str]) -> str:
    return re.sub(r"\b(\d{5,})\b", lambda m: oids.get(m.group(1), m.group(1)), text)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=55433)
    ap.add_argument("--log", default="/tmp/pgcat/server.log")
    ap.add_argument("--only", default=None)
    args = ap.parse_args()
    conninfo = f"host=127.0.0.1 port={args.port} user=rusts dbname=rusts"
    oids = oid_map(conninfo)
    for name, fn in scenarios(args.port).items():
        if args.only and name != args.only:
            continue
        start = os.path.getsize(args.log)
        fn()
        with open(args.log) as f:
            f.seek(start)
            log = f.read()
        seen = set()
        chunks = []
        for sql, params in read_statements(log):
            key = (sql, tuple(params))
            if key in seen or "pg_type where oid = " in sql:
                continue
            seen.add(key)
            entry: dict = {"params": params}
            if is_user_statement(sql):
                entry["kind"] = "user"
            else:
                entry["kind"] = "catalog"
                entry["columns"], entry["rows"] = run_real(conninfo, sql, params)
            header = normalise(json.dumps(entry, ensure_ascii=False), oids)
            chunks.append(f"-- entry: {header}\n{normalise(sql, oids).rstrip()}\n")
        (HERE / f"{name}.sql").write_text("".join(chunks))
        print(name, len(chunks))


if __name__ == "__main__":
    main()
