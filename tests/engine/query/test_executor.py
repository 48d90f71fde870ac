"""The executor on its own: raw reads and aggregates over memtable row sets of several series
(overlapping chunks, overwrites, missing values), checked against a plain-Python reference."""

from __future__ import annotations

import numpy as np
import pytest

from rusts.errors import QueryError
from rusts.model import Column, FieldType
from rusts.query.executor import Snapshot, execute
from rusts.query.model import from_json
from rusts.query.rowset import RowSet

TAGS = {1: {"host": "a"}, 2: {"host": "b"}, 3: {"host": "c"}}
FT = {"v": FieldType.FLOAT, "n": FieldType.INTEGER}


def chunk(ts, v=None, n=None):
    cols = {}
    if v is not None:
        cols["v"] = Column(FieldType.FLOAT, np.array(v, dtype=np.float64))
    if n is not None:
        cols["n"] = Column(FieldType.INTEGER, np.array(n, dtype=np.int64))
    return RowSet(np.array(ts, dtype=np.int64), cols)


def data():
    rng = np.random.default_rng(7)
    mem = {}
    truth = {}  # (sid, t) -> {field: value}, last write wins per field
    for sid in (1, 2, 3):
        parts = []
        for _ in range(4):  # chunks overlap in time: later ones overwrite
            ts = np.sort(rng.choice(200, size=30, replace=False))
            v = rng.normal(size=30).round(3)
            n = rng.integers(-1000, 1000, size=30)
            parts.append(chunk(ts, v, n))
            for t, a, b in zip(ts.tolist(), v.tolist(), n.tolist()):
                truth[(sid, t)] = {"v": a, "n": b}
        mem[sid] = tuple(parts)
    return Snapshot((), mem), truth


def run(snap, q: dict, hosts=("a", "b", "c")):
    """``execute`` over the series of ``hosts`` (series selection is the index's job, not the
    executor's)."""
    q = from_json({"measurement": "m", "time_range": {"start": 0, "end": 10**6}, **q})
    sids = np.array([s for s, t in TAGS.items() if t["host"] in hosts], dtype=np.uint64)
    return execute(snap, q, sids, TAGS.__getitem__, FT).to_rows()


def test_raw_rows_are_the_last_write_of_every_point_in_time_order():
    snap, truth = data()
    rows = run(snap, {}, hosts=("b",))
    want = sorted((t, f) for (s, t), f in truth.items() if s == 2)
    assert [(r["timestamp"], r["fields"]) for r in rows] == want
    assert all(r["tags"] == {"host": "b"} for r in rows)


def test_limit_offset_and_descending_order():
    snap, truth = data()
    rows = run(snap, {"order": "Desc", "limit": 5, "offset": 2}, hosts=("a",))
    ts = sorted((t for (s, t) in truth if s == 1), reverse=True)[2:7]
    assert [r["timestamp"] for r in rows] == ts


@pytest.mark.parametrize("fn, ref", [
    ("Count", len), ("Sum", sum), ("Min", min), ("Max", max),
    ("Mean", lambda xs: sum(xs) / len(xs)),
])
def test_grouped_bucketed_aggregates_match_the_reference(fn, ref):
    snap, truth = data()
    rows = run(snap, {"aggregation": {"function": fn, "field": "n", "interval_nanos": 50}, "group_by": ["host"]})
    want = {}
    for (s, t), f in truth.items():
        want.setdefault((TAGS[s]["host"], t // 50 * 50), []).append(f["n"])
    got = {(r["tags"]["host"], r["timestamp"]): r["fields"][f"{fn.lower()}_n"] for r in rows}
    assert got.keys() == want.keys()
    for k, xs in want.items():
        assert got[k] == pytest.approx(ref(xs)), k


def test_integer_sums_stay_exact():
    big = 2**53 + 1
    snap = Snapshot((), {1: (chunk([1, 2], n=[big, 2]),)})
    q = from_json({"measurement": "m", "time_range": {"start": 0, "end": 10},
                   "aggregation": {"function": "Sum", "field": "n"}})
    rows = execute(snap, q, np.array([1], dtype=np.uint64), TAGS.__getitem__, FT).to_rows()
    assert rows[0]["fields"]["sum_n"] == big + 2


def test_unknown_field_is_a_clear_error():
    snap, _ = data()
    with pytest.raises(QueryError, match="nope"):
        run(snap, {"fields": ["nope"]})


@pytest.mark.parametrize("func", ["First", "Last"])
@pytest.mark.parametrize("interval", [None, 50])
@pytest.mark.parametrize("group_by", [["host"], []])
def test_first_last_with_time_give_the_time_of_the_row_they_chose(func, interval, group_by):
    """Cluster owners ask First/Last ``with_time``: the value and when it was written, so the
    coordinator can choose among owners (rusts.cluster.fanout)."""
    import attrs

    snap, truth = data()
    q = from_json({"measurement": "m", "time_range": {"start": 0, "end": 10**6}, "group_by": group_by,
                   "aggregation": {"function": func, "field": "v",
                                   **({"interval_nanos": interval} if interval else {})}})
    q = attrs.evolve(q, aggregations=tuple(attrs.evolve(a, with_time=True) for a in q.aggregations))
    rs = execute(snap, q, np.array([1, 2, 3], dtype=np.uint64), TAGS.__getitem__, FT)
    name = q.aggregations[0].output_name
    times, vals = rs.fields[name + "@time"].values, rs.fields[name].values
    assert len(rs) > 0
    for i in range(len(rs)):
        # one host per series: groups a, b, c are series 1, 2, 3; without group_by, all three
        sids = {int(rs.row_group[i]) + 1} if group_by else {1, 2, 3}
        lo = 0 if interval is None else int(rs.timestamps[i])
        hi = 10**6 if interval is None else lo + interval
        ts = sorted(t for s, t in truth if s in sids and lo <= t < hi)
        want_t = ts[0] if func == "First" else ts[-1]
        assert times[i] == want_t
        assert vals[i] in [truth[(s, want_t)]["v"] for s in sids if (s, want_t) in truth]
