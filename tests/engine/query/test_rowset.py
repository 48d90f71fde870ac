"""Merging row sets: sorted unique timestamps, last write wins per field."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rusts.model import Column, FieldType
from rusts.query.rowset import RowSet, concat_column, merge


def _rowset(rows):
    """rows: list of (ts, {field: value})."""
    ts = np.array([r[0] for r in rows], dtype=np.int64)
    names = sorted({f for _, fs in rows for f in fs})
    cols = {}
    for n in names:
        vals = np.array([fs.get(n, 0.0) for _, fs in rows], dtype=np.float64)
        mask = np.array([n in fs for _, fs in rows])
        cols[n] = Column(FieldType.FLOAT, vals, None if mask.all() else mask)
    return RowSet(ts, cols)


def _reference(parts):
    state = {}
    for rows in parts:
        for t, fs in rows:
            state.setdefault(t, {}).update(fs)
    return state


row = st.tuples(st.integers(-5, 30), st.dictionaries(st.sampled_from("abc"), st.floats(-1e6, 1e6), min_size=1))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(row, min_size=1, max_size=20), min_size=1, max_size=5))
def test_merge_matches_last_write_wins_reference(parts):
    got = merge([_rowset(p) for p in parts])
    ref = _reference(parts)
    assert got.timestamps.tolist() == sorted(ref)
    assert got.sorted_unique
    for i, t in enumerate(got.timestamps.tolist()):
        for name, col in got.columns.items():
            present = col.mask is None or bool(col.mask[i])
            assert present == (name in ref[t])
            if present:
                assert col.values[i] == ref[t][name]


def test_non_overlapping_sorted_parts_concatenate_in_time_order():
    a = RowSet(np.array([10, 11], np.int64), {"x": Column(FieldType.FLOAT, np.array([1.0, 2.0]))}, True)
    b = RowSet(np.array([1, 2], np.int64), {"x": Column(FieldType.FLOAT, np.array([3.0, 4.0]))}, True)
    m = merge([a, b])
    assert m.timestamps.tolist() == [1, 2, 10, 11]
    assert m.columns["x"].values.tolist() == [3.0, 4.0, 1.0, 2.0]


def test_slice_time_is_half_open():
    rs = RowSet(np.arange(10, dtype=np.int64), {"x": Column(FieldType.FLOAT, np.arange(10.0))}, True)
    s = rs.slice_time(3, 7)
    assert s.timestamps.tolist() == [3, 4, 5, 6]


def test_concat_column_fills_missing_ranges_and_keeps_masks():
    F, S = FieldType.FLOAT, FieldType.STRING
    a = Column(F, np.array([1.0, 2.0]))
    b = Column(F, np.array([3.0, 0.0, 5.0]), np.array([True, False, True]))
    c = concat_column([a, None, b], [2, 2, 3], F)
    assert c.values.tolist() == [1.0, 2.0, 0.0, 0.0, 3.0, 0.0, 5.0]
    assert c.mask.tolist() == [True, True, False, False, True, False, True]
    assert concat_column([a, a], [2, 2], F).mask is None
    assert concat_column([a], [2], F) is a  # one column of the right type: itself
    ints = concat_column([Column(FieldType.INTEGER, np.array([1, 2]))], [2], F)
    assert ints.values.dtype == np.float64 and ints.type == F
    s = concat_column([None, Column(S, np.array(["x"], dtype=object))], [2, 1], S)
    assert s.values.tolist() == ["", "", "x"] and s.mask.tolist() == [False, False, True]
    assert concat_column([], [], F).values.dtype == np.float64


def test_field_type_zeros_stand_for_no_value():
    assert FieldType.FLOAT.zeros(2).tolist() == [0.0, 0.0]
    assert FieldType.BOOLEAN.zeros(1).dtype == bool and FieldType.UNSIGNED.zeros(1).dtype == np.uint64
    assert FieldType.STRING.zeros(2).tolist() == ["", ""]
