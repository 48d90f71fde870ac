"""The /sql JSON shape: GROUP BY tags that are not selected still say which group a row is (in its
``tags``, columns unchanged) on every route; MIN(time)/MAX(time) are values, not the row time."""

from __future__ import annotations

import trio

import rusts.db
from rusts.sql.output import to_json
from rusts.sql.runner import execute_sql

T0 = 1_700_000_000_000_000_000


async def _db(path, task_status=trio.TASK_STATUS_IGNORED):
    async with rusts.db.open(path) as db:
        task_status.started(db)
        await trio.sleep_forever()


async def test_group_tags_and_time_aggregates(tmp_path):
    lines = "\n".join(f"cpu,host=h{k % 3},dc=d{k % 2} usage={k * 1.5} {T0 + k * 10**9}" for k in range(60))
    async with trio.open_nursery() as nursery:
        db = await nursery.start(_db, tmp_path / "data")
        assert not (await db.write(lines.encode())).errors
        assert db.statistics()["writes"]["values"] == 60
        sql = "SELECT AVG(usage) FROM cpu GROUP BY host ORDER BY 1"
        want = None
        for route in ("fast", "vector", "columnar", "general"):
            body = to_json(await execute_sql(db, sql, route=route), 0.0)
            assert body["columns"] == [{"name": "avg(usage)", "type": "float8"}], route
            got = [(r["tags"], r["fields"]["avg(usage)"]) for r in body["results"]]
            assert sorted(t["host"] for t, _ in got) == ["h0", "h1", "h2"], route
            want = want or got
            assert got == want, route
        # a tag selected keeps its column; the other GROUP BY tag is in tags too
        body = to_json(await execute_sql(db, "SELECT dc, COUNT(*) AS n FROM cpu GROUP BY host, dc "
                                              "ORDER BY n, dc, MIN(time)", route="general"), 0.0)
        assert [c["name"] for c in body["columns"]] == ["dc", "n"]
        assert all(set(r["tags"]) == {"host", "dc"} for r in body["results"])
        assert len({(r["tags"]["host"], r["tags"]["dc"]) for r in body["results"]}) == 6
        body = to_json(await execute_sql(db, "SELECT MIN(time), MAX(time) FROM cpu"), 0.0)
        assert body["results"] == [{"timestamp": None, "tags": {},
                                    "fields": {"min(time)": T0, "max(time)": T0 + 59 * 10**9}}]
        nursery.cancel_scope.cancel()
