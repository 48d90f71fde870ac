"""Authorisation of SQL statements and HTTP routes (in-process database, no server)."""

import attrs
import pytest

import rusts.db
from rusts.config import config_from_dict
from rusts.errors import AuthError, ForbiddenError, SandboxError
from rusts.security.authorize import authorize_http, authorize_sql, route_rule, statement_access
from rusts.security.scopes import Principal, acting_as
from rusts.security.tokens import mint
from rusts.sql.runner import execute_sql

from .conftest import SECRET

T0 = 1_700_000_000_000_000_000
READ_CPU = Principal("r", frozenset({"read"}), ("cpu*",))
WRITER = Principal("w", frozenset({"write"}))
ADMIN = Principal("a", frozenset({"admin"}))


@pytest.mark.parametrize("sql, tables", [
    ("SELECT * FROM cpu", {"cpu"}),
    ("SELECT * FROM cpu a JOIN mem b ON a.time = b.time", {"cpu", "mem"}),
    ("SELECT * FROM cpu WHERE v > (SELECT max(v) FROM disk)", {"cpu", "disk"}),
    ("WITH x AS (SELECT * FROM net) SELECT * FROM x", {"net"}),
    ("SELECT v FROM cpu UNION ALL SELECT v FROM \"Mem\"", {"cpu", "Mem"}),
    ("SELECT * FROM (SELECT * FROM public.cpu) s", {"cpu"}),
    ("SELECT time_bucket('1m', time), avg(v) FROM cpu GROUP BY 1 FILL(0)", {"cpu"}),
])
def test_statement_access_finds_every_measurement(sql, tables):
    acc = statement_access(sql)
    assert acc.kind == "select" and {t for t, _ in acc.tables} == tables


def test_statement_access_kinds():
    assert statement_access("DELETE FROM cpu WHERE v > 1").kind == "delete"
    assert statement_access("DROP TABLE cpu, mem").tables == (("cpu", False), ("mem", False))
    assert statement_access("SHOW TABLES").kind == "show_tables"
    assert statement_access("SHOW TAG VALUES FROM cpu WITH KEY = 'host'").tables == (("cpu", False),)
    assert statement_access("SELECT * FROM information_schema.tables").info_schema


def test_route_rules():
    assert route_rule("POST", "/write") == ("write-body", None)
    assert route_rule("HEAD", "/stats") == ("read", None)
    assert route_rule("DELETE", "/measurements/a%20b") == ("admin-path", "a b")
    assert route_rule("PUT", "/retention_policies/x") == ("admin-all", "x")
    assert route_rule("POST", "/some/new/route") == ("admin", None)  # unknown: fail closed


@pytest.fixture
async def db(tmp_path):
    cfg = config_from_dict({"auth": {"enabled": True, "jwt_secret": SECRET},
                            "storage": {"data_dir": str(tmp_path / "d")}})
    async with rusts.db.open(config=cfg) as db:
        await db.write(b"\n".join(f"{m},host=a v=1 {T0}".encode() for m in ("cpu", "cpu_load", "mem")))
        yield db


async def _sql(db, p, sql):
    with acting_as(p):
        return await execute_sql(db, sql)


async def test_select_needs_read_on_every_measurement(db):
    assert len(await _sql(db, READ_CPU, "SELECT * FROM cpu")) == 1
    assert len(await _sql(db, READ_CPU, "SELECT a.v FROM cpu a JOIN cpu_load b ON a.time = b.time")) == 1
    for sql in ("SELECT * FROM mem", "SELECT * FROM cpu a JOIN mem b ON a.time = b.time",
                "SELECT * FROM cpu WHERE v IN (SELECT v FROM mem)",
                "WITH x AS (SELECT * FROM mem) SELECT * FROM x",
                "SELECT * FROM information_schema.columns"):
        with pytest.raises(ForbiddenError, match="may not read") as e:
            await _sql(db, READ_CPU, sql)
        assert e.value.sqlstate == "42501" and e.value.http_status == 403
    with pytest.raises(ForbiddenError):
        await _sql(db, WRITER, "SELECT * FROM cpu")


async def test_show_tables_lists_only_readable(db):
    out = await _sql(db, READ_CPU, "SHOW TABLES")
    assert list(out.values[0]) == ["cpu", "cpu_load"]
    assert list((await _sql(db, ADMIN, "SHOW TABLES")).values[0]) == ["cpu", "cpu_load", "mem"]
    with pytest.raises(ForbiddenError):
        await _sql(db, READ_CPU, "SHOW COLUMNS FROM mem")


async def test_delete_and_drop(db):
    with pytest.raises(ForbiddenError, match="may not delete"):
        await _sql(db, READ_CPU, "DELETE FROM cpu")
    await _sql(db, Principal("w", frozenset({"write"}), ("cpu",)), "DELETE FROM cpu WHERE v > 5")
    with pytest.raises(ForbiddenError, match="may not admin on measurement 'mem'"):
        await _sql(db, WRITER, "DROP TABLE mem")
    await _sql(db, ADMIN, "DROP TABLE mem")
    assert "mem" not in db.measurements()


async def test_no_principal_with_auth_on_is_refused(db):
    """Adapters check in the request's task (enforce); a query worker has no principal and only
    applies the sandbox."""
    with pytest.raises(AuthError):
        authorize_sql(db, "SELECT * FROM cpu", enforce=True)
    assert len(await execute_sql(db, "SELECT * FROM cpu")) == 1
    with pytest.raises(SandboxError):
        await execute_sql(db, "SELECT * FROM read_text('/etc/passwd')")


def test_authorize_http_routes():
    cfg = config_from_dict({"auth": {"enabled": True, "jwt_secret": SECRET}}).auth

    def bearer(scopes, ms=None):
        return {"authorization": "Bearer " + mint(cfg, "t", scopes, ms)["token"]}

    assert authorize_http(cfg, "GET", "/health", {}, {}) is None
    with pytest.raises(AuthError):
        authorize_http(cfg, "GET", "/stats", {}, {})
    assert authorize_http(cfg, "GET", "/stats", bearer({"read"}), {}).subject == "t"
    with pytest.raises(ForbiddenError):
        authorize_http(cfg, "POST", "/flush", bearer({"read", "write"}), {})
    authorize_http(cfg, "POST", "/write", bearer({"write"}, ["cpu"]), {}, b"cpu v=1 1\ncpu,host=a v=2 2")
    with pytest.raises(ForbiddenError, match="'mem'"):
        authorize_http(cfg, "POST", "/write", bearer({"write"}, ["cpu"]), {}, b"cpu v=1 1\nmem v=2 2")
    with pytest.raises(ForbiddenError, match="'mem'"):
        authorize_http(cfg, "POST", "/query", bearer({"read"}, ["cpu"]), {}, b'{"measurement": "mem"}')
    authorize_http(cfg, "POST", "/delete", bearer({"write"}, ["cpu"]), {}, b'{"measurement": "cpu"}')
    with pytest.raises(ForbiddenError):
        authorize_http(cfg, "DELETE", "/measurements/cpu", bearer({"write"}), {})
    with pytest.raises(ForbiddenError, match="every measurement"):
        authorize_http(cfg, "POST", "/retention_policies", bearer({"admin"}, ["cpu"]), {})
    authorize_http(cfg, "POST", "/retention_policies", bearer({"admin"}), {})
    off = attrs.evolve(cfg, enabled=False)
    assert authorize_http(off, "POST", "/flush", {}, {}) is None


async def test_statements_the_analysis_cannot_read_are_refused_not_passed(db):
    from rusts.errors import QueryError

    for sql in ("DELETE FROM cpu; DROP TABLE mem", "SELECT * FROM cpu; DROP TABLE mem", "SELEC * FRM mem"):
        with acting_as(READ_CPU), pytest.raises(QueryError):
            authorize_sql(db, sql, enforce=True)
    assert "mem" in db.measurements()


def test_statements_differing_in_literals_share_one_analysis():
    import rusts.security.authorize as az

    a = statement_access("SELECT MAX(usage) FROM cpu WHERE host = 'h1' AND time >= '2016-01-01' LIMIT 5")
    assert a.template_safe and a.tables == (("cpu", False),)
    az._statement_access.cache_clear()
    b = statement_access("SELECT MAX(usage) FROM cpu WHERE host = 'h2' AND time >= '2016-01-02' LIMIT 7")
    assert b == a and az._statement_access.cache_info().misses == 0  # served by the template
    # a refused function is refused whatever its literal
    for path in ("/etc/passwd", "/etc/shadow"):
        with pytest.raises(SandboxError):
            statement_access(f"SELECT * FROM read_csv('{path}')")


def test_a_string_where_a_table_is_named_is_never_cached_by_template():
    import rusts.security.authorize as az

    assert statement_access("SELECT * FROM 'cpu' WHERE host = 'a'").tables == (("cpu", True),)
    # the same shape with another string names another table: analysed on its own
    assert statement_access("SELECT * FROM 'secret' WHERE host = 'b'").tables == (("secret", True),)
    assert not any(acc.tables == (("cpu", True),) for acc in az._TEMPLATES.values())
