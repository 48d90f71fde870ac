"""The columnar SQL answer and its renderings: /sql JSON rows, pgwire arrays, ORDER BY rules."""

from __future__ import annotations

import numpy as np

from rusts.sql.runner import sort_index, to_pg_result
from rusts.sql.output import SqlColumn, make_output, to_json


def _obj(xs):
    a = np.empty(len(xs), dtype=object)
    a[:] = xs
    return a


def sample():
    cols = [SqlColumn("time", "timestamp", "time"), SqlColumn("host", "text", "tag"),
            SqlColumn("v", "float8", "field"), SqlColumn("b", "timestamp", "time"),
            SqlColumn("n", "int8", "field")]
    vals = [np.array([10, 20, 30]), _obj(["a", "", "c"]), np.array([1.5, np.nan, np.inf]),
            np.array([100, 200, 300]), np.array([1, 2, 3])]
    masks = [None, np.array([True, False, True]), None, None, np.array([True, True, False])]
    return make_output(cols, vals, masks, "cpu")


def test_json_rows_place_columns_by_kind_and_omit_nulls():
    body = to_json(sample(), 1.23456)
    assert body["columns"][0] == {"name": "time", "type": "timestamp"}
    assert body["results"] == [
        {"timestamp": 10, "tags": {"host": "a"}, "fields": {"v": 1.5, "b": 100, "n": 1}},
        {"timestamp": 20, "tags": {}, "fields": {"b": 200, "n": 2}},  # NaN is not JSON: null, omitted
        {"timestamp": 30, "tags": {"host": "c"}, "fields": {"b": 300}},
    ]
    assert body["total_rows"] == 3 and body["execution_time_ms"] == 1.235 and body["measurement"] == "cpu"


def test_pg_result_nulls_are_none_in_object_arrays():
    res = to_pg_result(sample())
    assert res.columns[1] == ("host", "text") and res.command_tag == "SELECT 3"
    assert res.arrays[0].dtype == np.int64  # timestamps stay int64 ns
    assert list(res.arrays[1]) == ["a", None, "c"]
    assert list(res.arrays[4]) == [1, 2, None]
    assert np.isnan(res.arrays[2][1])  # NaN is a value, not NULL


def test_sort_index_follows_postgres_null_ordering():
    v = [np.array([3.0, 1.0, 0.0, 2.0]), _obj(["x", "y", "x", "z"])]
    m = [np.array([True, True, False, True]), None]
    assert sort_index(v, m, [(0, False, False)]).tolist() == [1, 3, 0, 2]  # ASC: NULLS LAST
    assert sort_index(v, m, [(0, True, True)]).tolist() == [2, 0, 3, 1]  # DESC: NULLS FIRST
    assert sort_index(v, m, [(1, False, False), (0, True, True)]).tolist() == [2, 0, 1, 3]
