"""Tombstones: predicate semantics, sequence ordering, exact last-write-wins with field predicates."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rusts.errors import QueryError
from rusts.storage.manifest import SegmentMeta
from rusts.model import Column, FieldType
from rusts.query.rowset import RowSet
from rusts.lifecycle.tombstones import (MEMTABLE_SEQ, FieldPredicate, LifecycleState, Tombstone, TombstoneSet,
                              apply_tombstones, blocks_affected, field_predicate_json, merge_with_tombstones,
                              parse_field_predicate, take_rows, tombstones_from_json, tombstones_to_json)


def rows(ts, **fields) -> RowSet:
    ts = np.asarray(ts, dtype=np.int64)
    cols = {}
    for name, vals in fields.items():
        vals = list(vals)
        mask = np.array([v is not None for v in vals])
        arr = np.array([0.0 if v is None else v for v in vals], dtype=np.float64)
        cols[name] = Column(FieldType.FLOAT, arr, None if mask.all() else mask)
    return RowSet(ts, cols, bool(len(ts) < 2 or np.all(np.diff(ts) > 0)))


def as_dict(rs: RowSet) -> dict[int, dict[str, float]]:
    out = {}
    for i, t in enumerate(rs.timestamps.tolist()):
        out[t] = {n: float(c.values[i]) for n, c in rs.columns.items() if c.mask is None or c.mask[i]}
    return out


def T(id=1, m="cpu", start=0, end=100, series=None, pred=None, seq=10) -> Tombstone:
    return Tombstone(id, m, start, end, series, pred, seq)


# ------------------------------------------------------------------------------ construction
def test_empty_time_range_is_rejected():
    with pytest.raises(QueryError, match="empty"):
        T(start=5, end=5)


def test_series_are_normalised_sorted_unique_and_json_round_trips():
    t = T(series=[5, 3, 5], pred=field_predicate_json([{"field": "v", "op": ">", "value": 1.5}]))
    assert t.series == (3, 5)
    back = tombstones_from_json(tombstones_to_json([t]))
    assert back == (t,)
    assert back[0].covers_series(5) and not back[0].covers_series(4)


@pytest.mark.parametrize("text, msg", [
    ("not json", "not valid JSON"),
    ("[]", "non-empty"),
    ('[{"field": "v", "op": "~", "value": 1}]', "unknown operator"),
    ('[{"field": "v", "op": "=", "value": [1]}]', "number, string or boolean"),
    ('[{"field": "", "op": "=", "value": 1}]', "non-empty string"),
    ('[{"field": "v", "op": "="}]', "exactly field, op and value"),
])
def test_bad_field_predicates_are_query_errors(text, msg):
    with pytest.raises(QueryError, match=msg):
        parse_field_predicate(text)
    with pytest.raises(QueryError):
        T(pred=text)


# ------------------------------------------------------------------------------ single source
def test_time_range_is_half_open():
    rs = rows([1, 2, 3, 4], v=[1, 2, 3, 4])
    out = apply_tombstones(7, rs, [T(start=2, end=4)])
    assert out.timestamps.tolist() == [1, 4]
    assert out.columns["v"].values.tolist() == [1.0, 4.0]


def test_untouched_rows_return_the_same_object():
    rs = rows([1, 2], v=[1, 2])
    assert apply_tombstones(7, rs, [T(start=50, end=60)]) is rs
    assert apply_tombstones(7, rs, []) is rs


def test_series_list_and_measurement_filter():
    rs = rows([1, 2], v=[1, 2])
    assert len(apply_tombstones(7, rs, [T(series=[8])])) == 2
    assert len(apply_tombstones(7, rs, [T(series=[7, 8])])) == 0
    assert len(apply_tombstones(7, rs, [T(m="mem")], measurement="cpu")) == 2
    assert len(apply_tombstones(7, rs, [T(m="cpu")], measurement="cpu")) == 0


def test_data_written_after_the_tombstone_survives():
    rs = rows([1, 2], v=[1, 2])
    stone = T(seq=10)
    assert len(apply_tombstones(7, rs, [stone], data_max_seq=9)) == 0
    assert len(apply_tombstones(7, rs, [stone], data_max_seq=10)) == 2
    assert len(apply_tombstones(7, rs, [stone], data_max_seq=MEMTABLE_SEQ)) == 2


def test_field_predicates_delete_whole_rows_and_missing_fields_never_match():
    rs = rows([1, 2, 3, 4], v=[1, 5, None, 9], w=[0, 0, 0, 1])
    pred = field_predicate_json([{"field": "v", "op": ">", "value": 3}])
    out = apply_tombstones(7, rs, [T(pred=pred)])
    assert as_dict(out) == {1: {"v": 1.0, "w": 0.0}, 3: {"w": 0.0}}
    both = field_predicate_json([{"field": "v", "op": ">", "value": 3}, {"field": "w", "op": "=", "value": 1}])
    assert as_dict(apply_tombstones(7, rs, [T(pred=both)])).keys() == {1, 2, 3}
    nofield = field_predicate_json([{"field": "zz", "op": "!=", "value": 1}])
    assert len(apply_tombstones(7, rs, [T(pred=nofield)])) == 4


def test_string_predicates_and_type_mismatch():
    rs = RowSet(np.array([1, 2, 3]), {"s": Column(FieldType.STRING, np.array(["a", "b", "a"], dtype=object))}, True)
    eq_a = field_predicate_json([{"field": "s", "op": "=", "value": "a"}])
    assert apply_tombstones(1, rs, [T(pred=eq_a)]).timestamps.tolist() == [2]
    num = field_predicate_json([{"field": "s", "op": "=", "value": 1}])
    assert len(apply_tombstones(1, rs, [T(pred=num)])) == 3
    f = rows([1, 2], v=[1, 2])
    assert FieldPredicate("v", "=", "1").evaluate(f).tolist() == [False, False]


def test_take_rows_drops_columns_left_without_values():
    rs = rows([1, 2, 3], v=[1, 2, 3], w=[None, 7, None])
    out = take_rows(rs, np.array([True, False, True]))
    assert set(out.columns) == {"v"}
    assert out.sorted_unique


def test_blocks_affected_marks_overlapping_blocks_only():
    bmin = np.array([0, 100, 200])
    bmax = np.array([99, 199, 299])
    got = blocks_affected(1, [T(start=150, end=201)], bmin, bmax, data_max_seq=0)
    assert got.tolist() == [False, True, True]
    assert not blocks_affected(1, [T(start=150, end=201, seq=3)], bmin, bmax, data_max_seq=5).any()


def test_tombstone_set_indexes_by_measurement_and_series():
    ts = TombstoneSet([T(1, "cpu", series=[1]), T(2, "cpu"), T(3, "mem")])
    assert [t.id for t in ts.for_series("cpu", 1)] == [1, 2]
    assert [t.id for t in ts.for_series("cpu", 2)] == [2]
    assert [t.id for t in ts.for_series("disk", 1)] == []


# ------------------------------------------------------------------------------ merge, exact LWW
def test_field_predicate_sees_the_overwritten_value_not_the_stale_one():
    old = rows([5], v=[9], other=[1])      # seq 1: v=9 (matches v > 3)
    newer = rows([5], v=[1])               # seq 2: overwrites v with 1, before the DELETE
    pred = field_predicate_json([{"field": "v", "op": ">", "value": 3}])
    out, dead = merge_with_tombstones(1, [(old, 1), (newer, 2)], [T(pred=pred, seq=3)])
    # the visible row at the DELETE was {v: 1, other: 1}: not deleted, nothing lost
    assert as_dict(out) == {5: {"v": 1.0, "other": 1.0}}
    assert dead == 0


def test_rows_written_after_the_delete_at_the_same_timestamp_survive():
    before = rows([5, 6], v=[9, 9])
    after = rows([5], v=[2])
    out, dead = merge_with_tombstones(1, [(before, 1), (after, 4)], [T(seq=3)])
    assert as_dict(out) == {5: {"v": 2.0}}
    assert dead == 2
    out, _ = merge_with_tombstones(1, [(before, 1), (rows([5], v=[7]), MEMTABLE_SEQ)], [T(seq=3)])
    assert as_dict(out) == {5: {"v": 7.0}}


def _reference(parts, stones, sid):
    """Point-by-point model: replay sources in sequence order, DELETE at its sequence."""
    state: dict[int, dict[str, float]] = {}
    pending = sorted((t for t in stones if t.covers_series(sid)), key=lambda t: (t.created_seq, t.id))
    dead = 0

    def delete(t):
        nonlocal dead
        for ts in list(state):
            if t.start <= ts < t.end and all(
                    p.field in state[ts] and {"=": state[ts][p.field] == p.value, ">": state[ts][p.field] > p.value,
                                              "<=": state[ts][p.field] <= p.value}[p.op]
                    for p in t.predicates):
                del state[ts]
                dead += 1

    for rs, seq in parts:
        while pending and pending[0].created_seq <= seq:
            delete(pending.pop(0))
        for t, fields in as_dict(rs).items():
            state.setdefault(t, {}).update(fields)
        state = {t: f for t, f in state.items() if f}
    for t in pending:
        delete(t)
    return state, dead


source = st.lists(st.tuples(st.integers(0, 30), st.sampled_from([None, 1.0, 2.0, 5.0]),
                            st.sampled_from([None, 0.0, 1.0])), max_size=12)


@settings(max_examples=150, deadline=None)
@given(st.lists(source, min_size=1, max_size=4),
       st.lists(st.tuples(st.integers(0, 25), st.integers(1, 12), st.integers(0, 9),
                          st.sampled_from([None, ("v", ">", 1.5), ("w", "=", 1.0), ("v", "<=", 2.0)])),
                max_size=4))
def test_merge_with_tombstones_matches_a_point_model(sources, stone_specs):
    parts = []
    for k, src in enumerate(sources):
        seen = {}
        for t, v, w in src:
            if v is not None or w is not None:
                seen[t] = (v, w)  # unique timestamps per source (segments are deduplicated)
        ts = sorted(seen)
        rs = rows(ts, v=[seen[t][0] for t in ts], w=[seen[t][1] for t in ts]) if ts else rows([])
        parts.append((rs, 2 * k + 1))  # odd sequences for data
    stones = []
    for i, (start, length, when, pred) in enumerate(stone_specs):
        p = None if pred is None else field_predicate_json([{"field": pred[0], "op": pred[1], "value": pred[2]}])
        stones.append(Tombstone(i + 1, "cpu", start, start + length, None, p, 2 * when))  # even: tombstones
    out, dead = merge_with_tombstones(3, parts, stones)
    want, want_dead = _reference(parts, stones, 3)
    assert as_dict(out) == want
    assert out.sorted_unique
    assert dead == want_dead


# ------------------------------------------------------------------------------ lifecycle state
def meta(file, lo=0, hi=100):
    return SegmentMeta(file=file, partition=0, min_time=lo, max_time=hi, size=1, series_count=1, point_count=1)


def test_lifecycle_orders_flushes_and_tombstones():
    ls = LifecycleState()
    ls = ls.with_flush(["a.seg"])
    ls, t = ls.with_tombstone("cpu", 0, 50)
    ls = ls.with_flush(["b.seg"])
    assert t.applies_to_seq(ls.seq_of("a.seg"))
    assert not t.applies_to_seq(ls.seq_of("b.seg"))
    assert [m.file for m in ls.age_order([meta("b.seg"), meta("a.seg")])] == ["a.seg", "b.seg"]
    assert ls.seq_of(meta("legacy.seg")) == 0 and t.applies_to_seq(0)
    ls2, t2 = ls.with_tombstone("cpu", 0, 50)
    assert t2.id == t.id + 1 and t2.created_seq > ls.seq_of("b.seg")


def test_extra_round_trip_keeps_other_keys():
    ls = LifecycleState().with_flush(["a.seg"])
    ls, _ = ls.with_tombstone("cpu", 0, 10, series=[4], field_predicate=field_predicate_json(
        [{"field": "v", "op": "=", "value": True}]))
    extra = ls.to_extra({"owner": "someone else"})
    assert extra["owner"] == "someone else"
    assert LifecycleState.from_extra(extra) == ls
    assert LifecycleState.from_extra(None) == LifecycleState()


def test_compaction_output_stops_applied_tombstones_and_garbage_collects_them():
    ls = LifecycleState().with_flush(["a.seg"]).with_flush(["b.seg"])
    ls, t = ls.with_tombstone("cpu", 0, 50)
    out_seq = max(ls.seq_of("a.seg"), ls.seq_of("b.seg"), t.created_seq)
    live = [meta("c.seg")]
    ls2 = ls.with_replaced(["a.seg", "b.seg"], ["c.seg"], out_seq, live=live)
    assert not t.applies_to_seq(ls2.seq_of("c.seg"))
    assert ls2.tombstones == ()
    assert set(ls2.segment_seqs) == {"c.seg"}
    # a tombstone still applying to a live, overlapping segment is kept
    ls3 = ls.with_replaced([], [], 0, live=[meta("a.seg", 0, 10)])
    assert ls3.tombstones == (t,)
    # ... but not when the segment lies outside its time range
    assert ls.collect_garbage([meta("a.seg", 60, 70)]).tombstones == ()
