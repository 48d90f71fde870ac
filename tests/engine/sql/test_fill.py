"""Gap filling (time_bucket_gapfill + locf/interpolate, FILL(...)) and LATEST ON, exact values."""

from __future__ import annotations

import pytest
import trio

import rusts.db
from rusts.errors import QueryError
from rusts.sql.runner import execute_sql
from rusts.sql.fill import extract_extensions

T0 = 1_699_999_980 * 10**9  # minute aligned
M = 60 * 10**9
N = None


async def _run_db(path, task_status=trio.TASK_STATUS_IGNORED):
    async with rusts.db.open(path) as db:
        task_status.started(db)
        await trio.sleep_forever()


async def with_db(tmp_path, fn):
    lines = [f"cpu,host=a v=1 {T0}", f"cpu,host=a v=2 {T0 + M}", f"cpu,host=a v=5 {T0 + 4 * M + 7}",
             f"cpu,host=b v=10 {T0 + 2 * M}", f"cpu,host=b v=3i_bad {T0}"]
    async with trio.open_nursery() as n:
        db = await n.start(_run_db, tmp_path / "d")
        await db.write("\n".join(lines[:4]).encode())
        try:
            await fn(db)
        finally:
            n.cancel_scope.cancel()


def col(out, name):
    return out.to_pylists()[out.names.index(name)]


WHERE = f"time >= {T0} AND time < {T0 + 6 * M}"


async def test_timescale_gapfill_locf_interpolate(tmp_path):
    async def check(db):
        out = await execute_sql(db, f"SELECT time_bucket_gapfill('1 minute', time) AS t, host, locf(avg(v)) AS l, "
                                    f"interpolate(avg(v)) AS i, avg(v) AS raw FROM cpu WHERE {WHERE} "
                                    f"GROUP BY t, host ORDER BY host, t")
        assert col(out, "t") == [T0 + k * M for k in range(6)] * 2
        assert col(out, "host") == ["a"] * 6 + ["b"] * 6
        assert col(out, "raw") == [1, 2, N, N, 5, N] + [N, N, 10, N, N, N]
        assert col(out, "l") == [1, 2, 2, 2, 5, 5] + [N, N, 10, 10, 10, 10]
        assert col(out, "i") == [1, 2, 3, 4, 5, N] + [N, N, 10, N, N, N]
        assert [c.type for c in out.columns] == ["timestamp", "text", "float8", "float8", "float8"]
        assert [c.kind for c in out.columns][:2] == ["time", "tag"]
    await with_db(tmp_path, check)


async def test_gapfill_explicit_range_and_order_limit(tmp_path):
    async def check(db):
        out = await execute_sql(db, "SELECT time_bucket_gapfill('2 minutes', time, '2023-11-14T22:13:00Z', "
                                    "'2023-11-14T22:23:00Z') AS t, COUNT(*) AS n FROM cpu GROUP BY 1 "
                                    "ORDER BY t DESC LIMIT 4")
        # T0 = 2023-11-14T22:13:00Z; 2-minute buckets are epoch aligned: 22:12, 22:14, ... 22:22
        start = T0 - M
        assert col(out, "t") == [start + k * 2 * M for k in (5, 4, 3, 2)]
        assert col(out, "n") == [N, N, N, 1]
    await with_db(tmp_path, check)


@pytest.mark.parametrize("fill, expected", [
    ("FILL(NULL)", [1, 2, N, N, 5, N]),
    ("FILL(PREVIOUS)", [1, 2, 2, 2, 5, 5]),
    ("FILL(LINEAR)", [1, 2, 3, 4, 5, N]),
    ("fill(0)", [1, 2, 0, 0, 5, 0]),
    ("FILL(-1.5)", [1, 2, -1.5, -1.5, 5, -1.5]),
])
async def test_fill_clause(tmp_path, fill, expected):
    async def check(db):
        out = await execute_sql(db, f"SELECT time_bucket('1 minute', time) AS t, avg(v) FROM cpu "
                                    f"WHERE host = 'a' AND {WHERE} GROUP BY t {fill}")
        assert col(out, "t") == [T0 + k * M for k in range(6)]
        assert col(out, "avg(v)") == expected
    await with_db(tmp_path, check)


async def test_fill_without_bounds_spans_the_data(tmp_path):
    async def check(db):
        out = await execute_sql(db, "SELECT time_bucket('1 minute', time) AS t, max(v) AS mx FROM cpu "
                                    "GROUP BY t ORDER BY t FILL(PREVIOUS)")
        assert col(out, "t") == [T0 + k * M for k in range(5)]
        assert col(out, "mx") == [1, 2, 10, 10, 5]
    await with_db(tmp_path, check)


async def test_latest_on(tmp_path):
    async def check(db):
        out = await execute_sql(db, "SELECT host, time, v FROM cpu LATEST ON time PARTITION BY host ORDER BY host")
        assert out.to_pylists() == [["a", "b"], [T0 + 4 * M + 7, T0 + 2 * M], [5.0, 10.0]]
        out = await execute_sql(db, "SELECT * FROM cpu LATEST ON time")
        assert col(out, "v") == [5.0]
    await with_db(tmp_path, check)


async def test_fill_errors(tmp_path):
    async def check(db):
        with pytest.raises(QueryError, match="FILL"):
            await execute_sql(db, "SELECT avg(v) FROM cpu FILL(PREVIOUS)")
        with pytest.raises(QueryError, match="FILL"):
            await execute_sql(db, "SELECT time_bucket('1 minute', time) t, avg(v) FROM cpu GROUP BY t FILL(sideways)")
        with pytest.raises(QueryError, match="time_bucket_gapfill"):
            await execute_sql(db, "SELECT locf(avg(v)) FROM cpu")
    await with_db(tmp_path, check)


def test_extract_extensions_respects_quotes():
    text, ext = extract_extensions("SELECT 'fill(0)' AS s FROM cpu")
    assert ext is None and text == "SELECT 'fill(0)' AS s FROM cpu"
    text, ext = extract_extensions("SELECT x FROM cpu GROUP BY 1 FILL(linear) LIMIT 3")
    assert ext.fill == "linear" and "FILL" not in text and "LIMIT 3" in text


async def test_time_limit_applies_to_the_scan_paths(tmp_path):
    import attrs

    from rusts.config import Config
    from rusts.errors import QueryCancelled

    cfg = Config()
    cfg = attrs.evolve(cfg, query=attrs.evolve(cfg.query, timeout_secs=1e-9))

    async def run(task_status=trio.TASK_STATUS_IGNORED):
        async with rusts.db.open(tmp_path / "t", config=cfg) as db:
            task_status.started(db)
            await trio.sleep_forever()

    async with trio.open_nursery() as n:
        db = await n.start(run)
        # more series than the inline path takes (tiny queries run on the loop, uninterruptible
        # and over before any limit could matter)
        await db.write("\n".join(f"cpu,host=h{i} v=1 {T0}" for i in range(20)).encode())
        for sql in ("SELECT host, AVG(v) FROM cpu WHERE v > 0 GROUP BY host",  # vector
                    "SELECT host, v - lag(v) OVER (ORDER BY time) FROM cpu"):  # DuckDB
            with pytest.raises(QueryCancelled) as ei:
                await execute_sql(db, sql)
            assert ei.value.http_status == 408
        n.cancel_scope.cancel()
