"""DELETE, DROP TABLE and SHOW RETENTION POLICIES over /sql and over pgwire (real server)."""

import time

import pytest

S = 10**9
T = (time.time_ns() // S - 3600) * S  # recent: the 365-day policy must not expire it


def _sql(c, q):
    return c.post("/sql", content=q)


def test_delete_drop_show_over_http(server_factory):
    srv = server_factory(retention_policies=[{"name": "year", "measurement": "*", "duration": "365d"}]).start()
    with srv.client() as c:
        c.post("/write", content="\n".join(f"cpu,host=h{i % 2} v={i} {T + i * S}" for i in range(10)))
        r = _sql(c, f"DELETE FROM cpu WHERE host = 'h0' AND time < {T + 6 * S}")
        assert r.status_code == 200, r.text
        left = _sql(c, "SELECT v FROM cpu ORDER BY time").json()["results"]
        assert [x["fields"]["v"] for x in left] == [1.0, 3.0, 5.0, 6.0, 7.0, 8.0, 9.0]
        assert _sql(c, "DELETE FROM cpu WHERE v >= 8").status_code == 200
        assert max(x["fields"]["v"] for x in _sql(c, "SELECT v FROM cpu").json()["results"]) == 7.0
        r = _sql(c, "DELETE FROM cpu WHERE v > 1 OR host = 'h1'")
        assert r.status_code == 400 and "OR" in r.json()["error"]
        assert _sql(c, "DELETE FROM nope").status_code == 400
        assert _sql(c, "DELETE FROM cpu WHERE nope = 1").status_code == 400
        pols = _sql(c, "SHOW RETENTION POLICIES").json()["results"]
        assert pols[0]["fields"]["name"] == "year" and pols[0]["fields"]["duration_secs"] == 365 * 86400
        assert _sql(c, "DROP TABLE cpu").status_code == 200
        assert _sql(c, "SHOW TABLES").json()["results"] == []
        assert _sql(c, "DROP TABLE cpu").status_code == 400
        assert _sql(c, "DROP TABLE IF EXISTS cpu").status_code == 200


def test_delete_over_pgwire(server_factory):
    psycopg = pytest.importorskip("psycopg")
    srv = server_factory(postgres={"enabled": True}).start()
    with srv.client() as c:
        c.post("/write", content="\n".join(f"m,host=a v={i} {T + i * S}" for i in range(5)))
    with psycopg.connect(f"postgresql://rusts@127.0.0.1:{srv.pg_port}/rusts", autocommit=True) as conn:
        cur = conn.execute("DELETE FROM m WHERE v < %s", (2,))
        assert cur.statusmessage.startswith("DELETE")
        assert conn.execute("SELECT COUNT(*) FROM m").fetchone()[0] == 3
        conn.execute("DROP TABLE m")
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT * FROM m")
