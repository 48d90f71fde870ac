"""rusts.sql.columnar: aggregation across series over columnar rows, against a plain-Python
reference computed group by group (every aggregate, buckets, residual predicates, missing values,
each of the percentile strategies), plus the index's tag numbering it groups with."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rusts.storage.index import SeriesIndex
from rusts.model import FieldType
from rusts.query.model import AggFunc, Aggregation, Query
from rusts.sql.columnar import GroupTags, _ranks, aggregate_rows

FT = {"f": FieldType.FLOAT, "i": FieldType.INTEGER, "s": FieldType.STRING}
AGGS = (
    Aggregation(AggFunc.Count, None, None, "n"),
    Aggregation(AggFunc.Count, "f", None, "nf"),
    Aggregation(AggFunc.Sum, "i", None, "si"),
    Aggregation(AggFunc.Mean, "f", None, "af"),
    Aggregation(AggFunc.Min, "f", None, "mnf"),
    Aggregation(AggFunc.Max, "i", None, "mxi"),
    Aggregation(AggFunc.StdDev, "f", None, "sd"),
    Aggregation(AggFunc.Variance, "i", None, "vi"),
    Aggregation(AggFunc.Median, "f", None, "md"),
    Aggregation(AggFunc.Percentile, "i", 95.0, "p95"),
    Aggregation(AggFunc.First, "s", None, "fs"),
    Aggregation(AggFunc.Last, "f", None, "lf"),
)


def make_rows(rng, n_series: int, per: int, missing: float):
    sid = np.repeat(np.arange(n_series, dtype=np.uint64) * 3 + 1, per)
    ts = np.tile(np.arange(per, dtype=np.int64) * 7_000_000_000, n_series) + 1_700_000_000_000_000_000
    n = len(ts)
    f = np.round(rng.normal(50, 20, n), 2)
    i = rng.integers(-50, 50, n)
    s = np.array([f"w{k}" for k in rng.integers(0, 5, n)], dtype=object)
    valid = {k: (rng.random(n) >= missing) for k in "fis"}
    cols = {"f": (f, None if valid["f"].all() else valid["f"]), "i": (i, None if valid["i"].all() else valid["i"]),
            "s": (s, None if valid["s"].all() else valid["s"])}
    return sid, ts, cols


def tags_for(sid: np.ndarray, n_groups: int):
    """``tag_codes`` for two tag keys: host (every series its own) and site (n_groups values,
    absent on every fifth series)."""
    def tag_codes(key, which):
        which = np.asarray(which, dtype=np.int64)
        if key == "host":
            return (which - 1) // 3, [f"h{k}" for k in range(int(sid.max()) // 3 + 1)]
        codes = ((which - 1) // 3) % n_groups
        codes = np.where(((which - 1) // 3) % 5 == 4, -1, codes)
        return codes, [f"site{k}" for k in range(n_groups)]
    return tag_codes


def reference(sid, ts, cols, q: Query, tag_codes, residual):
    """``{(group tags tuple, bucket): {agg name: value or None}}`` computed row by row."""
    n = len(ts)
    rows = []
    for r in range(n):
        ok = True
        for field, op, value in residual:
            v, m = cols[field]
            if m is not None and not m[r]:
                ok = False
            elif op == ">" and not v[r] > value:
                ok = False
        if ok:
            rows.append(r)
    groups: dict = {}
    for r in rows:
        tags = []
        for k in q.group_by:
            codes, names = tag_codes(k, sid[r:r + 1])
            tags.append(None if codes[0] < 0 else names[codes[0]])
        b = None if q.interval is None else int(ts[r] - ts[r] % q.interval)
        groups.setdefault((tuple(tags), b), []).append(r)
    out = {}
    for key, rs in groups.items():
        res = {}
        for a in q.aggregations:
            if a.field is None:
                res[a.output_name] = len(rs)
                continue
            v, m = cols[a.field]
            have = [r for r in rs if m is None or m[r]]
            vals = [v[r] for r in have]
            f = a.function
            if f == AggFunc.Count:
                res[a.output_name] = len(vals)
            elif not vals:
                res[a.output_name] = None
            elif f == AggFunc.Sum:
                res[a.output_name] = sum(vals)
            elif f == AggFunc.Mean:
                res[a.output_name] = sum(vals) / len(vals)
            elif f == AggFunc.Min:
                res[a.output_name] = min(vals)
            elif f == AggFunc.Max:
                res[a.output_name] = max(vals)
            elif f in (AggFunc.StdDev, AggFunc.Variance):
                if len(vals) < 2:
                    res[a.output_name] = None
                else:
                    var = float(np.var(np.array(vals, float), ddof=1))
                    res[a.output_name] = math.sqrt(var) if f == AggFunc.StdDev else var
            elif f in (AggFunc.Median, AggFunc.Percentile):
                p = 50.0 if f == AggFunc.Median else a.percentile
                res[a.output_name] = float(np.percentile(np.array(vals, float), p))
            elif f == AggFunc.First:
                t0 = min(ts[r] for r in have)
                res[a.output_name] = v[next(r for r in have if ts[r] == t0)]
            elif f == AggFunc.Last:
                t1 = max(ts[r] for r in have)
                res[a.output_name] = v[next(r for r in have if ts[r] == t1)]
        out[key] = res
    return out


def ours(rs, q: Query) -> dict:
    out = {}
    for row in range(len(rs.row_group)):
        g = rs.group_tags[int(rs.row_group[row])]
        key = (tuple(g.get(k) for k in q.group_by), None if rs.timestamps is None else int(rs.timestamps[row]))
        res = {}
        for a in q.aggregations:
            c = rs.fields[a.output_name]
            res[a.output_name] = None if c.mask is not None and not c.mask[row] else c.values[row].item() \
                if hasattr(c.values[row], "item") else c.values[row]
        out[key] = res
    return out


def same(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for k in a:
        for name, x in a[k].items():
            y = b[k][name]
            if (x is None) != (y is None):
                return False
            if isinstance(x, float) or isinstance(y, float):
                if not math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9):
                    return False
            elif x != y:
                return False
    return True


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_series=st.integers(1, 40), per=st.integers(1, 30),
       n_groups=st.integers(1, 6), group=st.sampled_from([(), ("site",), ("host",), ("site", "host")]),
       interval=st.sampled_from([None, 30_000_000_000, 3_600_000_000_000]),
       missing=st.sampled_from([0.0, 0.3]), filtered=st.booleans())
def test_matches_a_row_by_row_reference(seed, n_series, per, n_groups, group, interval, missing, filtered):
    rng = np.random.default_rng(seed)
    sid, ts, cols = make_rows(rng, n_series, per, missing)
    q = Query("m", aggregations=AGGS, interval=interval, group_by=group)
    residual = (("f", ">", 40.0),) if filtered else ()
    tag_codes = tags_for(sid, n_groups)
    rs = aggregate_rows(sid, ts, cols, q, FT, tag_codes, residual)
    expected = reference(sid, ts, cols, q, tag_codes, residual)
    if not expected and interval is None and not group:  # SQL: one row of NULLs / zero counts
        assert len(rs.row_group) == 1 and rs.fields["n"].values[0] == 0
        return
    got = ours(rs, q)
    assert same(got, expected), (got, expected)


def test_first_and_last_break_time_ties_by_series_order():
    # two series of one group, same timestamps: the first series (in id order) wins both ways
    sid = np.array([1, 1, 2, 2], np.uint64)
    ts = np.array([10, 20, 10, 20], np.int64)
    cols = {"s": (np.array(["a0", "a1", "b0", "b1"], dtype=object), None)}
    q = Query("m", aggregations=(Aggregation(AggFunc.First, "s", None, "f"), Aggregation(AggFunc.Last, "s", None, "l")))
    rs = aggregate_rows(sid, ts, cols, q, FT, lambda k, w: (np.zeros(len(w), np.int64), ["x"]))
    assert rs.fields["f"].values.tolist() == ["a0"] and rs.fields["l"].values.tolist() == ["a1"]


@pytest.mark.parametrize("nk,per", [(3, 5000), (300, 4), (2000, 300)])  # partition, padded matrix, full sort
def test_rank_strategies_agree_with_numpy(nk, per):
    rng = np.random.default_rng(nk)
    k = rng.integers(0, nk, nk * per)
    x = rng.normal(size=len(k))
    cnt = np.bincount(k, minlength=nk)
    for p in (0.0, 37.5, 50.0, 95.0, 100.0):
        pos = p / 100 * np.maximum(cnt - 1, 0)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, np.maximum(cnt - 1, 0))
        a_lo, a_hi = _ranks(k, x, cnt, nk, lo, hi)
        got = a_lo + (a_hi - a_lo) * (pos - lo)
        want = np.array([np.percentile(x[k == g], p) if cnt[g] else 0.0 for g in range(nk)])
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_group_tags_read_like_tag_dicts():
    g = GroupTags(("site", "os"), [np.array(["a", None], dtype=object), np.array(["linux", "mac"], dtype=object)], 2)
    assert len(g) == 2 and g[0] == {"site": "a", "os": "linux"} and g[1] == {"os": "mac"}
    assert list(g) == [g[0], g[1]] and g[0:1] == [g[0]]
    assert g.column("site").tolist() == ["a", None] and g.column("nope").tolist() == [None, None]


def test_index_tag_codes_number_values_and_mark_absent_tags():
    idx = SeriesIndex()
    sids = idx.lookup_or_create(["m,site=a,host=1", "m,host=2", "m,site=b,host=3", "m,site=a,host=4",
                                 "other,site=z"])
    codes, names = idx.tag_codes("m", "site", sids[:4])
    assert [None if c < 0 else names[c] for c in codes.tolist()] == ["a", None, "b", "a"]
    # numbers stay stable as series are added; new values get new numbers
    more = idx.lookup_or_create(["m,site=c,host=5"])
    codes2, names2 = idx.tag_codes("m", "site", np.concatenate([sids[:4], more]))
    assert codes2[:4].tolist() == codes.tolist() and names2[codes2[4]] == "c"
    assert idx.tag_codes("nosuch", "site", sids[:2])[0].tolist() == [-1, -1]
    assert idx.tag_codes("m", "nokey", sids[:2])[0].tolist() == [-1, -1]


def test_malloc_tuning_applies_on_linux():
    import sys

    from rusts import malloc

    assert malloc.tune() is sys.platform.startswith("linux")
