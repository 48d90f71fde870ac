"""The JSON API's one-series trends (one series, COUNT/SUM/MEAN/MIN/MAX per time bucket) go
through the vector path's one-series lane: same answers as the executor, bucket for bucket."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

import rusts
from rusts.errors import QueryError
from rusts.query.executor import execute, select_series
from rusts.query.model import from_json

T0 = 1_700_000_000_000_000_000
S = 10**9


FIELDS = {"v": (0.7, lambda r: r.randrange(-50, 50) / 4), "i": (0.5, lambda r: f"{r.randrange(-1000, 1000)}i"),
          "b": (0.3, lambda r: r.choice(["true", "false"]))}


def same(a, b) -> bool:
    if len(a.row_group) != len(b.row_group) or set(a.fields) != set(b.fields):
        return False
    if a.timestamps is not None and not np.array_equal(a.timestamps, b.timestamps):
        return False
    for k, ca in a.fields.items():
        cb = b.fields[k]
        ma = np.ones(len(ca), bool) if ca.mask is None else ca.mask
        mb = np.ones(len(cb), bool) if cb.mask is None else cb.mask
        if not np.array_equal(ma, mb) or not np.allclose(ca.values[ma].astype(float), cb.values[mb].astype(float)):
            return False
    return True


@pytest.mark.parametrize("seed", range(3))
async def test_one_series_trends_answer_as_the_executor(tmp_path, seed, monkeypatch, random_lines):
    import rusts.sql.vector as sv

    lane = []
    real = sv.one_series
    monkeypatch.setattr(sv, "one_series", lambda *a, **k: lane.append(1) or real(*a, **k))
    rng = random.Random(seed)
    async with rusts.open(tmp_path / "d", wal_durability="none", block_rows=48) as db:
        for i in range(6):
            await db.write(random_lines(rng, rng.choice([0, 200 * i]), 200 * (i + 1), rng.randrange(30, 150), FIELDS))
            if rng.random() < 0.7:
                await db.flush()
        ftypes = db.schema.fields("m")
        checked = 0
        for _ in range(80):
            a = rng.randrange(-30, 1300)
            aggs = rng.sample([("Count", "v"), ("Sum", "i"), ("Mean", "v"), ("Min", "i"), ("Max", "v"),
                               ("Sum", "b"), ("Max", "i"), ("Count", "b")], rng.randrange(1, 4))
            body = {"measurement": "m", "time_range": {"start": T0 + a * S, "end": T0 + (a + rng.randrange(1, 900)) * S},
                    "tag_filters": [{"key": "host", "value": f"h{rng.randrange(3)}", "op": "Eq"}],
                    "aggregation": {"function": aggs[0][0], "field": aggs[0][1],
                                    "interval_nanos": rng.choice([7, 30, 60, 600]) * S}}
            if rng.random() < 0.4:  # one function over several fields
                body["fields"] = sorted({f for _, f in aggs if f != "b"} or {"v"})
                del body["aggregation"]["field"]
            q = from_json(body)
            sids = select_series(db.index, q)
            snap = db.snapshot(sids, q.start, q.end)
            tags = db.tags_map(sids)
            try:
                expect = execute(snap, q, sids, tags.__getitem__, ftypes)
            except QueryError as e:  # (SUM of a boolean): the same error
                with pytest.raises(QueryError, match=re.escape(str(e))):
                    await db.query(q)
                continue
            got = await db.query(q)
            assert same(got, expect), (body, got, expect)
            checked += len(got.row_group) > 0
        assert checked > 30 and len(lane) > 30  # answers with rows, and through the lane
