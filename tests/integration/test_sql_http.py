"""``POST /sql`` against the real server: the original README's SQL examples, answered correctly,
plus error statuses and what the original refused."""

from __future__ import annotations

import pytest

D1 = 1704067200 * 10**9  # 2024-01-01T00:00:00Z
MIN = 60 * 10**9

LINES = []
for k in range(120):  # two hours at one minute, three hosts
    t = D1 + k * MIN
    LINES.append(f"cpu,host=server01,region=us-west usage={10 + k % 10},temperature={40 + k % 5}.5,temp={60 + k % 3} {t}")
    LINES.append(f"cpu,host=server02,region=us-east usage={50 + k % 7},temperature={45 + k % 4}.25,temp={70 + k % 2} {t + 1}")
    LINES.append(f"cpu,host=server03 usage={90 - k % 11} {t + 2}")
LINES.append(f"cpu,host=server01,region=us-west usage=99 {D1 + 86400 * 10**9 + 5}")  # 2024-01-02
LINES.append(f"memory,host=server01 used=1024i {D1}")
LINES.append(f"trips,hvfhs_license_num=HV0003,dispatching_base_num=B03404 trip_miles=2.5,trip_time=600i {D1}")
LINES.append(f"trips,hvfhs_license_num=HV0003,dispatching_base_num=B03404 trip_miles=0,trip_time=60i {D1 + MIN}")
LINES.append(f"trips,hvfhs_license_num=HV0005,dispatching_base_num=B03406 trip_miles=7.25,trip_time=900i {D1 + 2 * MIN}")


def sql(c, text, status=200):
    r = c.post("/sql", content=text.encode())
    assert r.status_code == status, (text, r.status_code, r.text)
    return r.json()


def fields(body, name):
    return [row["fields"].get(name) for row in body["results"]]


def test_readme_sql_examples(server):
    with server.client() as c:
        r = c.post("/write", content="\n".join(LINES).encode())
        assert r.status_code == 204, r.text

        # Basic SELECT
        b = sql(c, "SELECT * FROM cpu WHERE host = 'server01' LIMIT 10")
        assert b["total_rows"] == 10 and b["measurement"] == "cpu"
        assert all(row["tags"] == {"host": "server01", "region": "us-west"} for row in b["results"])
        assert [row["timestamp"] for row in b["results"]] == [D1 + k * MIN for k in range(10)]
        assert [c_["name"] for c_ in b["columns"]] == ["time", "host", "region", "temp", "temperature", "usage"]
        assert b["results"][0]["fields"] == {"usage": 10.0, "temperature": 40.5, "temp": 60.0}

        # Aggregation with GROUP BY
        b = sql(c, "SELECT AVG(usage), MAX(usage) FROM cpu GROUP BY host")
        assert [c_["name"] for c_ in b["columns"]] == ["avg(usage)", "max(usage)"]
        got = sorted((row["fields"]["avg(usage)"], row["fields"]["max(usage)"]) for row in b["results"])
        s1 = [10 + k % 10 for k in range(120)] + [99]
        s2 = [50 + k % 7 for k in range(120)]
        s3 = [90 - k % 11 for k in range(120)]
        want = sorted((sum(s) / len(s), max(s)) for s in (s1, s2, s3))
        assert [g[1] for g in got] == [w[1] for w in want]
        assert [g[0] for g in got] == pytest.approx([w[0] for w in want])

        # Time range filtering
        b = sql(c, "SELECT * FROM cpu WHERE time >= '2024-01-01' AND time < '2024-01-02'")
        assert b["total_rows"] == 360
        b = sql(c, "SELECT usage FROM cpu WHERE time >= '2024-01-02'")
        assert b["results"] == [{"timestamp": None, "tags": {}, "fields": {"usage": 99.0}}]  # time not selected

        # the feature table
        b = sql(c, "SELECT usage, temperature FROM cpu WHERE host = 'server03' LIMIT 1")
        assert b["results"][0]["fields"] == {"usage": 90.0}  # server03 has no temperature: omitted
        b = sql(c, "SELECT COUNT(*) FROM cpu WHERE region IN ('us-west', 'us-east')")
        assert fields(b, "count(*)") == [241]
        b = sql(c, "SELECT COUNT(*) FROM cpu WHERE host != 'server01'")
        assert fields(b, "count(*)") == [240]
        b = sql(c, "SELECT COUNT(*) FROM cpu WHERE region IS NOT NULL")
        assert fields(b, "count(*)") == [241]
        b = sql(c, "SELECT AVG(usage), COUNT(*), MAX(temp) FROM cpu")
        assert b["results"][0]["fields"]["count(*)"] == 361 and b["results"][0]["fields"]["max(temp)"] == 71.0
        b = sql(c, "SELECT host, region, COUNT(*) FROM cpu GROUP BY host, region")
        assert sorted((row["tags"].get("host"), row["tags"].get("region"), row["fields"]["count(*)"])
                      for row in b["results"]) == [("server01", "us-west", 121), ("server02", "us-east", 120),
                                                   ("server03", None, 120)]
        b = sql(c, "SELECT time, usage FROM cpu ORDER BY time DESC LIMIT 2")
        assert [row["timestamp"] for row in b["results"]] == [D1 + 86400 * 10**9 + 5, D1 + 119 * MIN + 2]
        b = sql(c, "SELECT time, usage FROM cpu WHERE host = 'server02' LIMIT 100 OFFSET 50")
        assert b["total_rows"] == 70 and b["results"][0]["timestamp"] == D1 + 50 * MIN + 1
        b = sql(c, "SELECT PERCENTILE_95(usage), STDDEV(usage), FIRST(usage), LAST(usage) FROM cpu WHERE host = 'server02'")
        f = b["results"][0]["fields"]
        assert f["first(usage)"] == 50.0 and f["last(usage)"] == 50 + 119 % 7
        b = sql(c, "SELECT time_bucket('1 hour', time) AS bucket, COUNT(*), AVG(usage), SUM(usage) FROM cpu "
                   "WHERE time < '2024-01-02' GROUP BY bucket ORDER BY bucket")
        assert [row["timestamp"] for row in b["results"]] == [D1, D1 + 60 * MIN]
        assert fields(b, "count(*)") == [180, 180]
        b = sql(c, "SELECT COUNT(*) FROM cpu WHERE time > now() - INTERVAL '1 hour'")
        assert fields(b, "count(*)") == [0]

        # SHOW TABLES (exact shape)
        b = sql(c, "SHOW TABLES")
        assert {k: v for k, v in b.items() if k != "execution_time_ms"} == {
            "measurement": "_tables", "results": [{"fields": {"name": "cpu"}}, {"fields": {"name": "memory"}},
                                                  {"fields": {"name": "trips"}}], "total_rows": 3}

        # the original's benchmark examples
        assert fields(sql(c, "SELECT COUNT(*) FROM trips"), "count(*)") == [3]
        assert fields(sql(c, "SELECT SUM(trip_miles) FROM trips WHERE trip_miles > 0"), "sum(trip_miles)") == [9.75]
        assert fields(sql(c, "SELECT COUNT(*) FROM trips WHERE hvfhs_license_num = 'HV0003'"), "count(*)") == [2]
        b = sql(c, "SELECT hvfhs_license_num, COUNT(*) FROM trips GROUP BY hvfhs_license_num")
        assert sorted((r["tags"]["hvfhs_license_num"], r["fields"]["count(*)"]) for r in b["results"]) == \
            [("HV0003", 2), ("HV0005", 1)]
        b = sql(c, "SELECT * FROM trips ORDER BY time DESC LIMIT 10")
        assert [r["fields"]["trip_time"] for r in b["results"]] == [900, 60, 600]

        # JSON body and GET forms
        r = c.post("/sql", json={"query": "SELECT COUNT(*) FROM memory"})
        assert r.status_code == 200 and r.json()["results"][0]["fields"] == {"count(*)": 1}
        r = c.get("/sql", params={"q": "SELECT used FROM memory"})
        assert r.status_code == 200 and r.json()["results"][0]["fields"] == {"used": 1024}

        # beyond the original: OR, HAVING, arithmetic, CTE, window
        b = sql(c, "SELECT host, SUM(usage)/COUNT(*) AS mean FROM cpu WHERE host = 'server01' OR usage > 95 "
                   "GROUP BY host HAVING COUNT(*) > 5 ORDER BY host")
        assert [r["tags"]["host"] for r in b["results"]] == ["server01"]
        b = sql(c, "WITH h AS (SELECT host, MAX(usage) AS mx FROM cpu GROUP BY host) SELECT host, mx FROM h "
                   "ORDER BY mx DESC LIMIT 1")
        assert b["results"][0]["tags"] == {"host": "server01"} and b["results"][0]["fields"] == {"mx": 99.0}
        b = sql(c, "SELECT time, usage - lag(usage) OVER (ORDER BY time) AS d FROM cpu WHERE host = 'server03' "
                   "ORDER BY time LIMIT 3")
        assert fields(b, "d") == [None, -1.0, -1.0]

        # errors: 400 with a JSON error, never 500
        e = sql(c, "SELECT * FROM nosuch", 400)
        assert e["error"] == 'relation "nosuch" does not exist'
        e = sql(c, "SELECT nope FROM cpu", 400)
        assert "nope" in e["error"]
        e = sql(c, "SELECT * FROM cpu WHERE", 400)
        assert "syntax error" in e["error"] and isinstance(e.get("position"), int)
        e = sql(c, "UPDATE cpu SET usage = 1", 400)
        assert "UPDATE" in e["error"]
        e = sql(c, "DELETE FROM cpu WHERE usage > 1 OR host = 'a'", 400)  # deletes must be exact
        assert "DELETE" in e["error"]
        e = sql(c, "SELECT SUM(host) FROM cpu", 400)
        assert e["error"]
