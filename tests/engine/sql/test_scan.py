"""Per-series scans of the vector path: the lean concatenation of cached blocks answers exactly
what the general piece merge answers (overlapping segments, memtable rows, pending deletes)."""

from __future__ import annotations

import random

import numpy as np
import pytest

import rusts
from rusts.query.executor import select_series
from rusts.query.model import Query, TagFilter, TagOp
from rusts.sql.scan import CACHE, series_columns, series_pieces

T0 = 1_700_000_000_000_000_000
S = 10**9


FIELDS = {"v": (0.8, lambda r: r.randrange(-50, 50) / 4), "w": (0.5, lambda r: f'"{r.choice("abc")}"')}


def reference(snap, sid, start, end, fields, ftypes):
    pieces = series_pieces(snap, sid, start, end, fields, ftypes, CACHE, "m")
    if not pieces:
        return None
    ts = np.concatenate([p.ts for p in pieces])
    cols = {}
    for f in fields:
        vals, present = [], []
        for p in pieces:
            c = p.cols.get(f)
            n = len(p.ts)
            vals.append(ftypes[f].zeros(n) if c is None else c.values)
            present.append(np.zeros(n, bool) if c is None else np.ones(n, bool) if c.mask is None else c.mask)
        cols[f] = (np.concatenate(vals), np.concatenate(present))
    return ts, cols


@pytest.mark.parametrize("seed", range(4))
async def test_series_columns_equal_the_piece_merge(tmp_path, seed, random_lines):
    rng = random.Random(seed)
    async with rusts.open(tmp_path / "d", wal_durability="none", block_rows=16) as db:
        for i in range(8):
            lo = rng.choice([0, 300 * i])  # late writes make segments overlap in time
            await db.write(random_lines(rng, lo, 300 * (i + 1), rng.randrange(20, 200), FIELDS))
            if rng.random() < 0.7:
                await db.flush()
        if seed % 2:
            await db.delete("m", T0 + 500 * S, T0 + 700 * S, (TagFilter("host", TagOp.Eq, "h1"),))
        ftypes = db.schema.fields("m")
        fields = sorted(ftypes)
        sids = select_series(db.index, Query("m"))
        checked = 0
        for _ in range(60):
            a = rng.randrange(-50, 2500)
            start, end = T0 + a * S, T0 + (a + rng.randrange(1, 1500)) * S
            snap = db.snapshot(sids, start, end)
            for sid in sids.tolist():
                got = series_columns(snap, sid, start, end, fields, ftypes, CACHE, "m")
                ref = reference(snap, sid, start, end, fields, ftypes)
                assert (got is None) == (ref is None)
                if got is None:
                    continue
                checked += 1
                ts, cols = got
                np.testing.assert_array_equal(ts, ref[0])
                for f in fields:
                    c, (values, present) = cols[f], ref[1][f]
                    mask = np.zeros(len(ts), bool) if c is None else np.ones(len(ts), bool) if c.mask is None else c.mask
                    np.testing.assert_array_equal(mask, present)
                    if c is not None:
                        assert list(c.values[mask]) == list(values[present])
        assert checked > 50


async def test_value_predicates_in_aggregates_skip_blocks_by_their_min_max(tmp_path, monkeypatch):
    """``WHERE v > 1900 OR v < 50`` over a series whose blocks hold v in [0, 256), [256, 512)...:
    the vector path decodes only the blocks whose min/max allow a match, and the answer is the
    one over every row (integers included: their float statistics are widened, never trusted to
    the last unit)."""
    import rusts.sql.scan
    from rusts.sql.runner import execute_sql

    asked = []
    real = rusts.sql.scan.block_columns
    monkeypatch.setattr(rusts.sql.scan, "block_columns",
                        lambda r, sid, fields, blocks, *a: asked.append(list(blocks)) or real(r, sid, fields, blocks, *a))
    async with rusts.open(tmp_path / "d", wal_durability="none", block_rows=256) as db:
        n = 2048
        await db.write("\n".join(f"m,host=a v={k},i={2**60 + k}i {T0 + k * S}" for k in range(n)).encode())
        await db.flush()
        for where, match, most in [("v > 1900 OR v < 50", lambda k: k > 1900 or k < 50, 2),
                                   ("v BETWEEN 700 AND 710 AND v IS NOT NULL", lambda k: 700 <= k <= 710, 1),
                                   # (2^60 + k in float64: steps of 256, so a neighbour block may stay)
                                   (f"i >= {2**60 + 1023} AND i <= {2**60 + 1024}", lambda k: k in (1023, 1024), 4),
                                   ("v = 511.5 OR v > 5000", lambda k: False, 0)]:
            asked.clear()
            out = await execute_sql(db, f"SELECT COUNT(*), MIN(v), MAX(i) FROM m WHERE {where}")
            ks = [k for k in range(n) if match(k)]
            want = [len(ks), float(min(ks)) if ks else None, 2**60 + max(ks) if ks else None]
            assert [col[0] for col in out.to_pylists()] == want, where
            assert sum(len(b) for b in asked) <= most, (where, asked)  # of 8 blocks
        # the newest buckets only: ORDER BY bucket DESC LIMIT reads the newest block
        asked.clear()
        out = await execute_sql(db, "SELECT time_bucket('1 minute', time) AS b, MAX(v) FROM m "
                                    "GROUP BY b ORDER BY b DESC LIMIT 3")
        assert out.to_pylists()[1] == [2047.0, 2019.0, 1959.0]  # (T0 is 20 s past a minute)
        assert sum(len(b) for b in asked) <= 1, asked
