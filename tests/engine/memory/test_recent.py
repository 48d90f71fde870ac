"""The in-memory recent-data read path answers exactly what the segment path answers: same rows,
last write wins per field across writes and flushes, deletes and drops respected, and nothing
outside memory is ever assumed to be in it (restart, eviction)."""

from __future__ import annotations

import random

import numpy as np
import pytest

import rusts
from rusts.model import FieldType
from rusts.memory.recent import RecentData, scan
from rusts.sql.runner import execute_sql
from rusts.sql.output import to_json

T0 = 1_700_000_000_000_000_000
S = 10**9


def no_recent():
    import attrs

    from rusts.config import Config

    c = Config()
    return attrs.evolve(c, query=attrs.evolve(c.query, recent_cache_mb=0))


def lines(rng: random.Random, n_hosts: int, t_lo: int, t_hi: int, n: int) -> bytes:
    out = []
    for _ in range(n):
        h = rng.randrange(n_hosts)
        t = T0 + rng.randrange(t_lo, t_hi) * S
        fields = []
        if rng.random() < 0.8:
            fields.append(f"v={rng.randrange(-50, 50) / 4}")
        if rng.random() < 0.6 or not fields:
            fields.append(f"w={rng.randrange(1000)}i")
        out.append(f"m,host=h{h:03d},site=s{h % 7} {','.join(fields)} {t}")
    return "\n".join(out).encode()


async def answers(db, queries):
    res = []
    for q in queries:
        out = await execute_sql(db, q)
        res.append(to_json(out, 0)["results"])
    return res


QUERIES = [
    f"SELECT * FROM m WHERE time >= {T0} ORDER BY host, time",
    f"SELECT site, COUNT(*), COUNT(v), SUM(w), MAX(v), AVG(v) FROM m WHERE time >= {T0 + 30 * S} GROUP BY site ORDER BY site",
    f"SELECT host, LAST(v), FIRST(w) FROM m WHERE time >= {T0} AND time < {T0 + 200 * S} GROUP BY host ORDER BY host",
    f"SELECT site, PERCENTILE_95(v) FROM m WHERE time >= {T0} AND site != 's3' GROUP BY site ORDER BY site",
]


@pytest.mark.parametrize("seed", range(5))
async def test_recent_path_equals_segment_path(tmp_path, seed):
    rng = random.Random(seed)
    writes = [lines(rng, 60, 0, 300, rng.randrange(50, 400)) for _ in range(12)]
    flush_after = {rng.randrange(12) for _ in range(4)}
    async with rusts.open(tmp_path / "on", wal_durability="none") as on, \
            rusts.open(tmp_path / "off", config=no_recent(), wal_durability="none") as off:
        for i, body in enumerate(writes):
            for db in (on, off):
                await db.write(body)
                if i in flush_after:
                    await db.flush()
        assert on.recent.tables or not flush_after
        assert on.recent.covers(T0) and not off.recent.tables
        assert await answers(on, QUERIES) == await answers(off, QUERIES)


async def test_delete_and_drop_put_up_a_barrier(tmp_path):
    rng = random.Random(9)
    async with rusts.open(tmp_path / "on", wal_durability="none") as on, \
            rusts.open(tmp_path / "off", config=no_recent(), wal_durability="none") as off:
        for db in (on, off):
            await db.write(lines(random.Random(1), 50, 0, 100, 500))
            await db.flush()
            await db.write(lines(random.Random(2), 50, 0, 100, 300))
        assert on.recent.tables
        for db in (on, off):
            await execute_sql(db, "DELETE FROM m WHERE site = 's2'")
        assert not on.recent.tables and not on.recent.covers(T0 + 99 * S)
        assert await answers(on, QUERIES) == await answers(off, QUERIES)
        later = lines(rng, 50, 200, 300, 300)
        for db in (on, off):
            await db.flush()
            await db.write(later)
            await db.flush()
        assert on.recent.tables  # tables written after the delete are kept again
        assert await answers(on, QUERIES) == await answers(off, QUERIES)
        again = lines(random.Random(5), 40, 400, 500, 200)
        for db in (on, off):
            await execute_sql(db, "DROP TABLE m")
            await db.write(again)
            await db.flush()
        assert await answers(on, QUERIES) == await answers(off, QUERIES)


async def test_restart_and_eviction_raise_the_floor(tmp_path):
    async with rusts.open(tmp_path / "d", wal_durability="none") as db:
        await db.write(lines(random.Random(3), 40, 0, 100, 400))
        await db.flush()
        assert db.recent.covers(T0 - 1)
    async with rusts.open(tmp_path / "d", wal_durability="none") as db:
        # rows in segments from before the start are not in memory
        assert not db.recent.covers(T0 + 99 * S) and db.recent.covers(T0 + 100 * S)
        out = await execute_sql(db, f"SELECT COUNT(*) FROM m WHERE time >= {T0}")
        assert to_json(out, 0)["results"][0]["fields"]["count(*)"] > 0
    r = RecentData(max_bytes=1)

    class T:
        points, bytes, first_seq, max_time, min_time, chunks = 1, 10, 5, T0 + 7, T0, []
    r.add(T())
    assert not r.tables and r.floor == T0 + 7


@pytest.mark.parametrize("few", [16, 0])  # series found by each piece's series index, or by a row pass
def test_scan_last_write_wins_per_field(few, monkeypatch):
    import rusts.memory.recent

    monkeypatch.setattr(rusts.memory.recent, "FEW_SERIES", few)

    def P(sid, ts, cols):  # a piece: rows in arrival order
        ts = np.array(ts, np.int64)
        return rusts.memory.recent._Piece(np.array(sid, np.uint64), ts, cols, int(ts.min()), int(ts.max()),
                                   np.arange(len(ts), dtype=np.int64))

    ft = {"v": FieldType.FLOAT, "w": FieldType.INTEGER}
    a = P([1, 1, 2], [10, 20, 10], {"v": (FieldType.FLOAT, np.array([1.0, 2.0, 3.0]), None),
                                    "w": (FieldType.INTEGER, np.array([7, 8, 9]), np.array([True, True, False]))})
    b = P([1, 2, 3], [10, 10, 5], {"v": (FieldType.FLOAT, np.array([9.0, 0.0, 5.0]), np.array([False, True, True]))})
    sid, ts, cols = scan([(0, a), (1, b)], np.array([1, 2, 3], np.uint64), 0, 100, ["v", "w"], ft)
    assert sid.tolist() == [1, 1, 2, 3] and ts.tolist() == [10, 20, 10, 5]
    v, vm = cols["v"]
    w, wm = cols["w"]
    # (1,10): v from a (b's v missing), w from a; (2,10): v from b; w missing everywhere
    assert v.tolist() == [1.0, 2.0, 0.0, 5.0] and vm is None or vm.tolist() == [True] * 4
    assert [x if ok else None for x, ok in zip(w.tolist(), wm.tolist())] == [7, 8, None, None]
    sid, ts, cols = scan([(0, a), (1, b)], np.array([2], np.uint64), 0, 100, ["v"], ft)
    assert sid.tolist() == [2] and cols["v"][0].tolist() == [0.0]
    sid, ts, cols = scan([(0, a), (1, b)], np.array([1, 2, 3], np.uint64), 11, 100, ["v"], ft)
    assert sid.tolist() == [1] and ts.tolist() == [20]
    sid, ts, cols = scan([(0, a), (1, b)], np.array([3, 9], np.uint64), 0, 100, ["v"], ft)
    assert sid.tolist() == [3] and cols["v"][0].tolist() == [5.0]
    sid, ts, cols = scan([(0, a), (1, b)], np.array([9], np.uint64), 0, 100, ["v"], ft)
    assert sid.tolist() == [] and len(cols["v"][0]) == 0
