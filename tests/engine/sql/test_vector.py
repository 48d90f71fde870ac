"""The vector path's grouped aggregates: partials of all series at once equal those series by series.

``rusts.sql.vector._batched_partials`` reduces every series' (bucket) runs in one pass; the
per-series loop it replaces for COUNT/SUM/AVG/MIN/MAX/STDDEV/VARIANCE stays for FIRST/LAST and
percentiles. Both must give the same answer, to the bit, over series with missing values, a
row filter that empties whole buckets, integers beyond float64 precision (exact sums) and groups spanning
several series.
"""

from __future__ import annotations

import numpy as np

import rusts.db
from rusts.sql import vector

T0 = 1_700_000_000_000_000_000
STEP = 10**9 * 37


def _lines(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    out = []
    for h in range(12):
        n = int(rng.integers(0, 200))
        ts = T0 + np.sort(rng.choice(4000, n, replace=False)).astype(np.int64) * STEP + h
        for t in ts.tolist():
            fs = []
            if rng.random() < 0.8:
                fs.append(f"f={rng.normal(50, 30):.3f}")
            if rng.random() < 0.7:
                fs.append(f"i={int(rng.integers(-2**50, 2**50))}i")
            if rng.random() < 0.5 or not fs:
                fs.append(f"u={int(rng.integers(0, 1000))}u")
            out.append(f"m,host=h{h},site=s{h % 3} {','.join(fs)} {t}")
    return "\n".join(out).encode()


STATEMENTS = [
    "SELECT site, COUNT(*), COUNT(f), SUM(i), AVG(f), MIN(i), MAX(u) FROM m GROUP BY site ORDER BY site",
    "SELECT time_bucket('1 hour', time) AS hr, site, SUM(i), AVG(i), STDDEV(f), VARIANCE(u) FROM m "
    "GROUP BY hr, site ORDER BY hr, site",
    "SELECT time_bucket('10 minutes', time) AS b, host, MAX(f), MIN(f), COUNT(u) FROM m WHERE f > 60 "
    "GROUP BY b, host ORDER BY b, host",
    "SELECT time_bucket('2 hours', time) AS b, AVG(f), SUM(u) FROM m WHERE u < 300 OR f < 10 "
    "GROUP BY b ORDER BY b",
    "SELECT host, SUM(i), COUNT(*) FROM m WHERE i > 0 GROUP BY host ORDER BY host",
]


def _rows(out) -> list:
    return [[None if m is not None and not m[k] else (v[k].item() if hasattr(v[k], "item") else v[k])
             for v, m in zip(out.values, out.masks)] for k in range(len(out))]


async def test_partials_of_all_series_at_once_equal_the_per_series_partials(tmp_path, monkeypatch):
    async with rusts.db.open(str(tmp_path / "d")) as db:
        for seed in range(3):
            await db.write(_lines(seed))
            if seed == 1:
                await db.flush()  # part in segments, part in the memtable
        for sql in STATEMENTS:
            calls = []
            real = vector._batched_partials
            monkeypatch.setattr(vector, "_batched_partials", lambda *a: calls.append(1) or real(*a))
            batched = _rows(await db.sql(sql, route="vector"))
            monkeypatch.setattr(vector, "_BATCHED", ())
            per_series = _rows(await db.sql(sql, route="vector"))
            monkeypatch.undo()
            assert calls, sql  # the statement took the batched path
            assert batched and batched == per_series, sql
