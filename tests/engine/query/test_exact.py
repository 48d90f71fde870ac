"""Integer and unsigned fields stay exact in MIN, MAX, SUM, FIRST and LAST on every route, in
memory and on disk; a SUM beyond the type's range is an error, never a wrapped or rounded value."""

from __future__ import annotations

import numpy as np
import pytest
import trio

import rusts.db
from rusts.errors import QueryError
from rusts.query.exact import checked_sum, stats_exact
from rusts.sql.runner import execute_sql

T0 = 1_700_000_000_000_000_000
U0 = 31053281322533953  # near 2^55: float64 would answer ...952
I0 = -(2**60) - 3


async def _db(path, task_status=trio.TASK_STATUS_IGNORED):
    async with rusts.db.open(path) as db:
        task_status.started(db)
        await trio.sleep_forever()


def _lines() -> bytes:
    out = []
    for host in ("a", "b"):
        for k in range(6):
            out.append(f"m,host={host} u={U0 + k}u,i={I0 - k}i,s={2**61 + k}i {T0 + k * 10**9}")
    return "\n".join(out).encode()


WANT = [U0, U0 + 5, U0, U0 + 5, I0 - 5, I0]
SQL = "SELECT MIN(u), MAX(u), FIRST(u), LAST(u), MIN(i), MAX(i) FROM m"
GROUPED = "SELECT host, MIN(u), MAX(u), SUM(i), LAST(i) FROM m GROUP BY host ORDER BY host"
WANT_GROUPED = [["a", "b"], [U0, U0], [U0 + 5, U0 + 5], [6 * I0 - 15] * 2, [I0 - 5] * 2]
JSON = {"Min": U0, "Max": U0 + 5, "First": U0, "Last": U0 + 5, "Sum": 12 * U0 + 30}


async def _check_all(db) -> None:
    for route in ("fast", "vector", "columnar", "general"):
        out = await execute_sql(db, SQL, route=route)
        assert [c[0] for c in out.to_pylists()] == WANT, route
        out = await execute_sql(db, GROUPED, route=route)
        assert out.to_pylists() == WANT_GROUPED, route
        out = await execute_sql(db, "SELECT SUM(u) FROM m", route=route)
        assert out.to_pylists() == [[12 * U0 + 30]], route
        with pytest.raises(QueryError, match="integer out of range"):
            await execute_sql(db, "SELECT SUM(s) FROM m", route=route)  # 12 * 2^61 > 2^63
    for func, want in JSON.items():
        rs = await db.query({"measurement": "m", "time_range": {"start": 0, "end": 2**62},
                             "aggregation": {"function": func, "field": "u"}})
        assert [r["fields"] for r in rs.to_rows()] == [{f"{func.lower()}_u": want}], func


async def test_exact_integers_in_memory_and_on_disk(tmp_path):
    async with trio.open_nursery() as nursery:
        db = await nursery.start(_db, tmp_path / "data")
        r = await db.write(_lines())
        assert not r.errors
        await _check_all(db)  # memtable
        await db.flush()
        await _check_all(db)  # segments (block statistics beyond 2^53 are not used)
        nursery.cancel_scope.cancel()


def test_checked_sum_finds_the_lost_multiple_of_2_64():
    w = np.array([5, -7], np.int64)
    assert checked_sum(w, np.array([5.0, -7.0])).tolist() == [5, -7]
    with pytest.raises(QueryError):
        checked_sum(np.array([-(2**63)], np.int64), np.array([2.0**63]))  # 2^63 wrapped
    u = np.array([2**64 - 1], np.uint64)
    assert checked_sum(u, np.array([2.0**64])).tolist() == [2**64 - 1]
    with pytest.raises(QueryError):
        checked_sum(np.array([3], np.uint64), np.array([2.0**64 + 3]))


def test_stats_exact_only_below_2_53():
    cnt = np.array([0, 3, 3, 2])
    mn = np.array([np.nan, 1.0, 2.0**53, -(2.0**52)])
    mx = np.array([np.nan, 5.0, 2.0**53, -(2.0**52)])
    assert stats_exact(cnt, np.zeros(4), mn, mx).tolist() == [True, True, False, False]
